"""Bad input through the real command line: one line naming file:line:col (or the argument), exit 2, no traceback.

No lab needed: every case fails while loading the inventory or parsing arguments, before any connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.helpers import zrelay

HEAD = """\
all:
  hosts:
    nas1: {address: 127.0.0.2}
    vault: {address: 127.0.0.4}
"""

JOB = """\
zrelay:
  jobs:
    - source: nas1:tank/data
      targets: [vault:backup/data]
"""

# (inventory text, expected "line:col" or None when only the file must be named, message fragment)
CASES: list[tuple[str, str | None, str]] = [
    ("", None, "empty"),
    ("all: [\n", "1:6", "invalid YAML"),
    ("all:\n  hosts:\n    nas1: {address: 127.0.0.2\n", "3:11", "invalid YAML"),
    ("- just\n- a list\n", "1:1", "mapping"),
    (HEAD + "zrelay:\n  jobs: {}\n", "6:9", "list"),
    (HEAD + "zrelay:\n  jobs:\n    - targets: [vault:backup/x]\n", "7:7", "source"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1\n      targets: [vault:backup/x]\n", "7:15", "host:dataset"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas9:tank/x\n      targets: [vault:backup/x]\n", "7:15", "nas9"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1:tank/x\n      targets: [vault9:backup/x]\n", "8:17", "vault9"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1:tank/x;rm -rf /\n      targets: [vault:backup/x]\n", "7:15", "';'"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1:tank/$(id)\n      targets: [vault:backup/x]\n", "7:15", "$"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1:tank/x\n      targets: [vault:backup/`id`]\n", "8:17", "`"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1:tank/x\n      targets: [s3:nowhere]\n", "8:17", "nowhere"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1:tank/x\n      recursive: maybe\n      targets: [vault:backup/x]\n",
     "8:18", "true or false"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1:tank/x\n      snapshots: {regex: '[unclosed'}\n"
     "      targets: [vault:backup/x]\n", "8:", "regex"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1:tank/x\n      targtes: [vault:backup/x]\n", "8:7", "targets"),
    (HEAD + "zrelay:\n  snapshot_name: 'zrelay;%Y'\n" + JOB.split("\n", 1)[1], "6:18", "snapshot"),
    (HEAD + "zrelay:\n  limits: {sends_per_host: 0}\n" + JOB.split("\n", 1)[1], "6:28", "range"),
    ("all:\n  hosts:\n    nas1: {address: 127.0.0.2, port: 70000}\n", "3:38", "port"),
    ("all:\n  hosts:\n    nas1: {adress: 127.0.0.2}\n", "3:12", "address"),
    ("all:\n  hosts:\n    nas1: {address: 127.0.0.2}\n    nas1: {address: 127.0.0.3}\n", "4:5", "nas1"),
    ("all:\n  hosts:\n    nas1: {address: 127.0.0.2, sudo: sometimes}\n", "3:38", "true or false"),
    ("all:\n  hosts:\n    nas1: {address: 127.0.0.2, max_sessions: -1}\n", "3:46", "range"),
    ("all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a: {}\n", None, "cycle"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1:tank/x\n      targets: [vault:backup/x]\n"
     "    - source: nas1:tank/y\n      targets: [vault:backup/x]\n", "10:17", "backup/x"),
    (HEAD + "zrelay:\n  jobs:\n    - source: nas1:tank/x\n      targets: [nas1:tank/x]\n", "8:17", ""),
    (HEAD + "zrelay:\n  bogus: 1\n", "6:3", "bogus"),
]


@pytest.mark.parametrize("text,where,fragment", CASES, ids=[f"case{i:02d}" for i in range(len(CASES))])
def test_bad_inventory_one_line_exit_2(tmp_path: Path, text: str, where: str | None, fragment: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    proc = zrelay("sync", "--dry-run", inventory=path, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert f"{path}:" in line, line
    if where is not None:
        assert f"{path}:{where}" in line, line
    assert fragment.lower() in line.lower(), line
    assert proc.stdout == ""


def test_missing_inventory_file(tmp_path: Path) -> None:
    proc = zrelay("status", inventory=tmp_path / "nope.yml")
    assert proc.returncode == 2
    assert "nope.yml" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_pattern_names_it(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(HEAD + JOB)
    proc = zrelay("sync", "--dry-run", "nas7:tank/none", inventory=path)
    assert proc.returncode == 2
    assert "nas7:tank/none" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["sync", "--bogus"], ["frobnicate"], ["status", "--json", "--nope"]])
def test_bad_arguments_exit_2(tmp_path: Path, argv: list[str]) -> None:
    path = tmp_path / "inv.yml"
    path.write_text(HEAD + JOB)
    proc = zrelay(*argv, inventory=path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_no_inventory_anywhere(tmp_path: Path) -> None:
    proc = zrelay("status", env={"HOME": str(tmp_path), "ZRELAY_INVENTORY": ""})
    # cwd is the repo, which has no inventory/zrelay.yml: the message says where it looked.
    assert proc.returncode == 2
    assert "-i" in proc.stderr and "Traceback" not in proc.stderr



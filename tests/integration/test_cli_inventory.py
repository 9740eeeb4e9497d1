"""``zrelay inventory`` through the real command line (subprocesses; no lab needed).

Every bad inventory must give exit 2, exactly one problem line located at
file:line:column with the expected message, and never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from zrelay.cli.main import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example.yml"
FIXTURES = REPO / "tests" / "fixtures" / "ansible"

HOSTS = "all:\n  hosts:\n    nas1: {address: 192.0.2.1}\n    vault: {address: 192.0.2.3}\n"
GROUPED = ("all:\n  children:\n    storage:\n      hosts:\n        nas1: {address: 192.0.2.1}\n"
           "    backup:\n      hosts:\n        vault: {address: 192.0.2.3}\n")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> Callable[..., Result]:
    """The same command line in this process (``main(argv)``): fast enough for many cases."""

    def invoke(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
        with monkeypatch.context() as patch:
            patch.delenv("ZRELAY_INVENTORY", raising=False)
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            patch.chdir(cwd or REPO)
            capsys.readouterr()
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse
                code = int(exc.code or 0)
            out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return invoke


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """``python -m zrelay ARGS`` with a clean environment (no inventory from the caller)."""
    full = {k: v for k, v in os.environ.items() if k != "ZRELAY_INVENTORY"}
    full["PYTHONPATH"] = str(REPO) + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "zrelay", *args], cwd=cwd or REPO, env=full,
                          capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- bad inventories
#
# (id, files {relative path: text}, the file given to -i, where "FILE:LINE:COL", message)

Case = tuple[str, dict[str, str], str, str, str]

BAD: list[Case] = [
    # host ranges
    ("range-backwards", {"inv.yml": "all:\n  hosts:\n    nas[3:1]:\n"}, "inv.yml", "inv.yml:3:5",
     "host range [3:1] in 'nas[3:1]' runs backwards"),
    ("range-width", {"inv.yml": "all:\n  hosts:\n    nas[01:100]:\n"}, "inv.yml", "inv.yml:3:5",
     "a zero-padded range needs begin and end of equal width"),
    ("range-mixed", {"inv.yml": "all:\n  hosts:\n    nas[1:c]:\n"}, "inv.yml", "inv.yml:3:5",
     "must be two numbers or two letters"),
    ("range-step", {"inv.yml": "all:\n  hosts:\n    nas[1:9:0]:\n"}, "inv.yml", "inv.yml:3:5",
     "step '0' is not a positive integer"),
    ("range-huge", {"inv.yml": "all:\n  hosts:\n    nas[1:20000]:\n"}, "inv.yml", "inv.yml:3:5",
     "makes 20000 hosts (at most 10000)"),
    ("range-no-end", {"inv.yml": "all:\n  hosts:\n    nas[1:]:\n"}, "inv.yml", "inv.yml:3:5",
     "has no end"),
    ("range-unclosed", {"inv.yml": "all:\n  hosts:\n    'nas[1:3': {}\n"}, "inv.yml",
     "inv.yml:3:5", "has no closing ']'"),
    ("range-duplicate", {"inv.yml": "all:\n  hosts:\n    nas[1:3]:\n    nas2: {}\n"}, "inv.yml",
     "inv.yml:4:5", "host 'nas2' is listed twice in hosts of group 'all' (by 'nas[1:3]')"),
    # hosts
    ("name-not-address", {"inv.yml": "all:\n  hosts:\n    -nas1: {}\n"}, "inv.yml",
     "inv.yml:3:5", "starts with '-' and would be read as an ssh option; the host name is its "
     "address"),
    ("host-conflict", {"inv.yml": GROUPED + "    more:\n      hosts:\n"
                       "        nas1: {address: 192.0.2.9}\n"}, "inv.yml", "inv.yml:11:25",
     "host 'nas1' is also listed at line 5 with address '192.0.2.1'"),
    ("host-and-group", {"inv.yml": GROUPED + "    nas1:\n      hosts: {vault: }\n"}, "inv.yml",
     "inv.yml:9:5", "'nas1' is both a host and a group"),
    ("unknown-host-var", {"inv.yml": "all:\n  hosts:\n    nas1: {adress: 192.0.2.1}\n"},
     "inv.yml", "inv.yml:3:12", "unknown key 'adress' in host 'nas1' (did you mean 'address'?)"),
    ("sudo-string", {"inv.yml": "all:\n  vars: {sudo: 'yes'}\n"}, "inv.yml", "inv.yml:2:16",
     "sudo: expected true or false, got the string 'yes'"),
    ("port-float", {"inv.yml": "all:\n  hosts:\n    nas1: {port: 22.5}\n"}, "inv.yml",
     "inv.yml:3:18", "port: expected an integer, got the number 22.5"),
    ("group-cycle", {"inv.yml": "all:\n  children:\n    a:\n      children:\n        b:\n"
                     "          children:\n            a: {}\n"}, "inv.yml", "inv.yml:7:13",
     "group cycle: a -> b -> a"),
    ("zrelay-typo", {"inv.yml": "zrealy:\n  jobs: []\n"}, "inv.yml", "inv.yml:1:1",
     "unknown top-level key 'zrealy' (did you mean 'zrelay'?)"),
    ("zrelay-key-typo", {"inv.yml": HOSTS + "zrelay:\n  includes: []\n"}, "inv.yml",
     "inv.yml:6:3", "unknown key 'includes' in the zrelay section (did you mean 'include'?)"),
    # jobs
    ("job-source-group", {"inv.yml": GROUPED + "zrelay:\n  jobs:\n    - source: storage:tank/a\n"
                          "      targets: [vault:backup/a]\n"}, "inv.yml", "inv.yml:11:15",
     "'storage' in source is a group, not a host; name one host (hosts in 'storage': nas1)"),
    ("job-unknown-target", {"inv.yml": HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/a\n"
                            "      targets: [valt:backup/a]\n"}, "inv.yml", "inv.yml:8:17",
     "unknown host 'valt' in target (did you mean 'vault'?)"),
    ("job-bad-dataset", {"inv.yml": HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank//a\n"
                         "      targets: [vault:backup/a]\n"}, "inv.yml", "inv.yml:7:15",
     "has an empty component"),
    ("job-overlap", {"inv.yml": HOSTS + "zrelay:\n  jobs:\n"
                     "    - {source: 'nas1:tank/a', recursive: true, targets: ['vault:b/x']}\n"
                     "    - {source: 'nas1:tank/b', targets: ['vault:b/x/y']}\n"}, "inv.yml",
     "inv.yml:8:41", "target vault:b/x/y is inside vault:b/x, which job 'nas1:tank/a' (line 7) "
     "writes recursively"),
    ("job-same-target", {"inv.yml": HOSTS + "zrelay:\n  jobs:\n"
                         "    - {source: 'nas1:tank/a', targets: ['vault:b/x']}\n"
                         "    - {source: 'nas1:tank/b', targets: ['vault:b/x']}\n"}, "inv.yml",
     "inv.yml:8:41", "target vault:b/x is also written by job 'nas1:tank/a' (line 7)"),
    # include:
    ("include-missing", {"inv.yml": HOSTS + "zrelay:\n  include: [missing.ini]\n"}, "inv.yml",
     "inv.yml:6:13", "include: 'missing.ini' not found"),
    ("include-mapping", {"inv.yml": HOSTS + "zrelay:\n  include: {hosts: x}\n"}, "inv.yml",
     "inv.yml:6:12", "include: expected a path or a list of paths"),
    ("include-number", {"inv.yml": HOSTS + "zrelay:\n  include: [42]\n"}, "inv.yml",
     "inv.yml:6:13", "include: expected a string, got the integer 42 (quote it)"),
    ("include-self", {"inv.yml": HOSTS + "zrelay:\n  include: [inv.yml]\n"}, "inv.yml",
     "inv.yml:6:13", "include: 'inv.yml' is this inventory itself"),
    ("include-twice", {"inv.yml": HOSTS + "zrelay:\n  include: [a.ini, ./a.ini]\n",
                       "a.ini": "[web]\nw1\n"}, "inv.yml", "inv.yml:6:20",
     "include: './a.ini' is already included at line 6"),
    ("include-empty-dir", {"inv.yml": HOSTS + "zrelay:\n  include: [ansible]\n",
                           "ansible/notes.md": "nothing\n"}, "inv.yml", "inv.yml:6:13",
     "include: directory 'ansible' holds no inventory file"),
    ("included-zrelay-section", {"inv.yml": HOSTS + "zrelay:\n  include: [a.yml]\n",
                                 "a.yml": "all:\n  hosts:\n    w1:\nzrelay: {}\n"}, "inv.yml",
     "a.yml:4:1", "an included inventory cannot have a zrelay: section"),
    ("included-bad-port", {"inv.yml": HOSTS + "zrelay:\n  include: [a.yml]\n",
                           "a.yml": "all:\n  hosts:\n    w1: {ansible_port: ssh}\n"}, "inv.yml",
     "a.yml:3:24", "ansible_port: expected an integer, got the string 'ssh' (used by host 'w1')"),
    ("included-ini-section", {"inv.yml": HOSTS + "zrelay:\n  include: [a.ini]\n",
                              "a.ini": "[web:host]\nw1\n"}, "inv.yml", "a.ini:1:1",
     "section [web:host] has unknown type"),
    # INI, pointed at directly
    ("ini-vars-undeclared", {"hosts.ini": "[db:vars]\nx=1\n"}, "hosts.ini", "hosts.ini:1:2",
     "section [db:vars] is for group 'db', which this file never declares"),
    ("ini-child-undeclared", {"hosts.ini": "[web]\nw1\n[all:children]\nweb\ndb\n"},
     "hosts.ini", "hosts.ini:5:1", "[all:children] names group 'db', which this file never "
     "declares"),
    ("ini-var-line", {"hosts.ini": "[web]\nw1\n[web:vars]\njustaword\n"}, "hosts.ini",
     "hosts.ini:4:1", "expected key=value in [web:vars], got 'justaword'"),
    ("ini-host-token", {"hosts.ini": "[web]\nw1 port\n"}, "hosts.ini", "hosts.ini:2:4",
     "expected key=value after host 'w1', got 'port'"),
    ("ini-header", {"hosts.ini": "[web servers]\nw1\n"}, "hosts.ini", "hosts.ini:1:1",
     "invalid section header '[web servers]'"),
    ("ini-colon-end", {"hosts.ini": "[web]\nw1:\n"}, "hosts.ini", "hosts.ini:2:1",
     "host 'w1:' ends with ':'"),
    ("ini-quote", {"hosts.ini": "[web]\nw1 a='b\n"}, "hosts.ini", "hosts.ini:2:1",
     "cannot read host line: No closing quotation"),
    ("ini-port", {"hosts.ini": "[web]\nw1 ansible_port=ssh\n"}, "hosts.ini", "hosts.ini:2:17",
     "ansible_port: expected an integer, got the string 'ssh' (used by host 'w1')"),
    ("ini-become", {"hosts.ini": "[web]\nw1 ansible_become=maybe\n"}, "hosts.ini",
     "hosts.ini:2:19", "ansible_become: expected true or false, got the string 'maybe'"),
    ("ini-template", {"hosts.ini": "[web]\nw1 ansible_host={{x}}\n"}, "hosts.ini",
     "hosts.ini:2:17", "templates ('{{ ... }}') are not supported"),
    ("ini-range", {"hosts.ini": "[web]\nw[5:1]\n"}, "hosts.ini", "hosts.ini:2:1",
     "runs backwards"),
    ("ini-all-child", {"hosts.ini": "[g]\nw1\n[g:children]\nall\n"}, "hosts.ini",
     "hosts.ini:4:1", "'all' cannot be a child group"),
    # group_vars / host_vars beside a zrelay inventory
    ("group-vars-unknown-key", {"inv.yml": GROUPED, "group_vars/storage.yml": "prot: 22\n"},
     "inv.yml", "group_vars/storage.yml:1:1",
     "unknown key 'prot' in vars of group 'storage' (did you mean 'port'?)"),
    ("host-vars-type", {"inv.yml": HOSTS, "host_vars/nas1.yml": "port: ssh\n"}, "inv.yml",
     "host_vars/nas1.yml:1:7", "port: expected an integer, got the string 'ssh'"),
    ("group-vars-list", {"inv.yml": HOSTS, "group_vars/all.yml": "- a\n- b\n"}, "inv.yml",
     "group_vars/all.yml:1:1", "vars of group 'all': expected a mapping, got a list"),
    ("group-vars-yaml", {"inv.yml": HOSTS, "group_vars/all/main.yml": "user: [root\n"},
     "inv.yml", "group_vars/all/main.yml:1:7", "the '[' list that starts here is never closed"),
    ("group-vars-vault", {"inv.yml": HOSTS, "group_vars/all.yml": "$ANSIBLE_VAULT;1.1;AES256\n"
                          "3131\n"}, "inv.yml", "group_vars/all.yml:1:1",
     "encrypted with ansible-vault"),
    ("host-vars-duplicate", {"inv.yml": HOSTS, "host_vars/vault": "port: 1\nport: 2\n"},
     "inv.yml", "host_vars/vault:2:1", "duplicate key 'port'"),
]


def _location(line: str) -> tuple[str, str]:
    match = re.match(r"(.+?):(\d+):(\d+): (.*)$", line)
    assert match, line
    return f"{match.group(1)}:{match.group(2)}:{match.group(3)}", match.group(4)


def _write_case(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _check_bad(root: Path, main_file: str, result: Result | subprocess.CompletedProcess[str],
               where: str, message: str) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    location, text = _location(lines[0])
    file, _, rest = location.partition(":")
    expected_file, _, expected_rest = where.partition(":")
    assert (root / file).resolve() == (root / expected_file).resolve(), lines[0]
    assert rest == expected_rest, lines[0]
    assert message in text, lines[0]
    assert result.stderr.strip() == f"zrelay: 1 problem in {main_file}"


@pytest.mark.parametrize("files, main_file, where, message", [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_inventory(cli: Callable[..., Result], tmp_path: Path, files: dict[str, str],
                       main_file: str, where: str, message: str) -> None:
    _write_case(tmp_path, files)
    _check_bad(tmp_path, main_file, cli("-i", main_file, "inventory", "validate", cwd=tmp_path),
               where, message)


#: A third of the cases again, each as its own ``python -m zrelay`` process, all at once.
SUBPROCESS_CASES = BAD[::3]


@pytest.fixture(scope="module")
def bad_processes(tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    roots = {}
    for case_id, files, _, _, _ in SUBPROCESS_CASES:
        roots[case_id] = tmp_path_factory.mktemp(case_id)
        _write_case(roots[case_id], files)
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c[0]: pool.submit(run, "-i", c[2], "inventory", "validate", cwd=roots[c[0]])
                   for c in SUBPROCESS_CASES}
        return {case_id: (roots[case_id], f.result()) for case_id, f in futures.items()}


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_bad_inventory_subprocess(
        bad_processes: dict[str, tuple[Path, subprocess.CompletedProcess[str]]],
        case: Case) -> None:
    root, result = bad_processes[case[0]]
    _check_bad(root, case[2], result, case[3], case[4])


def test_bad_cases_are_many_and_distinct() -> None:
    assert len(BAD) >= 40
    assert len({c[0] for c in BAD}) == len(BAD)


def test_every_problem_at_once(cli: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "inv.yml").write_text(HOSTS.replace("192.0.2.1}", "192.0.2.1, port: 0}")
                                      + "zrelay:\n  jobs:\n    - source: nas9:tank/a\n"
                                      "      targets: [vault:backup/a]\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("usr: root\n")
    result = cli("-i", "inv.yml", "inventory", "validate", cwd=tmp_path)
    assert result.returncode == 2
    assert [_location(line)[0].rsplit("/", 1)[-1] for line in result.stdout.splitlines()] == [
        "all.yml:1:1", "inv.yml:3:38", "inv.yml:7:15"]
    assert "zrelay: 3 problems in inv.yml" in result.stderr


def test_a_broken_inventory_fails_other_commands_with_one_line(cli: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "inv.yml").write_text("all:\n  hosts:\n    nas1: {port: x}\n")
    for args in (["list"], ["graph"], ["show", "nas1"], ["set", "nas1", "port=22"]):
        result = cli("-i", "inv.yml", "inventory", *args, cwd=tmp_path)
        if args[0] == "set":  # an edit that fixes the problem is allowed
            assert result.returncode == 0, result.stderr
            continue
        assert result.returncode == 2
        assert result.stderr == ("zrelay: error: inv.yml:3:18: port: expected an integer, got "
                                 "the string 'x'\n")


# --------------------------------------------------------------------------- read-only commands


def test_validate_example() -> None:
    result = run("-i", str(EXAMPLE), "inventory", "validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == f"{EXAMPLE}: OK, 5 hosts, 3 groups, 3 jobs, 1 S3 target\n"


def test_list_and_graph_of_example(cli: Callable[..., Result]) -> None:
    listed = cli("-i", str(EXAMPLE), "inventory", "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["HOST", "ADDRESS", "PORT", "USER", "SUDO", "SENDS", "RECEIVES",
                                "GROUPS"]
    assert lines[3].split() == ["scratch", "192.0.2.30", "22", "admin", "no", "2", "2",
                                "storage,lab"]
    graph = cli("-i", str(EXAMPLE), "inventory", "graph")
    assert graph.stdout.splitlines() == [
        "@all:", "  |--@storage:", "  |  |--@lab:", "  |  |  |--scratch", "  |  |--nas1",
        "  |  |--nas2", "  |--@backup:", "  |  |--vault", "  |  |--tiny-vault",
        "  |--@ungrouped:"]


def test_list_json_is_ansible_shaped(cli: Callable[..., Result]) -> None:
    result = cli("-i", str(FIXTURES / "ini" / "hosts"), "inventory", "list", "--json")
    data = json.loads(result.stdout)
    assert data["all"]["children"] == ["ungrouped", "dc1", "dc2"]
    assert data["dc1"]["children"] == ["storage", "web"]
    assert data["storage"]["hosts"][:2] == ["nas01.dc1.example.net", "nas02.dc1.example.net"]
    assert data["_meta"]["hostvars"]["tape01"]["ansible_port"] == 2022
    zrelay = data["_meta"]["zrelay"]["hosts"]["nas04.dc1.example.net"]
    assert (zrelay["address"], zrelay["port"], zrelay["user"], zrelay["sudo"]) == (
        "10.1.0.14", 2222, "dc1ops", True)


def test_show_says_where_each_value_came_from(cli: Callable[..., Result]) -> None:
    result = cli("-i", str(FIXTURES / "site" / "zrelay.yml"), "inventory", "show", "--json",
                 "nas03.dc1.example.net")
    data = json.loads(result.stdout)
    settings = data["settings"]
    assert settings["address"]["value"] == "10.1.0.13"
    assert settings["address"]["at"].endswith("site/host_vars/nas03.dc1.example.net.yml:2:10")
    assert settings["user"] == {"value": "dc1ops", "from": "group dc1",
                                "at": str(FIXTURES / "ini" / "group_vars" / "dc1.yml") + ":3:15"}
    assert settings["sends"]["from"] == "group storage"
    assert settings["known_hosts"] == {"value": None, "from": "default", "at": None}
    text = cli("-i", str(FIXTURES / "site" / "zrelay.yml"), "inventory", "show", "nas01.dc1")
    assert text.returncode == 2
    assert "unknown host 'nas01.dc1' (did you mean 'nas01.dc1.example.net'?)" in text.stderr


def test_lookup_order(cli: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "lab.yml").write_text(HOSTS)
    none = cli("inventory", "list", cwd=tmp_path, env={"XDG_CONFIG_HOME": str(tmp_path / "c")})
    assert none.returncode == 2
    assert "no inventory found" in none.stderr and "(it has lab.yml" in none.stderr
    (tmp_path / "c" / "zrelay").mkdir(parents=True)
    (tmp_path / "c" / "zrelay" / "zrelay.yml").write_text("all:\n  hosts:\n    cfg:\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "c")}
    assert cli("inventory", "list", cwd=tmp_path, env=env).stdout.startswith("HOST")
    assert "cfg" in cli("inventory", "list", cwd=tmp_path, env=env).stdout
    (tmp_path / "inventory" / "zrelay.yml").write_text("all:\n  hosts:\n    local:\n")
    assert "local" in cli("inventory", "list", cwd=tmp_path, env=env).stdout
    env["ZRELAY_INVENTORY"] = str(tmp_path / "inventory" / "lab.yml")
    assert "nas1" in cli("inventory", "list", cwd=tmp_path, env=env).stdout
    explicit = cli("-i", "inventory", "inventory", "list", cwd=tmp_path, env=env)
    assert "local" in explicit.stdout  # a directory means its zrelay.yml


# --------------------------------------------------------------------------- edits


RICH = """\
# Fleet inventory. Edited by hand and by zrelay; keep the comments.

all:
  vars:
    user: root          # everyone logs in as root
    port: 22

  children:
    storage:            # the file servers
      hosts:
        nas1: {address: 192.0.2.1}   # rack 1
        nas2: {address: 192.0.2.2}
    backup:
      hosts:
        vault:
          address: "198.51.100.5"    # quoted on purpose
          receives: 4

zrelay:
  # nightly copies
  jobs:
    - source: nas1:tank/data
      targets: [vault:backup/nas1]
"""


def test_edit_commands_through_the_cli(cli: Callable[..., Result], tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text(RICH)
    os.chmod(inv, 0o640)
    dry = run("-i", "inv.yml", "inventory", "add-host", "nas3", "--address", "192.0.2.3",
              "--group", "storage", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines()[:3] == ["--- a/inv.yml", "+++ b/inv.yml", "@@ -10,6 +10,7 @@"]
    assert [line for line in dry.stdout.splitlines() if line[:1] in "+-"][2:] == [
        "+        nas3: {address: 192.0.2.3}"]
    assert "dry run: inv.yml not changed" in dry.stderr
    assert inv.read_text() == RICH
    done = run("-i", "inv.yml", "inventory", "add-host", "nas3", "--address", "192.0.2.3",
               "--group", "storage", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == "inv.yml: added host nas3 to group 'storage'\n"
    assert inv.read_text() == RICH.replace(
        "        nas2: {address: 192.0.2.2}\n",
        "        nas2: {address: 192.0.2.2}\n        nas3: {address: 192.0.2.3}\n")
    assert os.stat(inv).st_mode & 0o777 == 0o640
    steps = [
        ["set", "nas3", "port=2222", "sudo=yes"],
        ["set", "storage", "sends=3"],
        ["unset", "vault", "receives"],
        ["add-job", "nas2:tank/home", "--to", "vault:backup/nas2", "--recursive", "--prefix",
         "auto-"],
        ["add-s3-target", "offsite", "--bucket", "fleet-backups", "--storage-class",
         "GLACIER_IR"],
        ["remove-host", "nas2", "--force"],
    ]
    for step in steps:
        result = cli("-i", "inv.yml", "inventory", *step, cwd=tmp_path)
        assert result.returncode == 0, (step, result.stderr)
    assert cli("-i", "inv.yml", "inventory", "validate", cwd=tmp_path).returncode == 0
    text = inv.read_text()
    assert "# Fleet inventory. Edited by hand and by zrelay; keep the comments.\n" in text
    assert 'address: "198.51.100.5"    # quoted on purpose\n' in text
    assert "nas3: {address: 192.0.2.3, port: 2222, sudo: true}" in text
    assert "nas2" not in text


def test_refused_edit_leaves_the_file_alone(cli: Callable[..., Result], tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text(RICH)
    before = inv.read_bytes()
    cases = [
        (["set", "nas1", "port=70000"], "inv.yml:11:42: port: 70000 is out of range"),
        (["set", "nas1", "prot=22"], "unknown key 'prot' in host 'nas1' (did you mean 'port'?)"),
        (["add-job", "nas1:tank/vm", "--to", "valt:backup/vm"],
         "unknown host 'valt' in target (did you mean 'vault'?)"),
        (["add-job", "nas2:tank/x", "--to", "vault:backup/nas1"],
         "target vault:backup/nas1 is also written by job 'nas1:tank/data'"),
        (["remove-host", "vault"], "host 'vault' is used by job 'nas1:tank/data'"),
        (["add-host", "nas1"], "host 'nas1' already exists"),
        (["add-s3-target", "x", "--bucket", "Bad_Bucket"], "is not a valid bucket name"),
        (["unset", "nas1", "port"], "host nas1 does not set 'port'"),
        (["set", "nsa1", "port=1"], "no host or group 'nsa1' (did you mean 'nas1'?)"),
        (["set", "nas1", "port"], "expected key=value, got 'port'"),
    ]
    for args, message in cases:
        result = cli("-i", "inv.yml", "inventory", *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert inv.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inv.yml"]  # no temporary files left

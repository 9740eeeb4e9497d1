"""Every command block of README.md runs as pasted.

The command lines are read from the README's fenced blocks (in a block that shows a session,
only the ``$ `` lines). Each ``zrelay`` line runs unchanged:

* on ``inventory/example.yml`` (documentation addresses that reach no machine) only commands
  that never connect are allowed, and each runs in a network namespace without any interface
  up, so a connection attempt fails at once instead of leaving this machine;
* on ``inventory/lab.yml`` against the lab, in README order, from a directory whose
  ``inventory/lab.yml`` is the README's file with the test's own dataset names and S3 prefix
  (the lab is shared) and the lab's addresses (they differ on the OpenZFS tier).

Lines that cannot run inside a test are listed in SKIPPED with the reason; any other line fails
the test, so a new README command is either run here or explained.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.helpers import REPO

README = REPO / "README.md"
EXAMPLE = "inventory/example.yml"
LAB = "inventory/lab.yml"

#: README lines that a test cannot run, with the reason (the text after `#` is not part of the line).
SKIPPED: dict[str, str] = {
    "make demo": "the whole demo (install, lab up, sync, push, status): its zrelay steps are the lab commands run here",
    "make test": "the test suite itself",
    "python3 -m venv .venv && . .venv/bin/activate": "tests/integration/test_install.py makes a fresh venv this way",
    "pip install -c constraints.txt .": "tests/integration/test_install.py installs this way into a fresh venv",
    "make lab-up": "the lab and S3 fixtures bring the lab up (and never down while another session uses it)",
    "python3 lab/demo_data.py": "the test creates the same datasets under names of its own: the lab is shared",
    "zrelay -i inventory/lab.yml daemon --systemd-unit > /etc/systemd/system/zrelay.service":
        "installs a unit on this machine; tests/integration/test_systemd_unit.py verifies the unit",
    "systemctl daemon-reload && systemctl enable --now zrelay": "starts a service on this machine; "
        "tests/integration/test_daemon.py starts the daemon itself",
    "curl -s 127.0.0.1:9811/metrics": "needs a running daemon; tests/integration/test_daemon.py scrapes its endpoint",
}
#: Lines run with bash whose exported variables the commands after them get.
SHELL_ENV_LINES = {'eval "$(python3 lab/seaweed.py env)"'}
#: `zrelay inventory` subcommands that read files only: the ones allowed on example.yml.
OFFLINE_INVENTORY = {"list", "graph", "show", "validate"}
#: Exit codes the README documents for a command, where not 0.
EXPECTED_EXIT: dict[str, int] = {}


@dataclass(frozen=True)
class Command:
    line: int   # in README.md
    text: str   # as pasted, without its comment

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def inventory(self) -> str | None:
        argv = self.argv
        for i, arg in enumerate(argv[:-1]):
            if arg in ("-i", "--inventory"):
                return argv[i + 1]
        return None

    def __str__(self) -> str:
        return f"README.md:{self.line}: {self.text}"


#: Fences whose blocks hold shell commands (a ``yaml`` block is a file, not commands).
SHELL_FENCES = {"```", "```sh", "```shell", "```console"}


def readme_commands(text: str) -> list[Command]:
    """The command lines of every shell block, in README order."""
    commands: list[Command] = []
    fence: str | None = None
    body: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            if fence is None:
                fence, body = line.strip(), []
            else:
                if fence in SHELL_FENCES:
                    commands += _block_commands(body)
                fence = None
        elif fence is not None:
            body.append((number, line))
    return commands


def _block_commands(body: list[tuple[int, str]]) -> list[Command]:
    """A block that shows a session has commands on its ``$ `` lines, output on the others."""
    session = any(line.startswith("$ ") for _, line in body)
    out = []
    for number, line in body:
        if session and not line.startswith("$ "):
            continue
        code = _strip_comment(line[2:] if session else line).strip()
        if code:
            out.append(Command(number, code))
    return out


def _strip_comment(line: str) -> str:
    """The line without its trailing ``# comment`` (a ``#`` inside quotes or a word stays)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


COMMANDS = readme_commands(README.read_text())


def _zrelay_argv() -> list[str]:
    """The `zrelay` a user of this venv types (the console script), else the module."""
    script = Path(sys.executable).with_name("zrelay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "zrelay"]


def _base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "ZRELAY_")) and k != "PYTHONWARNINGS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # as after `activate`
    env["ZRELAY_STATE"] = str(tmp / "state.db")  # never the user's own store
    env.setdefault("COLUMNS", "200")
    return env


def _kind(cmd: Command) -> str:
    if cmd.text in SKIPPED:
        return "skipped"
    if cmd.text in SHELL_ENV_LINES:
        return "env"
    if cmd.argv[0] == "zrelay":
        return {EXAMPLE: "example", LAB: "lab"}.get(cmd.inventory or "", "unknown inventory")
    return "unknown"


def _connects(argv: list[str]) -> bool:
    """False only for commands that surely read files only: help, and the inventory listings."""
    if "-h" in argv or "--help" in argv:
        return False
    takes_value = ("-i", "--inventory", "--state")
    words = [a for prev, a in zip(argv, argv[1:]) if not a.startswith("-") and prev not in takes_value]
    return not (len(words) >= 2 and words[0] == "inventory" and words[1] in OFFLINE_INVENTORY)


def test_the_readme_has_command_blocks() -> None:
    kinds = [_kind(c) for c in COMMANDS]
    assert "example" in kinds and "lab" in kinds and "skipped" in kinds


@pytest.mark.parametrize("cmd", COMMANDS, ids=str)
def test_every_command_is_run_here_or_skipped_with_a_reason(cmd: Command) -> None:
    kind = _kind(cmd)
    assert kind in ("skipped", "env", "example", "lab"), \
        f"{cmd}: neither run by this test nor in SKIPPED with a reason ({kind})"
    if kind == "skipped":
        pytest.skip(f"not run in a test: {SKIPPED[cmd.text]}")
    if kind == "example":
        assert not _connects(cmd.argv), \
            f"{cmd}: {EXAMPLE} holds documentation addresses; only commands that never connect may use it"


def test_the_connection_guard_stops_a_connection() -> None:
    """The guard the example commands run under refuses every connection, even to the lab's sshd on
    loopback (which answers outside it), so nothing could leave the machine."""
    guard = _network_guard()
    if not guard:
        pytest.skip("no network namespace here (needs root and unshare): the allow-list alone guards")
    probe = ("import socket\ntry:\n socket.create_connection(('127.0.0.2', 22), timeout=2)\n"
             "except OSError as e:\n print(e)\n raise SystemExit(3)")
    proc = subprocess.run([*guard, sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "unreachable" in proc.stdout.lower(), proc.stdout


def _network_guard() -> list[str]:
    """argv prefix: a new network namespace in which no interface is up."""
    unshare = shutil.which("unshare")
    return [unshare, "--net", "--"] if unshare and os.geteuid() == 0 else []


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _kind(c) == "example"], ids=str)
def test_example_inventory_commands_run_offline(cmd: Command, tmp_path: Path) -> None:
    assert not _connects(cmd.argv), cmd
    proc = subprocess.run([*_network_guard(), *_zrelay_argv(), *cmd.argv[1:]], capture_output=True, text=True,
                          cwd=REPO, env=_base_env(tmp_path), timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == EXPECTED_EXIT.get(cmd.text, 0), f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, f"{cmd}\n{proc.stderr}"
    assert proc.stdout.strip(), f"{cmd}: printed nothing"


# -- the lab commands --------------------------------------------------------------------------------------------


def _lab_inventory(lab: Any, s3: Any, name: str) -> tuple[str, list[tuple[str, str, str]]]:
    """README's lab.yml for this lab and this test: datasets POOL/REST become POOL/NAME/REST (removed
    with NAME afterwards), the S3 target writes under the test's prefix. Also each job's source to make:
    (host, dataset in the README's file, dataset in the test's)."""
    doc = yaml.safe_load((REPO / LAB).read_text())
    for group in _groups(doc["all"]):
        for host, entry in (group.get("hosts") or {}).items():
            if host in lab.hosts:
                entry = group["hosts"][host] = dict(entry or {})
                entry["address"] = lab.hosts[host]
                entry["port"] = lab.ports[host]
                if lab.peer_addresses[host] != lab.hosts[host]:
                    entry["direct_address"] = lab.peer_addresses[host]
    doc["all"].setdefault("vars", {}).update({"identity_file": str(lab.key), "known_hosts": str(lab.known_hosts)})

    def rename(spec: str) -> str:
        host, dataset = spec.split(":", 1)
        if host == "s3":
            return spec
        pool, _, rest = dataset.partition("/")
        return f"{host}:{pool}/{name}/{rest}"

    sources: list[tuple[str, str, str]] = []
    for job in doc["zrelay"]["jobs"]:
        host, original = job["source"].split(":", 1)
        job["source"] = rename(job["source"])
        job["targets"] = [rename(t) for t in job["targets"]]
        sources.append((host, original, job["source"].split(":", 1)[1]))
    for target in (doc["zrelay"].get("s3_targets") or {}).values():
        target.update({"endpoint": s3.endpoint, "bucket": s3.bucket, "prefix": s3.prefix(name)})
    return yaml.safe_dump(doc, sort_keys=False), sources


def _groups(group: dict) -> list[dict]:
    out = [group]
    for child in (group.get("children") or {}).values():
        out += _groups(child or {})
    return out


def _demo_datasets() -> dict[str, list[str]]:
    """lab/demo_data.py's DATASETS: what `python3 lab/demo_data.py` creates for inventory/lab.yml."""
    spec = importlib.util.spec_from_file_location("zrelay_lab_demo_data", REPO / "lab" / "demo_data.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return dict(mod.DATASETS)


def _make_source(lab: Any, host: str, dataset: str, recursive_children: list[str]) -> None:
    """What lab/demo_data.py makes: a dataset (and children) with a few MiB of files, one zrelay_ snapshot."""
    for ds in [dataset, *(f"{dataset}/{c}" for c in recursive_children)]:
        lab.run(host, "zfs", "create", "-p", ds)
        mount = lab.run(host, "zfs", "get", "-H", "-o", "value", "mountpoint", ds).stdout.strip()
        lab.run(host, "dd", "if=/dev/urandom", f"of={mount}/file0", "bs=1M", f"count={lab.mib(1)}", "status=none")
    lab.run(host, "zfs", "snapshot", "-r", f"{dataset}@zrelay_demo-base")


def _shell_env(line: str, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """Run `line` in bash from `cwd`; the environment it leaves."""
    proc = subprocess.run(["bash", "-c", f"{line}\nenv -0"], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{line}: {proc.stderr}"
    return dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)


@pytest.mark.lab
def test_lab_commands_run_in_order(lab: Any, s3: Any, tmp_path: Path) -> None:
    name = lab.unique("readme")
    text, sources = _lab_inventory(lab, s3, name)
    (tmp_path / "inventory").mkdir()
    (tmp_path / LAB).write_text(text)
    (tmp_path / "lab").symlink_to(REPO / "lab")  # `python3 lab/seaweed.py env` as in the checkout
    demo = _demo_datasets()
    for host, original, dataset in sources:
        children = [ds[len(original) + 1:] for ds in demo.get(host, []) if ds.startswith(original + "/")]
        _make_source(lab, host, dataset, children)

    env = _base_env(tmp_path)
    ran: list[str] = []
    try:
        for cmd in COMMANDS:
            kind = _kind(cmd)
            if kind == "env":
                env = _shell_env(cmd.text, tmp_path, env)
                continue
            if kind != "lab":
                continue
            proc = subprocess.run([*_zrelay_argv(), *cmd.argv[1:]], capture_output=True, text=True, cwd=tmp_path,
                                  env=env, timeout=600, stdin=subprocess.DEVNULL)
            ran.append(cmd.text)
            assert proc.returncode == EXPECTED_EXIT.get(cmd.text, 0), f"{cmd}\n{proc.stdout}\n{proc.stderr}"
            assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, f"{cmd}\n{proc.stderr}"
        assert any(" sync --snapshot" in r for r in ran) and any(r.endswith(" status") for r in ran), ran
        final = subprocess.run([*_zrelay_argv(), "-i", LAB, "status", "--json"], capture_output=True, text=True,
                               cwd=tmp_path, env=env, timeout=300, stdin=subprocess.DEVNULL)
        states = {row["target"]: row["state"] for row in json.loads(final.stdout)}
        assert set(states.values()) == {"in-sync"}, states  # the quick start leaves every target in sync
    finally:
        s3.cleanup(s3.prefix(name))

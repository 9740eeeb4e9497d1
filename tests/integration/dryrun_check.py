"""What ``--dry-run`` printed against what the run then did, command line by command line.

The run records every remote command it starts (``ZRELAY_COMMAND_LOG``, the
audit log, zrelay.transport.command_log); the dry run's ``--json`` lists the
commands of its actions. Questions asked along the way (listings, ``zfs get``,
send size estimates, the capability probe, direct mode's login check) change
nothing and are not actions, so they are left out of the comparison; every
command that changes something must be one the dry run printed, on the same host,
as often (the order within one dataset is the executor's, tests/unit/test_executor_chains.py).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from tests.integration.helpers import zrelay
from zrelay.zfs import commands, direct_ssh, quoting

#: zfs subcommands that only read.
_READING = {"list", "get", "holds"}
#: direct mode's ssh master socket is unique per run (two runs never share it): compared by shape
_CONTROL_PATH = re.compile(r"ControlPath=\S+?(?=['\s]|$)")


def _is_question(command: str) -> bool:
    """A command that reads and changes nothing (not an action: the dry run does not print it)."""
    if command in (quoting.quote(commands.probe_argv()), quoting.quote(direct_ssh.cpu_aes_argv())):
        return True
    if "ControlMaster=yes" in command or " -O exit " in command:   # direct mode's login check, its end
        return True
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    if words[:1] == ["sudo"]:
        words = words[words.index("zfs"):] if "zfs" in words else words[1:]
    if words[:1] != ["zfs"] or len(words) < 2:
        return False
    if words[1] in _READING:
        return True
    # zfs send -nvP …: the size estimate
    return words[1] == "send" and any(w.startswith("-") and not w.startswith("--") and "n" in w[1:]
                                      for w in words[2:] if w != "-t")


def _normal(command: str) -> str:
    return _CONTROL_PATH.sub("ControlPath=<per run>", command)


def per_host(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for host, command in pairs:
        out.setdefault(host, []).append(_normal(command))
    return out


def executed(log: Path) -> list[tuple[str, str]]:
    """(host, command) of every command that changed something, in the order they started."""
    if not log.exists():
        return []
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [(e["host"], e["command"]) for e in entries if not _is_question(e["command"])]


def printed(results: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(host, command) of every action the dry run printed (``--json``)."""
    return [(c["host"], c["command"]) for r in results for c in r["commands"]
            if not c["command"].startswith("upload to ") and not c["host"].startswith("s3:")]


def dry_then_run(inv: Path, tmp_path: Path, *args: str, command: str = "sync",
                 env: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Path]:
    """``zrelay COMMAND --dry-run --json ARGS``, then the same for real with the audit log on;
    returns (dry results, run results, the log)."""
    dry = zrelay(command, "--dry-run", "--json", *args, inventory=inv, env=env)
    assert dry.returncode in (0, 1), dry.stderr + dry.stdout
    log = tmp_path / f"commands-{len(list(tmp_path.glob('commands-*')))}.jsonl"
    run = zrelay(command, "--json", *args, inventory=inv, env={**(env or {}), "ZRELAY_COMMAND_LOG": str(log)})
    assert run.returncode in (0, 1), run.stderr + run.stdout
    return json.loads(dry.stdout), json.loads(run.stdout), log


def assert_ran_what_was_printed(inv: Path, tmp_path: Path, *args: str, command: str = "sync",
                                env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The whole check: the dry run's commands are what the run ran, per host, byte for byte
    (direct mode's per-run master socket aside); returns the run's results."""
    dry, run, log = dry_then_run(inv, tmp_path, *args, command=command, env=env)
    want, got = per_host(printed(dry)), per_host(executed(log))
    # the datasets of a recursive job move side by side (each in its planned order), so commands of
    # different datasets may interleave on a host: compared as the same commands, each as often
    same = {h: sorted(c) for h, c in got.items()} == {h: sorted(c) for h, c in want.items()}
    assert same, f"dry run printed:\n{json.dumps(want, indent=1)}\nthe run ran:\n{json.dumps(got, indent=1)}"
    assert any(want.values()), "the case must plan something to run"
    for r in run:
        assert r["outcome"] in ("ok", "noop"), r
        assert "planned again" not in r["message"], r
    return run

"""Shared helpers for integration tests: write an inventory for the lab, run the real CLI, read ZFS state."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def write_inventory(path: Path, lab: Any, jobs: list[dict], hosts: dict[str, dict] | None = None,
                    settings: dict | None = None) -> Path:
    """An inventory for the lab hosts (plus ``hosts`` overrides) with ``jobs``.

    Each lab host gets its SSH ``port`` and its ``direct_address`` (how the other
    hosts reach it, for direct mode) when they differ from the defaults, which
    they do on the OpenZFS tier (127.0.0.1:2221/2222; the guests see each other
    at 10.0.2.100).
    """
    all_hosts: dict[str, dict] = {}
    for name, addr in lab.hosts.items():
        entry: dict[str, Any] = {"address": addr}
        if lab.ports[name] != 22:
            entry["port"] = lab.ports[name]
        if lab.peer_addresses[name] != addr:
            entry["direct_address"] = lab.peer_addresses[name]
        all_hosts[name] = entry
    for name, values in (hosts or {}).items():
        all_hosts.setdefault(name, {}).update(values)
    doc = {
        "all": {
            "vars": {"user": "root", "identity_file": str(lab.key), "known_hosts": str(lab.known_hosts)},
            "hosts": all_hosts,
        },
        "zrelay": {"snapshot_name": "zrelay_%Y-%m-%dT%H:%M:%S.%fZ", **(settings or {}), "jobs": jobs},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def zrelay(*args: str, inventory: Path | None = None, timeout: float = 300,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess, as a user would."""
    argv = [sys.executable, "-m", "zrelay"]
    if inventory is not None:
        argv += ["-i", str(inventory)]
    argv += list(args)
    full_env = dict(os.environ, **(env or {}))
    # Runs record into a throwaway state store, never the user's own.
    full_env.setdefault("ZRELAY_STATE", os.path.join(tempfile.gettempdir(), "zrelay-tests", "state.db"))
    full_env.pop("ZRELAY_INVENTORY", None) if inventory is not None else None
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)


def default_sigint() -> None:
    """``preexec_fn`` for a zrelay that a test will Ctrl-C: SIGINT as a terminal gives it.

    A shell without job control starts background commands (``.ci/run &``, cron, nohup)
    with SIGINT ignored, and every child inherits that; Python then never raises
    KeyboardInterrupt. A user pressing Ctrl-C has the default disposition.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def snapshots(lab: Any, host: str, dataset: str) -> list[tuple[str, int]]:
    """(short name, guid) of every snapshot of ``dataset`` on ``host``, oldest first; [] if absent."""
    proc = lab.run(host, "zfs", "get", "-H", "-p", "-o", "name,property,value", "-d", "1",
                   "guid,createtxg", dataset, check=False)
    if proc.returncode != 0:
        return []
    props: dict[str, dict[str, int]] = {}
    for line in proc.stdout.splitlines():
        name, prop, value = line.split("\t")
        if name.startswith(dataset + "@"):
            props.setdefault(name.split("@", 1)[1], {})[prop] = int(value)
    ordered = sorted(props.items(), key=lambda kv: kv[1]["createtxg"])
    return [(name, p["guid"]) for name, p in ordered]


def exists(lab: Any, host: str, dataset: str) -> bool:
    return lab.run(host, "zfs", "list", "-H", "-o", "name", dataset, check=False).returncode == 0


def make_dataset(lab: Any, host: str, dataset: str, mib: int = 1, snaps: list[str] | None = None) -> None:
    """Create ``dataset`` with ``mib`` MiB of random data, then take each snapshot in ``snaps`` (adding data between)."""
    lab.run(host, "zfs", "create", "-p", dataset)
    for i, snap in enumerate(snaps or []):
        write(lab, host, dataset, f"f{i}", mib)
        lab.run(host, "zfs", "snapshot", f"{dataset}@{snap}")


def write(lab: Any, host: str, dataset: str, filename: str, mib: int = 1) -> None:
    mount = lab.run(host, "zfs", "get", "-H", "-o", "value", "mountpoint", dataset).stdout.strip()
    lab.run(host, "dd", "if=/dev/urandom", f"of={mount}/{filename}", "bs=1M", f"count={mib}", "status=none")


def fingerprint(lab: Any, host: str, dataset: str) -> str:
    """A digest of the dataset's snapshot list and of every snapshot's full send stream: changes if any byte does."""
    digest = hashlib.sha256()
    for name, guid in snapshots(lab, host, dataset):
        digest.update(f"{name}:{guid}\n".encode())
        stream = lab.run(host, "sh", "-c", f"zfs send {shlex.quote(dataset + '@' + name)} | sha256sum").stdout
        digest.update(stream.encode())
    return digest.hexdigest()


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the CLI failed the way users should see it: no traceback, a message."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip(), "expected an error message on stderr"
    return proc.stderr.strip()


__all__ = ["write_inventory", "zrelay", "default_sigint", "snapshots", "exists", "make_dataset", "write", "fingerprint",
           "one_line_error", "textwrap"]

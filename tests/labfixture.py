"""pytest plugin: the zfs-fuse lab (lab/zfslab.py) as the session fixture ``lab``.

Load it with ``pytest_plugins = ["tests.labfixture"]`` in tests/conftest.py.

    def test_something(lab):
        name = f"tank/{lab.unique()}"
        lab.zfs("nas1", "create", name)
        out = subprocess.run(["ssh", "-F", str(lab.ssh_config), lab.hosts["nas1"], "zfs", "list", name], ...)

The fixture brings the lab up when it is not up, and at session end brings
down only the hosts it started itself (and only when no other test session
still holds a lease on the lab). When the lab cannot run here (not root, no
/dev/fuse, zfs-fuse missing, ...) tests using it are skipped, unless
ZRELAY_REQUIRE_LAB=1, in which case they fail.

Tests that request ``lab`` get the ``lab`` marker automatically, so
``pytest -m "not lab"`` deselects them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "lab" / "zfslab.py"
UP_TIMEOUT = 300


class LabCommandError(subprocess.CalledProcessError):
    """A command run inside a lab host failed; the message carries its output."""

    def __init__(self, host: str, returncode: int, cmd, output: str, stderr: str):
        super().__init__(returncode, cmd, output, stderr)
        self.host = host

    def __str__(self) -> str:
        argv = " ".join(map(str, self.cmd))
        text = f"[{self.host}] {argv!r} exited with status {self.returncode}"
        if self.stderr:
            text += f"\n--- stderr ---\n{self.stderr.rstrip()}"
        if self.output:
            text += f"\n--- stdout ---\n{self.output.rstrip()}"
        return text


def load_zfslab() -> ModuleType:
    """Import lab/zfslab.py (a standalone script, not a package module)."""
    spec = importlib.util.spec_from_file_location("zrelay_lab_zfslab", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Lab:
    """Handle on the running lab; see the module docstring."""

    def __init__(self, zfslab: ModuleType):
        self._z = zfslab
        self.LabError = zfslab.LabError
        p = zfslab.paths()
        self.dir: Path = p["dir"]
        self.key: Path = p["key"]
        self.known_hosts: Path = p["known_hosts"]
        self.ssh_config: Path = p["ssh_config"]
        self.script: Path = SCRIPT
        self.hosts: dict[str, str] = {h: addr for h, (addr, _) in zfslab.HOSTS.items()}
        self.pools: dict[str, str] = {h: pool for h, (_, pool) in zfslab.HOSTS.items()}
        self._counter = itertools.count(1)
        self._issued: set[str] = set()
        self.stopped_by_tests: set[str] = set()

    # -- commands inside a host -------------------------------------------

    def run(self, host: str, *argv, check: bool = True, input: str | None = None,
            timeout: float | None = 300) -> subprocess.CompletedProcess:
        """Run argv inside HOST's mount namespace (no shell; pass ["sh", "-c", ...] for one).

        Returns the CompletedProcess (text, stdout/stderr captured). With
        check=True a non-zero exit raises LabCommandError (a CalledProcessError).
        The working directory is kept. A host that is down raises lab.LabError.
        """
        if len(argv) == 1 and isinstance(argv[0], (list, tuple)):
            argv = tuple(argv[0])
        argv = tuple(str(a) for a in argv)
        if not argv:
            raise ValueError("lab.run: empty command")
        if host not in self.hosts:
            raise KeyError(f"unknown lab host {host!r} (known: {', '.join(self.hosts)})")
        try:
            wd = os.getcwd()
        except FileNotFoundError:
            wd = "/"
        cmd = self._z.nsenter_argv(host, list(argv), self._z.ns_pid(host), wd=wd)
        env = dict(os.environ, PATH=self._z.sbin_path())
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL, env=env)
        r.args = list(argv)
        if check and r.returncode != 0:
            raise LabCommandError(host, r.returncode, list(argv), r.stdout, r.stderr)
        return r

    def zfs(self, host: str, *args) -> str:
        """``zfs ARGS`` on HOST; returns stdout (raises on failure)."""
        return self.run(host, "zfs", *args).stdout

    def zpool(self, host: str, *args) -> str:
        return self.run(host, "zpool", *args).stdout

    def exists(self, host: str, name: str) -> bool:
        return self.run(host, "zfs", "list", "-H", "-o", "name", name, check=False).returncode == 0

    def destroy(self, host: str, name: str, timeout: float = 15.0) -> None:
        """``zfs destroy -r NAME``, retrying while zfs-fuse says "busy"; missing is fine."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.run(host, "zfs", "destroy", "-r", name, check=False)
            if r.returncode == 0 or "does not exist" in r.stderr:
                return
            if "busy" not in r.stderr or time.monotonic() > deadline:
                raise LabCommandError(host, r.returncode, ["zfs", "destroy", "-r", name], r.stdout, r.stderr)
            time.sleep(0.3)

    # -- ssh ----------------------------------------------------------------

    def ssh_argv(self, host: str) -> list[str]:
        """``ssh -F SSH_CONFIG ADDRESS``; append the remote command."""
        return ["ssh", "-F", str(self.ssh_config), self.hosts[host]]

    def ssh(self, host: str, command: str, check: bool = True,
            timeout: float | None = 300) -> subprocess.CompletedProcess:
        r = subprocess.run(self.ssh_argv(host) + [command], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise LabCommandError(host, r.returncode, ["ssh", command], r.stdout, r.stderr)
        return r

    # -- names --------------------------------------------------------------

    def unique(self, prefix: str = "t") -> str:
        """A short name unique across tests and concurrent sessions (e.g. 't3a9f1c2')."""
        while True:
            name = f"{prefix}{next(self._counter)}{secrets.token_hex(3)}"
            if name not in self._issued:
                self._issued.add(name)
                return name

    # -- lifecycle ----------------------------------------------------------

    def cli(self, *args: str, check: bool = True, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise LabCommandError("lab", r.returncode, ["zfslab.py", *args], r.stdout, r.stderr)
        return r

    def status(self) -> dict:
        """Per-host dict: state ('up'/'down'/'partial'), address, pool, pids."""
        return self._z.status_data()["hosts"]

    def stop_host(self, host: str) -> None:
        self.cli("stop-host", host)
        self.stopped_by_tests.add(host)

    def start_host(self, host: str) -> None:
        self.cli("start-host", host)
        self.stopped_by_tests.discard(host)


# --------------------------------------------------------------------------
# leases: several pytest sessions may share one lab


def _lease_dir(z: ModuleType) -> Path:
    return z.lab_dir() / "leases"


def _take_lease(z: ModuleType) -> Path:
    d = _lease_dir(z)
    d.mkdir(parents=True, exist_ok=True)
    lease = d / str(os.getpid())
    lease.write_text(f"{os.getpid()}\n")
    return lease


def _other_live_leases(z: ModuleType) -> list[int]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for f in _lease_dir(z).iterdir():
            if not f.name.isdigit() or int(f.name) == os.getpid():
                continue
            try:
                os.kill(int(f.name), 0)
                out.append(int(f.name))
            except ProcessLookupError:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
            except PermissionError:
                out.append(int(f.name))
    return out


def _unavailable(reason: str) -> None:
    if os.environ.get("ZRELAY_REQUIRE_LAB") == "1":
        pytest.fail(f"the zfs-fuse lab is required (ZRELAY_REQUIRE_LAB=1) but cannot run: {reason}",
                    pytrace=False)
    pytest.skip(f"zfs-fuse lab unavailable: {reason}")


@pytest.fixture(scope="session")
def lab():
    if not SCRIPT.exists():
        _unavailable(f"{SCRIPT} is missing")
    z = load_zfslab()
    problems = z.preflight()
    if problems:
        _unavailable("; ".join(problems))

    lease = _take_lease(z)
    handle = Lab(z)
    before = {h: s["state"] for h, s in handle.status().items()}
    started = [h for h, state in before.items() if state == "down"]
    r = handle.cli("up", check=False)
    if r.returncode != 0:
        with contextlib.suppress(FileNotFoundError):
            lease.unlink()
        pytest.fail(f"lab/zfslab.py up failed (exit {r.returncode}):\n{r.stderr}", pytrace=False)
    try:
        yield handle
    finally:
        # hosts a test stopped and did not restart: other sessions may still need them
        for h in sorted(handle.stopped_by_tests):
            handle.cli("start-host", h, check=False)
        with contextlib.suppress(FileNotFoundError):
            lease.unlink()
        if started and not _other_live_leases(z):
            if set(started) == set(handle.hosts):
                handle.cli("down", check=False)
            else:
                handle.cli("stop-host", *started, check=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: needs the zfs-fuse lab (root, zfs-fuse, sshd)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)

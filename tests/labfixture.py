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

Two tiers, chosen with ZRELAY_LAB:

* ``fuse`` (default): lab/zfslab.py, zfs-fuse hosts nas1, nas2, vault on
  127.0.0.2-4 port 22.
* ``openzfs``: lab/openzfs.py, OpenZFS 2.3 in two qemu guests (oz1 on
  127.0.0.1:2221, oz2 on 127.0.0.1:2222). The fixture exposes the same host
  names: nas1 is oz1 (pool tank), nas2 and vault are both oz2 (pools tank and
  backup). The image is built on first use (minutes, then cached) and the
  guests are booted (about a minute each). Selecting this tier makes the lab
  required: when it cannot run, the tests fail instead of being skipped.

Same API on both tiers: ``hosts`` (name -> address), ``ports`` (name -> SSH
port), ``pools`` (name -> pool), ``machines`` (name -> the machine behind it:
the name itself on the fuse tier, oz1/oz2 on the openzfs tier), ``tier``,
``run``, ``zfs``, ``zpool``, ``exists``, ``destroy``, ``ssh``, ``ssh_argv``,
``known_hosts_name``, ``unique``, ``status``, ``stop_host``, ``start_host``,
``key``, ``known_hosts``, ``ssh_config``, ``dir``, ``script``; for zrelay's
direct mode ``peer_addresses`` (name -> the address the other hosts use:
inventory ``direct_address``), ``peer_key`` and ``peer_known_hosts`` (paths
*on the hosts*: ``direct_identity_file``, ``direct_known_hosts``).

Tier-neutral helpers for tests:

* ``capabilities(host)``: what the host's ZFS can do, from zrelay's own
  capability probe (``zrelay.zfs.model.Capabilities``: ``flavor``,
  ``resume``, ``send_estimate``, ``bookmarks``, ``raw_send`` ...).
* ``require(host, feature)``: skip the test, naming the tier and the missing
  feature, when the probe says the host lacks it (never a silent pass).
* ``mib(n)``: a data size scaled for the tier. The guests' disks and ssh run
  under qemu TCG (6-14 MB/s), so the OpenZFS tier writes a quarter of what the
  fuse tier does (``ZRELAY_LAB_DATA_SCALE`` overrides: 1 = full size).
* ``put_file(host, local_path)``: make a local file readable *on the host*
  (the fuse hosts share this filesystem; the guests get a copy) and return its
  path there, e.g. for an age identity used by a restore that decrypts on
  that host.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "lab" / "zfslab.py"
OPENZFS_SCRIPT = REPO / "lab" / "openzfs.py"
UP_TIMEOUT = 300
# data written by tests, relative to the fuse tier (the guests' disks and ssh are slow under TCG)
DATA_SCALE = {"fuse": 1.0, "openzfs": 0.25}
# first use builds the image (~10-20 min on 2 cores) and boots the guests
OPENZFS_UP_TIMEOUT = float(os.environ.get("ZRELAY_OPENZFS_UP_TIMEOUT", "3600"))
TIERS = ("fuse", "openzfs")
#: Releases every user hold on the snapshots under $1 (test cleanup only; names arrive as arguments).
RELEASE_ALL_HOLDS = ('zfs list -H -o name -t snapshot -r "$1" | while read -r snap; do '
                     'zfs holds -H "$snap" | while IFS="$(printf \'\\t\')" read -r n tag rest; do '
                     'zfs release "$tag" "$snap"; done; done')


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


def load_openzfs() -> ModuleType:
    """Import lab/openzfs.py (a standalone script, not a package module)."""
    spec = importlib.util.spec_from_file_location("zrelay_lab_openzfs", OPENZFS_SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def lab_tier() -> str:
    """The tier ZRELAY_LAB selects: "fuse" (default) or "openzfs"."""
    tier = os.environ.get("ZRELAY_LAB", "").strip().lower() or "fuse"
    if tier not in TIERS:
        raise ValueError(f"ZRELAY_LAB={tier!r}: expected one of {', '.join(TIERS)}")
    return tier


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
        self.ports: dict[str, int] = {h: zfslab.SSH_PORT for h in zfslab.HOSTS}
        self.pools: dict[str, str] = {h: pool for h, (_, pool) in zfslab.HOSTS.items()}
        self.machines: dict[str, str] = {h: h for h in zfslab.HOSTS}
        # for zrelay's direct mode (host to host): how the hosts reach each other, and the
        # key and known_hosts *on the hosts* for that (the hosts share this filesystem)
        self.peer_addresses: dict[str, str] = dict(self.hosts)
        self.peer_key: Path = self.key
        self.peer_known_hosts: Path = self.known_hosts
        self.tier = "fuse"
        self.data_scale: float = _data_scale(self.tier)
        self._caps: dict[str, object] = {}
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
            if "being held" in r.stderr:  # zrelay holds its bases (OpenZFS): test data goes anyway
                self.run(host, "sh", "-c", RELEASE_ALL_HOLDS, "release", name, check=False)
                continue
            if "busy" not in r.stderr or time.monotonic() > deadline:
                raise LabCommandError(host, r.returncode, ["zfs", "destroy", "-r", name], r.stdout, r.stderr)
            time.sleep(0.3)

    # -- ssh ----------------------------------------------------------------

    def ssh_argv(self, host: str) -> list[str]:
        """``ssh -F SSH_CONFIG ADDRESS``; append the remote command."""
        return ["ssh", "-F", str(self.ssh_config), self.hosts[host]]

    def known_hosts_name(self, host: str) -> str:
        """How HOST is written in known_hosts: ``127.0.0.2``, or ``[127.0.0.1]:2221`` off port 22."""
        addr, port = self.hosts[host], self.ports[host]
        return addr if port == 22 else f"[{addr}]:{port}"

    def ssh(self, host: str, command: str, check: bool = True,
            timeout: float | None = 300) -> subprocess.CompletedProcess:
        r = subprocess.run(self.ssh_argv(host) + [command], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise LabCommandError(host, r.returncode, ["ssh", command], r.stdout, r.stderr)
        return r

    # -- tier-neutral helpers -----------------------------------------------

    def capabilities(self, host: str):
        """HOST's ZFS capabilities from zrelay's own probe (cached per machine)."""
        from zrelay.zfs import commands, parse

        machine = self.machines[host]
        if machine not in self._caps:
            r = self.run(host, *commands.probe_argv(), check=False)
            self._caps[machine] = parse.parse_probe(r.stdout, r.stderr, r.returncode, host=host)
        return self._caps[machine]

    def require(self, host: str, feature: str, why: str = "") -> None:
        """Skip the calling test unless the probe says HOST's ZFS has FEATURE (a Capabilities field)."""
        caps = self.capabilities(host)
        if not getattr(caps, feature):
            flavor = getattr(caps.flavor, "value", caps.flavor)
            pytest.skip(f"{self.tier} tier: {host} ({flavor} {caps.version}) has no {feature} "
                        f"(capability probe){': ' + why if why else ''}")

    def mib(self, n: float, minimum: int = 1) -> int:
        """N MiB of test data as written on the fuse tier, scaled for this tier (at least MINIMUM)."""
        return max(minimum, round(n * self.data_scale))

    def put_file(self, host: str, local: Path | str) -> str:
        """Make LOCAL readable on HOST; returns its path there (the hosts share this filesystem)."""
        return str(local)

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


class OpenZFSLab(Lab):
    """The same API on the OpenZFS tier: commands run over SSH in the qemu guests."""

    def __init__(self, oz: ModuleType):  # noqa: D107 - deliberately not calling Lab.__init__
        self._z = oz
        self.LabError = oz.LabError
        p = oz.paths()
        self.dir: Path = p["dir"]
        self.key: Path = p["key"]
        self.known_hosts: Path = p["known_hosts"]
        self.ssh_config: Path = p["ssh_config"]
        self.script: Path = OPENZFS_SCRIPT
        self.hosts: dict[str, str] = {h: oz.ADDRESS for h in oz.ALIASES}
        self.ports: dict[str, int] = {h: oz.GUESTS[g].port for h, (g, _) in oz.ALIASES.items()}
        self.pools: dict[str, str] = {h: pool for h, (_, pool) in oz.ALIASES.items()}
        self.machines: dict[str, str] = {h: g for h, (g, _) in oz.ALIASES.items()}
        # direct mode: a guest reaches the others at PEER_ADDRESS (same ports), with a key and
        # known_hosts that exist inside the guests only
        self.peer_addresses: dict[str, str] = {h: oz.PEER_ADDRESS for h in oz.ALIASES}
        self.peer_key: Path = Path(oz.PEER_KEY_IN_GUEST)
        self.peer_known_hosts: Path = Path(oz.PEER_KNOWN_HOSTS_IN_GUEST)
        self.tier = "openzfs"
        self.data_scale: float = _data_scale(self.tier)
        self._caps: dict[str, object] = {}
        self._counter = itertools.count(1)
        self._issued: set[str] = set()
        self.stopped_by_tests: set[str] = set()

    def _target(self, host: str) -> str:
        if host in self.hosts or host in self._z.GUESTS:
            return host  # ssh_config has a Host block for every alias and guest name
        raise KeyError(f"unknown lab host {host!r} (known: {', '.join([*self.hosts, *self._z.GUESTS])})")

    def run(self, host: str, *argv, check: bool = True, input: str | None = None,
            timeout: float | None = 300) -> subprocess.CompletedProcess:
        """Run argv on HOST over SSH, quoted with shlex.join (no shell; pass ["sh", "-c", ...] for one).

        Same result as on the fuse tier (CompletedProcess, text, args = argv;
        LabCommandError on failure with check=True), except that the command
        runs in the guest's home directory, not in the caller's working
        directory. A guest that is down raises lab.LabError.
        """
        if len(argv) == 1 and isinstance(argv[0], (list, tuple)):
            argv = tuple(argv[0])
        argv = tuple(str(a) for a in argv)
        if not argv:
            raise ValueError("lab.run: empty command")
        target = self._target(host)
        cmd = ["ssh", "-F", str(self.ssh_config), *self._mux_options(), target, "--", shlex.join(argv)]
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL)
        r.args = list(argv)
        if r.returncode == 255:
            guest = self._z.resolve_host(target)
            if self._z.guest_state(guest) != "up":
                raise self.LabError(f"host {host} ({guest}) is down (run: openzfs.py up)")
        if check and r.returncode != 0:
            raise LabCommandError(host, r.returncode, list(argv), r.stdout, r.stderr)
        return r

    def _mux_options(self) -> list[str]:
        """Share one SSH connection per guest between the test helper's commands.

        A new connection costs about a second of key exchange in a TCG guest; a
        multiplexed session costs a fraction of that. Only ``run`` (and so
        ``zfs``, ``exists``, ``destroy``) uses it: zrelay, ``ssh`` and
        ``ssh_argv`` keep their own connections.
        """
        path = self.dir / "mux-%C"
        if len(str(path)) + 40 > 100:  # AF_UNIX path limit, %C is 40 characters
            path = Path("/tmp") / f"zrelay-lab-mux-{os.getuid()}-%C"
        return ["-o", "ControlMaster=auto", "-o", f"ControlPath={path}", "-o", "ControlPersist=120"]

    def ssh_argv(self, host: str) -> list[str]:
        """``ssh -F SSH_CONFIG NAME`` (the config maps the name to 127.0.0.1 and the port)."""
        return ["ssh", "-F", str(self.ssh_config), self._target(host)]

    def put_file(self, host: str, local: Path | str) -> str:
        """Copy LOCAL into HOST's guest (mode 600, a directory of its own); returns the path there."""
        local = Path(local)
        remote = f"/root/zrelay-tests/{secrets.token_hex(6)}/{local.name}"
        self.run(host, "sh", "-c", 'umask 077 && mkdir -p "${1%/*}" && cat > "$1"', "put_file", remote,
                 input=local.read_text())
        return remote

    def cli(self, *args: str, check: bool = True, timeout: float = OPENZFS_UP_TIMEOUT) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, str(OPENZFS_SCRIPT), *args], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise LabCommandError("lab", r.returncode, ["openzfs.py", *args], r.stdout, r.stderr)
        return r

    def status(self) -> dict:
        """Per-host dict: state ('up'/'booting'/'down'), address, port, pool, machine, pid."""
        guests = self._z.status_data()["hosts"]
        return {h: {"state": guests[g]["state"], "address": guests[g]["address"], "port": guests[g]["port"],
                    "pool": self.pools[h], "machine": g, "pid": guests[g]["pid"]}
                for h, g in self.machines.items()}


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


def _data_scale(tier: str) -> float:
    value = os.environ.get("ZRELAY_LAB_DATA_SCALE", "").strip()
    return float(value) if value else DATA_SCALE[tier]


def _unavailable(reason: str) -> None:
    if os.environ.get("ZRELAY_REQUIRE_LAB") == "1":
        pytest.fail(f"the zfs-fuse lab is required (ZRELAY_REQUIRE_LAB=1) but cannot run: {reason}",
                    pytrace=False)
    pytest.skip(f"zfs-fuse lab unavailable: {reason}")


def _openzfs_session():
    """The session body of the ``lab`` fixture on the OpenZFS tier (ZRELAY_LAB=openzfs)."""
    if not OPENZFS_SCRIPT.exists():
        pytest.fail(f"ZRELAY_LAB=openzfs but {OPENZFS_SCRIPT} is missing", pytrace=False)
    oz = load_openzfs()
    problems = oz.preflight()
    if problems:
        pytest.fail("ZRELAY_LAB=openzfs but the OpenZFS lab cannot run here: " + "; ".join(problems),
                    pytrace=False)
    lease = _take_lease(oz)
    handle = OpenZFSLab(oz)
    before = {g: h["state"] for g, h in oz.status_data()["hosts"].items()}
    started = [g for g, state in before.items() if state == "down"]
    r = handle.cli("up", check=False)
    if r.returncode != 0:
        with contextlib.suppress(FileNotFoundError):
            lease.unlink()
        pytest.fail(f"lab/openzfs.py up failed (exit {r.returncode}):\n{r.stderr}", pytrace=False)
    try:
        yield handle
    finally:
        for h in sorted(handle.stopped_by_tests):
            handle.cli("start-host", h, check=False)
        with contextlib.suppress(FileNotFoundError):
            lease.unlink()
        # the guests cost CPU even when idle: stop the ones this session booted
        if started and not _other_live_leases(oz):
            handle.cli("stop-host", *started, check=False)


@pytest.fixture(scope="session")
def lab():
    try:
        tier = lab_tier()
    except ValueError as e:
        pytest.fail(str(e), pytrace=False)
    if tier == "openzfs":
        yield from _openzfs_session()
        return
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
    config.addinivalue_line("markers", "lab: needs the lab (ZRELAY_LAB=fuse: zfs-fuse and sshd; "
                                       "ZRELAY_LAB=openzfs: qemu guests with OpenZFS 2.3)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)

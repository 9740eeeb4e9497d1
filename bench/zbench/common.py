"""Shared helpers: the lab, remote commands, generated inventories, timing and statistics."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
LAB_SCRIPT = REPO / "lab" / "zfslab.py"
T = TypeVar("T")
MB = 1_000_000
MiB = 1024 * 1024

HOSTS = {"nas1": ("127.0.0.2", "tank"), "nas2": ("127.0.0.3", "tank"), "vault": ("127.0.0.4", "backup")}
SOURCE, TARGET = "nas1", "vault"


class BenchError(Exception):
    """A benchmark could not run (lab missing, command failed, ...)."""


def log(message: str) -> None:
    print(f"  · {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# the lab


class Lab:
    """The zfs-fuse lab as the benchmarks use it: ssh to a host, zfs there, clean up."""

    def __init__(self) -> None:
        self.dir = Path(os.environ.get("ZRELAY_LAB_DIR") or "/var/tmp/zrelay-lab")
        self.ssh_config = self.dir / "ssh_config"
        self.key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.prefix = f"bench-{secrets.token_hex(3)}"
        self._lease: Path | None = None
        self._started: list[str] = []

    # -- lifecycle (same lease protocol as tests/labfixture.py) -------------

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        r = subprocess.run([sys.executable, str(LAB_SCRIPT), *args], capture_output=True, text=True,
                           timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise BenchError(f"lab/zfslab.py {' '.join(args)} failed (exit {r.returncode}): {r.stderr.strip()}")
        return r

    def status(self) -> dict[str, str]:
        return {h: s.get("state", "unknown") for h, s in self._status_json().items()}

    def _status_json(self) -> dict[str, Any]:
        r = self.cli("status", "--json", check=False)
        try:
            return dict(json.loads(r.stdout)["hosts"])
        except (ValueError, KeyError):
            return {h: {"state": "unknown"} for h in HOSTS}

    def sshd_pids(self) -> dict[str, int]:
        return {h: int(s["pids"]["sshd"]) for h, s in self._status_json().items()
                if s.get("state") == "up" and s.get("pids", {}).get("sshd")}

    @staticmethod
    def reaped_cpu(pid: int) -> float:
        """CPU seconds of the finished children of ``pid`` (cutime + cstime): for a host's sshd,
        every SSH session that has ended (sshd's crypto plus the commands it ran)."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def acquire(self) -> None:
        """Take a lease (so test sessions ending meanwhile leave the lab up) and start what is down."""
        leases = self.dir / "leases"
        leases.mkdir(parents=True, exist_ok=True)
        self._lease = leases / str(os.getpid())
        self._lease.write_text(f"{os.getpid()}\n")
        before = self.status()
        self._started = [h for h, s in before.items() if s == "down"]
        self.cli("up")

    def release(self) -> None:
        """Drop the lease; stop the hosts this run started, unless another session holds a lease."""
        if self._lease is not None:
            with contextlib.suppress(FileNotFoundError):
                self._lease.unlink()
        if self._started and not self._other_leases():
            if set(self._started) == set(HOSTS):
                self.cli("down", check=False)
            else:
                self.cli("stop-host", *self._started, check=False)

    def _other_leases(self) -> list[int]:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for f in (self.dir / "leases").iterdir():
                if not f.name.isdigit() or int(f.name) == os.getpid():
                    continue
                try:
                    os.kill(int(f.name), 0)
                    out.append(int(f.name))
                except ProcessLookupError:
                    pass
                except PermissionError:
                    out.append(int(f.name))
        return out

    def wait_up(self, hosts: Sequence[str] = (SOURCE, TARGET), timeout: float = 180.0) -> None:
        """Other sessions may stop a host for a while ("one host down" tests); wait for it."""
        deadline = time.monotonic() + timeout
        said = False
        while True:
            states = self.status()
            down = [h for h in hosts if states.get(h) != "up"]
            if not down:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"lab host(s) {', '.join(down)} stayed down for {timeout:.0f} s")
            if not said:
                log(f"waiting for lab host(s) {', '.join(down)} (stopped by another session?)")
                said = True
            time.sleep(1.0)

    # -- commands -----------------------------------------------------------

    def ssh_argv(self, host: str, *options: str) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), *options, host]

    def ssh(self, host: str, command: str, check: bool = True, timeout: float | None = 600,
            input: str | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run(self.ssh_argv(host) + [command], capture_output=True, text=True, timeout=timeout,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL, check=False)
        if check and r.returncode != 0:
            raise BenchError(f"{host}$ {command}: exit {r.returncode}: {r.stderr.strip()[:500]}")
        return r

    def in_namespace(self, host: str, argv: Sequence[str]) -> list[str]:
        """argv running ``argv`` inside ``host``'s mount namespace (as the host itself would)."""
        return [sys.executable, str(LAB_SCRIPT), "run", host, "--", *argv]

    def zfs(self, host: str, *args: str, check: bool = True) -> str:
        return self.ssh(host, shlex.join(["zfs", *args]), check=check).stdout

    def exists(self, host: str, name: str) -> bool:
        return self.ssh(host, shlex.join(["zfs", "list", "-H", "-o", "name", name]), check=False).returncode == 0

    def guid(self, host: str, snapshot: str) -> str:
        return self.zfs(host, "get", "-H", "-o", "value", "guid", snapshot).strip()

    def avail(self, host: str, dataset: str) -> int:
        return int(self.zfs(host, "get", "-H", "-p", "-o", "value", "available", dataset).strip())

    def destroy(self, host: str, name: str, timeout: float = 180.0) -> None:
        """``zfs destroy -r``, retrying while zfs-fuse answers "dataset is busy"; absent is fine."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.ssh(host, shlex.join(["zfs", "destroy", "-r", name]), check=False)
            if r.returncode == 0 or "does not exist" in r.stderr:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{host}: zfs destroy -r {name}: {r.stderr.strip()}")
            if "busy" not in r.stderr and "Connection refused" not in r.stderr:
                raise BenchError(f"{host}: zfs destroy -r {name}: {r.stderr.strip()}")
            time.sleep(0.5)

    def cleanup(self) -> None:
        """Destroy everything this run created (``POOL/bench-XXXXXX`` on nas1 and vault)."""
        for host in (SOURCE, TARGET):
            pool = HOSTS[host][1]
            name = f"{pool}/{self.prefix}"
            try:
                self.wait_up([host], timeout=300)
                if self.exists(host, name):
                    self.destroy(host, name)
            except BenchError as exc:
                log(f"cleanup: {exc} (destroy {host}:{name} by hand: zfs destroy -r {name})")

    # -- inventories --------------------------------------------------------

    def write_inventory(self, path: Path, jobs: list[dict[str, Any]], *,
                        ssh_options: dict[str, str] | None = None, max_sessions: int | None = None) -> Path:
        """An inventory for the lab hosts (JSON is YAML) with ``jobs``."""
        host_vars: dict[str, Any] = {"user": "root", "port": 22, "identity_file": str(self.key),
                                     "known_hosts": str(self.known_hosts)}
        if ssh_options:
            host_vars["ssh_options"] = ssh_options
        if max_sessions:
            host_vars["max_sessions"] = max_sessions
        doc = {
            "all": {"vars": host_vars,
                    "hosts": {h: {"address": addr} for h, (addr, _pool) in HOSTS.items()}},
            "zrelay": {"limits": {"sends_per_host": 2, "receives_per_host": 2}, "jobs": jobs},
        }
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path


# --------------------------------------------------------------------------
# running and timing


class HostCpu:
    """CPU used on the source and target hosts (their sshd sessions, crypto and commands) over a span.

    Read from each lab sshd's reaped-children counters, so it counts sessions that *ended* within
    the span; sessions of other users of the lab that end meanwhile are counted too (small)."""

    def __init__(self, lab: Lab, hosts: Sequence[str] = (SOURCE, TARGET)) -> None:
        self.lab = lab
        pids = lab.sshd_pids()
        self.pids = {h: pids[h] for h in hosts if h in pids}
        self.start = {h: lab.reaped_cpu(p) for h, p in self.pids.items()}

    def used(self) -> dict[str, float]:
        return {h: round(self.lab.reaped_cpu(p) - self.start[h], 2) for h, p in self.pids.items()}


@dataclass
class Timed:
    seconds: float
    cpu: float = 0.0           # CPU seconds of the orchestrator side (this process and/or its children)
    extra: dict[str, Any] = field(default_factory=dict)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_timed(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 1800,
              what: str = "", ok_codes: Sequence[int] = (0,)) -> tuple[Timed, subprocess.CompletedProcess]:
    cpu0, t0 = children_cpu(), time.perf_counter()
    r = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout,
                       stdin=subprocess.DEVNULL, check=False)
    seconds = time.perf_counter() - t0
    cpu = children_cpu() - cpu0
    if r.returncode not in ok_codes:
        raise BenchError(f"{what or argv[0]}: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-800:]}")
    return Timed(seconds, cpu), r


def pipe_timed(left: Sequence[str], right: Sequence[str], *, timeout: float = 1800,
               what: str = "") -> Timed:
    """``left | right`` run from here (the orchestrator), timed; both must exit 0."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    p1 = subprocess.Popen(list(left), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    p2 = subprocess.Popen(list(right), stdin=p1.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p1.stdout is not None
    p1.stdout.close()
    try:
        _out2, err2 = p2.communicate(timeout=timeout)
        _out1, err1 = p1.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p1.kill()
        p2.kill()
        raise BenchError(f"{what}: timed out after {timeout:.0f} s") from None
    seconds = time.perf_counter() - t0
    cpu = children_cpu() - cpu0
    if p1.returncode != 0 or p2.returncode != 0:
        raise BenchError(f"{what}: exit {p1.returncode}|{p2.returncode}: "
                         f"{err1.decode(errors='replace').strip()[-400:]} | "
                         f"{err2.decode(errors='replace').strip()[-400:]}")
    return Timed(seconds, cpu)


def rotations(methods: Sequence[str], reps: int) -> Iterator[tuple[int, list[str]]]:
    """Alternate the order: rep 0 runs a,b,c; rep 1 b,c,a; rep 2 c,a,b; ..."""
    n = len(methods)
    for rep in range(reps):
        k = rep % n
        yield rep, list(methods[k:]) + list(methods[:k])


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def short_rev(name: str) -> str:
    """``git rev-parse --short NAME`` in this repository."""
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", name], capture_output=True, text=True,
                          check=True).stdout.strip()


@contextlib.contextmanager
def old_checkout(rev: str, where: Path) -> Iterator[Path]:
    """``rev`` checked out at ``where`` (a detached git worktree of this repository) while the block
    runs, removed afterwards: the older code an A/B benchmark runs beside this one."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(where), rev], check=True)
    try:
        yield where
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(where)], check=False)


def write_results(path: Path | None, doc: dict[str, Any]) -> None:
    """A benchmark's JSON results to ``path`` (when given), and where they went."""
    if path is not None:
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"results: {path}")


def zrelay_env(code: Path = REPO) -> dict[str, str]:
    """Environment for subprocesses: this repository's zrelay (or ``code``'s, a checkout) first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def negotiated_algorithms(inventory: Path, host: str = SOURCE) -> dict[str, str]:
    """Cipher and MAC zrelay's SSH connections negotiate with ``host`` (one real connection)."""
    import asyncio

    import zrelay.transport  # noqa: F401  (asyncssh the way zrelay imports it: without its deprecation noise)
    import asyncssh

    from zrelay.inventory import load_inventory
    from zrelay.transport.ssh import connect_options

    async def probe() -> dict[str, str]:
        inv = load_inventory(inventory)
        conn = await asyncssh.connect(**connect_options(inv.hosts[host]))
        try:
            return {k: str(conn.get_extra_info(k)) for k in ("send_cipher", "send_mac", "recv_cipher")}
        finally:
            conn.close()
            await conn.wait_closed()

    return asyncio.run(probe())


def openssh_cipher_options(algs: dict[str, str]) -> list[str]:
    """ssh options that make OpenSSH use the cipher (and MAC) zrelay negotiated."""
    cipher, mac = algs.get("send_cipher", ""), algs.get("send_mac", "")
    opts = ["-o", f"Ciphers={cipher}"] if cipher else []
    if mac and mac != cipher and "gcm" not in cipher:
        opts += ["-o", f"MACs={mac}"]
    return opts


def openssh_negotiated(lab: Lab, host: str, options: Sequence[str]) -> str:
    """The cipher OpenSSH's client negotiates with ``host`` given ``options`` (from ``ssh -v``)."""
    r = subprocess.run(lab.ssh_argv(host, *options, "-v") + ["true"], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL, check=False)
    for line in r.stderr.splitlines():
        if "kex: server->client cipher:" in line:
            return line.split("cipher:", 1)[1].split()[0]
    return "unknown"


_HOST_TROUBLE = ("connection refused", "unreachable", "connection closed", "connection lost",
                 "connection reset", "broken pipe", "no route", "cannot connect", "connect call failed",
                 "killed by signal", "without an exit status", "no such file or directory: '/run/zfs")


def host_trouble(lab: Lab, exc: Exception) -> bool:
    """Did ``exc`` come from a lab host going away (rather than from what is measured)?"""
    states = lab.status()
    return (any(states.get(h) != "up" for h in (SOURCE, TARGET))
            or any(t in str(exc).lower() for t in _HOST_TROUBLE))


def warm_up(lab: Lab, what: str, fn: Callable[[], object], reset: Callable[[], None]) -> None:
    """One untimed run before the timed ones. The first receive after the source data was written
    ran 1.2-2.9 s slower than the others whichever method came first (the pools still writing the
    fresh data back); after this run and a ``sync`` every timed run starts from the same state."""
    log(f"{what}: one untimed run to warm the pools")
    attempt(lab, f"{what} warm-up", fn, reset)
    reset()
    os.sync()


def attempt(lab: Lab, what: str, fn: Callable[[], T], reset: Callable[[], None] | None = None,
            attempts: int = 6) -> T:
    """One measurement. When a lab host was stopped meanwhile (other sessions run "host down"
    tests on the same lab), wait for it, undo the partial work with ``reset`` and measure again."""
    for n in range(1, attempts + 1):
        lab.wait_up()
        try:
            return fn()
        except BenchError as exc:
            if n == attempts or not host_trouble(lab, exc):
                raise
            log(f"{what}: {str(exc)[:300]} — a lab host went away; measuring again")
            lab.wait_up()
            time.sleep(2.0)  # a host that just came back is still importing its pool
            if reset is not None:
                reset()
    raise AssertionError("not reached")


def zrelay_sync_results(r: subprocess.CompletedProcess, what: str, expect: set[str]) -> list[dict[str, Any]]:
    """The ``--json`` results of a ``zrelay sync`` run; BenchError unless every outcome is in ``expect``."""
    try:
        results = json.loads(r.stdout)
    except ValueError:
        raise BenchError(f"{what}: exit {r.returncode}, no JSON: {(r.stderr or r.stdout).strip()[-800:]}") from None
    bad = [x for x in results if x["outcome"] not in expect]
    if bad:
        detail = "; ".join(f"{x['target']}: {x['outcome']}: {x['message']}" for x in bad[:3])
        raise BenchError(f"{what}: {len(bad)} of {len(results)} results not {'/'.join(sorted(expect))}: {detail}")
    return list(results)

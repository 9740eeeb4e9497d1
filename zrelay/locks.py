"""One zrelay at a time per target: machine-wide run locks on target datasets and S3 dataset prefixes.

Why: two runs writing one target at once hurt each other. The loser of a full
send planned while the winner's receive had already created the target, was
refused as "no common base" and told to destroy the replica being written; an
incremental failed with a bare "dataset is busy". A run therefore holds a lock
on each target for the whole plan-and-transfer, and a second run waits for it
(``--wait-lock SECONDS``) or skips that target, naming who holds it.

How: one lock file per target, ``flock``-ed exclusively. The kernel releases a
flock when its holder dies (SIGKILL, power loss: the lock lives in memory, the
file is in ``/run``), so a crashed run never leaves a stale lock behind and no
pid has to be guessed at. The holder writes who it is into the file (pid,
start, run id, what it replicates) for the loser's message; the file itself is
never removed (removing a flock-ed file lets two holders in). Waiting polls
``LOCK_NB`` with ``asyncio.sleep``, so the event loop keeps moving the other
targets' bytes.

Where: ``$ZRELAY_LOCK_DIR`` when set, else ``/run/lock/zrelay`` (or
``/var/lock/zrelay``), created world-writable and sticky like ``/run/lock``
itself, so runs of *every user* on the machine meet there; only where neither
can be written, a directory of the user's own (``$XDG_RUNTIME_DIR/zrelay-locks``,
else beside the default state store), which only that user's runs share.

What a key is: the target as the *machine* knows it, not as one inventory
names it. Two inventories may call one host ``nas1`` and ``backup-box``, or
give it as ``localhost`` and ``127.0.0.1``: the key is the resolved address
(the lowest one ``getaddrinfo`` gives, IPv4 first; an IP literal as written,
normalised), the SSH port and the dataset. A name that does not resolve here
(an ``~/.ssh/config`` alias, a host behind ProxyJump) keys as its lower-cased
name. Job names and inventory host names play no part. S3 keys are the
endpoint, bucket and the dataset's key prefix (``PREFIX zrelay/v1/HOST/DATASET/``),
which is exactly what two pushes would both write.

Looking without taking: dry runs and ``status`` change nothing, so they hold
no lock, but they must not plan a target a run is writing (a full receive shows
the new dataset before its first snapshot: "no common base", destroy it). They
``probe`` the lock: the kernel's list of file locks (``/proc/locks``) names the
holder's pid without touching the lock, so a real run is never kept from it;
where that list cannot be read, a shared ``LOCK_NB`` taken and dropped at once
(which a run's own attempt in that instant would see as busy for a moment, and
``acquire`` tries again). ``while_free`` looks before and after the work, so a
run that came and went meanwhile is noticed too.

Not covered: runs on *other* machines (a flock is local; run a target's
replication from one machine), and nested targets (a recursive job's target
and another job's target inside it are separate locks).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Awaitable, Callable, Mapping, TypeVar

from zrelay.errors import TargetBusy
from zrelay.procs import process_started

ENV_VAR = "ZRELAY_LOCK_DIR"
SHARED_PARENTS = ("/run/lock", "/var/lock")
SUBDIR = "zrelay"
POLL_INTERVAL = 0.25          # s between LOCK_NB attempts while waiting
HOLDER_GRACE = 1.0            # s a loser waits for a fresh holder to write who it is
RECORD_MAX = 4096             # bytes of a lock file read as its record (who holds it, or when it was let go)
RESOLVE_TIMEOUT = 5.0         # s for getaddrinfo; after that the name itself is the key
PROC_LOCKS = "/proc/locks"    # the kernel's list of file locks and their holders (Linux)
PLAN_TRIES = 3                # while_free: runs that came and went during the work, then busy

T = TypeVar("T")
_JSON = json.JSONEncoder(ensure_ascii=False)   # one encoder for every record (json.dumps makes one per call)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its lock file says."""

    pid: int | None
    started: float | None
    run_id: int | None
    command: str
    what: str
    hostname: str = ""

    def describe(self) -> str:
        """``another zrelay (pid 4242, started 2024-06-10 14:02:11) is replicating nas1:tank/x → vault:backup/x``."""
        parts = []
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        if self.started is not None:
            parts.append(f"started {format_time(self.started)}")
        if self.run_id:
            parts.append(f"run {self.run_id}")
        who = f"another zrelay{' ' + self.command if self.command else ''}"
        if parts:
            who += f" ({', '.join(parts)})"
        return f"{who} is replicating {self.what or 'it'}"


def format_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# --- who we are ---------------------------------------------------------------------


@dataclass
class _Owner:
    run_id: int | None = None
    command: str = ""
    started: float | None = None


_owner = _Owner()


def identify(run_id: int | None = None, command: str = "", started: float | None = None) -> None:
    """Name this process's run in the locks it takes (the CLI calls it once its run is recorded)."""
    _owner.run_id = run_id or None
    _owner.command = command
    _owner.started = started


_IMPORTED = time.time()
_HOSTNAME = socket.gethostname()


_STARTED: dict[int, float] = {}   # pid → its start time: read from /proc once per process


def _self_started() -> float:
    if _owner.started:
        return _owner.started
    pid = os.getpid()
    if pid not in _STARTED:
        _STARTED[pid] = process_started(pid) or _IMPORTED
    return _STARTED[pid]


# --- keys -------------------------------------------------------------------------------


def normalise_address(address: str) -> str | None:
    """An IP literal in one spelling (``::FFFF:127.0.0.1`` → ``127.0.0.1``), or None for a name."""
    text = address.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.compressed


def _pick(infos: list[tuple]) -> str | None:
    """The lowest address of a getaddrinfo answer, IPv4 before IPv6: the same for every alias."""
    found = {normalise_address(str(info[4][0])) for info in infos}
    addresses = sorted((ipaddress.ip_address(a) for a in found if a), key=lambda ip: (ip.version, int(ip)))
    return addresses[0].compressed if addresses else None


async def resolve(address: str, timeout: float = RESOLVE_TIMEOUT) -> str:
    """The address a lock key uses for ``address`` (see the module's docstring)."""
    literal = normalise_address(address)
    if literal is not None:
        return literal
    try:
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(loop.getaddrinfo(address, None, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError, UnicodeError):
        infos = []
    return _pick(infos) or address.strip().lower()


def resolve_now(address: str) -> str:
    """``resolve`` for code without an event loop."""
    literal = normalise_address(address)
    if literal is not None:
        return literal
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        infos = []
    return _pick(infos) or address.strip().lower()


def dataset_key(resolved_address: str, port: int, dataset: str) -> str:
    """The key of a dataset on a host: resolved address, SSH port, dataset."""
    return f"zfs {resolved_address} {int(port)} {dataset}"


def s3_key(endpoint: str | None, region: str | None, bucket: str, key_prefix: str) -> str:
    """The key of one dataset's keys in a bucket: endpoint (or AWS region), bucket, key prefix."""
    where = (endpoint or "").strip().rstrip("/").lower() or f"aws {region or ''}".strip()
    return f"s3 {where} {bucket} {key_prefix}"


# --- the directory ------------------------------------------------------------------------


_DIRS: dict[tuple[str | None, ...], Path] = {}   # this process's lock directory, by the settings that chose it
#: the same, by ``$ZRELAY_LOCK_DIR`` alone where nothing else chose it (that variable, or a shared
#: directory): one environment lookup per lock instead of four
_BY_SETTING: dict[str | None, Path] = {}


def lock_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where lock files live (see the module's docstring); created when missing. Chosen once per
    process and settings (a run takes a lock per target; RunLock chooses again if it vanished)."""
    if environ is not None:
        return _choose_dir(environ)
    setting = os.environ.get(ENV_VAR)
    path = _BY_SETTING.get(setting)
    if path is not None:
        return path
    key = (setting, *(os.environ.get(v) for v in ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "HOME")))
    path = _DIRS.get(key)
    if path is None:
        path = _DIRS[key] = _choose_dir(os.environ)
        if setting or str(path.parent) in SHARED_PARENTS:
            _BY_SETTING[setting] = path
    return path


def _choose_dir(env: Mapping[str, str]) -> Path:
    if env.get(ENV_VAR):
        path = Path(env[ENV_VAR]).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    for parent in SHARED_PARENTS:
        path = Path(parent) / SUBDIR
        if _shared_dir(path):
            return path
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK | os.X_OK):
        path = Path(runtime) / "zrelay-locks"
    else:
        state = env.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
        path = Path(state) / "zrelay" / "locks"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _shared_dir(path: Path) -> bool:
    """``path`` exists (or could be made) as a directory every user can create lock files in."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not os.access(path.parent, os.W_OK | os.X_OK):
            return False
        try:
            os.mkdir(path)
            os.chmod(path, 0o1777)   # like /run/lock: everyone creates, only owners remove
        except FileExistsError:
            pass
        except OSError:
            return False
        try:
            st = os.lstat(path)
        except OSError:
            return False
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and os.access(path, os.W_OK | os.X_OK)


def lock_path(key: str, directory: Path | None = None) -> Path:
    """The lock file of ``key``: a hash, so any dataset name makes a safe file name."""
    return _lock_path(key, directory or lock_dir())


@functools.lru_cache(maxsize=1 << 16)
def _lock_path(key: str, directory: Path) -> Path:
    """lock_path, remembered: a daemon takes the same targets' locks every cycle."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    kind = key.split(" ", 1)[0]
    return directory / f"{kind}-{digest}.lock"


# --- the lock ---------------------------------------------------------------------------------


class RunLock:
    """An exclusive flock on one key's lock file, held while a run works on that target."""

    def __init__(self, key: str, what: str, directory: Path | None = None) -> None:
        self.key = key
        self.what = what
        self.path = lock_path(key, directory)
        self._chosen_dir = directory is None
        self.held = False
        self.waited = False
        #: When the previous holder let go (its record), so a caller can tell whether what it
        #: listed before taking the lock may have been changed by that holder since.
        self.previous_release: float | None = None
        self._fd: int | None = None
        self._writable = False
        self._size: int | None = None   # bytes in the lock file as this lock last read or wrote it

    # --- file ---

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        flags = os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            # Existing file first, without O_CREAT: in a sticky world-writable directory the kernel
            # refuses O_CREAT on another user's file (fs.protected_regular) even when it may be opened.
            for mode, writable in ((os.O_RDWR, True), (os.O_RDONLY, False)):
                try:
                    self._fd = os.open(self.path, mode | flags)
                    self._writable = writable
                    return self._fd
                except PermissionError:
                    continue
                except FileNotFoundError:
                    break
            else:
                raise PermissionError(errno.EACCES, "cannot open the lock file", str(self.path))
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | flags, 0o666)
            except FileExistsError:
                continue   # created by another run meanwhile: open that one
            except FileNotFoundError:
                if self._chosen_dir and not self.path.parent.exists():
                    _DIRS.clear()   # the directory went away (a reboot's tmpfs, a cleaner): choose again
                    _BY_SETTING.clear()
                    self.path = lock_path(self.key)
                    self._chosen_dir = False
                    continue
                raise
            try:
                os.fchmod(fd, 0o666)   # other users' runs write their name into it too
            except OSError:
                pass
            self._fd, self._writable = fd, True
            return fd

    def _read(self) -> dict:
        fd = self._fd
        if fd is None:
            return {}
        try:
            data = os.pread(fd, RECORD_MAX, 0)
        except OSError:
            self._size = None
            return {}
        self._size = len(data)
        try:
            value = json.loads(data.decode() or "{}")
        except (ValueError, UnicodeDecodeError):
            return {}
        return value if isinstance(value, dict) else {}

    def _write(self, record: str) -> None:
        """The record (a line of JSON), padded with blanks over whatever longer record the file
        held: one write, no truncation (a journalled metadata change on a disk filesystem, twice
        per target). Readers read the first RECORD_MAX bytes, and JSON ignores the blanks."""
        if self._fd is None or not self._writable:
            return
        data = record.encode()
        try:
            if self._size is None:   # what the file holds is unknown: start it afresh
                os.ftruncate(self._fd, 0)
            elif len(data) < self._size:
                data = data.ljust(self._size, b" ")
            os.pwrite(self._fd, data, 0)
        except OSError:
            self._size = None   # who holds the lock is information; the flock itself is what counts
            return
        self._size = len(data)

    # --- locking ---

    def try_acquire(self) -> bool:
        """Take the lock if free (never blocks); True when this run holds it now."""
        if self.held:
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self.held = True
        previous = self._read()
        released = previous.get("released")
        self.previous_release = float(released) if isinstance(released, (int, float)) else None
        held, _ = _records(os.getpid(), _HOSTNAME, _self_started(), _owner.run_id, _owner.command,
                           self.what, self.key)
        self._write(f"{held}{time.time()!r}}}\n")
        return True

    def holder(self) -> Holder | None:
        """Who the lock file names as holder (None when it names nobody)."""
        record = self._read()
        if "pid" not in record or "released" in record:
            return None
        return _holder_of(record)

    async def _holder_soon(self) -> Holder | None:
        """The holder, allowing a run that has just taken the lock a moment to write its name."""
        deadline = time.monotonic() + HOLDER_GRACE
        while True:
            found = self.holder()
            if found is not None or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(0.05)

    async def acquire(self, wait: float = 0.0, on_wait: Callable[[Holder | None], None] | None = None,
                      poll: float = POLL_INTERVAL) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raises TargetBusy naming the holder."""
        if self.try_acquire():
            return
        holder = await self._holder_soon()
        if self.try_acquire():   # released while we read who held it
            self.waited = True
            return
        if wait <= 0:
            self.close()
            raise TargetBusy(self.what, holder)
        if on_wait is not None:
            on_wait(holder)
        deadline = time.monotonic() + wait
        while True:
            await asyncio.sleep(max(0.0, min(poll, deadline - time.monotonic())))
            if self.try_acquire():
                self.waited = True
                return
            if time.monotonic() >= deadline:
                holder = await self._holder_soon() or holder
                self.close()
                raise TargetBusy(self.what, holder, waited=wait)

    def release(self) -> None:
        """Let go: record when (for the next holder), unlock, close."""
        if self.held:
            _, released = _records(os.getpid(), _HOSTNAME, _self_started(), _owner.run_id, _owner.command,
                                   self.what, self.key)
            self._write(f'{{"released": {time.time()!r}, {released}\n')
            self.held = False
        self.close()

    def close(self) -> None:
        fd, self._fd = self._fd, None
        self.held = False
        self._size = None
        if fd is not None:
            os.close(fd)   # closing the only descriptor drops the flock

    def __del__(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    async def __aenter__(self) -> "RunLock":
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()


@functools.lru_cache(maxsize=8192)
def _records(pid: int, hostname: str, started: float, run_id: int | None, command: str, what: str,
             key: str) -> tuple[str, str]:
    """A lock's two records but for their time, encoded once (a daemon takes the same locks every
    cycle): the holder's, ending where ``"acquired"``'s value goes, and the let-go one's, after
    its ``"released"`` value. A time goes in as ``repr``, which is how JSON writes a float."""
    held = _JSON.encode({"pid": pid, "hostname": hostname, "started": started, "run_id": run_id,
                         "command": command, "what": what, "key": key})
    released = _JSON.encode({"pid": pid, "what": what, "key": key})
    return f'{held[:-1]}, "acquired": ', released[1:]


def _holder_of(record: dict) -> Holder:
    """The Holder a lock file's record names."""
    def num(name: str) -> float | None:
        value = record.get(name)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    pid, run_id = num("pid"), num("run_id")
    return Holder(int(pid) if pid is not None else None, num("started"),
                  int(run_id) if run_id is not None else None, str(record.get("command") or ""),
                  str(record.get("what") or ""), str(record.get("hostname") or ""))


# --- looking without taking -------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What a look at a key's lock found, without taking it."""

    holder: Holder | None                      # the other zrelay holding it now; None: nobody else
    stamp: tuple[int, ...] | None = None   # the lock file's device, inode, mtime, size and a hash of
                                           # its record: a run taking or letting go of the lock writes
                                           # its own time there, so it moves (mtime alone moves in the
                                           # kernel's coarse ticks, and padded records keep the size)

    def changed_since(self, earlier: "Probe") -> bool:
        """Whether a run took (or let go of) the lock between ``earlier`` and this look."""
        return self.stamp != earlier.stamp


def probe(key: str, directory: Path | None = None) -> Probe:
    """Who holds ``key``'s lock right now, without taking it (see the module's docstring).

    The holder is named by its lock file; where the file does not (yet) name the
    process the kernel says holds the lock, by that pid and its start time.
    This process's own locks do not count: it is not "another zrelay".
    """
    path = lock_path(key, directory)
    if not os.access(path, os.F_OK, follow_symlinks=False):
        return Probe(None)   # never locked on this machine since boot (asked without an exception: status
                             # looks at thousands of targets, most never locked here)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return Probe(None)   # never locked on this machine since boot
    except OSError:
        return Probe(None)   # unreadable (another user's mode): its runs cannot be ours to wait for
    try:
        st = os.fstat(fd)
        try:
            seen = os.pread(fd, RECORD_MAX, 0)
        except OSError:
            seen = b""
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, hash(seen))
        pid = _kernel_holder(st)
        if pid is None:   # no /proc/locks: a shared flock, dropped at once, tells whether one is held
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                pid = 0
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return Probe(None, stamp)
        elif pid < 0:
            return Probe(None, stamp)
        try:
            record = json.loads(os.pread(fd, RECORD_MAX, 0).decode() or "{}")
        except (OSError, ValueError, UnicodeDecodeError):
            record = {}
        named = isinstance(record, dict) and "pid" in record and "released" not in record
        holder = _holder_of(record) if named else None
        if holder is None or (pid > 0 and holder.pid != pid):   # the record is a previous holder's
            holder = Holder(pid or None, process_started(pid) if pid else None, None, "", "")
        return Probe(None if holder.pid == os.getpid() else holder, stamp)
    finally:
        os.close(fd)


def _kernel_holder(st: os.stat_result) -> int | None:
    """The pid holding an exclusive flock on the file ``st`` describes, per ``/proc/locks``: 0 when
    held by a process this pid namespace cannot see, -1 when not held, None when the list is unreadable."""
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open(PROC_LOCKS, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "5: FLOCK  ADVISORY  WRITE 4242 fe:00:2147080 0 EOF"; waiters have "->" after the number
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[5] == where:
            try:
                return max(int(fields[4]), 0)
            except ValueError:
                return 0
    return -1


async def while_free(key: str, what: str, work: Callable[[], Awaitable[T]], *, wait: float = 0.0,
                     on_wait: Callable[[Holder | None], None] | None = None,
                     on_change: Callable[[], None] = lambda: None, poll: float = POLL_INTERVAL,
                     tries: int = PLAN_TRIES, directory: Path | None = None) -> T:
    """``work`` that reads a target without changing it (a dry run's plan, ``status``), done while no
    other zrelay holds ``key``; raises TargetBusy naming the holder.

    Why: a run holding the lock may be half-way through writing the target, and a
    plan from that listing says "no common base" and advises destroying the replica
    being written. So: look (``probe``, which leaves the lock alone), work, look
    again. Held at the first look: wait up to ``wait`` s for it to be let go, like
    ``RunLock.acquire``. Held at the second, or taken and let go in between (the
    lock file moved): ``on_change`` (forget what was listed) and work again.
    """
    deadline: float | None = None
    last: Holder | None = None
    for _ in range(max(1, tries)):
        while True:
            before = probe(key, directory)
            if before.holder is None:
                break
            last = before.holder
            now = time.monotonic()
            if deadline is None:
                if wait <= 0:
                    raise TargetBusy(what, last, planning=True)
                deadline = now + wait
                if on_wait is not None:
                    on_wait(last)
            if now >= deadline:
                raise TargetBusy(what, last, wait, planning=True)
            await asyncio.sleep(max(0.0, min(poll, deadline - now)))
        result = await work()
        after = probe(key, directory)
        if after.holder is None and not after.changed_since(before):
            return result
        last = after.holder or last
        on_change()
    raise TargetBusy(what, last, planning=True)


__all__ = ["Holder", "RunLock", "Probe", "identify", "resolve", "resolve_now",
           "dataset_key", "s3_key", "lock_dir", "lock_path", "normalise_address", "format_time", "probe",
           "while_free"]

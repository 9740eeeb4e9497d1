#!/usr/bin/env python3
"""zfs-fuse lab: three fake ZFS hosts on one machine.

Each host lives in its own mount namespace with its own zfs-fuse daemon, its
own pool (a sparse file image) and its own sshd bound to one loopback address:

    nas1   127.0.0.2   pool tank
    nas2   127.0.0.3   pool tank
    vault  127.0.0.4   pool backup

An SSH session to 127.0.0.N runs inside that host's namespace, so ``zfs ...``
over SSH talks to that host's daemon and sees only that host's pool.

Usage:
    zfslab.py up [HOST...]          start (idempotent; no-op when already up)
    zfslab.py down [--purge]        stop everything started here (by PID)
    zfslab.py status [--json]       per-host state, PIDs, address
    zfslab.py run HOST -- CMD...    run CMD inside HOST's mount namespace
    zfslab.py stop-host HOST...     stop one host (others stay up)
    zfslab.py start-host HOST...    start one host
    zfslab.py check                 report missing prerequisites
    zfslab.py env                   print shell exports for the lab paths

State lives in $ZRELAY_LAB_DIR (default /var/tmp/zrelay-lab):

    id_ed25519, id_ed25519.pub      client key (no passphrase)
    authorized_keys                 the client public key (used by every sshd)
    known_hosts                     host key line for each address
    ssh_config                      ``Host 127.0.0.*`` block: key, known_hosts, root
    HOST/sshd_config                per-host sshd configuration
    HOST/ssh_host_ed25519_key[.pub] per-host host key
    HOST/etczfs/                    bind-mounted over /etc/zfs (copy of zfsrc)
    HOST/varlib/                    bind-mounted over /var/lib/zfs (zpool.cache)
    HOST/home/                      bind-mounted over root's home: each host has its own,
                                    as separate machines do (no shared shell start-up files)
    HOST/disk/POOL.img              sparse pool image
    HOST/ns.pid                     namespace anchor process
    HOST/zfs-fuse.pid, sshd.pid     daemons
    HOST/*.log                      daemon logs
    leases/PID                      pytest sessions using the lab (tests/labfixture.py)

Next to it, DIR.lock (e.g. /var/tmp/zrelay-lab.lock) serializes up/down/
start-host/stop-host between concurrent callers.

Every host namespace also gets a private tmpfs on /tank and /backup (the pool
mountpoints), see start_holder().

Only the Python standard library is used; the script must run on a fresh
Debian machine with zfs-fuse and openssh-server installed.

Note on zfs-fuse: right after a ``zfs receive`` the daemon may answer
"dataset is busy" to destroy/rename/export for a short while; callers retry.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HOSTS: dict[str, tuple[str, str]] = {
    "nas1": ("127.0.0.2", "tank"),
    "nas2": ("127.0.0.3", "tank"),
    "vault": ("127.0.0.4", "backup"),
}
DEFAULT_DIR = "/var/tmp/zrelay-lab"
SSH_PORT = 22
#: Home of the user the lab's sshd logs in (root); every host gets its own (start_holder).
ROOT_HOME = pwd.getpwuid(0).pw_dir
IMAGE_SIZE = 4 * 1024**3  # sparse

DAEMON_READY_TIMEOUT = 30.0
SSHD_READY_TIMEOUT = 15.0
EXPORT_RETRY_SECONDS = 10.0

# binary -> Debian package that provides it
REQUIRED_BINARIES = {
    "zfs-fuse": "zfs-fuse",
    "zpool": "zfs-fuse",
    "zfs": "zfs-fuse",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mount": "mount",
    "bash": "bash",
    "sleep": "coreutils",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
}
SSHD = "/usr/sbin/sshd"


class LabError(Exception):
    pass


SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def sbin_path(path: str | None = None) -> str:
    """PATH plus the sbin directories (zfs, zpool, zfs-fuse live in /usr/sbin)."""
    parts = [p for p in (path if path is not None else os.environ.get("PATH", "")).split(":") if p]
    parts += [d for d in SBIN_DIRS if d not in parts]
    return ":".join(parts)


# --------------------------------------------------------------------------
# paths


def lab_dir() -> Path:
    return Path(os.environ.get("ZRELAY_LAB_DIR") or DEFAULT_DIR).absolute()


def lock_path() -> Path:
    d = lab_dir()
    return d.parent / (d.name + ".lock")


def host_dir(host: str) -> Path:
    return lab_dir() / host


def paths() -> dict[str, Path]:
    d = lab_dir()
    return {
        "dir": d,
        "key": d / "id_ed25519",
        "pub": d / "id_ed25519.pub",
        "authorized_keys": d / "authorized_keys",
        "known_hosts": d / "known_hosts",
        "ssh_config": d / "ssh_config",
    }


def check_host(host: str) -> str:
    if host not in HOSTS:
        raise LabError(f"unknown host {host!r} (known: {', '.join(HOSTS)})")
    return host


# --------------------------------------------------------------------------
# prerequisites


def preflight() -> list[str]:
    """Return human-readable reasons why the lab cannot run here (empty = ok)."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("must run as root (mount namespaces, FUSE, sshd on port 22)")
    fuse = Path("/dev/fuse")
    if not fuse.exists():
        problems.append(
            "/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a "
            "container, pass the device (--device /dev/fuse --cap-add SYS_ADMIN)"
        )
    missing: dict[str, list[str]] = {}
    for binary, package in REQUIRED_BINARIES.items():
        if shutil.which(binary, path=sbin_path()) is None:
            missing.setdefault(package, []).append(binary)
    if not os.access(SSHD, os.X_OK):
        missing.setdefault("openssh-server", []).append(SSHD)
    for package, binaries in missing.items():
        problems.append(
            f"missing {', '.join(binaries)}: apt-get install -y {package}"
        )
    if not problems:
        try:
            r = subprocess.run(
                ["unshare", "-m", "--propagation", "private", "true"],
                capture_output=True, text=True, timeout=10,
            )
            if r.returncode != 0:
                problems.append(
                    "cannot create a mount namespace (unshare -m): "
                    + (r.stderr.strip() or f"exit {r.returncode}")
                )
        except (OSError, subprocess.TimeoutExpired) as e:
            problems.append(f"cannot create a mount namespace: {e}")
    return problems


# --------------------------------------------------------------------------
# process helpers


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(path: Path, pid: int) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(path)


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:].startswith(("Z", "X"))


def reap(pid: int) -> None:
    """Collect our own exited children so they do not linger as zombies."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def mnt_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def holder_argv0(host: str) -> str:
    return f"zrelay-lab-holder:{host_dir(host)}"


def proc_alive(host: str, role: str, pid: int | None) -> bool:
    """True if pid is alive and is the process we started for (host, role)."""
    if not pid:
        return False
    reap(pid)
    argv = cmdline(pid)
    if argv is None or is_zombie(pid):
        return False
    hd = str(host_dir(host))
    if role == "ns":
        return argv[0] == holder_argv0(host) and mnt_ns(pid) != mnt_ns("self")
    if role == "zfs-fuse":
        return os.path.basename(argv[0]) == "zfs-fuse" and f"{hd}/zfs-fuse.pid" in argv
    if role == "sshd":
        # sshd rewrites its title: "sshd: /usr/sbin/sshd -D -f CFG ... [listener] ..."
        return argv[0].startswith(("sshd", SSHD)) and f"-f {hd}/sshd_config" in " ".join(argv)
    raise ValueError(role)


ROLES = ("ns", "zfs-fuse", "sshd")


def pidfile(host: str, role: str) -> Path:
    return host_dir(host) / f"{role}.pid"


def live_pids(host: str) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for role in ROLES:
        pid = read_pid(pidfile(host, role))
        out[role] = pid if proc_alive(host, role, pid) else None
    return out


def ns_pid(host: str) -> int:
    """PID whose mount namespace is the host's; raises LabError if the host is down."""
    check_host(host)
    pids = live_pids(host)
    for role in ROLES:
        if pids[role]:
            return pids[role]  # type: ignore[return-value]
    raise LabError(f"host {host} is down (run: zfslab.py up)")


def nsenter_argv(host: str, argv: list[str], pid: int | None = None, wd: str | None = None) -> list[str]:
    pid = pid or ns_pid(host)
    cmd = ["nsenter", "-t", str(pid), "-m"]
    if wd:
        cmd.append(f"--wd={wd}")
    return cmd + ["--"] + list(argv)


def ns_run(host: str, argv: list[str], pid: int | None = None, timeout: float = 60.0,
           check: bool = False) -> subprocess.CompletedProcess:
    r = subprocess.run(nsenter_argv(host, argv, pid), capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, PATH=sbin_path()))
    if check and r.returncode != 0:
        raise LabError(
            f"{host}: {' '.join(argv)} failed (exit {r.returncode}): "
            f"{(r.stderr or r.stdout).strip()}"
        )
    return r


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pid)
        if cmdline(pid) is None or is_zombie(pid):
            return True
        time.sleep(0.05)
    return False


def kill_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL; returns once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 5.0)


def processes_in_ns(ns: str) -> list[int]:
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        if mnt_ns(entry) == ns:
            out.append(int(entry))
    return out


def tcp_accepts(addr: str, port: int = SSH_PORT, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


# --------------------------------------------------------------------------
# state preparation


def keygen(path: Path, comment: str) -> None:
    if path.exists() and path.with_suffix(".pub").exists():
        return
    for p in (path, path.with_suffix(".pub")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True,
    )


def sshd_config_text(host: str) -> str:
    addr, _ = HOSTS[host]
    p = paths()
    hd = host_dir(host)
    sftp = "/usr/lib/openssh/sftp-server"
    lines = [
        f"# zrelay lab sshd for {host}",
        f"ListenAddress {addr}:{SSH_PORT}",
        "AddressFamily inet",
        f"HostKey {hd}/ssh_host_ed25519_key",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PidFile none",
        "StrictModes no",
        f"AuthorizedKeysFile {p['authorized_keys']}",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "PermitUserEnvironment no",
        # benchmarks open many connections at once
        "MaxStartups 100:30:200",
        "MaxSessions 10",
        "LogLevel INFO",
    ]
    if os.path.exists(sftp):
        lines.append(f"Subsystem sftp {sftp}")
    return "\n".join(lines) + "\n"


def ssh_config_text() -> str:
    p = paths()
    aliases = []
    for host, (addr, _) in HOSTS.items():
        aliases += [f"Host {host}", f"    HostName {addr}", ""]
    common = [
        "Host 127.0.0.* " + " ".join(HOSTS),
        "    User root",
        f"    IdentityFile {p['key']}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {p['known_hosts']}",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    CheckHostIP no",
        "    UpdateHostKeys no",
        "    BatchMode yes",
        "    ConnectTimeout 10",
        "    LogLevel ERROR",
    ]
    return "# zrelay lab: ssh -F THIS_FILE 127.0.0.2 zfs list\n" + "\n".join(aliases + common) + "\n"


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def prepare_common() -> None:
    p = paths()
    p["dir"].mkdir(parents=True, exist_ok=True)
    os.chmod(p["dir"], 0o700)
    keygen(p["key"], "zrelay-lab-client")
    write_if_changed(p["authorized_keys"], p["pub"].read_text(), 0o600)
    for host in HOSTS:
        prepare_host(host)
    known = []
    for host, (addr, _) in HOSTS.items():
        pub = (host_dir(host) / "ssh_host_ed25519_key.pub").read_text().split()
        known.append(f"{addr} {pub[0]} {pub[1]}")
    write_if_changed(p["known_hosts"], "\n".join(known) + "\n")
    write_if_changed(p["ssh_config"], ssh_config_text())


def prepare_host(host: str) -> None:
    hd = host_dir(host)
    for sub in ("etczfs", "varlib", "disk"):
        (hd / sub).mkdir(parents=True, exist_ok=True)
    (hd / "home").mkdir(mode=0o700, exist_ok=True)
    etc = Path("/etc/zfs")
    if etc.is_dir():
        for f in etc.iterdir():
            if f.is_file() and not (hd / "etczfs" / f.name).exists():
                shutil.copy2(f, hd / "etczfs" / f.name)
    keygen(hd / "ssh_host_ed25519_key", f"zrelay-lab-{host}")
    write_if_changed(hd / "sshd_config", sshd_config_text(host))


# --------------------------------------------------------------------------
# host lifecycle


def host_state(host: str) -> tuple[str, dict[str, int | None]]:
    """('up' | 'down' | 'partial', live pids)."""
    pids = live_pids(host)
    if not any(pids.values()):
        return "down", pids
    if not all(pids.values()):
        return "partial", pids
    addr, pool = HOSTS[host]
    try:
        r = ns_run(host, ["zpool", "list", "-H", "-o", "name", pool], pid=pids["ns"], timeout=10)
    except subprocess.TimeoutExpired:
        return "partial", pids
    if r.returncode != 0 or not tcp_accepts(addr):
        return "partial", pids
    r = ns_run(host, ["zfs", "get", "-H", "-o", "value", "mounted", pool], pid=pids["ns"], timeout=10)
    if r.stdout.strip() != "yes":
        return "partial", pids
    return "up", pids


def pool_mountpoints() -> list[str]:
    """Default mountpoints of the lab pools (same path on several hosts)."""
    return sorted({f"/{pool}" for _, pool in HOSTS.values()})


def start_holder(host: str) -> int:
    hd = host_dir(host)
    for m in pool_mountpoints():
        Path(m).mkdir(mode=0o755, exist_ok=True)
    Path("/run/zfs").mkdir(parents=True, exist_ok=True)
    Path("/var/lib/zfs").mkdir(parents=True, exist_ok=True)
    Path("/etc/zfs").mkdir(parents=True, exist_ok=True)
    script = (
        "set -e\n"
        "mount -t tmpfs -o mode=0755,size=16m zrelay-lab /run/zfs\n"
        # the daemon's lock (/var/lock/zfs/zfs_lock): without a private
        # /run/lock a second daemon exits 1 silently
        "mount -t tmpfs -o mode=1777,size=16m zrelay-lab /run/lock\n"
        f"mount --bind '{hd}/etczfs' /etc/zfs\n"
        # zpool.cache lives here: a shared /var/lib/zfs makes a second daemon
        # import the first host's pools (two daemons on one image = corruption)
        f"mount --bind '{hd}/varlib' /var/lib/zfs\n"
        # Root's home of its own. Sharing the machine's, every host's login shell ran this
        # machine's start-up files, and hosts interfered through them (a lock file in the
        # shared home held one host's login while another's ran): no two real machines do.
        f"mount --bind '{hd}/home' '{ROOT_HOME}'\n"
        # A private tmpfs under every pool mountpoint. Without it all hosts
        # share the directory /tank of the real root filesystem, and when one
        # host's daemon unmounts and rmdir's /tank the kernel detaches the
        # /tank mounts of every other namespace (nas2 loses its pool when
        # nas1 stops). With the tmpfs, that rmdir hits a mount root: EBUSY.
        + "".join(f"mount -t tmpfs -o mode=0755,size=1m zrelay-lab {m}\n" for m in pool_mountpoints())
        + "echo ready\n"
        f"exec -a '{holder_argv0(host)}' sleep infinity </dev/null >/dev/null 2>&1\n"
    )
    with open(hd / "ns.log", "ab") as log:
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "--", "bash", "-c", script],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
            start_new_session=True, cwd="/",
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    if line.strip() != b"ready":
        proc.wait(timeout=5)
        raise LabError(f"{host}: could not set up the mount namespace:\n{log_tail(hd / 'ns.log')}")
    write_pid(pidfile(host, "ns"), proc.pid)
    # the holder is `unshare` exec'ing bash exec'ing sleep: same PID throughout
    deadline = time.monotonic() + 5
    while not proc_alive(host, "ns", proc.pid):
        if time.monotonic() > deadline:
            raise LabError(f"{host}: namespace holder did not come up")
        time.sleep(0.01)
    return proc.pid


def start_daemon(host: str, holder: int) -> int:
    hd = host_dir(host)
    pf = hd / "zfs-fuse.pid"
    with contextlib.suppress(FileNotFoundError):
        pf.unlink()
    with open(hd / "zfs-fuse.log", "ab") as log:
        proc = subprocess.Popen(
            nsenter_argv(host, ["zfs-fuse", "--no-daemon", "--no-kstat-mount", "-p", str(pf)], holder),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, cwd="/",
        )
    # nsenter (mount namespace only) exec's the program: the PID is the daemon's
    write_pid(pf, proc.pid)
    _, pool = HOSTS[host]
    deadline = time.monotonic() + DAEMON_READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise LabError(
                f"{host}: zfs-fuse exited with status {proc.returncode}:\n{log_tail(hd / 'zfs-fuse.log')}"
            )
        r = ns_run(host, ["zpool", "list", "-H", "-o", "name"], pid=holder, timeout=10)
        if r.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise LabError(f"{host}: zfs-fuse did not answer within {DAEMON_READY_TIMEOUT:.0f}s: {r.stderr.strip()}")
        time.sleep(0.1)
    if read_pid(pf) != proc.pid:  # the daemon rewrites it with its own PID
        write_pid(pf, proc.pid)
    return proc.pid


def ensure_pool(host: str, holder: int) -> str:
    _, pool = HOSTS[host]
    hd = host_dir(host)
    r = ns_run(host, ["zpool", "list", "-H", "-o", "name"], pid=holder, timeout=30, check=True)
    if pool in r.stdout.split():
        # imported from this host's zpool.cache at daemon start, or already running
        ns_run(host, ["zfs", "mount", "-a"], pid=holder, timeout=60)
        return "present"
    image = hd / "disk" / f"{pool}.img"
    if image.exists():
        r = ns_run(host, ["zpool", "import", "-d", str(image.parent), pool], pid=holder, timeout=60)
        if r.returncode != 0:
            # not exported cleanly (daemon killed): the pool still looks in use
            r2 = ns_run(host, ["zpool", "import", "-f", "-d", str(image.parent), pool], pid=holder, timeout=60)
            if r2.returncode != 0:
                raise LabError(
                    f"{host}: zpool import {pool} failed: {r.stderr.strip()} / {r2.stderr.strip()}"
                )
        return "imported"
    with open(image, "wb") as f:
        f.truncate(IMAGE_SIZE)
    r = ns_run(host, ["zpool", "create", pool, str(image)], pid=holder, timeout=60)
    if r.returncode != 0:
        image.unlink()
        raise LabError(f"{host}: zpool create {pool} failed: {r.stderr.strip()}")
    return "created"


def start_sshd(host: str, holder: int) -> int:
    addr, _ = HOSTS[host]
    hd = host_dir(host)
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    if tcp_accepts(addr):
        raise LabError(
            f"{host}: something else already listens on {addr}:{SSH_PORT} "
            "(a system sshd bound to 0.0.0.0? restrict it with ListenAddress)"
        )
    cfg = hd / "sshd_config"
    log = hd / "sshd.log"
    test = subprocess.run([SSHD, "-t", "-f", str(cfg)], capture_output=True, text=True)
    if test.returncode != 0:
        raise LabError(f"{host}: sshd -t rejects {cfg}: {test.stderr.strip()}")
    proc = subprocess.Popen(
        nsenter_argv(host, [SSHD, "-D", "-f", str(cfg), "-E", str(log)], holder),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, cwd="/",
    )
    write_pid(pidfile(host, "sshd"), proc.pid)
    deadline = time.monotonic() + SSHD_READY_TIMEOUT
    while not tcp_accepts(addr, timeout=0.2):
        if proc.poll() is not None:
            raise LabError(f"{host}: sshd exited with status {proc.returncode}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise LabError(f"{host}: sshd does not accept connections on {addr}:{SSH_PORT}")
        time.sleep(0.05)
    return proc.pid


def start_host(host: str) -> str:
    """Bring one host up; returns a short description of what was done."""
    t0 = time.monotonic()
    state, pids = host_state(host)
    if state == "up":
        return "already up"
    holder = pids["ns"]
    if not holder:
        # without the namespace anchor nothing else can be trusted: clean slate
        stop_host(host, quiet=True)
        holder = start_holder(host)
    if not pids["zfs-fuse"] or not proc_alive(host, "zfs-fuse", pids["zfs-fuse"]):
        start_daemon(host, holder)
    pool_action = ensure_pool(host, holder)
    if not live_pids(host)["sshd"]:
        start_sshd(host, holder)
    addr, pool = HOSTS[host]
    state, pids = host_state(host)
    if state != "up":
        raise LabError(f"{host}: started but not healthy ({state}, pids {pids}); see logs in {host_dir(host)}")
    return f"up at {addr}, pool {pool} {pool_action}, {time.monotonic() - t0:.1f}s"


def export_pools(host: str, pid: int) -> bool:
    """Export every pool the host's daemon has open; True when none is left."""
    r = ns_run(host, ["zpool", "list", "-H", "-o", "name"], pid=pid, timeout=10)
    if r.returncode != 0:
        return False
    clean = True
    for pool in r.stdout.split():
        deadline = time.monotonic() + EXPORT_RETRY_SECONDS
        while True:
            # zfs-fuse may report "busy" shortly after a receive; retry briefly
            r = ns_run(host, ["zpool", "export", pool], pid=pid, timeout=60)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        if r.returncode != 0:
            r2 = ns_run(host, ["zpool", "export", "-f", pool], pid=pid, timeout=60)
            if r2.returncode != 0:
                # the pool stays in this host's zpool.cache and is re-opened at next start
                print(f"{host}: warning: zpool export {pool} failed: {r.stderr.strip()}", file=sys.stderr)
                clean = False
    return clean


def stop_host(host: str, quiet: bool = False) -> str:
    hd = host_dir(host)
    if not hd.exists():
        return "down"
    pids = live_pids(host)
    if not any(pids.values()):
        for role in ROLES:
            with contextlib.suppress(FileNotFoundError):
                pidfile(host, role).unlink()
        return "already down"
    ns = None
    for role in ROLES:
        if pids[role]:
            ns = mnt_ns(pids[role])  # type: ignore[arg-type]
            break
    if pids["sshd"]:
        kill_pid(pids["sshd"])
    # leftover SSH sessions / `run` commands inside this host's namespace
    if ns and ns != mnt_ns("self"):
        keep = {pids["ns"], pids["zfs-fuse"]}
        stray = [p for p in processes_in_ns(ns) if p not in keep]
        for p in stray:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)
        for p in stray:
            if not wait_gone(p, 3.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
                wait_gone(p, 2.0)
    if pids["zfs-fuse"]:
        anchor = pids["ns"] or pids["zfs-fuse"]
        clean = False
        with contextlib.suppress(subprocess.TimeoutExpired):
            clean = export_pools(host, anchor)
        # zfs-fuse takes ~3 s to exit on SIGTERM; with every pool exported it
        # holds no state, so a short grace period is enough
        kill_pid(pids["zfs-fuse"], timeout=0.5 if clean else 15.0)
    if pids["ns"]:
        kill_pid(pids["ns"])  # last process of the namespace: its mounts go with it
    for role in ROLES:
        with contextlib.suppress(FileNotFoundError):
            pidfile(host, role).unlink()
    return "stopped"


# --------------------------------------------------------------------------
# locking


@contextlib.contextmanager
def locked():
    lp = lock_path()
    lp.parent.mkdir(parents=True, exist_ok=True)
    with open(lp, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def require_preflight() -> None:
    problems = preflight()
    if problems:
        raise LabError("the lab cannot run here:\n  - " + "\n  - ".join(problems))


def parallel(hosts: list[str], fn) -> dict[str, str]:
    results: dict[str, str] = {}
    errors: dict[str, BaseException] = {}

    def worker(h: str) -> None:
        try:
            results[h] = fn(h)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors[h] = e

    threads = [threading.Thread(target=worker, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h in hosts:
        if h in results:
            print(f"{h}: {results[h]}", file=sys.stderr)
    if errors:
        msgs = []
        for h, e in errors.items():
            msgs.append(str(e) if isinstance(e, LabError) else f"{h}: {type(e).__name__}: {e}")
        raise LabError("\n".join(msgs))
    return results


# --------------------------------------------------------------------------
# commands


def cmd_up(hosts: list[str]) -> int:
    require_preflight()
    with locked():
        if not all(host_state(h)[0] == "up" for h in hosts) or not paths()["ssh_config"].exists():
            prepare_common()
        parallel(hosts, start_host)
    return 0


def cmd_down(purge: bool) -> int:
    with locked():
        d = lab_dir()
        if d.exists():
            parallel([h for h in HOSTS if host_dir(h).exists()], stop_host)
        if purge and d.exists():
            shutil.rmtree(d)
            print(f"removed {d}", file=sys.stderr)
    return 0


def cmd_stop_host(hosts: list[str]) -> int:
    with locked():
        parallel(hosts, stop_host)
    return 0


def status_data() -> dict:
    out = {"dir": str(lab_dir()), "ssh_config": str(paths()["ssh_config"]), "hosts": {}}
    for host, (addr, pool) in HOSTS.items():
        state, pids = host_state(host) if host_dir(host).exists() else ("down", {r: None for r in ROLES})
        out["hosts"][host] = {"state": state, "address": addr, "pool": pool, "pids": pids}
    return out


def cmd_status(as_json: bool) -> int:
    data = status_data()
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(f"lab dir: {data['dir']}")
        for host, h in data["hosts"].items():
            pids = " ".join(f"{r}={p}" for r, p in h["pids"].items() if p) or "-"
            print(f"{host:6} {h['state']:8} {h['address']:10} pool={h['pool']:7} {pids}")
    states = {h["state"] for h in data["hosts"].values()}
    return 0 if states == {"up"} else 3


def cmd_run(host: str, argv: list[str]) -> int:
    check_host(host)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise LabError("run: no command given (zfslab.py run HOST -- CMD...)")
    cmd = nsenter_argv(host, argv, wd=os.getcwd())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(cmd[0], cmd)
    return 127  # not reached


def cmd_env() -> int:
    p = paths()
    print(f"export ZRELAY_LAB_DIR={p['dir']}")
    print(f"export ZRELAY_LAB_SSH_CONFIG={p['ssh_config']}")
    print(f"export ZRELAY_LAB_KEY={p['key']}")
    print(f"export ZRELAY_LAB_KNOWN_HOSTS={p['known_hosts']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zfslab.py", description="zrelay zfs-fuse lab (three fake ZFS hosts)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="start the lab (idempotent)")
    p.add_argument("hosts", nargs="*", metavar="HOST")
    p = sub.add_parser("down", help="stop everything the lab started")
    p.add_argument("--purge", action="store_true", help="also delete the state dir (pool images, keys)")
    p = sub.add_parser("status", help="show per-host state (exit 0 only when all hosts are up)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("run", help="run a command inside a host's mount namespace")
    p.add_argument("host")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("stop-host", help="stop one or more hosts")
    p.add_argument("hosts", nargs="+", metavar="HOST")
    p = sub.add_parser("start-host", help="start one or more hosts")
    p.add_argument("hosts", nargs="+", metavar="HOST")
    sub.add_parser("check", help="report missing prerequisites")
    sub.add_parser("env", help="print shell exports for the lab paths")
    args = ap.parse_args(argv)
    os.environ["PATH"] = sbin_path()
    try:
        if args.cmd == "up":
            return cmd_up([check_host(h) for h in args.hosts] or list(HOSTS))
        if args.cmd == "start-host":
            return cmd_up([check_host(h) for h in args.hosts])
        if args.cmd == "down":
            return cmd_down(args.purge)
        if args.cmd == "stop-host":
            return cmd_stop_host([check_host(h) for h in args.hosts])
        if args.cmd == "status":
            return cmd_status(args.json)
        if args.cmd == "run":
            return cmd_run(args.host, args.argv)
        if args.cmd == "check":
            problems = preflight()
            for pr in problems:
                print(f"- {pr}")
            if not problems:
                print("ok")
            return 1 if problems else 0
        if args.cmd == "env":
            return cmd_env()
    except LabError as e:
        print(f"zfslab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""zfs-fuse lab: three fake ZFS hosts on one machine, or more on request.

Each host lives in its own mount namespace with its own zfs-fuse daemon, its
own pool (a sparse file image) and its own sshd bound to one loopback address:

    nas1   127.0.0.2   pool tank     group storage
    nas2   127.0.0.3   pool tank     group storage
    vault  127.0.0.4   pool backup   group vaults

``up --hosts N`` adds extra hosts h04 ... hNN (127.0.0.5 ... 127.0.0.N+1,
each a small pool ``tank``; even numbers in group site_a, odd in site_b) for
tests that need many hosts at once. The three hosts above are the lab without
it, and stay as they are whatever extra hosts come and go.

An SSH session to 127.0.0.N runs inside that host's namespace, so ``zfs ...``
over SSH talks to that host's daemon and sees only that host's pool.

Usage:
    zfslab.py up [--hosts N] [HOST...]  start (idempotent; no-op when already up)
    zfslab.py down [--purge]        stop every host that is up, extra ones too (by PID)
    zfslab.py down --only-extra [HOST...]
                                    stop extra hosts (all, or those named) and take them
                                    out of the lab; nas1, nas2 and vault keep running
    zfslab.py status [--json]       per-host state, PIDs, address, group
    zfslab.py run HOST -- CMD...    run CMD inside HOST's mount namespace
    zfslab.py stop-host HOST...     stop one host (others stay up)
    zfslab.py start-host HOST...    start one host
    zfslab.py check                 report missing prerequisites
    zfslab.py env                   print shell exports for the lab paths
    zfslab.py inventory             print the generated zrelay inventory of the lab

State lives in $ZRELAY_LAB_DIR (default /var/tmp/zrelay-lab):

    id_ed25519, id_ed25519.pub      client key (no passphrase)
    authorized_keys                 the client public key (used by every sshd)
    known_hosts                     host key line for each address
    ssh_config                      ``Host 127.0.0.*`` block: key, known_hosts, root
    inventory.yml                   zrelay inventory of every host in the lab, in groups
                                    (the ``zrelay:`` section is inventory/lab.yml's)
    extra-hosts                     the extra hosts in the lab (h04 ...), one a line
    HOST/sshd_config                per-host sshd configuration
    HOST/ssh_host_ed25519_key[.pub] per-host host key
    HOST/etczfs/                    bind-mounted over /etc/zfs (copy of zfsrc)
    HOST/varlib/                    bind-mounted over /var/lib/zfs (zpool.cache)
    HOST/home/                      bind-mounted over root's home: each host has its own,
                                    as separate machines do (no shared shell start-up files)
    HOST/disk/POOL.img              sparse pool image (4 GiB; extra hosts 512 MiB)
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

#: The lab's own three hosts (name -> address, pool): always there, whatever extra hosts run.
HOSTS: dict[str, tuple[str, str]] = {
    "nas1": ("127.0.0.2", "tank"),
    "nas2": ("127.0.0.3", "tank"),
    "vault": ("127.0.0.4", "backup"),
}
#: Their groups in the generated inventory (as in inventory/lab.yml).
GROUPS: dict[str, tuple[str, ...]] = {"storage": ("nas1", "nas2"), "vaults": ("vault",)}
#: Extra hosts (``up --hosts N``): hNN at 127.0.0.(NN+1), pool EXTRA_POOL, group by parity, so a
#: host keeps its group however many others come and go.
FIRST_EXTRA = len(HOSTS) + 1
MAX_HOSTS = 99  # h99 at 127.0.0.100; each host is a zfs-fuse daemon (~100 MiB of memory) and an sshd
EXTRA_POOL = "tank"
EXTRA_GROUPS = ("site_a", "site_b")  # even numbers, odd numbers
EXTRA_IMAGE_SIZE = 512 * 1024**2  # sparse; a few MiB are written
#: At most this many hosts start at once (zfs-fuse start-up is CPU-bound; the machine has few cores).
START_CONCURRENCY = 4
REPO_INVENTORY = Path(__file__).resolve().parents[1] / "inventory" / "lab.yml"
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
        "inventory": d / "inventory.yml",
    }


def extra_name(number: int) -> str:
    return f"h{number:02d}"


def extra_number(host: str) -> int | None:
    """NN of an extra host's name hNN (h04 ... h99), None for any other name."""
    digits = host[1:]
    if host.startswith("h") and len(digits) == 2 and digits.isdigit():
        n = int(digits)
        if FIRST_EXTRA <= n <= MAX_HOSTS:
            return n
    return None


def extra_order(host: str) -> int:
    """Sort key of extra host names: by number (h04 before h10)."""
    return extra_number(host) or 0


def host_spec(host: str) -> tuple[str, str]:
    """(address, pool) of a lab host, the usual three or an extra one."""
    if host in HOSTS:
        return HOSTS[host]
    n = extra_number(host)
    if n is None:
        raise LabError(f"unknown host {host!r} (known: {', '.join(HOSTS)}, "
                       f"or extra hosts {extra_name(FIRST_EXTRA)}..{extra_name(MAX_HOSTS)})")
    return f"127.0.0.{n + 1}", EXTRA_POOL


def host_group(host: str) -> str:
    for group, members in GROUPS.items():
        if host in members:
            return group
    n = extra_number(host)
    if n is None:
        raise LabError(f"unknown host {host!r}")
    return EXTRA_GROUPS[n % 2]


def check_host(host: str) -> str:
    host_spec(host)
    return host


def extra_hosts_path() -> Path:
    return lab_dir() / "extra-hosts"


def recorded_extras() -> list[str]:
    """The extra hosts in the lab (started by up --hosts / start-host, not yet taken out)."""
    try:
        names = extra_hosts_path().read_text().split()
    except OSError:
        return []
    return sorted({n for n in names if extra_number(n) is not None}, key=extra_order)


def record_extras(names: list[str]) -> None:
    names = sorted({n for n in names if extra_number(n) is not None}, key=extra_order)
    if names:
        write_if_changed(extra_hosts_path(), "".join(f"{n}\n" for n in names))
    else:
        with contextlib.suppress(FileNotFoundError):
            extra_hosts_path().unlink()


def running_extras() -> list[str]:
    """Extra hosts with a live process, recorded or not (nothing that runs is left out)."""
    d = lab_dir()
    if not d.is_dir():
        return []
    found = [e.name for e in d.iterdir() if e.is_dir() and extra_number(e.name) is not None]
    return sorted((h for h in found if any(live_pids(h).values())), key=extra_order)


def lab_hosts() -> list[str]:
    """Every host of the lab: the usual three, then the extra ones recorded or running."""
    extras = set(recorded_extras()) | set(running_extras())
    return list(HOSTS) + sorted(extras, key=extra_order)


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
    addr, _ = host_spec(host)
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


def ssh_config_text(hosts: list[str] | None = None) -> str:
    p = paths()
    hosts = list(HOSTS) if hosts is None else hosts
    aliases = []
    for host in hosts:
        aliases += [f"Host {host}", f"    HostName {host_spec(host)[0]}", ""]
    common = [
        "Host 127.0.0.* " + " ".join(hosts),
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


def prepare_common(hosts: list[str] | None = None) -> None:
    """Keys and configuration of HOSTS (default: the lab's), then the files every client reads."""
    p = paths()
    p["dir"].mkdir(parents=True, exist_ok=True)
    os.chmod(p["dir"], 0o700)
    keygen(p["key"], "zrelay-lab-client")
    write_if_changed(p["authorized_keys"], p["pub"].read_text(), 0o600)
    hosts = lab_hosts() if hosts is None else hosts
    for host in hosts:
        prepare_host(host)
    write_client_files(hosts)


def write_client_files(hosts: list[str]) -> None:
    """known_hosts, ssh_config and inventory.yml for exactly HOSTS (whose host keys exist)."""
    p = paths()
    known = []
    for host in hosts:
        pub = (host_dir(host) / "ssh_host_ed25519_key.pub").read_text().split()
        known.append(f"{host_spec(host)[0]} {pub[0]} {pub[1]}")
    write_if_changed(p["known_hosts"], "\n".join(known) + "\n")
    write_if_changed(p["ssh_config"], ssh_config_text(hosts))
    write_if_changed(p["inventory"], inventory_text(hosts))


def zrelay_section(inventory: Path = REPO_INVENTORY) -> str:
    """The ``zrelay:`` section of inventory/lab.yml, as written there (jobs, S3 target, limits)."""
    try:
        lines = inventory.read_text().splitlines()
    except OSError:
        return 'zrelay:\n  snapshot_name: "zrelay_%Y-%m-%dT%H:%M:%SZ"\n'
    out: list[str] = []
    for line in lines:
        if out and line[:1] not in ("", " ", "#"):
            break  # the next top-level key
        if out or line.startswith("zrelay:"):
            out.append(line)
    return "\n".join(out).rstrip() + "\n" if out else ""


def inventory_text(hosts: list[str]) -> str:
    """The lab's zrelay inventory: HOSTS in their groups, settings and jobs of inventory/lab.yml.

    With the usual three hosts it says what inventory/lab.yml says (for the
    lab directory in use); extra hosts join groups site_a / site_b.
    """
    p = paths()
    members: dict[str, list[str]] = {}
    for host in hosts:
        members.setdefault(host_group(host), []).append(host)
    order = [*GROUPS, *EXTRA_GROUPS]
    lines = [
        "# The zrelay lab as lab/zfslab.py runs it now: written by every up and down, so edits",
        "# are lost (copy it). Hosts " + ", ".join(hosts) + ".",
        "",
        "all:",
        "  vars:",
        "    user: root",
        f"    port: {SSH_PORT}",
        f"    identity_file: {p['key']}",
        f"    known_hosts: {p['known_hosts']}",
        "  children:",
    ]
    for group in sorted(members, key=order.index):
        lines += [f"    {group}:", "      hosts:"]
        lines += [f"        {h}: {{address: {host_spec(h)[0]}}}" for h in members[group]]
    return "\n".join(lines) + "\n\n" + zrelay_section()


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
    addr, pool = host_spec(host)
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
    return sorted({f"/{pool}" for _, pool in HOSTS.values()} | {f"/{EXTRA_POOL}"})


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
    _, pool = host_spec(host)
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
        f.truncate(IMAGE_SIZE if host in HOSTS else EXTRA_IMAGE_SIZE)
    r = ns_run(host, ["zpool", "create", pool, str(image)], pid=holder, timeout=60)
    if r.returncode != 0:
        image.unlink()
        raise LabError(f"{host}: zpool create {pool} failed: {r.stderr.strip()}")
    return "created"


def start_sshd(host: str, holder: int) -> int:
    addr, _ = host_spec(host)
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
    addr, pool = host_spec(host)
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


def parallel(hosts: list[str], fn, limit: int | None = None) -> dict[str, str]:
    """fn(host) for every host in threads, at most LIMIT at once; errors of all hosts in one LabError."""
    results: dict[str, str] = {}
    errors: dict[str, BaseException] = {}
    slots = threading.BoundedSemaphore(limit or max(1, len(hosts)))

    def worker(h: str) -> None:
        try:
            with slots:
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
    """Start HOSTS; extra hosts among them join the lab (known_hosts, ssh_config, inventory)."""
    require_preflight()
    with locked():
        p = paths()
        extras = [h for h in hosts if h not in HOSTS]
        if extras:
            p["dir"].mkdir(parents=True, exist_ok=True)
            record_extras(recorded_extras() + extras)
        if (not all(host_state(h)[0] == "up" for h in hosts)
                or not p["ssh_config"].exists() or not p["inventory"].exists()):
            prepare_common()
        parallel(hosts, start_host, limit=START_CONCURRENCY)
    return 0


def cmd_down(purge: bool) -> int:
    """Stop every host that runs (extra ones too); the lab is the usual three again."""
    with locked():
        d = lab_dir()
        if d.exists():
            hosts = [h for h in HOSTS if host_dir(h).exists()] + sorted(
                set(recorded_extras()) | set(running_extras()), key=extra_order)
            parallel(hosts, stop_host)
            record_extras([])
            if not purge and all((host_dir(h) / "ssh_host_ed25519_key.pub").exists() for h in HOSTS):
                write_client_files(list(HOSTS))
        if purge and d.exists():
            shutil.rmtree(d)
            print(f"removed {d}", file=sys.stderr)
    return 0


def cmd_down_extra(names: list[str], purge: bool) -> int:
    """Stop extra hosts (NAMES, or all) and take them out of the lab; the usual three keep running."""
    with locked():
        if not lab_dir().exists():
            return 0
        in_lab = sorted(set(recorded_extras()) | set(running_extras()), key=extra_order)
        targets = names or in_lab
        parallel([h for h in targets if host_dir(h).exists()], stop_host)
        record_extras([h for h in recorded_extras() if h not in targets])
        remaining = [h for h in lab_hosts() if (host_dir(h) / "ssh_host_ed25519_key.pub").exists()]
        if paths()["ssh_config"].exists():
            write_client_files(remaining)
        if purge:
            for h in targets:
                if host_dir(h).exists():
                    shutil.rmtree(host_dir(h))
                    print(f"removed {host_dir(h)}", file=sys.stderr)
    return 0


def cmd_stop_host(hosts: list[str]) -> int:
    with locked():
        parallel(hosts, stop_host)
    return 0


def status_data() -> dict:
    out: dict = {"dir": str(lab_dir()), "ssh_config": str(paths()["ssh_config"]),
           "inventory": str(paths()["inventory"]), "hosts": {}}
    for host in lab_hosts():
        addr, pool = host_spec(host)
        state, pids = host_state(host) if host_dir(host).exists() else ("down", {r: None for r in ROLES})
        out["hosts"][host] = {"state": state, "address": addr, "pool": pool, "group": host_group(host),
                              "pids": pids}
    return out


def cmd_status(as_json: bool) -> int:
    data = status_data()
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(f"lab dir: {data['dir']}")
        print(f"{'host':6} {'state':8} {'address':11} {'pool':7} {'group':8} pids")
        for host, h in data["hosts"].items():
            pids = " ".join(f"{r}={p}" for r, p in h["pids"].items() if p) or "-"
            print(f"{host:6} {h['state']:8} {h['address']:11} {h['pool']:7} {h['group']:8} {pids}")
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
    print(f"export ZRELAY_LAB_INVENTORY={p['inventory']}")
    return 0


def hosts_count(text: str) -> int:
    """argparse type of --hosts: the lab's three hosts up to MAX_HOSTS."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hosts {text!r}: not a whole number") from None
    if not len(HOSTS) <= n <= MAX_HOSTS:
        raise argparse.ArgumentTypeError(f"--hosts {n}: must be {len(HOSTS)} to {MAX_HOSTS} "
                                         f"(the lab's {len(HOSTS)} hosts plus extra ones)")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zfslab.py", description="zrelay zfs-fuse lab (three fake ZFS hosts, "
                                 "or more with up --hosts N)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="start the lab (idempotent)")
    p.add_argument("hosts", nargs="*", metavar="HOST")
    p.add_argument("--hosts", dest="count", type=hosts_count, metavar="N",
                   help=f"N hosts: nas1, nas2, vault and extra hosts h04..hNN (up to {MAX_HOSTS}); "
                        "running hosts are left as they are")
    p = sub.add_parser("down", help="stop every host that is up (extra ones too)")
    p.add_argument("--purge", action="store_true", help="also delete the state dir (pool images, keys)")
    p.add_argument("--only-extra", action="store_true",
                   help="stop only extra hosts (all, or the HOSTs named) and take them out of the lab; "
                        "with --purge delete just their state")
    p.add_argument("extra", nargs="*", metavar="HOST", help="with --only-extra: these extra hosts only")
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
    sub.add_parser("inventory", help="print the generated zrelay inventory (every host of the lab, in groups)")
    args = ap.parse_args(argv)
    if args.cmd == "up" and args.count is not None and args.hosts:
        ap.error("up: give --hosts N or HOST names, not both")
    if args.cmd == "down" and args.extra and not args.only_extra:
        ap.error("down: HOST names go with --only-extra (stop-host HOST stops one host)")
    if args.cmd == "down":
        for h in args.extra:
            if extra_number(h) is None:
                ap.error(f"down --only-extra: {h!r} is not an extra host ({extra_name(FIRST_EXTRA)}.."
                         f"{extra_name(MAX_HOSTS)}){'; stop-host ' + h + ' stops it' if h in HOSTS else ''}")
    os.environ["PATH"] = sbin_path()
    try:
        if args.cmd == "up":
            if args.count is not None:
                return cmd_up(list(HOSTS) + [extra_name(n) for n in range(FIRST_EXTRA, args.count + 1)])
            return cmd_up([check_host(h) for h in args.hosts] or list(HOSTS))
        if args.cmd == "start-host":
            return cmd_up([check_host(h) for h in args.hosts])
        if args.cmd == "down":
            if args.only_extra:
                return cmd_down_extra(args.extra, args.purge)
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
        if args.cmd == "inventory":
            print(inventory_text(lab_hosts()), end="")
            return 0
    except LabError as e:
        print(f"zfslab: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

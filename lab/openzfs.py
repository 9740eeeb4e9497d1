#!/usr/bin/env python3
"""OpenZFS 2.3 lab: Debian 12 guests with real OpenZFS under qemu (TCG).

The slower second lab tier. One cached root filesystem image (Debian 12,
kernel 6.1, OpenZFS 2.3 from bookworm-backports built by dkms) and two guests
booted as qcow2 overlays on it, each reachable only through an SSH port
forward on 127.0.0.1:

    guest  ssh              pools (one sparse virtio disk each)
    oz1    127.0.0.1:2221   tank
    oz2    127.0.0.1:2222   tank, backup

The host names of the fast tier are aliases, so the same tests address the
same pools on either tier:

    nas1  -> oz1, pool tank
    nas2  -> oz2, pool tank
    vault -> oz2, pool backup

Usage:
    openzfs.py build [--force]        build the image (cached; rebuilt when the recipe changes)
    openzfs.py up [HOST...]           build if needed, boot, wait for ssh, create pools (idempotent)
    openzfs.py down [HOST...] [--purge]  power off (then kill by PID); --purge deletes guest disks/keys
    openzfs.py status [--json]        per-guest state (exit 0 only when every guest is up)
    openzfs.py run HOST -- CMD...     run CMD on HOST over ssh (argv quoted with shlex.join)
    openzfs.py stop-host / start-host HOST...   the same as down / up for some guests
    openzfs.py inventory              print a zrelay inventory for the guests (JSON, valid YAML)
    openzfs.py env                    print shell exports for the lab paths
    openzfs.py check                  report missing prerequisites

State lives in $ZRELAY_OPENZFS_DIR (default /var/tmp/zrelay-lab-openzfs):

    image/base.img, vmlinuz, initrd.img   the built image (raw ext4) and its kernel
    image/recipe.sha256, info.json        recipe hash, versions and build timings
    build/                                scratch space of a build in progress (mmdebstrap.log)
    id_ed25519[.pub]                      client key (root login on every guest)
    known_hosts                           "[127.0.0.1]:PORT" entry of each guest's host key
    peer_ed25519[.pub]                    key the guests use to reach each other (direct mode)
    peer-relay.py                         qemu guestfwd helper: guest -> 127.0.0.1:PORT
    rootfs-cache/KEY.tar                  mmdebstrap output (the slow part), reused while its inputs stay
    ssh_config                            Host blocks for oz1/oz2 and the aliases
    guests/NAME/root.qcow2                overlay on image/base.img
    guests/NAME/pool-POOL.img             sparse pool disk (virtio serial pool-POOL)
    guests/NAME/config.tar                per-guest files, handed in as a read-only disk
    guests/NAME/ssh_host_ed25519_key[.pub]  the guest's host key, generated here
    guests/NAME/console.log               serial console of the current boot (.prev: the one before)
    guests/NAME/qemu.pid                  the qemu process
    leases/PID                            pytest sessions using the lab (tests/labfixture.py)

Host keys are generated on this side and handed to the guest before sshd
starts (a tar archive on a virtio disk with serial "zrelaycfg", applied by
zrelay-guest-config.service), so known_hosts is written before the first
boot: nothing is trusted on first use.

The guests reach no network (qemu user networking with restrict=on). For
zrelay's direct mode a guest reaches the other guests' sshd, and nothing
else, at 10.0.2.100:PORT (PORT = 2221, 2222 as above): a qemu guestfwd whose
per-connection helper (peer-relay.py) joins it to 127.0.0.1:PORT. The guests
hold a key for that (/root/.ssh/zrelay-lab-peer) and the host keys under
those names (/root/.ssh/zrelay-lab-peer_known_hosts); an inventory sets
``direct_address: 10.0.2.100`` for them.

Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import hashlib
import inspect
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from typing import NamedTuple
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE_DIR = Path(__file__).resolve().parent / "openzfs"
ROOTFS_FILES = RECIPE_DIR / "rootfs"

DEFAULT_DIR = "/var/tmp/zrelay-lab-openzfs"
ADDRESS = "127.0.0.1"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"


class Guest(NamedTuple):
    name: str
    port: int
    pools: tuple[str, ...]


GUESTS: dict[str, Guest] = {
    "oz1": Guest("oz1", 2221, ("tank",)),
    "oz2": Guest("oz2", 2222, ("tank", "backup")),
}
# fast-tier host name -> (guest, pool)
ALIASES: dict[str, tuple[str, str]] = {
    "nas1": ("oz1", "tank"),
    "nas2": ("oz2", "tank"),
    "vault": ("oz2", "backup"),
}

# Guests reach each other's sshd (for zrelay's direct mode) at PEER_ADDRESS:PORT, a
# qemu guestfwd that this machine relays to 127.0.0.1:PORT. Nothing else is reachable.
PEER_ADDRESS = "10.0.2.100"
PEER_KEY_IN_GUEST = "/root/.ssh/zrelay-lab-peer"
# not the global /etc/ssh/ssh_known_hosts: a guest trusts the others only when told to use this file
PEER_KNOWN_HOSTS_IN_GUEST = "/root/.ssh/zrelay-lab-peer_known_hosts"

CPU_MODEL = os.environ.get("ZRELAY_OPENZFS_CPU", "max")
MEMORY_MIB = 1536
CPUS = 1
POOL_DISK_SIZE = 8 * 1024**3  # sparse
ROOT_IMAGE_SIZE = "4G"
BOOT_TIMEOUT = float(os.environ.get("ZRELAY_OPENZFS_BOOT_TIMEOUT", "600"))
POWEROFF_TIMEOUT = 60.0
KERNEL_ARGS = "root=LABEL=zrelay-root rw console=ttyS0 net.ifnames=0 mitigations=off"

# ---- the recipe: everything here is hashed; a change rebuilds the image ----
RECIPE_VERSION = 1
PACKAGES = (
    "linux-image-amd64", "linux-headers-amd64", "systemd-sysv", "udev", "kmod", "iproute2", "ifupdown",
    "openssh-server", "python3", "procps", "pv", "zstd", "mbuffer", "age",
)
BACKPORTS_PACKAGES = ("zfs-dkms", "zfsutils-linux")
# units that only cost CPU in a TCG guest that never reaches a network
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "dpkg-db-backup.timer", "zfs-zed.service",
    "systemd-tmpfiles-clean.timer",
)
ENABLED_UNITS = {"zrelay-guest-config.service": "multi-user.target"}
EXECUTABLE_DIRS = ("usr/local/sbin/", "usr/local/bin/")

HOST_TOOLS = {  # binary -> Debian package
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}


class LabError(Exception):
    pass


# --------------------------------------------------------------------------
# paths


def state_dir() -> Path:
    return Path(os.environ.get("ZRELAY_OPENZFS_DIR") or DEFAULT_DIR).absolute()


def lab_dir() -> Path:
    """The state dir (the name tests/labfixture.py uses for both tiers)."""
    return state_dir()


def lock_path() -> Path:
    d = state_dir()
    return d.parent / (d.name + ".lock")


def image_dir() -> Path:
    return state_dir() / "image"


def build_dir() -> Path:
    return state_dir() / "build"


def guest_dir(name: str) -> Path:
    return state_dir() / "guests" / name


def paths() -> dict[str, Path]:
    d = state_dir()
    return {
        "dir": d,
        "key": d / "id_ed25519",
        "pub": d / "id_ed25519.pub",
        "known_hosts": d / "known_hosts",
        "ssh_config": d / "ssh_config",
        "leases": d / "leases",
        "peer_key": d / "peer_ed25519",
        "relay": d / "peer-relay.py",
    }


def resolve_host(name: str) -> str:
    """Guest name for a guest or alias name."""
    if name in GUESTS:
        return name
    if name in ALIASES:
        return ALIASES[name][0]
    raise LabError(f"unknown host {name!r} (guests: {', '.join(GUESTS)}; aliases: {', '.join(ALIASES)})")


def sbin_path() -> str:
    parts = [p for p in os.environ.get("PATH", "").split(":") if p]
    parts += [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in parts]
    return ":".join(parts)


# --------------------------------------------------------------------------
# small helpers


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> None:
    try:
        if path.read_text() == text:
            os.chmod(path, mode)
            return
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.replace(path)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text[-lines:])


def keygen(path: Path, comment: str) -> None:
    pub = path.with_name(path.name + ".pub")
    if path.exists() and pub.exists():
        return
    for p in (path, pub):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0") if raw else None


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if cmdline(pid) is None:
            return True
        time.sleep(0.1)
    return False


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


class Phases:
    """Prints each phase of a long operation with its duration."""

    def __init__(self, what: str):
        self.what = what
        self.t0 = time.monotonic()
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        say(f"[{self.what}] {name} ...")
        t = time.monotonic()
        try:
            yield
        finally:
            self.times[name] = round(time.monotonic() - t, 1)
        say(f"[{self.what}] {name}: {self.times[name]:.1f}s")

    def total(self) -> float:
        return round(time.monotonic() - self.t0, 1)


# --------------------------------------------------------------------------
# prerequisites


def missing_tools() -> dict[str, list[str]]:
    missing: dict[str, list[str]] = {}
    for binary, package in HOST_TOOLS.items():
        if shutil.which(binary, path=sbin_path()) is None:
            missing.setdefault(package, []).append(binary)
    return missing


def preflight() -> list[str]:
    """Reasons why the lab cannot run here (empty = ok). Missing tools are installed by build/up."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (mmdebstrap, loop-free image build, qemu)")
    if os.uname().machine != "x86_64":
        problems.append(f"needs an x86_64 machine (this is {os.uname().machine})")
    if missing_tools() and shutil.which("apt-get") is None:
        problems.append("missing " + ", ".join(sorted(missing_tools())) + " and no apt-get to install them")
    return problems


def ensure_tools() -> None:
    missing = missing_tools()
    if not missing:
        return
    packages = sorted(missing)
    say(f"installing {' '.join(packages)} (apt-get) ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0:
            raise LabError(f"{' '.join(argv)} failed (exit {r.returncode}):\n{r.stderr.strip()[-2000:]}")
    still = missing_tools()
    if still:
        raise LabError(f"still missing after apt-get install: {still}")


def apt_mirror() -> str:
    """The Debian mirror the machine's own apt sources use for bookworm (override: ZRELAY_OPENZFS_MIRROR)."""
    override = os.environ.get("ZRELAY_OPENZFS_MIRROR")
    if override:
        return override.rstrip("/")
    candidates: list[str] = []
    files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list")),
             *sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))]
    for f in files:
        try:
            text = Path(f).read_text()
        except OSError:
            continue
        if f.endswith(".sources"):
            for para in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in para.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" not in fields.get("types", "").split():
                    continue
                if SUITE in fields.get("suites", "").split() and "main" in fields.get("components", "").split():
                    candidates += fields.get("uris", "").split()
        else:
            for line in text.splitlines():
                line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(line) >= 4 and line[0] == "deb" and line[2] == SUITE and "main" in line[3:]:
                    candidates.append(line[1])
    for uri in candidates:
        if uri.startswith(("http://", "https://")) and "security" not in uri:
            return uri.rstrip("/")
    return FALLBACK_MIRROR


# --------------------------------------------------------------------------
# the recipe and the image


def mmdebstrap_argv(mirror: str, target: str) -> list[str]:
    bpo = f"deb {mirror} {SUITE}-backports main contrib"
    return [
        "mmdebstrap", "--variant=apt", "--components=main,contrib",
        "--include=" + ",".join(PACKAGES),
        f"--customize-hook=echo {shlex.quote(bpo)} > \"$1/etc/apt/sources.list.d/bpo.list\"",
        "--customize-hook=chroot \"$1\" apt-get update",
        "--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y "
        f"-t {SUITE}-backports " + " ".join(BACKPORTS_PACKAGES),
        SUITE, target, mirror,
    ]


def rootfs_files() -> list[tuple[str, bytes]]:
    out = []
    for p in sorted(ROOTFS_FILES.rglob("*")):
        if p.is_file():
            out.append((p.relative_to(ROOTFS_FILES).as_posix(), p.read_bytes()))
    return out


def stage1_key(mirror: str) -> str:
    """Hash of what mmdebstrap makes (the slow part: packages and the dkms build)."""
    data = {"version": RECIPE_VERSION, "mmdebstrap": mmdebstrap_argv(mirror, "ROOTFS.tar")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def recipe() -> dict:
    mirror = apt_mirror()
    return {
        "version": RECIPE_VERSION,
        "stage1": stage1_key(mirror),
        "mmdebstrap": mmdebstrap_argv(mirror, "ROOTFS.tar"),
        "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in rootfs_files()},
        "customize": hashlib.sha256(inspect.getsource(customize_rootfs).encode()).hexdigest(),
        "masked": list(MASKED_UNITS),
        "enabled": ENABLED_UNITS,
        "root_image_size": ROOT_IMAGE_SIZE,
    }


def recipe_hash(r: dict | None = None) -> str:
    r = r if r is not None else recipe()
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:16]


def rootfs_cache_dir() -> Path:
    return state_dir() / "rootfs-cache"


def image_info() -> dict | None:
    img = image_dir()
    try:
        info = json.loads((img / "info.json").read_text())
    except (OSError, ValueError):
        return None
    if not all((img / f).exists() for f in ("base.img", "vmlinuz", "initrd.img")):
        return None
    return info


def image_current() -> bool:
    info = image_info()
    return bool(info) and info.get("recipe") == recipe_hash()


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mp = line.split()[1].replace("\\040", " ")
            if mp == str(path) or mp.startswith(prefix):
                out.append(mp)
    return out


def remove_tree(path: Path) -> None:
    """rm -rf that never crosses into a mount (a failed chroot build may leave /dev, /proc bound)."""
    if not path.exists():
        return
    for mp in sorted(mounts_under(path), reverse=True):
        subprocess.run(["umount", "-R", mp], capture_output=True)
    left = mounts_under(path)
    if left:
        raise LabError(f"refusing to delete {path}: still mounted: {', '.join(left)}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def run_logged(argv: list[str], log: Path, label: str, heartbeat: float = 30.0) -> None:
    """Run argv with output to log; print a line with the log's last line every `heartbeat` seconds."""
    t0 = time.monotonic()
    with open(log, "ab") as f:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        while True:
            try:
                proc.wait(timeout=heartbeat)
                break
            except subprocess.TimeoutExpired:
                last = ""
                with contextlib.suppress(OSError, IndexError):
                    last = log.read_text(errors="replace").strip().splitlines()[-1][:110]
                say(f"    {label}: {time.monotonic() - t0:.0f}s  {last}")
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise LabError(f"{label} failed (exit {proc.returncode}); log {log}:\n{log_tail(log)}")


def customize_rootfs(root: Path) -> None:
    for rel, data in rootfs_files():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        os.chmod(dest, 0o755 if rel.startswith(EXECUTABLE_DIRS) else 0o644)
    systemd = root / "etc/systemd/system"
    for unit in MASKED_UNITS:
        link = systemd / unit
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to("/dev/null")
    for unit, target in ENABLED_UNITS.items():
        wants = systemd / f"{target}.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / unit
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(f"/etc/systemd/system/{unit}")
    # host keys are per guest (handed in at boot); the ones made by the package are not used
    for key in glob.glob(str(root / "etc/ssh/ssh_host_*")):
        os.unlink(key)
    (root / "etc/hostname").write_text("zrelay-openzfs\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("")
    (root / "etc/fstab").write_text("# root is mounted by the kernel (root=LABEL=zrelay-root rw); pools by ZFS\n")
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    # the guests have no network: apt's lists would only be stale weight
    remove_tree(root / "var/lib/apt/lists")
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)


def dpkg_version(root: Path, package: str) -> str | None:
    try:
        text = (root / "var/lib/dpkg/status").read_text(errors="replace")
    except OSError:
        return None
    for para in text.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", para, re.M):
            m = re.search(r"^Version: (.+)$", para, re.M)
            return m.group(1) if m else None
    return None


def build(force: bool = False) -> dict:
    """Build the image unless a current one is cached; returns its info."""
    r = recipe()
    h = recipe_hash(r)
    info = image_info()
    if info and info.get("recipe") == h and not force:
        say(f"[build] image {h} is cached in {image_dir()} (built in {info.get('build_seconds')}s; "
            f"OpenZFS {info.get('zfs')}, kernel {info.get('kernel')})")
        return info
    running = [g for g in GUESTS if guest_pid(g)]
    if running:
        raise LabError(f"the image must be rebuilt but guests are running on the old one: {', '.join(running)} "
                       "(run: openzfs.py down)")
    ph = Phases("build")
    with ph.phase("host tools"):
        ensure_tools()
    mirror = apt_mirror()
    key1 = r["stage1"]
    say(f"[build] recipe {h} (root filesystem {key1}), mirror {mirror}")
    bd = build_dir()
    remove_tree(bd)
    bd.mkdir(parents=True)
    root = bd / "rootfs"
    cache = rootfs_cache_dir()
    tarball = cache / f"{key1}.tar"
    if tarball.exists():
        say(f"[build] root filesystem {key1} is cached: {tarball}")
    else:
        log = bd / "mmdebstrap.log"
        with ph.phase("mmdebstrap (Debian 12 + OpenZFS from bookworm-backports, dkms)"):
            say(f"    log: {log}")
            run_logged(mmdebstrap_argv(mirror, str(bd / "rootfs.tar")), log, "mmdebstrap")
            remove_tree(cache)  # one cached root filesystem is enough
            cache.mkdir(parents=True)
            shutil.copyfile(log, cache / f"{key1}.log")
            (bd / "rootfs.tar").rename(tarball)
    with ph.phase("unpack root filesystem"):
        root.mkdir()
        r1 = subprocess.run(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "--xattrs-include=*",
                             "-xpf", str(tarball)], capture_output=True, text=True)
        if r1.returncode != 0:
            raise LabError(f"unpacking {tarball} failed: {r1.stderr.strip()[-2000:]}")
    log = cache / f"{key1}.log"
    with ph.phase("customize"):
        modules = glob.glob(str(root / "lib/modules/*/updates/dkms/zfs.ko*"))
        if not modules:
            raise LabError(f"the zfs module was not built (dkms); see {log}:\n{log_tail(log)}")
        kernel = Path(modules[0]).relative_to(root / "lib/modules").parts[0]
        customize_rootfs(root)
        for src, dst in ((f"boot/vmlinuz-{kernel}", "vmlinuz"), (f"boot/initrd.img-{kernel}", "initrd.img")):
            if not (root / src).exists():
                raise LabError(f"{src} is missing in the root filesystem")
            shutil.copyfile(root / src, bd / dst)
        zfs_version = dpkg_version(root, "zfsutils-linux")
    with ph.phase(f"mkfs.ext4 -d ({ROOT_IMAGE_SIZE})"):
        r2 = subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "zrelay-root", "-d", str(root),
                             str(bd / "base.img"), ROOT_IMAGE_SIZE], capture_output=True, text=True)
        if r2.returncode != 0:
            raise LabError(f"mkfs.ext4 failed: {r2.stderr.strip()}")
    with ph.phase("install image"):
        remove_tree(root)
        info = {
            "recipe": h, "kernel": kernel, "zfs": zfs_version, "mirror": mirror,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "phases": ph.times, "build_seconds": ph.total(),
        }
        (bd / "recipe.json").write_text(json.dumps(r, indent=2) + "\n")
        (bd / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        img = image_dir()
        old = state_dir() / "image.old"
        remove_tree(old)
        if img.exists():
            img.rename(old)
        bd.rename(img)
        remove_tree(old)
    info["build_seconds"] = ph.total()
    (img / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    say(f"[build] done in {ph.total():.1f}s: OpenZFS {zfs_version}, kernel {kernel}, image {img / 'base.img'}")
    return info


# --------------------------------------------------------------------------
# client-side files: key, known_hosts, ssh_config


def ssh_config_text() -> str:
    p = paths()
    lines = ["# zrelay OpenZFS lab: ssh -F THIS_FILE oz1 zfs list   (aliases: " +
             ", ".join(f"{a}={g}" for a, (g, _) in ALIASES.items()) + ")"]
    for g in GUESTS.values():
        names = [g.name] + [a for a, (guest, _) in ALIASES.items() if guest == g.name]
        lines += [f"Host {' '.join(names)}", f"    HostName {ADDRESS}", f"    Port {g.port}", ""]
    lines += [
        f"Host {ADDRESS} " + " ".join([*GUESTS, *ALIASES]),
        "    User root",
        f"    IdentityFile {p['key']}",
        "    IdentitiesOnly yes",
        f"    UserKnownHostsFile {p['known_hosts']}",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    CheckHostIP no",
        "    UpdateHostKeys no",
        "    BatchMode yes",
        "    ConnectTimeout 20",
        "    ServerAliveInterval 30",
        "    LogLevel ERROR",
    ]
    return "\n".join(lines) + "\n"


def known_hosts_name(guest: str) -> str:
    port = GUESTS[guest].port
    return ADDRESS if port == 22 else f"[{ADDRESS}]:{port}"


RELAY_SCRIPT = '''#!/usr/bin/env python3
"""zrelay OpenZFS lab: started by qemu (guestfwd cmd:) for each connection a guest
opens to PEER_ADDRESS:PORT; joins it to 127.0.0.1:PORT, a lab guest's sshd."""
import os, socket, sys, threading
os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # fd 2 is the guest's connection too: never write to it
try:
    server = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    server.settimeout(None)
except (OSError, ValueError, IndexError):
    os._exit(1)


def guest_to_server():
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            server.sendall(data)
    except OSError:
        pass
    try:
        server.shutdown(socket.SHUT_WR)
    except OSError:
        pass


threading.Thread(target=guest_to_server, daemon=True).start()
try:
    while True:
        data = server.recv(65536)
        if not data:
            break
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
except OSError:
    pass
os._exit(0)
'''


def host_key_lines(name_of) -> str:
    out = []
    for g in GUESTS:
        kind, key = (guest_dir(g) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        out.append(f"{name_of(g)} {kind} {key}")
    return "\n".join(out) + "\n"


def peer_known_hosts_name(guest: str) -> str:
    return f"[{PEER_ADDRESS}]:{GUESTS[guest].port}"


def prepare_client_files() -> None:
    p = paths()
    p["dir"].mkdir(parents=True, exist_ok=True)
    os.chmod(p["dir"], 0o700)
    keygen(p["key"], "zrelay-lab-openzfs-client")
    keygen(p["peer_key"], "zrelay-lab-openzfs-peer")
    for g in GUESTS:
        gd = guest_dir(g)
        gd.mkdir(parents=True, exist_ok=True)
        keygen(gd / "ssh_host_ed25519_key", f"zrelay-lab-{g}")
    write_if_changed(p["known_hosts"], host_key_lines(known_hosts_name))
    write_if_changed(p["ssh_config"], ssh_config_text())
    write_if_changed(p["relay"], RELAY_SCRIPT, 0o755)


def config_tar(guest: str) -> bytes:
    """The per-guest files, applied by zrelay-guest-config.service before sshd starts."""
    gd = guest_dir(guest)
    files = [
        ("etc/hostname", f"{guest}\n".encode(), 0o644),
        ("etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{guest}\n::1\t\tlocalhost ip6-localhost\n".encode(), 0o644),
        ("etc/ssh/ssh_host_ed25519_key", (gd / "ssh_host_ed25519_key").read_bytes(), 0o600),
        ("etc/ssh/ssh_host_ed25519_key.pub", (gd / "ssh_host_ed25519_key.pub").read_bytes(), 0o644),
        ("root/.ssh/authorized_keys", paths()["pub"].read_bytes() + paths()["peer_key"].with_name(
            "peer_ed25519.pub").read_bytes(), 0o600),
        # for zrelay's direct mode: a key and known_hosts with which a guest reaches the others
        (PEER_KEY_IN_GUEST.lstrip("/"), paths()["peer_key"].read_bytes(), 0o600),
        (PEER_KNOWN_HOSTS_IN_GUEST.lstrip("/"), host_key_lines(peer_known_hosts_name).encode(), 0o644),
    ]
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        d = tarfile.TarInfo("root/.ssh")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o700, now
        tar.addfile(d)
        for name, data, mode in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, now
            tar.addfile(ti, io.BytesIO(data))
    data = buf.getvalue()
    return data + b"\0" * (-len(data) % 4096)


# --------------------------------------------------------------------------
# guests


def guest_pid(guest: str) -> int | None:
    """PID of the guest's qemu when it is running (and really is ours)."""
    gd = guest_dir(guest)
    pid = read_pid(gd / "qemu.pid")
    if not pid:
        return None
    argv = cmdline(pid)
    if not argv or not os.path.basename(argv[0]).startswith("qemu-system") or str(gd / "qemu.pid") not in argv:
        return None
    return pid


def ssh_base(guest: str) -> list[str]:
    return ["ssh", "-F", str(paths()["ssh_config"]), guest]


def ssh_run(guest: str, argv: list[str], timeout: float = 120, check: bool = True,
            connect_timeout: int | None = None) -> subprocess.CompletedProcess:
    cmd = ssh_base(guest)
    if connect_timeout:
        cmd[1:1] = ["-o", f"ConnectTimeout={connect_timeout}"]
    r = subprocess.run(cmd + ["--", shlex.join(argv)], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise LabError(f"{guest}: {shlex.join(argv)} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()}")
    return r


def ssh_banner(port: int, timeout: float = 3.0) -> bool:
    """True when the guest's sshd answers through the port forward (the forward itself always accepts)."""
    try:
        with socket.create_connection((ADDRESS, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ADDRESS, port))
            return False
        except OSError:
            return True


def qemu_argv(guest: str) -> list[str]:
    g = GUESTS[guest]
    gd = guest_dir(guest)
    img = image_dir()
    argv = [
        "qemu-system-x86_64", "-name", f"{guest},process=zrelay-{guest}",
        "-machine", "accel=tcg", "-cpu", CPU_MODEL, "-m", str(MEMORY_MIB), "-smp", str(CPUS),
        "-nodefaults", "-display", "none", "-vga", "none", "-monitor", "none",
        "-serial", f"file:{gd / 'console.log'}",
        "-daemonize", "-pidfile", str(gd / "qemu.pid"),
        "-kernel", str(img / "vmlinuz"), "-initrd", str(img / "initrd.img"),
        "-append", f"{KERNEL_ARGS} systemd.hostname={guest}",
        # every disk is an explicit -device, so the PCI order is the order given here
        "-drive", f"file={gd / 'root.qcow2'},format=qcow2,if=none,id=root",
        "-device", "virtio-blk-pci,drive=root,serial=root",
        "-drive", f"file={gd / 'config.tar'},format=raw,if=none,id=cfg,readonly=on",
        "-device", "virtio-blk-pci,drive=cfg,serial=zrelaycfg",
    ]
    for i, pool in enumerate(g.pools):
        # raw sparse file: no image metadata that a killed qemu could leave inconsistent
        argv += ["-drive", f"file={gd / f'pool-{pool}.img'},format=raw,if=none,id=pool{i},cache=unsafe",
                 "-device", f"virtio-blk-pci,drive=pool{i},serial=pool-{pool}"]
    # restrict=on: no route anywhere; only the explicit forwards below work
    netdev = f"user,id=n0,restrict=on,hostfwd=tcp:{ADDRESS}:{g.port}-:22"
    relay = paths()["relay"]
    for peer in GUESTS.values():
        netdev += f",guestfwd=tcp:{PEER_ADDRESS}:{peer.port}-cmd:{sys.executable} {relay} {peer.port}"
    argv += ["-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,romfile="]
    return argv


def start_guest(guest: str) -> float:
    """Launch qemu for a guest that is down; returns the launch time (monotonic)."""
    g = GUESTS[guest]
    gd = guest_dir(guest)
    info = image_info()
    assert info
    base_stamp = gd / "base.recipe"
    overlay = gd / "root.qcow2"
    # an overlay is only valid on the very base image it was made on (not just the same recipe)
    image_id = f"{info['recipe']} {info['built']}"
    if overlay.exists() and (not base_stamp.exists() or base_stamp.read_text().strip() != image_id):
        say(f"{guest}: the image was rebuilt: new root overlay (pool disks are kept)")
        overlay.unlink()
    if not overlay.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image_dir() / "base.img"),
                        "-F", "raw", str(overlay)], check=True, capture_output=True)
        base_stamp.write_text(image_id + "\n")
    for pool in g.pools:
        disk = gd / f"pool-{pool}.img"
        if not disk.exists():
            with open(disk, "wb") as f:
                f.truncate(POOL_DISK_SIZE)
            (gd / f"pool-{pool}.created").unlink(missing_ok=True)
    (gd / "config.tar").write_bytes(config_tar(guest))
    if port_taken(g.port):
        raise LabError(f"{guest}: {ADDRESS}:{g.port} is already in use by another program")
    console = gd / "console.log"
    if console.exists():
        console.replace(gd / "console.log.prev")
    (gd / "qemu.pid").unlink(missing_ok=True)
    t0 = time.monotonic()
    r = subprocess.run(qemu_argv(guest), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    if r.returncode != 0 or not guest_pid(guest):
        raise LabError(f"{guest}: qemu did not start (exit {r.returncode}): {r.stderr.strip()}")
    return t0


def wait_ssh(guest: str, t0: float) -> float:
    deadline = t0 + BOOT_TIMEOUT
    port = GUESTS[guest].port
    while True:
        if not guest_pid(guest):
            raise LabError(f"{guest}: qemu exited during boot; console:\n{log_tail(guest_dir(guest) / 'console.log')}")
        if ssh_banner(port):
            r = ssh_run(guest, ["true"], timeout=60, check=False, connect_timeout=30)
            if r.returncode == 0:
                return time.monotonic() - t0
            if "Host key verification failed" in r.stderr or "Permission denied" in r.stderr:
                raise LabError(f"{guest}: ssh refused: {r.stderr.strip()}")
        if time.monotonic() > deadline:
            raise LabError(f"{guest}: no ssh within {BOOT_TIMEOUT:.0f}s; console:\n"
                           f"{log_tail(guest_dir(guest) / 'console.log')}")
        time.sleep(1.0)


def ensure_pools(guest: str) -> list[str]:
    """Import or create the guest's pools; returns what was done per pool."""
    g = GUESTS[guest]
    gd = guest_dir(guest)
    done = []
    have = ssh_run(guest, ["zpool", "list", "-H", "-o", "name"]).stdout.split()
    for pool in g.pools:
        marker = gd / f"pool-{pool}.created"
        dev = f"/dev/disk/by-id/virtio-pool-{pool}"
        if pool in have:
            done.append(f"{pool} present")
            continue
        if marker.exists():
            r = ssh_run(guest, ["zpool", "import", "-f", "-d", "/dev/disk/by-id", pool], check=False, timeout=300)
            if r.returncode != 0:
                raise LabError(f"{guest}: zpool import {pool} failed: {r.stderr.strip()} "
                               f"(to start over: openzfs.py down --purge)")
            done.append(f"{pool} imported")
        else:
            ssh_run(guest, ["zpool", "create", "-f", pool, dev], timeout=300)
            marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
            done.append(f"{pool} created")
    return done


def stop_guest(guest: str) -> str:
    pid = guest_pid(guest)
    if not pid:
        (guest_dir(guest) / "qemu.pid").unlink(missing_ok=True)
        return "already down"
    t0 = time.monotonic()
    how = "powered off"
    asked = False
    if ssh_banner(GUESTS[guest].port, timeout=2):
        with contextlib.suppress(subprocess.TimeoutExpired):
            r = ssh_run(guest, ["systemctl", "poweroff", "--no-block"], timeout=30, check=False,
                        connect_timeout=10)
            asked = r.returncode == 0
    if not asked or not wait_gone(pid, POWEROFF_TIMEOUT):
        how = "killed (SIGTERM)"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, 15):
            how = "killed (SIGKILL)"
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 5)
    (guest_dir(guest) / "qemu.pid").unlink(missing_ok=True)
    return f"{how} in {time.monotonic() - t0:.1f}s"


def parallel(items: list[str], fn) -> dict[str, object]:
    results: dict[str, object] = {}
    errors: dict[str, BaseException] = {}

    def worker(x: str) -> None:
        try:
            results[x] = fn(x)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors[x] = e

    threads = [threading.Thread(target=worker, args=(x,)) for x in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise LabError("\n".join(str(e) if isinstance(e, LabError) else f"{x}: {type(e).__name__}: {e}"
                                 for x, e in errors.items()))
    return results


def guest_state(guest: str) -> str:
    if not guest_pid(guest):
        return "down"
    return "up" if ssh_banner(GUESTS[guest].port) else "booting"


# --------------------------------------------------------------------------
# commands


def require_preflight() -> None:
    problems = preflight()
    if problems:
        raise LabError("the OpenZFS lab cannot run here:\n  - " + "\n  - ".join(problems))


def cmd_build(force: bool) -> int:
    require_preflight()
    with locked():
        build(force=force)
    return 0


def cmd_up(guests: list[str]) -> int:
    require_preflight()
    with locked():
        t_all = time.monotonic()
        build()
        prepare_client_files()
        todo = [g for g in guests if guest_state(g) != "up"]
        for g in guests:
            if g not in todo:
                say(f"{g}: already up at {ADDRESS}:{GUESTS[g].port}")
        launched = {}
        for g in todo:
            if guest_pid(g):
                launched[g] = None  # still booting from an earlier `up`
            else:
                launched[g] = start_guest(g)
                say(f"{g}: qemu started (pid {guest_pid(g)}), waiting for ssh on {ADDRESS}:{GUESTS[g].port} ...")

        def bring_up(g: str) -> str:
            t0 = launched.get(g)
            msg = ""
            if g in launched:
                try:
                    secs = wait_ssh(g, t0 if t0 is not None else time.monotonic())
                except LabError:
                    # a guest that did not come up would only burn CPU: stop it, keep its console log
                    say(f"{g}: {stop_guest(g)} (console: {guest_dir(g) / 'console.log'})")
                    raise
                msg = f"ssh after {secs:.1f}s, " if t0 is not None else "ssh ready, "
            pools = ensure_pools(g)
            return f"{g}: up at {ADDRESS}:{GUESTS[g].port}, {msg}pools: {', '.join(pools)}"

        for line in parallel(guests, bring_up).values():
            say(str(line))
        say(f"up: {time.monotonic() - t_all:.1f}s; ssh -F {paths()['ssh_config']} oz1 zfs list")
    return 0


def cmd_down(guests: list[str], purge: bool) -> int:
    with locked():
        present = [g for g in guests if guest_dir(g).exists()]
        for g, msg in parallel(present, stop_guest).items():
            say(f"{g}: {msg}")
        if purge:
            for g in guests:
                remove_tree(guest_dir(g))
            if set(guests) == set(GUESTS):
                p = paths()
                for f in ("key", "pub", "known_hosts", "ssh_config", "peer_key", "relay"):
                    p[f].unlink(missing_ok=True)
                p["peer_key"].with_name("peer_ed25519.pub").unlink(missing_ok=True)
            say(f"purged guest disks and keys ({', '.join(guests)}); the image stays in {image_dir()}")
    return 0


def status_data() -> dict:
    p = paths()
    info = image_info()
    out: dict = {
        "tier": "openzfs",
        "dir": str(p["dir"]),
        "ssh_config": str(p["ssh_config"]),
        "known_hosts": str(p["known_hosts"]),
        "key": str(p["key"]),
        "image": {"built": bool(info), "current": bool(info) and info.get("recipe") == recipe_hash(),
                  **(info or {})},
        "hosts": {},
        "aliases": {a: {"guest": g, "pool": pool} for a, (g, pool) in ALIASES.items()},
    }
    for g in GUESTS.values():
        out["hosts"][g.name] = {
            "state": guest_state(g.name), "address": ADDRESS, "port": g.port, "pools": list(g.pools),
            "pid": guest_pid(g.name), "console": str(guest_dir(g.name) / "console.log"),
        }
    return out


def cmd_status(as_json: bool) -> int:
    data = status_data()
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        img = data["image"]
        print(f"lab dir: {data['dir']}")
        if img["built"]:
            print(f"image:   {img['recipe']} ({'current' if img['current'] else 'STALE: recipe changed'}), "
                  f"OpenZFS {img.get('zfs')}, kernel {img.get('kernel')}")
        else:
            print("image:   not built (openzfs.py build)")
        for name, h in data["hosts"].items():
            aliases = ",".join(a for a, v in data["aliases"].items() if v["guest"] == name)
            print(f"{name:4} {h['state']:8} {h['address']}:{h['port']}  pools={','.join(h['pools']):12} "
                  f"aliases={aliases:10} pid={h['pid'] or '-'}")
    return 0 if {h["state"] for h in data["hosts"].values()} == {"up"} else 3


def cmd_run(host: str, argv: list[str]) -> int:
    guest = resolve_host(host)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise LabError("run: no command given (openzfs.py run HOST -- CMD...)")
    cmd = ssh_base(guest)
    if sys.stdin.isatty() and sys.stdout.isatty():
        cmd.insert(1, "-t")
    cmd += ["--", shlex.join(argv)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(cmd[0], cmd)
    return 127  # not reached


def inventory_doc() -> dict:
    p = paths()
    return {
        "all": {
            "vars": {"user": "root", "identity_file": str(p["key"]), "known_hosts": str(p["known_hosts"])},
            "hosts": {g.name: {"address": ADDRESS, "port": g.port, "direct_address": PEER_ADDRESS,
                               "direct_identity_file": PEER_KEY_IN_GUEST,
                               "direct_known_hosts": PEER_KNOWN_HOSTS_IN_GUEST}
                      for g in GUESTS.values()},
        },
        "zrelay": {
            "snapshot_name": "zrelay_%Y-%m-%dT%H:%M:%SZ",
            "jobs": [{"source": "oz1:tank/data", "targets": ["oz2:backup/oz1/data"]}],
        },
    }


def cmd_env() -> int:
    p = paths()
    print("export ZRELAY_LAB=openzfs")
    print(f"export ZRELAY_OPENZFS_DIR={p['dir']}")
    print(f"export ZRELAY_OPENZFS_SSH_CONFIG={p['ssh_config']}")
    print(f"export ZRELAY_OPENZFS_KEY={p['key']}")
    print(f"export ZRELAY_OPENZFS_KNOWN_HOSTS={p['known_hosts']}")
    return 0


def hosts_arg(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        g = resolve_host(n)
        if g not in out:
            out.append(g)
    return out or list(GUESTS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="openzfs.py", description="zrelay OpenZFS 2.3 lab (qemu guests)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("build", help="build the guest image (cached by recipe hash)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cached image is current")
    for name in ("up", "start-host"):
        p = sub.add_parser(name, help="boot guests, wait for ssh, create pools (idempotent)")
        p.add_argument("hosts", nargs="*" if name == "up" else "+", metavar="HOST")
    for name in ("down", "stop-host"):
        p = sub.add_parser(name, help="power off guests (kill by PID after a grace period)")
        p.add_argument("hosts", nargs="*" if name == "down" else "+", metavar="HOST")
        p.add_argument("--purge", action="store_true", help="also delete guest disks and keys (not the image)")
    p = sub.add_parser("status", help="per-guest state (exit 0 only when every guest is up)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("run", help="run a command on a guest over ssh")
    p.add_argument("host")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    sub.add_parser("inventory", help="print a zrelay inventory for the guests (JSON is valid YAML)")
    sub.add_parser("env", help="print shell exports for the lab paths")
    sub.add_parser("check", help="report missing prerequisites")
    args = ap.parse_args(argv)
    os.environ["PATH"] = sbin_path()
    try:
        if args.cmd == "build":
            return cmd_build(args.force)
        if args.cmd in ("up", "start-host"):
            return cmd_up(hosts_arg(args.hosts))
        if args.cmd in ("down", "stop-host"):
            return cmd_down(hosts_arg(args.hosts), args.purge)
        if args.cmd == "status":
            return cmd_status(args.json)
        if args.cmd == "run":
            return cmd_run(args.host, args.argv)
        if args.cmd == "inventory":
            print(json.dumps(inventory_doc(), indent=2))
            return 0
        if args.cmd == "env":
            return cmd_env()
        if args.cmd == "check":
            problems = preflight()
            missing = missing_tools()
            for pr in problems:
                print(f"- {pr}")
            if missing and not problems:
                print("- will install: " + " ".join(sorted(missing)))
            if not problems:
                print("ok")
            return 1 if problems else 0
    except LabError as e:
        say(f"openzfs: error: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())

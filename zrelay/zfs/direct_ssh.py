"""The source host's own ssh, for direct host-to-host streams.

A direct stream runs ``zfs send … | ssh TARGET 'zfs receive …'`` on the
source, so zrelay builds that ssh's command line: its options (never a
prompt, never an unknown host key), the cipher order (AES-GCM first where both
CPUs have AES instructions), a control master that logs in once for all the
streams that follow, and the pipeline itself. Addresses, users, paths and
cipher names are checked before they reach the command line (InvalidName).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from zrelay.errors import InvalidName
from zrelay.zfs.names import check_remote_path
from zrelay.zfs.quoting import guarded_pipeline, quote
from zrelay.zfs.stream_filters import PV_ARGV, mbuffer_argv, wire_compress_argv

SSH = "ssh"
#: OpenSSH's default cipher list (since 6.9) with AES-GCM moved first. With AES instructions in
#: the CPU, AES-GCM costs ssh and sshd a fraction of chacha20-poly1305's CPU; on the lab a
#: 512 MiB ``zfs send | ssh | zfs receive`` took 4.69 s instead of 5.42 s (bench/README.md).
#: Without them it is the slower one, so it is used only where both ends have them.
AES_FIRST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                     "aes128-ctr", "aes192-ctr", "aes256-ctr")
#: First stage number of a target-side pipeline inside a direct stream: its reports travel back
#: through the source's ssh, so they must not collide with the source's stages (1, 2, …).
TARGET_STAGE_BASE = 101

_SSH_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_SSH_HOST = re.compile(r"[A-Za-z0-9_.:%-]+")
#: An OpenSSH ``Ciphers`` value: names, comma-separated, optionally led by +, - or ^.
_SSH_CIPHERS = re.compile(r"[+^-]?[A-Za-z0-9@._-]+(,[A-Za-z0-9@._-]+)*")


def cpu_aes_argv() -> list[str]:
    """Does this host's CPU have AES instructions? Exit 0: yes (the ``aes`` flag of x86 and
    the ``aes`` feature of arm64 in /proc/cpuinfo), 1: no, 2: no /proc/cpuinfo to tell."""
    return ["grep", "-q", "-w", "aes", "/proc/cpuinfo"]


def check_ssh_ciphers(ciphers: Sequence[str] | str) -> str:
    """An OpenSSH ``Ciphers`` value (names, or one string of them comma-separated, which may
    start with +, - or ^), as ssh takes it; anything else is refused."""
    value = ciphers if isinstance(ciphers, str) else ",".join(ciphers)
    if not _SSH_CIPHERS.fullmatch(value):
        raise InvalidName(f"{value!r} is not a list of ssh cipher names separated by commas")
    return value


def check_ssh_host(address: str) -> str:
    """A host name or address the source's ssh takes as its destination argument."""
    if not isinstance(address, str) or not _SSH_HOST.fullmatch(address) or address.startswith("-"):
        raise InvalidName(f"address {address!r} is not valid for ssh (letters, digits and _.:%-)")
    return address


def ssh_argv(address: str, *, port: int = 22, user: str | None = None,
             identity_file: str | None = None, known_hosts: str | None = None,
             ciphers: Sequence[str] | str | None = None) -> list[str]:
    """The source host's own ``ssh`` to a target, for direct streams.

    BatchMode: never prompt. StrictHostKeyChecking=yes: the target must already be
    known on the source; a direct stream never accepts an unknown key. ``ciphers``
    (OpenSSH's ``Ciphers``; None leaves it to ssh and its config) outranks ssh_config.
    """
    check_ssh_host(address)
    argv = [SSH, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if ciphers is not None:
        argv += ["-o", f"Ciphers={check_ssh_ciphers(ciphers)}"]
    if known_hosts is not None:
        argv += ["-o", f"UserKnownHostsFile={check_remote_path(known_hosts)}"]
    if identity_file is not None:
        argv += ["-o", "IdentitiesOnly=yes", "-i", check_remote_path(identity_file)]
    if port != 22:
        argv += ["-p", str(int(port))]
    if user is not None:
        if not _SSH_USER.fullmatch(user):
            raise InvalidName(f"user name {user!r} is not valid for ssh")
        argv += ["-l", user]
    return [*argv, address]


# --- one login for many streams: the control master -----------------------------------------


def login_check_command(ssh: Sequence[str], control_path: str, *, keep_seconds: int) -> str:
    """Can the source log in to the target with ``ssh`` (from ssh_argv)? Without running a
    command there: a control master authenticates and backgrounds (-f -N). The status is the
    login's (255: ssh failed, with the reason on stderr). The target's login shell never
    starts, so its rc files cost nothing. The master stays for the streams that follow
    (``via_master``): each saves the connection, key exchange and authentication (about
    0.2 s). ``master_exit_command`` ends it; ControlPersist ends one idle for ``keep_seconds``
    whose exit request never came. ``control_path`` must be unique per check."""
    path = check_remote_path(control_path)
    *options, address = ssh
    return quote([*options, "-o", "ControlMaster=yes", "-o", f"ControlPath={path}",
                  "-o", f"ControlPersist={int(keep_seconds)}", "-f", "-N", address])


def via_master(ssh: Sequence[str], control_path: str) -> list[str]:
    """``ssh`` riding the login check's master: a session on its connection, or, where the
    master has gone, a connection of its own (ControlMaster=no falls back to one)."""
    path = check_remote_path(control_path)
    *options, address = ssh
    return [*options, "-o", "ControlMaster=no", "-o", f"ControlPath={path}", address]


def master_exit_command(ssh: Sequence[str], control_path: str) -> str:
    """Tell the master at ``control_path`` to exit (its sessions' streams are over)."""
    path = check_remote_path(control_path)
    return f"{quote([SSH, '-o', f'ControlPath={path}', '-O', 'exit', ssh[-1]])} >/dev/null 2>&1"


# --- the direct stream itself -------------------------------------------------------------


def direct_pipeline(send: Sequence[str], ssh: Sequence[str], receive_command: str, *,
                    progress: bool, sudo: bool = False) -> str:
    """``zfs send … [| pv] | ssh TARGET 'zfs receive …'``, run on the source host.

    ``receive_command`` is the target's full command line (its own sudo applied),
    handed to ssh as one argument, so it is quoted once more here, in the one
    quoting function. Every stage but ssh reports its exit status (guarded_pipeline);
    ssh's status is the target's ``zfs receive`` status, or 255 for ssh itself.
    """
    return wire_direct_pipeline(send, ssh, receive_command, progress=progress, sudo=sudo)


def wire_direct_pipeline(send: Sequence[str], ssh: Sequence[str], receive_command: str, *,
                         progress: bool, sudo: bool = False, compress: str | None = None,
                         buffer: str | None = None, limiter: Sequence[str] | None = None) -> str:
    """direct_pipeline with wire stages: ``zfs send [| pv] [| zstd] [| mbuffer] [| LIMITER] | ssh T '…'``.

    pv counts the stream before compression (progress in stream bytes); ``receive_command``
    is the target's stream_filters.wire_receive_command (stages from TARGET_STAGE_BASE).
    ``limiter`` (stream_filters.rate_limit_argv) holds the bytes that go to ssh, the ones on
    the network, to a bandwidth limit. Identical to direct_pipeline without any of these.
    """
    stages: list[Sequence[str]] = [send]
    if progress:
        stages.append(PV_ARGV)
    if compress:
        stages.append(wire_compress_argv(compress))
    if buffer:
        stages.append(mbuffer_argv(buffer))
    if limiter:
        stages.append(limiter)
    stages.append([*ssh, receive_command])
    return guarded_pipeline(*stages, sudo=sudo)

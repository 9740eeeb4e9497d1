"""The helper programs a stream passes through between ``zfs send`` and ``zfs receive``.

zstd and lz4 compress (on the wire, and for S3), age encrypts for S3, mbuffer
absorbs the bursts of zfs send/receive, pv counts bytes for progress. Every
builder returns an argv with options from the literals here and user values
checked first (InvalidName otherwise); the wire commands join them with the
stage guard of zrelay.zfs.quoting, since POSIX sh has no pipefail.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from zrelay.errors import InvalidName
from zrelay.zfs.names import check_remote_path
from zrelay.zfs.quoting import guarded_pipeline, remote_command

#: `pv -n -b`: cumulative byte counts, one number a line on stderr, every 0.25 s.
PV_ARGV = ("pv", "-n", "-b", "-i", "0.25")
#: Wire compressors, best first: what ``compress: auto`` picks when both ends have it.
WIRE_COMPRESSORS = ("zstd", "lz4")
MBUFFER_BLOCK = "128k"
#: Tools that can hold a direct stream to a rate on the source, preferred first.
RATE_LIMITERS = ("pv", "mbuffer")

_SIZE = re.compile(r"[1-9][0-9]{0,5}[kKMG]?")
_AGE_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")
_SSH_RECIPIENT = re.compile(r"(ssh-ed25519|ssh-rsa) [A-Za-z0-9+/]+={0,3}")


# --- zstd and age (S3 streams) ---------------------------------------------------------


def check_age_recipient(recipient: str) -> str:
    """An age public key (``age1…``) or an SSH public key; anything else is refused."""
    if not isinstance(recipient, str) or not (_AGE_RECIPIENT.fullmatch(recipient)
                                              or _SSH_RECIPIENT.fullmatch(recipient)):
        raise InvalidName(f"age recipient {recipient!r} is not an age1… or ssh-ed25519/ssh-rsa public key")
    return recipient


def zstd_compress_argv(level: int = 3, threads: int = 1) -> list[str]:
    """``zstd`` as a stream filter: quiet, stdout, fixed level and thread count."""
    if not 1 <= level <= 19 or not 0 <= threads <= 64:
        raise ValueError(f"zstd level {level} / threads {threads} out of range")
    return ["zstd", "-q", "-c", f"-{level}", f"-T{threads}"]


def zstd_decompress_argv() -> list[str]:
    """``zstd -d`` as a stream filter (any level, any thread count)."""
    return ["zstd", "-q", "-d", "-c"]


def age_encrypt_argv(recipients: Sequence[str]) -> list[str]:
    """``age -e -r R …``: encrypting needs only public keys, so the source holds no secret."""
    recipients = list(recipients)
    if not recipients:
        raise ValueError("age encryption needs at least one recipient")
    argv = ["age", "-e"]
    for r in recipients:
        argv += ["-r", check_age_recipient(r)]
    return argv


def age_decrypt_argv(identity: str) -> list[str]:
    """``age -d -i FILE``: the identity (private key) file lives on the restoring host."""
    return ["age", "-d", "-i", check_remote_path(identity)]


# --- wire compression and buffering (relay and direct streams) ----------------------------


def check_buffer_size(size: str) -> str:
    """An mbuffer memory size: digits and an optional k/M/G unit (``64M``)."""
    if not isinstance(size, str) or not _SIZE.fullmatch(size):
        raise InvalidName(f"buffer size {size!r} must be a number with an optional k, M or G unit")
    return size


def wire_compress_argv(algo: str) -> list[str]:
    """Fast wire compression (level 1, one thread: the hosts have other work to do)."""
    if algo == "zstd":
        return zstd_compress_argv(1, 1)
    if algo == "lz4":
        return ["lz4", "-q", "-c", "-1"]
    raise ValueError(f"unknown wire compressor {algo!r}")


def wire_decompress_argv(algo: str) -> list[str]:
    """The decompressor matching wire_compress_argv(``algo``)."""
    if algo == "zstd":
        return zstd_decompress_argv()
    if algo == "lz4":
        return ["lz4", "-q", "-d", "-c"]
    raise ValueError(f"unknown wire compressor {algo!r}")


def mbuffer_argv(size: str) -> list[str]:
    """``mbuffer -q -s 128k -m SIZE``: absorbs the bursts of zfs send/receive on each end."""
    return ["mbuffer", "-q", "-s", MBUFFER_BLOCK, "-m", check_buffer_size(size)]


def rate_limit_argv(tool: str, rate: int) -> list[str]:
    """``pv -q -L RATE`` or ``mbuffer -q -r RATE``: hold a stream to ``rate`` bytes per second
    (written in bytes, so both tools read the same number the same way)."""
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise ValueError(f"rate {rate!r} must be a positive number of bytes per second")
    if tool == "pv":
        return ["pv", "-q", "-L", str(rate)]
    if tool == "mbuffer":
        return ["mbuffer", "-q", "-r", str(rate)]
    raise ValueError(f"unknown rate limiter {tool!r}")


def wire_send_command(send: Sequence[str], *, compress: str | None = None, buffer: str | None = None,
                      sudo: bool = False) -> str:
    """The source side of a relayed stream: ``zfs send … [| zstd|lz4] [| mbuffer]``.

    Without compression and buffer it is exactly ``remote_command(send)``. Otherwise every
    stage but the last reports its exit status (``zrelay-stage N exit S``, zfs send is 1).
    """
    stages: list[Sequence[str]] = [send]
    if compress:
        stages.append(wire_compress_argv(compress))
    if buffer:
        stages.append(mbuffer_argv(buffer))
    if len(stages) == 1:
        return remote_command(send, sudo=sudo)
    return guarded_pipeline(*stages, sudo=sudo)


def wire_receive_command(receive: Sequence[str], *, compress: str | None = None, buffer: str | None = None,
                         sudo: bool = False, first_stage: int = 1) -> str:
    """The target side: ``[mbuffer |] [zstd -d|lz4 -d |] zfs receive …``; the session's exit
    status is zfs receive's, the stages before it report theirs from ``first_stage`` on."""
    stages: list[Sequence[str]] = []
    if buffer:
        stages.append(mbuffer_argv(buffer))
    if compress:
        stages.append(wire_decompress_argv(compress))
    stages.append(receive)
    if len(stages) == 1:
        return remote_command(receive, sudo=sudo)
    return guarded_pipeline(*stages, sudo=sudo, first_stage=first_stage)

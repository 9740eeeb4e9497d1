"""Remote command lines of S3 streams: filters on the source, their inverse on the restoring host.

Why filters run on the hosts: compressing and encrypting before the bytes
leave the source keeps the orchestrator's CPU and the network out of it, and
with age the source needs only public keys, so a stolen source cannot read
its own offsite copies. Every stage but the last reports its exit status on
stderr (``quoting.guarded_pipeline``), because POSIX sh has no pipefail.
Pure: builds text and reads text.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from zrelay.errors import S3UsageError
from zrelay.s3.manifest import Manifest, filter_extension
from zrelay.s3.options import S3Options
from zrelay.zfs import parse, quoting, stream_filters


@dataclass(frozen=True, slots=True)
class Filters:
    """What is applied to the zfs stream before upload, in this order."""

    compression: str | None = None         # "zstd"
    zstd_level: int = 3
    recipients: tuple[str, ...] = ()       # age public keys; empty: no encryption

    @property
    def encrypted(self) -> bool:
        return bool(self.recipients)

    @property
    def extension(self) -> str:
        return filter_extension(self.compression, self.encrypted)

    def push_argvs(self) -> list[list[str]]:
        out: list[list[str]] = []
        if self.compression == "zstd":
            out.append(stream_filters.zstd_compress_argv(self.zstd_level))
        if self.recipients:
            out.append(stream_filters.age_encrypt_argv(self.recipients))
        return out

    def names(self) -> list[str]:
        return [n for n, on in (("zstd", self.compression == "zstd"), ("age", self.encrypted)) if on]

    def encryption_record(self) -> dict[str, object] | None:
        return {"type": "age", "recipients": list(self.recipients)} if self.recipients else None


def choose_filters(target: str, options: S3Options, installed: AbstractSet[str], host: str) -> Filters:
    """Filters for a push from ``host`` given the tools installed there.

    Compression ``auto`` quietly falls back to none when zstd is missing;
    asked-for zstd or encryption never does: storing plaintext when the
    inventory says encrypt would be a silent security failure.
    """
    compression: str | None = None
    if options.compression == "zstd":
        if "zstd" not in installed:
            raise S3UsageError(target, f"compression zstd is configured but zstd is not installed on {host}")
        compression = "zstd"
    elif options.compression == "auto" and "zstd" in installed:
        compression = "zstd"
    if options.age_recipients and "age" not in installed:
        raise S3UsageError(target, f"age encryption is configured but age is not installed on {host}; "
                                   "refusing to upload unencrypted")
    return Filters(compression, options.zstd_level, options.age_recipients)


def push_command(send_argv: list[str], filters: Filters, sudo: bool) -> tuple[str, list[str]]:
    """The source's command line and the names of its stages (for error messages)."""
    argvs = [send_argv, *filters.push_argvs()]
    return quoting.guarded_pipeline(*argvs, sudo=sudo), ["zfs send", *filters.names()]


def restore_tools(manifest: Manifest) -> set[str]:
    """Tools the restoring host needs for one stored send."""
    need = set()
    if manifest.compression == "zstd":
        need.add("zstd")
    if manifest.encryption:
        need.add("age")
    return need


def restore_command(receive_argv: list[str], manifest: Manifest, identity: str | None,
                    sudo: bool) -> tuple[str, list[str]]:
    """``age -d | zstd -d | zfs receive`` as the manifest requires, with stage names."""
    argvs: list[list[str]] = []
    names: list[str] = []
    if manifest.encryption:
        kind = manifest.encryption.get("type")
        if kind != "age":
            raise S3UsageError("?", f"{manifest.ref}: unknown encryption {kind!r}")
        if not identity:
            raise S3UsageError("?", f"{manifest.host}:{manifest.dataset}{manifest.ref.split('/')[0]} is "
                                    "age-encrypted: give --age-identity FILE (a key file on the restoring host)")
        argvs.append(stream_filters.age_decrypt_argv(identity))
        names.append("age -d")
    if manifest.compression == "zstd":
        argvs.append(stream_filters.zstd_decompress_argv())
        names.append("zstd -d")
    elif manifest.compression not in (None, "none"):
        raise S3UsageError("?", f"{manifest.ref}: unknown compression {manifest.compression!r}")
    argvs.append(receive_argv)
    names.append("zfs receive")
    return quoting.guarded_pipeline(*argvs, sudo=sudo), names


@dataclass(frozen=True, slots=True)
class StageReport:
    """Exit statuses of a guarded pipeline, read back from its stderr."""

    statuses: dict[int, int]        # stage number (from 1) → exit status, for guarded stages
    text: str                       # stderr without the markers

    def failed(self, names: list[str], last_status: int | None, last_signal: str | None) -> list[str]:
        """Stages that did not succeed, as ``name (exit N)`` phrases; empty when all did."""
        out: list[str] = []
        for i, name in enumerate(names[:-1], 1):
            status = self.statuses.get(i)
            if status is None:
                out.append(f"{name} (no exit status: killed)")
            elif status != 0:
                out.append(f"{name} (exit {status})")
        if last_signal:
            out.append(f"{names[-1]} (killed by signal {last_signal})")
        elif last_status is None:
            out.append(f"{names[-1]} (no exit status: connection closed)")
        elif last_status != 0:
            out.append(f"{names[-1]} (exit {last_status})")
        return out


def read_stage_report(stderr: str) -> StageReport:
    return StageReport(*parse.split_stage_report(stderr))


def parse_space(stdout: str) -> int | None:
    """Upper bound of a full stream from ``space_argv`` output: referenced × compressratio, plus framing."""
    values: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            values[parts[0].strip()] = parts[1].strip()
    try:
        referenced = int(values["referenced"])
        ratio = float(values.get("compressratio", "1").rstrip("x") or 1)
    except (KeyError, ValueError):
        return None
    return int(referenced * max(ratio, 1.0) * 1.02) + (1 << 20)


"""Wire compression and buffering of host-to-host streams, negotiated per (source, target) pair.

Settings (inventory, per job or per host): ``compress: auto|zstd|lz4|off`` and
``buffer: auto|off|SIZE``. A job's setting wins; otherwise ``off`` on either host
wins, then the source host's setting, then the target host's, then the default
(off for both: on a fast link the bottleneck is CPU, and compression and an extra
copy per end cost CPU on both hosts; see bench/README.md).

- ``auto`` compression uses zstd when both ends have it, else lz4 when both have
  it, else nothing; ``zstd``/``lz4`` use that tool when both ends have it, else
  nothing (the transfer never fails for want of a compressor).
- Never compressed: raw sends (``-w``: encrypted blocks do not compress), sends of
  compressed blocks (``-c``), resumed sends (the token may carry either), and
  datasets whose data ZFS itself found incompressible (compression enabled and
  ``compressratio`` below INCOMPRESSIBLE_RATIO: already-compressed data).
- ``buffer``: ``mbuffer -q -s 128k -m SIZE`` on both ends (``auto``: AUTO_BUFFER)
  when both have mbuffer.

The tools come from each host's capability probe (RemoteHost.installed_tools); the commands
themselves come from zrelay.zfs.stream_filters (wire_send_command, wire_receive_command) and
zrelay.zfs.direct_ssh (wire_direct_pipeline), so ``--dry-run`` shows exactly what runs.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Sequence

from zrelay.errors import ZrelayError
from zrelay.inventory.model import Host, Job
from zrelay.transport.host import RemoteHost
from zrelay.zfs import commands, direct_ssh, stream_filters

DEFAULT_COMPRESS = "off"
DEFAULT_BUFFER = "off"
AUTO_BUFFER = "64M"
#: Compression enabled on the dataset and ZFS saved less than this: the data is compressed already.
INCOMPRESSIBLE_RATIO = 1.10


@dataclass(frozen=True, slots=True)
class Wire:
    """What one stream gets between zfs send and zfs receive, and why."""

    compress: str | None = None   # zstd | lz4 | None
    buffer: str | None = None     # mbuffer size per end | None
    why: str = ""

    def source_command(self, source: RemoteHost, send: Sequence[str]) -> str:
        return stream_filters.wire_send_command(send, compress=self.compress, buffer=self.buffer,
                                                sudo=source.host.sudo)

    def target_command(self, dest: RemoteHost, receive: Sequence[str], *, first_stage: int = 1) -> str:
        return stream_filters.wire_receive_command(receive, compress=self.compress, buffer=self.buffer,
                                                   sudo=dest.host.sudo, first_stage=first_stage)

    def direct_pipeline(self, source: RemoteHost, dest: RemoteHost, send: Sequence[str],
                        ssh: Sequence[str], receive: Sequence[str], *, progress: bool,
                        limiter: Sequence[str] | None = None) -> str:
        receive_command = self.target_command(dest, receive, first_stage=direct_ssh.TARGET_STAGE_BASE)
        return direct_ssh.wire_direct_pipeline(send, ssh, receive_command, progress=progress,
                                               sudo=source.host.sudo, compress=self.compress,
                                               buffer=self.buffer, limiter=limiter)


OFF = Wire(why="off")


def settings(job: Job | None, source: Host, target: Host) -> tuple[str, str]:
    """(compress, buffer) settings for a stream of ``job`` from ``source`` to ``target``."""
    def pick(job_value: str | None, a: str | None, b: str | None, default: str) -> str:
        if job_value is not None:
            return job_value
        if "off" in (a, b):
            return "off"
        return a or b or default
    return (pick(job.compress if job else None, source.compress, target.compress, DEFAULT_COMPRESS),
            pick(job.buffer if job else None, source.buffer, target.buffer, DEFAULT_BUFFER))


def send_blocks_compressed(send: Sequence[str]) -> str | None:
    """Why the stream of this send argv does not compress, or None."""
    for word in send[2:]:
        if word == "-t":
            return "resumed send"
        if word.startswith("-") and not word.startswith("--"):
            if "w" in word:
                return "raw send (-w)"
            if "c" in word:
                return "compressed send (-c)"
    return None


def parse_compression(stdout: str) -> tuple[str, float] | None:
    """(compression, compressratio) from commands.compression_argv's output."""
    values = dict(line.split("\t", 1) for line in stdout.splitlines() if "\t" in line)
    try:
        return values["compression"].strip(), float(values["compressratio"].strip().rstrip("x"))
    except (KeyError, ValueError):
        return None


def decide(compress: str, buffer: str, source_tools: AbstractSet[str], target_tools: AbstractSet[str], *,
           send: Sequence[str], compression: tuple[str, float] | None = None) -> Wire:
    """The pure negotiation: settings, the tools on each end, the send and the dataset's compression."""
    both = source_tools & target_tools
    algo: str | None = None
    notes = []
    if compress != "off":
        blocked = send_blocks_compressed(send)
        if blocked is None and compression is not None:
            prop, ratio = compression
            if prop not in ("off", "-", "") and ratio < INCOMPRESSIBLE_RATIO:
                blocked = f"data already compressed (compressratio {ratio:.2f}x)"
        candidates = stream_filters.WIRE_COMPRESSORS if compress == "auto" else (compress,)
        if blocked is not None:
            notes.append(f"no compression: {blocked}")
        else:
            algo = next((c for c in candidates if c in both), None)
            notes.append(f"compress {algo}" if algo else f"no compression: {'/'.join(candidates)} "
                         "not installed on both ends")
    size: str | None = None
    if buffer != "off":
        if "mbuffer" in both:
            size = AUTO_BUFFER if buffer == "auto" else stream_filters.check_buffer_size(buffer)
            notes.append(f"mbuffer {size}")
        else:
            notes.append("no buffer: mbuffer not installed on both ends")
    return Wire(algo, size, "; ".join(notes) or "off")


_compression_cache: "weakref.WeakKeyDictionary[RemoteHost, dict[str, asyncio.Future]]" = weakref.WeakKeyDictionary()


async def _compression(host: RemoteHost, dataset: str) -> tuple[str, float] | None:
    """The dataset's compression and compressratio, once per host, dataset and run."""
    cache = _compression_cache.setdefault(host, {})
    fut = cache.get(dataset)
    if fut is None:
        async def get() -> tuple[str, float] | None:
            try:
                return parse_compression((await host.zfs(commands.compression_argv(dataset))).stdout)
            except ZrelayError:
                return None  # a hint only; the send itself reports real problems
        fut = cache[dataset] = asyncio.ensure_future(get())
    return await asyncio.shield(fut)


async def negotiate(job: Job | None, source: RemoteHost, dest: RemoteHost, send: Sequence[str]) -> Wire:
    """The Wire for one stream of ``job``: the hosts' tools from their capability probes, the
    dataset's compression read only when compressing is asked for."""
    compress, buffer = settings(job, source.host, dest.host)
    if compress == "off" and buffer == "off":
        return OFF
    src_tools, dst_tools = await asyncio.gather(source.installed_tools(), dest.installed_tools())
    compression = None
    if compress != "off" and send_blocks_compressed(send) is None and "@" in send[-1]:
        compression = await _compression(source, send[-1].split("@", 1)[0])
    return decide(compress, buffer, src_tools, dst_tools, send=send, compression=compression)

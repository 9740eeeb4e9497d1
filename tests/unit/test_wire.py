"""Wire compression and buffering: inventory keys, negotiation, and the exact pipelines."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from zrelay.errors import InvalidName
from zrelay.inventory import loads_inventory, validate_inventory_text
from zrelay.inventory.model import Endpoint, Host, Job
from zrelay.paths import wire
from zrelay.paths.relay import _End
from zrelay.zfs import direct_ssh, stream_filters

SEND = ["zfs", "send", "tank/a@s1"]
RECV = ["zfs", "receive", "-u", "backup/a"]
ALL = {"zstd", "lz4", "mbuffer"}


# --- inventory ------------------------------------------------------------------------------

INV = """\
all:
  hosts:
    nas1: {compress: lz4, buffer: 32M}
    vault: {compress: off}
zrelay:
  jobs:
    - source: nas1:tank/a
      compress: zstd
      buffer: auto
      targets: [vault:backup/a]
    - source: nas1:tank/b
      targets: [vault:backup/b]
"""


def test_inventory_keys_per_host_and_job() -> None:
    inv = loads_inventory(INV)
    assert (inv.hosts["nas1"].compress, inv.hosts["nas1"].buffer) == ("lz4", "32M")
    assert (inv.hosts["vault"].compress, inv.hosts["vault"].buffer) == ("off", None)  # YAML's off
    a, b = inv.jobs
    assert (a.compress, a.buffer) == ("zstd", "auto")
    assert (b.compress, b.buffer) == (None, None)


@pytest.mark.parametrize("line, message", [
    ("    nas1: {compress: gzip}", "x.yml:3:22: compress: 'gzip' is not one of auto, zstd, lz4, off"),
    ("    nas1: {buffer: lots}", "x.yml:3:20: buffer: 'lots' must be auto, off or a size like 64M (k, M or G)"),
    ("    nas1: {buffer: 64X}", "x.yml:3:20: buffer: '64X' must be auto, off or a size like 64M (k, M or G)"),
])
def test_inventory_errors_are_located(line: str, message: str) -> None:
    text = INV.replace("    nas1: {compress: lz4, buffer: 32M}", line)
    assert [e.render() for e in validate_inventory_text(text, "x.yml")] == [message]


def test_job_key_errors_are_located() -> None:
    text = INV.replace("      compress: zstd", "      compress: brotli")
    assert [e.render() for e in validate_inventory_text(text, "x.yml")] == [
        "x.yml:8:17: compress: 'brotli' is not one of auto, zstd, lz4, off"]


# --- settings and negotiation ------------------------------------------------------------------


def _host(name: str, compress: str | None = None, buffer: str | None = None) -> Host:
    return Host(name, "127.0.0.1", compress=compress, buffer=buffer)


def _job(compress: str | None = None, buffer: str | None = None) -> Job:
    return Job("j", Endpoint("a", "tank/a"), targets=(Endpoint("b", "backup/a"),),
               compress=compress, buffer=buffer)


@pytest.mark.parametrize("job, src, dst, expected", [
    ((None, None), (None, None), (None, None), ("off", "off")),            # defaults
    (("zstd", "64M"), ("off", "off"), ("off", "off"), ("zstd", "64M")),     # the job wins
    ((None, None), ("auto", "auto"), ("off", None), ("off", "auto")),       # off on either host wins
    ((None, None), ("lz4", None), ("zstd", "16M"), ("lz4", "16M")),         # source, then target
])
def test_settings_precedence(job, src, dst, expected) -> None:  # type: ignore[no-untyped-def]
    assert wire.settings(_job(*job), _host("a", *src), _host("b", *dst)) == expected


def test_auto_prefers_zstd_then_lz4_on_both_ends() -> None:
    assert wire.decide("auto", "off", ALL, ALL, send=SEND).compress == "zstd"
    assert wire.decide("auto", "off", ALL, {"lz4"}, send=SEND).compress == "lz4"
    none = wire.decide("auto", "off", {"zstd"}, {"lz4"}, send=SEND)
    assert none.compress is None and "not installed on both ends" in none.why


def test_named_compressor_only_when_both_have_it() -> None:
    assert wire.decide("lz4", "off", ALL, ALL, send=SEND).compress == "lz4"
    assert wire.decide("zstd", "off", ALL, {"lz4"}, send=SEND).compress is None


@pytest.mark.parametrize("send, why", [
    (["zfs", "send", "-w", "tank/a@s1"], "raw send (-w)"),
    (["zfs", "send", "-L", "-e", "-c", "tank/a@s1"], "compressed send (-c)"),
    (["zfs", "send", "-Lec", "-i", "tank/a@s0", "tank/a@s1"], "compressed send (-c)"),
    (["zfs", "send", "-t", "1-abc-def"], "resumed send"),
])
def test_never_for_raw_compressed_or_resumed_sends(send: list[str], why: str) -> None:
    w = wire.decide("zstd", "off", ALL, ALL, send=send)
    assert w.compress is None and why in w.why


def test_plain_and_incremental_sends_compress() -> None:
    assert wire.send_blocks_compressed(["zfs", "send", "-L", "-e", "-I", "tank/a@s0", "tank/a@s1"]) is None


def test_incompressible_data_is_not_compressed() -> None:
    already = wire.decide("auto", "off", ALL, ALL, send=SEND, compression=("lz4", 1.02))
    assert already.compress is None and "compressratio 1.02x" in already.why
    assert wire.decide("auto", "off", ALL, ALL, send=SEND, compression=("lz4", 2.5)).compress == "zstd"
    # compression off on the dataset says nothing about the data: compress
    assert wire.decide("auto", "off", ALL, ALL, send=SEND, compression=("off", 1.0)).compress == "zstd"


def test_parse_compression_both_dialects() -> None:
    assert wire.parse_compression("compression\toff\ncompressratio\t1.00x\n") == ("off", 1.0)  # zfs-fuse
    assert wire.parse_compression("compression\tlz4\ncompressratio\t2.31\n") == ("lz4", 2.31)  # OpenZFS -p
    assert wire.parse_compression("garbage") is None


def test_buffer_needs_mbuffer_on_both_ends() -> None:
    assert wire.decide("off", "auto", ALL, ALL, send=SEND).buffer == wire.AUTO_BUFFER
    assert wire.decide("off", "16M", ALL, ALL, send=SEND).buffer == "16M"
    assert wire.decide("off", "auto", ALL, {"zstd"}, send=SEND).buffer is None


class _FakeHost:
    """RemoteHost as negotiate() uses it: installed_tools and zfs, with a log of what was asked."""

    def __init__(self, name: str, tools: set[str], compress: str | None = None,
                 compression: str = "compression\toff\ncompressratio\t1.00x\n") -> None:
        self.name, self.tools, self.asked = name, tools, []
        self.host = _host(name, compress)
        self._compression = compression

    async def installed_tools(self) -> frozenset[str]:
        self.asked.append("tools")
        return frozenset(self.tools)

    async def zfs(self, argv: list[str], **_: object) -> object:
        self.asked.append(" ".join(argv))
        return type("R", (), {"stdout": self._compression})()


def test_negotiate_probes_only_what_is_asked() -> None:
    src, dst = _FakeHost("a", ALL), _FakeHost("b", ALL)
    assert asyncio.run(wire.negotiate(_job(), src, dst, SEND)) is wire.OFF  # type: ignore[arg-type]
    assert src.asked == [] and dst.asked == []
    w = asyncio.run(wire.negotiate(_job("lz4"), src, dst, SEND))  # type: ignore[arg-type]
    assert (w.compress, w.buffer) == ("lz4", None)
    assert src.asked == ["tools", "zfs get -H -p -o property,value compression,compressratio tank/a"]
    assert dst.asked == ["tools"]


def test_negotiate_with_incompressible_dataset() -> None:
    src = _FakeHost("a", ALL, compression="compression\tlz4\ncompressratio\t1.01\n")
    w = asyncio.run(wire.negotiate(_job("auto", "auto"), src, _FakeHost("b", ALL), SEND))  # type: ignore[arg-type]
    assert (w.compress, w.buffer) == (None, "64M")


# --- the exact command lines ------------------------------------------------------------------


def test_without_wire_stages_commands_are_unchanged() -> None:
    assert stream_filters.wire_send_command(SEND) == "zfs send tank/a@s1"
    assert stream_filters.wire_receive_command(RECV, sudo=True) == "sudo -n zfs receive -u backup/a"
    ssh = direct_ssh.ssh_argv("10.0.0.2")
    assert (direct_ssh.wire_direct_pipeline(SEND, ssh, "zfs receive -u backup/a", progress=True)
            == direct_ssh.direct_pipeline(SEND, ssh, "zfs receive -u backup/a", progress=True))


def test_relay_pipelines() -> None:
    assert stream_filters.wire_send_command(SEND, compress="zstd", buffer="64M") == (
        '{ zfs send tank/a@s1; echo "zrelay-stage 1 exit $?" >&2; } '
        '| { zstd -q -c -1 -T1; echo "zrelay-stage 2 exit $?" >&2; } '
        '| mbuffer -q -s 128k -m 64M')
    assert stream_filters.wire_receive_command(RECV, compress="lz4", buffer="8M", sudo=True) == (
        '{ mbuffer -q -s 128k -m 8M; echo "zrelay-stage 1 exit $?" >&2; } '
        '| { lz4 -q -d -c; echo "zrelay-stage 2 exit $?" >&2; } '
        '| sudo -n zfs receive -u backup/a')
    assert stream_filters.wire_send_command(SEND, compress="lz4", sudo=True) == (
        '{ sudo -n zfs send tank/a@s1; echo "zrelay-stage 1 exit $?" >&2; } | lz4 -q -c -1')


def test_direct_pipeline_with_compression() -> None:
    w = wire.Wire("zstd", "32M")
    src, dst = _FakeHost("a", ALL), _FakeHost("b", ALL)
    ssh = direct_ssh.ssh_argv("10.0.0.2")
    text = w.direct_pipeline(src, dst, SEND, ssh, RECV, progress=True)  # type: ignore[arg-type]
    assert text == (
        '{ zfs send tank/a@s1; echo "zrelay-stage 1 exit $?" >&2; } '
        '| { pv -n -b -i 0.25; echo "zrelay-stage 2 exit $?" >&2; } '
        '| { zstd -q -c -1 -T1; echo "zrelay-stage 3 exit $?" >&2; } '
        '| { mbuffer -q -s 128k -m 32M; echo "zrelay-stage 4 exit $?" >&2; } '
        "| ssh -o BatchMode=yes -o StrictHostKeyChecking=yes 10.0.0.2 "
        "'{ mbuffer -q -s 128k -m 32M; echo \"zrelay-stage 101 exit $?\" >&2; } "
        "| { zstd -q -d -c; echo \"zrelay-stage 102 exit $?\" >&2; } | zfs receive -u backup/a'")


def test_buffer_size_is_checked() -> None:
    with pytest.raises(InvalidName):
        stream_filters.mbuffer_argv("64M; rm -rf /")
    with pytest.raises(ValueError):
        stream_filters.wire_compress_argv("gzip")


@pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v zstd && command -v lz4"],
                                   capture_output=True).returncode != 0, reason="zstd/lz4 not installed")
@pytest.mark.parametrize("algo", ["zstd", "lz4"])
def test_pipelines_round_trip_locally(algo: str) -> None:
    """The two halves, run by a local sh with cat standing in for zfs: bytes come out identical."""
    data = bytes(range(256)) * 4096 + b"tail"
    send = subprocess.run(["sh", "-c", stream_filters.wire_send_command(["cat"], compress=algo)],
                          input=data, capture_output=True, check=True)
    assert len(send.stdout) < len(data) and b"zrelay-stage 1 exit 0" in send.stderr
    recv = subprocess.run(["sh", "-c", stream_filters.wire_receive_command(["cat"], compress=algo)],
                          input=send.stdout, capture_output=True, check=True)
    assert recv.stdout == data


# --- status of a guarded end ------------------------------------------------------------------------


def test_end_settles_on_the_first_failed_stage() -> None:
    end = _End(bytearray(b"cannot open 'tank/x': dataset does not exist\nzrelay-stage 1 exit 1\n"), 0)
    end.settle()
    assert end.exit_status == 1 and end.text == "cannot open 'tank/x': dataset does not exist"
    clean = _End(bytearray(b"zrelay-stage 1 exit 0\nzrelay-stage 2 exit 0\n"), 0)
    clean.settle()
    assert clean.ok and clean.text == ""
    plain = _End(bytearray(b"12345\n"), 0)  # no stage marks: left alone
    plain.settle()
    assert plain.text == "12345\n"

"""The fast path's receive side (``_FastRecv``) and send-side padding, against a real asyncssh server.

A bulk channel's data packets are opened where they lie and the data of one socket
read goes to the session in one piece; every other packet, and a packet that fails
its tag, still goes through asyncssh's own code.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from zrelay.transport import fastpath
from tests.unit.test_fastpath import _lab_server

BLOCK = 64 * 1024


async def _blocks(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Writes ``command`` blocks of 64 KiB (a counter in each, so order shows) and exits."""
    for i in range(int(process.command or "0")):
        process.stdout.write(i.to_bytes(8, "big") * (BLOCK // 8))
        await process.stdout.drain()
    process.exit(0)


def _expected(blocks: int) -> str:
    return hashlib.sha256(b"".join(i.to_bytes(8, "big") * (BLOCK // 8) for i in range(blocks))).hexdigest()


async def _receive(tmp: Path, blocks: int, *, bulk: bool = True, corrupt_read: int | None = None,
                   debug: int | None = None) -> dict[str, Any]:
    """Receive ``blocks`` × 64 KiB in 32 KiB packets on a fast connection; count the packets
    asyncssh's own ``_recv_packet`` handled, the packets received and the session's
    ``data_received`` calls. ``corrupt_read``: flip a byte in that socket read (from 0)."""
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"slow": 0, "calls": 0, "exc": None}
    digest = hashlib.sha256()
    async with _lab_server(tmp, _blocks, sshd_like=True) as where:
        async with asyncssh.connect(**where, encryption_algs=["aes128-gcm@openssh.com"]) as conn:
            c: Any = conn
            assert fastpath.speed_up(conn)
            if debug is not None:
                asyncssh.set_debug_level(debug)
            slow_packet = c._recv_packet

            def counted() -> bool:
                out["slow"] += 1
                return bool(slow_packet())

            c._recv_packet = counted   # asyncssh's _recv_pkthdr hands each packet it takes to this
            if corrupt_read is not None:
                received, reads = c.data_received, 0

                def corrupting(data: bytes, *args: Any) -> None:
                    nonlocal reads
                    if reads == corrupt_read:
                        out["corrupted"] = True
                        data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1:]
                    reads += 1
                    received(data, *args)

                c.data_received = corrupting
            done = loop.create_future()

            class Sink(asyncssh.SSHClientSession[bytes]):
                def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
                    if bulk:
                        fastpath.speed_up_channel(chan)

                def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
                    out["calls"] += 1
                    digest.update(data)

                def connection_lost(self, exc: Exception | None) -> None:
                    out["exc"] = exc
                    if not done.done():
                        done.set_result(None)

            seq = c._recv_seq
            try:
                await conn.create_session(Sink, str(blocks), encoding=None, window=2 * 1024 * 1024,
                                          max_pktsize=32 * 1024)
                await asyncio.wait_for(done, 120)
            finally:
                asyncssh.set_debug_level(1)
            out["packets"] = (c._recv_seq - seq) & 0xffffffff
    out["digest"] = digest.hexdigest()
    return out


def test_a_bulk_channels_data_skips_asyncssh_per_packet_path_and_arrives_whole(tmp_path: Path) -> None:
    got = asyncio.run(_receive(tmp_path, 256))   # 16 MiB, 512 data packets
    assert got["digest"] == _expected(256)
    assert got["packets"] >= 512
    # asyncssh's own path only for the channel's opening and end (confirmation, EOF, exit status, close)
    assert got["slow"] < 10, f"{got['slow']} of {got['packets']} packets took asyncssh's per-packet path"
    # several packets of one socket read reach the session at once
    assert got["calls"] < got["packets"] / 2, f"{got['calls']} data_received calls for {got['packets']} packets"


def test_a_channel_that_is_not_bulk_keeps_asyncssh_path(tmp_path: Path) -> None:
    got = asyncio.run(_receive(tmp_path, 32, bulk=False))
    assert got["digest"] == _expected(32)
    # every packet through asyncssh's _recv_packet (more calls: a packet not yet whole is tried again)
    assert got["slow"] >= got["packets"] and got["calls"] >= 64


def test_with_packet_logging_every_packet_takes_asyncssh_path(tmp_path: Path) -> None:
    # asyncssh's debug level 2 logs each data packet: its own code does that, so it takes them all
    got = asyncio.run(_receive(tmp_path, 16, debug=2))
    assert got["digest"] == _expected(16)
    assert got["slow"] >= got["packets"]


@pytest.mark.parametrize("read", [2, 5])
def test_a_packet_that_fails_its_tag_ends_the_connection_as_asyncssh_does(tmp_path: Path, read: int) -> None:
    got = asyncio.run(_receive(tmp_path, 256, corrupt_read=read))
    assert got.get("corrupted")
    assert isinstance(got["exc"], asyncssh.DisconnectError)
    assert "MAC verification failed" in str(got["exc"])
    assert got["digest"] != _expected(256)


def test_padding_comes_from_urandom_a_block_at_a_time_each_byte_once(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[bytes] = []
    real = os.urandom

    def urandom(n: int) -> bytes:
        drawn.append(real(n))
        return drawn[-1]

    monkeypatch.setattr(os, "urandom", urandom)
    sender = fastpath._FastSend(object(), lambda *a: None)
    sizes = [4 + i % 16 for i in range(2000)]
    pads = [sender._padding(n) for n in sizes]
    assert [len(p) for p in pads] == sizes
    assert len(drawn) <= sum(sizes) // (fastpath._PAD_POOL - 19) + 1   # one system call per ~270 packets
    # every padding is the next unused stretch of what urandom gave (a block's tail may go unused)
    pool = iter(drawn)
    block, at = next(pool), 0
    for pad in pads:
        if at + len(pad) > len(block):
            block, at = next(pool), 0
        assert pad == block[at:at + len(pad)]
        at += len(pad)


def test_a_bulk_channel_reads_its_socket_in_large_pieces(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        async with _lab_server(tmp_path, _blocks) as where:
            async with asyncssh.connect(**where) as conn:
                fastpath.speed_up(conn)
                transport: Any = conn._transport
                before = transport.max_size
                chan, _ = await conn.create_session(asyncssh.SSHClientSession, "0", encoding=None)
                fastpath.speed_up_channel(chan)
                return before, transport.max_size
    before, after = asyncio.run(main())
    assert before < fastpath.BULK_READ == after

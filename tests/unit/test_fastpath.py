"""The in-place input buffer and the cached AES-GCM object, against the installed asyncssh.

The round trip runs a real asyncssh server in this process (127.0.0.1, an
ephemeral port, generated keys, host key checked): bytes echoed through an SSH
session with the fast path in place must come back identical, with both GCM
ciphers and across a rekey.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, AsyncIterator

import asyncssh
import pytest

from zrelay.transport import fastpath
from zrelay.transport.fastpath import _InputBuffer
from zrelay.transport.ssh import _skip_ignore_packets


def test_input_buffer_consumes_in_place_and_copies_other_slices() -> None:
    buf = _InputBuffer(b"0123456789")
    head = buf[:4]
    assert head == b"0123" and type(head) is bytes       # asyncssh uses such slices as dict keys
    assert buf[2:5] == b"234" and type(buf[2:5]) is bytes
    assert buf[3] == ord("3")
    rest = buf[4:]
    assert rest is buf and bytes(buf) == b"456789"     # `buf = buf[n:]` drops n bytes in place
    buf += b"ab"
    assert type(buf) is _InputBuffer and bytes(buf) == b"456789ab"
    assert buf[0:] == b"456789ab" and type(buf[0:]) is bytes and len(buf) == 8
    assert not _InputBuffer(b"")


def test_installed_asyncssh_consumes_its_buffer_as_expected() -> None:
    # If an asyncssh upgrade changes its internals, the fast paths switch themselves off;
    # this test says so, so that it can be looked at rather than silently lost.
    assert fastpath.supported()
    assert fastpath._send_supported()
    assert fastpath.install_window_fix()
    assert fastpath._cork_supported()
    assert fastpath._channel_supported()


async def _echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    while True:
        data = await process.stdin.read(1 << 16)
        if not data:
            break
        process.stdout.write(data)
        await process.stdout.drain()
    process.exit(0)


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True


@contextlib.asynccontextmanager
async def _lab_server(tmp: Path, process_factory: Any, **server_options: Any) -> AsyncIterator[dict[str, Any]]:
    """An asyncssh server on 127.0.0.1 (ephemeral port, generated keys); yields connect() arguments
    that check its host key against a known_hosts file written for it."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp / "authorized_keys").write_bytes(client_key.export_public_key())
    server = await asyncssh.create_server(
        _Server, "127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=str(tmp / "authorized_keys"),
        process_factory=process_factory, encoding=None, **server_options)
    port = server.sockets[0].getsockname()[1]
    (tmp / "known_hosts").write_bytes(b"[127.0.0.1]:%d " % port + host_key.export_public_key())
    try:
        yield {"host": "127.0.0.1", "port": port, "username": "test", "client_keys": [client_key],
               "known_hosts": str(tmp / "known_hosts"), "config": None}
    finally:
        server.close()
        await server.wait_closed()


async def _echo_round_trip(tmp: Path, cipher: str, payload: bytes, bulk: bool = False) -> tuple[bytes, object]:
    async with _lab_server(tmp, _echo, encryption_algs=[cipher], rekey_bytes=1 << 20) as where:
        async with asyncssh.connect(**where, encryption_algs=[cipher], rekey_bytes=1 << 20) as conn:
            assert fastpath.speed_up(conn)
            assert isinstance(conn.send_packet, fastpath._FastSend)
            chunks: list[bytes] = []
            done = asyncio.get_running_loop().create_future()

            class Sink(asyncssh.SSHClientSession[bytes]):
                def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
                    chunks.append(data)

                def connection_lost(self, exc: Exception | None) -> None:
                    if not done.done():
                        done.set_result(None)

            chan, _ = await conn.create_session(Sink, "echo", encoding=None)
            if bulk:   # under chacha20 every packet takes asyncssh's own send_packet
                assert fastpath.speed_up_channel(chan)
            for i in range(0, len(payload), 100_000):
                chan.write(payload[i:i + 100_000])
            chan.write_eof()
            await asyncio.wait_for(done, 60)
            return b"".join(chunks), conn._inpbuf  # type: ignore[attr-defined]


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                    "chacha20-poly1305@openssh.com"])
@pytest.mark.parametrize("bulk", [False, True], ids=["asyncssh-write", "bulk-write"])
def test_bytes_survive_the_fast_path_across_rekeys(tmp_path: Path, cipher: str, bulk: bool) -> None:
    payload = os.urandom(6 * 1024 * 1024 + 12345)   # several rekeys at rekey_bytes=1 MiB
    echoed, inpbuf = asyncio.run(_echo_round_trip(tmp_path, cipher, payload, bulk))
    assert len(echoed) == len(payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert type(inpbuf) is _InputBuffer


async def _source(process: asyncssh.SSHServerProcess[bytes]) -> None:
    block = os.urandom(64 * 1024)
    for _ in range(int(process.command or "0")):
        process.stdout.write(block)
        await process.stdout.drain()
    process.exit(0)


async def _paused_consumer(tmp: Path, blocks: int, window: int) -> tuple[int, int]:
    """A consumer that pauses after every chunk and resumes a moment later, like the S3
    uploader waiting for a part: returns (bytes received, most bytes ever queued in the channel)."""
    loop = asyncio.get_running_loop()
    received = 0
    most_queued = 0
    async with _lab_server(tmp, _source) as where:
        async with asyncssh.connect(**where) as conn:
            fastpath.speed_up(conn)
            done = loop.create_future()

            class Slow(asyncssh.SSHClientSession[bytes]):
                def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
                    self.chan = chan

                def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
                    nonlocal received, most_queued
                    received += len(data)
                    most_queued = max(most_queued, sum(len(d) for d, _ in self.chan._recv_buf))
                    self.chan.pause_reading()
                    loop.call_later(0.002, self.chan.resume_reading)

                def connection_lost(self, exc: Exception | None) -> None:
                    if not done.done():
                        done.set_result(None)

            await conn.create_session(Slow, str(blocks), encoding=None, window=window, max_pktsize=32 * 1024)
            await asyncio.wait_for(done, 120)
    return received, most_queued


def test_a_paused_channel_holds_at_most_its_window(tmp_path: Path) -> None:
    window = 1024 * 1024
    received, most_queued = asyncio.run(_paused_consumer(tmp_path, 512, window))   # 32 MiB
    assert received == 512 * 64 * 1024
    assert most_queued <= window, f"{most_queued} bytes queued in a channel with a {window}-byte window"


async def _digest(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Reads stdin to the end, answers ``<bytes> <sha256>``."""
    h, n = hashlib.sha256(), 0
    while data := await process.stdin.read(1 << 16):
        h.update(data)
        n += len(data)
    process.stdout.write(f"{n} {h.hexdigest()}\n".encode())
    process.exit(0)


async def _source_or_digest(process: asyncssh.SSHServerProcess[bytes]) -> None:
    await (_digest(process) if process.command == "digest" else _source(process))


async def _relay_counting_writes(tmp: Path, blocks: int) -> tuple[str, str, int, int]:
    """Relay ``blocks`` × 64 KiB from one connection's session into another's, the way
    paths.relay forwards (inside the data callback); returns the digest the far end computed,
    the digest of what was forwarded, the channel data packets sent and the socket writes."""
    loop = asyncio.get_running_loop()
    async with _lab_server(tmp, _source_or_digest) as where:
        async with asyncssh.connect(**where) as src, asyncssh.connect(**where) as dst:
            fastpath.speed_up(src)
            fastpath.speed_up(dst)
            forwarded = hashlib.sha256()
            answer: list[bytes] = []
            far_done, near_done = loop.create_future(), loop.create_future()

            class Far(asyncssh.SSHClientSession[bytes]):
                def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
                    answer.append(data)

                def connection_lost(self, exc: Exception | None) -> None:
                    far_done.done() or far_done.set_result(None)

            far_chan, _ = await dst.create_session(Far, "digest", encoding=None)
            packets_before = dst._send_seq  # type: ignore[attr-defined]

            class Near(asyncssh.SSHClientSession[bytes]):
                def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
                    forwarded.update(data)
                    far_chan.write(data)

                def connection_lost(self, exc: Exception | None) -> None:  # the source exited
                    far_chan.write_eof()
                    near_done.done() or near_done.set_result(None)

            writes = 0  # counted from here: the stream's writes, not the sessions' set-up
            transport_write = dst._transport.write  # type: ignore[attr-defined]

            def counting_write(data: bytes) -> None:
                nonlocal writes
                writes += 1
                transport_write(data)

            dst._transport.write = counting_write  # type: ignore[attr-defined]
            await src.create_session(Near, str(blocks), encoding=None, window=2 * 1024 * 1024,
                                     max_pktsize=32 * 1024)
            await asyncio.wait_for(asyncio.gather(near_done, far_done), 120)
            packets = dst._send_seq - packets_before  # type: ignore[attr-defined]
    size, digest = b"".join(answer).decode().split()
    assert int(size) == blocks * 64 * 1024
    return digest, forwarded.hexdigest(), packets, writes


def test_packets_forwarded_from_one_socket_read_leave_in_one_write(tmp_path: Path) -> None:
    far, near, packets, writes = asyncio.run(_relay_counting_writes(tmp_path, 256))   # 16 MiB
    assert far == near  # every byte arrived, in order
    assert writes * 2 < packets, f"{writes} socket writes for {packets} packets: the writes were not corked"


def test_without_the_cork_every_packet_is_its_own_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the test above: the same relay, corking switched off."""
    monkeypatch.setattr(fastpath, "_cork_supported", lambda: False)
    far, near, packets, writes = asyncio.run(_relay_counting_writes(tmp_path, 64))
    assert far == near and writes >= packets * 0.9


async def _bulk_and_asyncssh_bytes(tmp: Path, payload: bytes, window: int) -> tuple[bytes, bytes, int, int]:
    """What a bulk channel hands the socket for ``payload``, and what asyncssh's own write
    hands it from the same state (sequence number, IV, window; padding bytes made
    deterministic); nothing reaches the server. Also the send-buffer sizes left over."""
    async with _lab_server(tmp, _digest) as where:
        async with asyncssh.connect(**where, encryption_algs=["aes128-gcm@openssh.com"]) as conn:
            _skip_ignore_packets(conn)   # as zrelay connects: no MSG_IGNORE before each packet
            fastpath.speed_up(conn)
            chan, _ = await conn.create_session(asyncssh.SSHClientSession, "digest", encoding=None)
            c: Any = conn
            ch: Any = chan
            cipher = c._send_encryption._cipher
            state = (cipher._iv, c._send_seq, c._rekey_bytes_sent)
            ch._send_window = window   # as granted: the rest stays buffered
            sent: list[bytes] = []
            real_send, c._send = c._send, lambda data: sent.append(bytes(data))
            real_urandom = os.urandom
            try:
                os.urandom = lambda n: bytes(range(n))  # type: ignore[assignment]
                assert fastpath.speed_up_channel(chan)
                chan.write(payload)
                bulk, bulk_left = b"".join(sent), ch._send_buf_len
                sent.clear()
                del ch.write, ch._flush_send_buf          # asyncssh's own methods again
                cipher._iv, c._send_seq, c._rekey_bytes_sent = state
                ch._send_buf.clear()
                ch._send_buf_len = 0
                ch._send_window = window
                c.send_packet = c.send_packet._fallback  # asyncssh's send_packet
                chan.write(payload)
                plain, plain_left = b"".join(sent), ch._send_buf_len
            finally:
                os.urandom = real_urandom  # type: ignore[assignment]
                c._send = real_send
            chan.close()
    return bulk, plain, bulk_left, plain_left


@pytest.mark.parametrize("in_place", [True, False], ids=["encrypt_into", "encrypt"])
@pytest.mark.parametrize("size", [1, 15, 16, 1000, 300 * 1024 + 7])
def test_a_bulk_channel_sends_exactly_what_asyncssh_sends(tmp_path: Path, size: int, in_place: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Same packets to the byte: same split, padding rule, sequence numbers, nonces and tags.
    # An asyncssh server accepts any padding; OpenSSH drops a connection over one byte of it.
    # Without encrypt_into (cryptography < 45) the packet is sealed, then joined to its length.
    assert fastpath._SEAL_IN_PLACE   # the installed cryptography has it
    monkeypatch.setattr(fastpath, "_SEAL_IN_PLACE", in_place)
    payload = os.urandom(size)
    bulk, plain, bulk_left, plain_left = asyncio.run(_bulk_and_asyncssh_bytes(tmp_path, payload, 200 * 1024))
    assert len(bulk) > min(size, 200 * 1024) and bulk == plain
    assert bulk_left == plain_left == max(0, size - 200 * 1024)

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
import inspect
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import asyncssh
import pytest
from asyncssh.channel import SSHChannel
from asyncssh.crypto.cipher import GCMCipher

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


@pytest.fixture(autouse=True)
def _fastpath_from_scratch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test decides the switch itself and sees the verdict worked out anew."""
    monkeypatch.delenv(fastpath.ENV, raising=False)
    fastpath._status.cache_clear()
    fastpath._guard.cache_clear()
    yield
    fastpath._status.cache_clear()
    fastpath._guard.cache_clear()


def test_the_installed_asyncssh_is_a_tested_one() -> None:
    # Fails when constraints.txt moves asyncssh: the new version needs its entry in
    # fastpath.TESTED (fastpath.source_hashes()) once the tests below pass with it.
    assert asyncssh.__version__ in fastpath.TESTED
    assert fastpath.source_hashes() == fastpath.TESTED[asyncssh.__version__]
    assert fastpath.status().on, fastpath.status()


#: What the fast path assumes of the asyncssh functions it stands in for, in their own words:
#: to read through when a new asyncssh version is added to fastpath.TESTED.
ASSUMPTIONS: dict[str, tuple[str, ...]] = {
    # _InputBuffer: asyncssh consumes its input buffer by slicing off the front, and appends
    "SSHConnection.data_received": ("self._inpbuf += data", "self._recv_data()"),
    "SSHConnection._recv_pkthdr": ("self._inpbuf = self._inpbuf[self._recv_blocksize:]",
                                   "if self._pktlen > self._max_recv_pktlen:"),
    "SSHConnection._recv_packet": ("self._inpbuf = self._inpbuf[rem:]",
                                   # _FastRecv: a packet's extent, payload and dispatch
                                   "rem = 4 + self._pktlen + self._recv_macsize - self._recv_blocksize",
                                   "orig_payload = packet_data[1:-packet_data[0]]",
                                   "handler = self._channels[recv_chan]",
                                   "self._finish_recv_packet(pkttype, seq)"),
    # _FastRecv: called as the header handler while it returns True; counts as _finish_recv_packet
    "SSHConnection._recv_data": ("while self._inpbuf and self._recv_handler():",),
    "SSHConnection._finish_recv_packet": ("self._auth_final = True", "self._recv_seq = (seq + 1) & 0xffffffff",
                                          "self._recv_handler = self._recv_pkthdr"),
    "GCMEncryption.decrypt_header": ("return first_block, first_block[:header_len]",),
    # _FastRecv: channel data and window adjusts as the channel's own handlers take them
    "SSHChannel._process_data": ("if self._recv_state != 'open':", "data = packet.get_string()",
                                 "if datalen > self._recv_window:", "self._accept_data(data)"),
    "SSHChannel._process_window_adjust": ("if self._recv_state not in {'open', 'eof_pending', 'eof'}:",
                                          "adjust = packet.get_uint32()", "self._send_window += adjust",
                                          "self._flush_send_buf()"),
    # _CorkedSend: _send is where bytes go to the socket
    "SSHConnection._send": ("def _send(self, data: bytes) -> None:", "self._transport.write(data)"),
    # _FastSend: the same packet as asyncssh's send_packet makes under AES-GCM
    "SSHConnection.send_packet": (
        "padlen = -(self._send_enchdrlen + len(payload)) % self._send_blocksize",
        "packet = Byte(padlen) + payload + os.urandom(padlen)",
        "self._send_encryption.encrypt_packet(seq, hdr, packet)",
        "self._send(packet + mac)", "self._send_seq = (seq + 1) & 0xffffffff",
        "self._rekey_bytes_sent += pktlen"),
    "GCMEncryption.encrypt_packet": ("return self._cipher.encrypt_and_sign(header, packet)",),
    "GCMEncryption.decrypt_packet": ("self._cipher.verify_and_decrypt(first[:header_len]",),
    # the cached AESGCM: asyncssh builds one per packet from the same key and nonce
    "GCMCipher.encrypt_and_sign": ("AESGCM(self._key).encrypt(self._iv, data, header)", "self._update_iv()"),
    "GCMCipher.verify_and_decrypt": ("AESGCM(self._key).decrypt(self._iv, data + mac, header)",
                                     "self._update_iv()"),
    # _BulkSend: the same flow control, buffer accounting, EOF and close as write/_flush_send_buf
    "SSHChannel.write": ("self._send_buf.append((bytearray(encoded_data), datatype))",
                         "if datatype is not None and datatype not in self._write_datatypes:"),
    "SSHChannel._flush_send_buf": (
        "while self._send_buf and self._send_window:",
        "pktsize = min(self._send_window, self._send_pktsize)",
        "self._send_buf_len -= len(data)", "self._send_window -= len(data)",
        "self.send_packet(MSG_CHANNEL_DATA, String(data))",
        "self.send_packet(MSG_CHANNEL_EXTENDED_DATA,", "UInt32(datatype), String(data))",
        "self._pause_resume_writing()", "if self._send_state == 'eof_pending':",
        "self._send_state = 'eof'", "elif self._send_state == 'close_pending':", "self._close_send()"),
    "SSHChannel.send_packet": ("payload = UInt32(self._send_chan) + b''.join(args)",),
    # the window fix: the window shrinks as data arrives; paused data waits in _recv_buf
    "SSHChannel._accept_data": ("self._recv_window -= len(data)", "self._recv_buf.append((data, datatype))"),
    "SSHChannel._flush_recv_buf": ("self._deliver_data(*self._recv_buf.pop(0))",),
    "SSHChannel._deliver_data": (
        "if self._recv_window < self._init_recv_window / 2:",
        "adjust = self._init_recv_window - self._recv_window",
        "self.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(adjust))",
        "self._recv_window = self._init_recv_window",
        "decoded_data = cast(AnyStr, self._decoder.decode(data))",
        "self._session.data_received(decoded_data, datatype)"),
}


def test_what_the_fast_path_assumes_holds_in_the_installed_asyncssh() -> None:
    guarded = {qualname: module for module, qualname in fastpath.GUARDED}
    for qualname, patterns in ASSUMPTIONS.items():
        source = inspect.getsource(fastpath._lookup(guarded[qualname], qualname))
        for pattern in patterns:
            assert pattern in source, f"{qualname}: {pattern!r}"
    # the cork sees every byte sent: _send is the one place asyncssh writes to the socket
    assert inspect.getsource(asyncssh.connection).count("self._transport.write(") == 1


def test_source_of_is_what_inspect_getsource_gives() -> None:
    for module, qualname in fastpath.GUARDED:
        func = fastpath._lookup(module, qualname)
        assert fastpath.source_of(func).decode() == inspect.getsource(func), qualname


def _copy_of(tmp_path: Path, owner: type, name: str, old: str = "", new: str = "") -> Any:
    """``owner.name`` compiled again from its own source, with ``old`` replaced by ``new``,
    from a file of its own (class line, then the method's lines exactly as they were)."""
    func = getattr(owner, name)
    source = inspect.getsource(func)
    assert old in source
    path = tmp_path / f"{owner.__name__}_{name}.py"
    path.write_text(f"class {owner.__name__}:\n" + source.replace(old, new, 1))
    namespace = dict(vars(inspect.getmodule(func)))
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace[owner.__name__].__dict__[name]


def test_an_exact_copy_of_a_guarded_function_keeps_the_fast_path_on(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the control for the tests below: the guard reads the function's text, wherever it is
    monkeypatch.setattr(GCMCipher, "verify_and_decrypt", _copy_of(tmp_path, GCMCipher, "verify_and_decrypt"))
    assert fastpath.status().on


@pytest.mark.parametrize("old, new", [("decrypted_data = None", "decrypted_data = b''"),
                                      ("        self._update_iv()", "        self._update_iv() ")],
                         ids=["changed", "one-space"])
def test_a_changed_guarded_function_turns_the_fast_path_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture,
                                                            old: str, new: str) -> None:
    monkeypatch.setattr(GCMCipher, "verify_and_decrypt", _copy_of(tmp_path, GCMCipher, "verify_and_decrypt", old, new))
    caplog.set_level(logging.DEBUG, logger="zrelay.transport.fastpath")
    verdict = fastpath.status()
    assert not verdict.on
    assert "asyncssh.crypto.cipher.GCMCipher.verify_and_decrypt differs from the tested source" in verdict.why
    assert fastpath.status() is verdict   # worked out once
    records = [r for r in caplog.records if r.name == "zrelay.transport.fastpath"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.DEBUG, f"asyncssh {asyncssh.__version__}: fast path off: {verdict.why}")]


def test_the_first_changed_function_is_the_one_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SSHChannel, "_deliver_data", _copy_of(tmp_path, SSHChannel, "_deliver_data", "/ 2", "/ 4"))
    monkeypatch.setattr(SSHChannel, "write", _copy_of(tmp_path, SSHChannel, "write", "return", "return  "))
    assert "asyncssh.channel.SSHChannel.write differs" in fastpath.status().why


def test_a_missing_guarded_function_turns_the_fast_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(SSHChannel, "_flush_recv_buf")
    verdict = fastpath.status()
    assert not verdict.on and "asyncssh.channel.SSHChannel._flush_recv_buf cannot be read" in verdict.why


@pytest.mark.parametrize("version", ["2.24.2", "2.25.0", "2.24.1.post1"])
def test_another_asyncssh_version_turns_the_fast_path_off(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(asyncssh, "__version__", version)
    verdict = fastpath.status()
    assert not verdict.on
    assert verdict.why == "not a tested asyncssh version (tested: 2.24.1)"


@pytest.mark.parametrize("value", ["0", "off", "false", "no", "OFF", " No ", "False"])
def test_the_environment_turns_the_fast_path_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ZRELAY_FASTPATH", value)
    assert fastpath.status() == fastpath.Status(False, f"ZRELAY_FASTPATH={value}")


@pytest.mark.parametrize("value", ["1", "on", "true", "yes", "", "Yes"])
def test_the_environment_can_say_on(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ZRELAY_FASTPATH", value)
    assert fastpath.status().on


def test_an_unknown_word_in_the_environment_is_read_as_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZRELAY_FASTPATH", "disabled")
    verdict = fastpath.status()
    assert not verdict.on
    assert verdict.why == "ZRELAY_FASTPATH='disabled' is none of 0/1/false/no/off/on/true/yes"


def test_the_verdict_is_quiet_on_the_terminal() -> None:
    # asyncssh of another version, logging as an application leaves it: nothing on stderr
    code = ("from zrelay.transport import fastpath; fastpath.asyncssh.__version__ = '9.9'; "
            "print(fastpath.status())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "off (not a tested asyncssh version (tested: 2.24.1))\n"
    assert proc.stderr == ""


def test_zrelay_version_shows_the_verdict() -> None:
    def version(**env: str) -> str:
        full = {k: v for k, v in os.environ.items() if k != "ZRELAY_FASTPATH"} | env
        proc = subprocess.run([sys.executable, "-m", "zrelay", "--version"], capture_output=True, text=True,
                              timeout=60, env=full)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        return proc.stdout

    on = version()
    assert on.startswith("zrelay ") and f"\nasyncssh {asyncssh.__version__}, fast path on (" in on
    assert version(ZRELAY_FASTPATH="0").endswith(f"asyncssh {asyncssh.__version__}, fast path off (ZRELAY_FASTPATH=0)\n")


def test_working_out_the_verdict_is_cheap() -> None:
    # Not a timing assertion: the guard reads the guarded functions' files, never inspect's
    # search through every loaded module (40-80 ms); bench/ has the start-up figures.
    import unittest.mock
    with unittest.mock.patch.object(inspect, "getsource", side_effect=AssertionError("inspect.getsource")), \
            unittest.mock.patch.object(inspect, "getmodule", side_effect=AssertionError("inspect.getmodule")):
        assert fastpath.status().on


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


class _SshdLikeServer(_Server):
    """Sends no SSH_MSG_IGNORE before each packet under AES-GCM, as OpenSSH's sshd."""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        server_side: Any = conn   # the same send_packet as a client connection's
        _skip_ignore_packets(server_side)


@contextlib.asynccontextmanager
async def _lab_server(tmp: Path, process_factory: Any, *, sshd_like: bool = False,
                      **server_options: Any) -> AsyncIterator[dict[str, Any]]:
    """An asyncssh server on 127.0.0.1 (ephemeral port, generated keys); yields connect() arguments
    that check its host key against a known_hosts file written for it. ``sshd_like``: the server
    sends no ignore packet before each packet (_SshdLikeServer)."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp / "authorized_keys").write_bytes(client_key.export_public_key())
    server = await asyncssh.create_server(
        _SshdLikeServer if sshd_like else _Server, "127.0.0.1", 0, server_host_keys=[host_key],
        authorized_client_keys=str(tmp / "authorized_keys"),
        process_factory=process_factory, encoding=None, **server_options)
    port = server.sockets[0].getsockname()[1]
    (tmp / "known_hosts").write_bytes(b"[127.0.0.1]:%d " % port + host_key.export_public_key())
    try:
        yield {"host": "127.0.0.1", "port": port, "username": "test", "client_keys": [client_key],
               "known_hosts": str(tmp / "known_hosts"), "config": None}
    finally:
        server.close()
        await server.wait_closed()


async def _echo_round_trip(tmp: Path, cipher: str, payload: bytes, bulk: bool = False,
                           on: bool = True) -> tuple[bytes, object]:
    async with _lab_server(tmp, _echo, encryption_algs=[cipher], rekey_bytes=1 << 20) as where:
        async with asyncssh.connect(**where, encryption_algs=[cipher], rekey_bytes=1 << 20) as conn:
            assert fastpath.speed_up(conn) is on
            assert isinstance(conn.send_packet, fastpath._FastSend) is on
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
                assert fastpath.speed_up_channel(chan) is on
            if not on:   # asyncssh as it ships: nothing on the connection's or the channel's objects
                assert not any(k.startswith("_zrelay") or k in {"send_packet", "_send", "data_received"}
                               for k in vars(conn))
                assert not {"write", "_flush_send_buf", "_deliver_data"} & vars(chan).keys()
            for i in range(0, len(payload), 100_000):
                chan.write(payload[i:i + 100_000])
            chan.write_eof()
            await asyncio.wait_for(done, 60)
            return b"".join(chunks), conn._inpbuf


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                    "chacha20-poly1305@openssh.com"])
@pytest.mark.parametrize("bulk", [False, True], ids=["asyncssh-write", "bulk-write"])
def test_bytes_survive_the_fast_path_across_rekeys(tmp_path: Path, cipher: str, bulk: bool) -> None:
    payload = os.urandom(6 * 1024 * 1024 + 12345)   # several rekeys at rekey_bytes=1 MiB
    echoed, inpbuf = asyncio.run(_echo_round_trip(tmp_path, cipher, payload, bulk))
    assert len(echoed) == len(payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert type(inpbuf) is _InputBuffer
    # asyncssh's classes are as they were: the changes were made to this connection's objects
    assert fastpath.source_hashes() == fastpath.TESTED[asyncssh.__version__]


def test_with_the_fast_path_off_a_connection_is_asyncssh_as_it_ships(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZRELAY_FASTPATH", "off")
    payload = os.urandom(3 * 1024 * 1024 + 7)
    echoed, inpbuf = asyncio.run(_echo_round_trip(tmp_path, "aes128-gcm@openssh.com", payload, True, on=False))
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert type(inpbuf) is bytes


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
                    fastpath.speed_up_channel(chan)   # before anything arrives

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


@pytest.mark.parametrize("on", [True, False], ids=["fastpath-on", "fastpath-off"])
def test_a_paused_channel_holds_at_most_its_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   on: bool) -> None:
    # Off, asyncssh as it ships: a window re-opened per pause, and more than a window queued.
    if not on:
        monkeypatch.setenv("ZRELAY_FASTPATH", "0")
    window = 1024 * 1024
    received, most_queued = asyncio.run(_paused_consumer(tmp_path, 512, window))   # 32 MiB
    assert received == 512 * 64 * 1024
    assert (most_queued <= window) is on, f"{most_queued} bytes queued in a channel with a {window}-byte window"


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
                    if not far_done.done():
                        far_done.set_result(None)

            far_chan, _ = await dst.create_session(Far, "digest", encoding=None)
            packets_before = dst._send_seq

            class Near(asyncssh.SSHClientSession[bytes]):
                def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
                    forwarded.update(data)
                    far_chan.write(data)

                def connection_lost(self, exc: Exception | None) -> None:  # the source exited
                    far_chan.write_eof()
                    if not near_done.done():
                        near_done.set_result(None)

            writes = 0  # counted from here: the stream's writes, not the sessions' set-up
            transport: Any = dst._transport
            transport_write = transport.write

            def counting_write(data: bytes) -> None:
                nonlocal writes
                writes += 1
                transport_write(data)

            transport.write = counting_write
            await src.create_session(Near, str(blocks), encoding=None, window=2 * 1024 * 1024,
                                     max_pktsize=32 * 1024)
            await asyncio.wait_for(asyncio.gather(near_done, far_done), 120)
            packets = dst._send_seq - packets_before
    size, digest = b"".join(answer).decode().split()
    assert int(size) == blocks * 64 * 1024
    return digest, forwarded.hexdigest(), packets, writes


def test_packets_forwarded_from_one_socket_read_leave_in_one_write(tmp_path: Path) -> None:
    far, near, packets, writes = asyncio.run(_relay_counting_writes(tmp_path, 256))   # 16 MiB
    assert far == near  # every byte arrived, in order
    assert writes * 2 < packets, f"{writes} socket writes for {packets} packets: the writes were not corked"


def test_without_the_cork_every_packet_is_its_own_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the test above: the same relay, asyncssh as it ships (fast path off)."""
    monkeypatch.setenv("ZRELAY_FASTPATH", "0")
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
                os.urandom = lambda n: bytes(range(n))
                c.send_packet._padding = os.urandom   # the padding pool's bytes, made the same way
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
                os.urandom = real_urandom
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

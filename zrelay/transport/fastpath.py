"""asyncssh's receive path without its per-packet copies of the whole input buffer.

asyncssh keeps received bytes in an immutable ``bytes`` buffer and consumes a
packet with ``buf = buf[n:]``: every packet header and every packet copies
everything still buffered (up to several hundred KiB per socket read), and
``buf += data`` copies it once more. For a bulk stream that is 10-15 copies
of every byte, most of the relay's CPU besides the system calls, and a steady
churn of large allocations that fragments the heap. ``_InputBuffer`` is a
``bytearray`` on which exactly those two operations work in place (dropping
from the front of a bytearray only moves its start), while every other slice
still returns an independent ``bytes``, as asyncssh expects.

Also: asyncssh builds a new ``AESGCM`` object for every packet; one per
cipher instance (one per direction and key) does the same work once. And on
the send side, a channel data packet under AES-GCM is assembled, sealed and
written with three copies instead of about eight (``_FastSend``); anything
else (other packet types, key exchange or rekey due, compression, another
cipher, packet logging) takes asyncssh's own path unchanged.

A bulk stream's channel (``speed_up_channel``) also keeps what is written as
it was given and seals each packet straight from a slice of it
(``_BulkSend``): asyncssh's channel copies every byte about seven times
before the cipher sees it. A 1 GiB restore from S3 spent 0.43 s of CPU in
those copies.

Writes are corked while a connection handles received data (``_CorkedSend``):
the packets one socket read gives rise to, on any connection (a relay forwards
what the source sent to the target), leave in one ``send`` per connection when
that handling ends instead of one system call per packet. A 256 MiB relay made
10,100 sends of 26 KiB on average, 0.42 s of its 1.6 s of CPU.

Flow control (a fix, not a speed-up): asyncssh grants the sender a full new
window as soon as it delivers one chunk after a pause, while the rest of what
arrived during the pause is still queued. Each pause/resume cycle of a slow
consumer (the S3 uploader waiting for parts) could then queue another window:
memory grew with the stream (600 MiB peak for a 4 GiB push with a 16 MiB
window). ``_deliver_data`` here counts queued bytes as not yet consumed, so
what a channel holds stays within its window.

All of these are applied only when asyncssh's internals look exactly as
expected, else nothing changes; tests/unit/test_fastpath.py checks the
assumptions against the installed asyncssh.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import time
from typing import Any, Callable

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, MSG_CHANNEL_EXTENDED_DATA, MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.crypto import cipher as cipher_mod
from asyncssh.encryption import GCMEncryption
from asyncssh.misc import ProtocolError
from asyncssh.packet import String, UInt32
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _source_matches(patterns: tuple[str, ...], *functions: Any) -> bool:
    """Does the installed asyncssh's source of ``functions`` contain every pattern? The one
    guard of every change below: if asyncssh's internals move, that change is not made."""
    try:
        source = "".join(inspect.getsource(f) for f in functions)
    except (OSError, TypeError):
        return False
    return all(p in source for p in patterns)


def _source_count(pattern: str, module: Any) -> int:
    """How often ``pattern`` occurs in ``module``'s source (0 when it cannot be read)."""
    try:
        return inspect.getsource(module).count(pattern)
    except (OSError, TypeError):
        return 0


_CONSUME_PATTERNS = ("self._inpbuf = self._inpbuf[self._recv_blocksize:]", "self._inpbuf = self._inpbuf[rem:]",
                     "self._inpbuf += data")


class _InputBuffer(bytearray):
    """``buf[n:]`` drops the first n bytes in place and returns the buffer itself;
    any other slice is a ``bytes`` copy (hashable, immutable, like asyncssh's own)."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if type(key) is slice:
            if key.stop is None and key.step is None and key.start:
                del self[:key.start]
                return self
            return bytes(memoryview(self)[key])
        return bytearray.__getitem__(self, key)


@functools.cache
def supported() -> bool:
    """Do asyncssh's receive internals consume ``_inpbuf`` the way _InputBuffer expects?"""
    conn_cls = asyncssh.connection.SSHConnection
    return _source_matches(_CONSUME_PATTERNS, conn_cls.data_received, conn_cls._recv_pkthdr,
                           conn_cls._recv_packet)


def speed_up(conn: asyncssh.SSHClientConnection) -> bool:
    """Give an established connection the in-place input buffer, the fast channel-data
    send and corked writes; True when the input buffer was applied."""
    install_window_fix()
    if _install_gcm_cache() and _send_supported():
        conn.send_packet = _FastSend(conn, conn.send_packet)  # type: ignore[method-assign]
    if _cork_supported():
        conn._send = _CorkedSend(conn._send)  # type: ignore[method-assign]
        conn.data_received = _corking(conn.data_received)  # type: ignore[method-assign]
    if not supported():
        return False
    handler = getattr(conn, "_recv_handler", None)
    buf = getattr(conn, "_inpbuf", None)
    if handler is None or handler != getattr(conn, "_recv_pkthdr", None) or type(buf) is not bytes:
        return False   # still in the version exchange, or already converted
    conn._inpbuf = _InputBuffer(buf)  # type: ignore[attr-defined]
    return True


_SEND_PATTERNS = ("padlen = -(self._send_enchdrlen + len(payload)) % self._send_blocksize",
                  "packet = Byte(padlen) + payload + os.urandom(padlen)",
                  "self._send_encryption.encrypt_packet(seq, hdr, packet)",
                  "self._send(packet + mac)", "self._send_seq = (seq + 1) & 0xffffffff",
                  "self._rekey_bytes_sent += pktlen")


@functools.cache
def _send_supported() -> bool:
    return _source_matches(_SEND_PATTERNS, asyncssh.connection.SSHConnection.send_packet)


#: cryptography ≥ 45 can seal into a buffer that already holds the packet's length.
_SEAL_IN_PLACE = hasattr(AESGCM, "encrypt_into")


class _FastSend:
    """``send_packet`` for channel data under AES-GCM, packet for packet what asyncssh
    sends (same padding rule, sequence numbers and rekey accounting), minus the copies."""

    def __init__(self, conn: Any, fallback: Callable[..., None]) -> None:
        self._conn = conn
        self._fallback = fallback

    def ready(self) -> bool:
        """Can a channel data packet be sealed here now (else asyncssh's own path)?"""
        conn = self._conn
        return (type(conn._send_encryption) is GCMEncryption
                and conn._auth_complete and conn._kex_complete and conn._compressor is None
                and conn._rekey_bytes_sent < conn._rekey_bytes
                and not (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
                and conn._transport is not None and conn.logger._debug_level < 3)

    def __call__(self, pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if (pkttype != MSG_CHANNEL_DATA or (kwargs and kwargs.keys() != {"handler"})  # handler: logging only
                or not self.ready()):
            self._fallback(pkttype, *args, **kwargs)
            return
        self.seal(bytes((pkttype,)), *args)

    def seal(self, head: bytes, *parts: Any) -> None:
        """Pad, seal and send one packet whose payload is ``head`` + ``parts`` (bytes-like)."""
        conn = self._conn
        cipher = conn._send_encryption._cipher
        payload = len(head) + sum(map(len, parts))   # message type included, as asyncssh counts it
        padlen = -(conn._send_enchdrlen + payload) % conn._send_blocksize
        if padlen < 4:
            padlen += conn._send_blocksize
        plain = b"".join((bytes((padlen,)), head, *parts, os.urandom(padlen)))
        header = len(plain).to_bytes(4, "big")
        if _SEAL_IN_PLACE:
            packet = bytearray(len(plain) + 20)     # header, ciphertext, 16-byte tag: sealed in place
            packet[:4] = header
            _aead(cipher).encrypt_into(cipher._iv, plain, header, memoryview(packet)[4:])
        else:
            packet = header + _aead(cipher).encrypt(cipher._iv, plain, header)  # type: ignore[assignment]
        cipher._update_iv()
        conn._send(packet)
        conn._send_seq = (conn._send_seq + 1) & 0xffffffff
        conn._rekey_bytes_sent += len(plain)


_CHANNEL_PATTERNS = ("self._send_buf.append((bytearray(encoded_data), datatype))",
                     "while self._send_buf and self._send_window:",
                     "pktsize = min(self._send_window, self._send_pktsize)",
                     "self._send_buf_len -= len(data)", "self._send_window -= len(data)",
                     "self.send_packet(MSG_CHANNEL_DATA, String(data))",
                     "self.send_packet(MSG_CHANNEL_EXTENDED_DATA,", "UInt32(datatype), String(data))",
                     "if self._send_state == 'eof_pending':", "self._send_state = 'eof'",
                     "elif self._send_state == 'close_pending':", "self._close_send()",
                     "if datatype is not None and datatype not in self._write_datatypes:",
                     "self._pause_resume_writing()",
                     "payload = UInt32(self._send_chan) + b''.join(args)")


@functools.cache
def _channel_supported() -> bool:
    """Do a channel's ``write``, ``_flush_send_buf`` and ``send_packet`` look as _BulkSend expects?
    (The connection side is checked where _FastSend is installed: a channel needs one.)"""
    return _source_matches(_CHANNEL_PATTERNS, SSHChannel.write, SSHChannel._flush_send_buf, SSHChannel.send_packet)


def speed_up_channel(chan: Any) -> bool:
    """Give one bulk channel the copy-free send path (``_BulkSend``); True when applied."""
    conn = getattr(chan, "_conn", None)
    if not _channel_supported() or conn is None or not isinstance(conn.send_packet, _FastSend):
        return False
    if chan._encoding or chan._send_buf or isinstance(chan.write, _BulkSend):
        return False
    bulk = _BulkSend(chan, conn.send_packet)
    chan.write = bulk
    chan._flush_send_buf = bulk.flush
    return True


class _BulkSend:
    """A channel's ``write`` and ``_flush_send_buf`` for bulk data: what is written is kept
    as it was given (a read-only view, not a ``bytearray`` copy), each packet is a slice of
    it, and the packet is assembled and sealed in one pass (``_FastSend.seal``). asyncssh
    copies every byte about seven times on this way: into its send buffer, out of it, out
    of the front of it, into ``String``, behind the channel number, into the padded packet
    and behind the length. Same flow control, write-buffer accounting, EOF and close."""

    def __init__(self, chan: Any, sender: _FastSend) -> None:
        self._chan = chan
        self._sender = sender

    def __call__(self, data: Any, datatype: Any = None) -> None:
        chan = self._chan
        if chan._send_state != "open":
            raise BrokenPipeError("Channel not open for sending")
        if datatype is not None and datatype not in chan._write_datatypes:
            raise OSError("Invalid extended data type")
        if not data:
            return
        # A caller may reuse a bytearray once write() returns: keep an immutable copy of it.
        view = memoryview(data if type(data) is bytes else bytes(data))
        chan._send_buf.append((view, datatype))
        chan._send_buf_len += len(view)
        self.flush()

    def flush(self) -> None:
        chan = self._chan
        while chan._send_buf and chan._send_window:
            pktsize = min(chan._send_window, chan._send_pktsize)
            view, datatype = chan._send_buf[0]
            if len(view) > pktsize:
                data = view[:pktsize]
                chan._send_buf[0] = (view[pktsize:], datatype)
            else:
                data = view
                del chan._send_buf[0]
            chan._send_buf_len -= len(data)
            chan._send_window -= len(data)
            if chan._send_chan is None:   # as asyncssh's send_packet: not open yet, or gone
                continue
            if datatype is not None:
                chan.send_packet(MSG_CHANNEL_EXTENDED_DATA, UInt32(datatype), String(bytes(data)))
            elif self._sender.ready():
                self._sender.seal(bytes((MSG_CHANNEL_DATA,)) + UInt32(chan._send_chan) + UInt32(len(data)), data)
            else:
                chan.send_packet(MSG_CHANNEL_DATA, String(bytes(data)))
        chan._pause_resume_writing()
        if not chan._send_buf:
            if chan._send_state == "eof_pending":
                chan.send_packet(MSG_CHANNEL_EOF)
                chan._send_state = "eof"
            elif chan._send_state == "close_pending":
                chan._close_send()


_CORK_PATTERNS = ("def _send(self, data: bytes) -> None:", "self._transport.write(data)",
                  "self._inpbuf += data", "self._recv_data()")


@functools.cache
def _cork_supported() -> bool:
    """Is ``_send`` the one place asyncssh writes to the transport, and ``data_received``
    where received bytes come in? Then both can be wrapped per connection."""
    conn_cls = asyncssh.connection.SSHConnection
    return (_source_matches(_CORK_PATTERNS, conn_cls._send, conn_cls.data_received)
            and _source_count("self._transport.write(", asyncssh.connection) == 1)


class _Cork(threading.local):
    """Per thread (one event loop each): how deep in received-data handling we are, and
    which connections hold corked bytes."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: list[_CorkedSend] = []


_cork = _Cork()


class _CorkedSend:
    """A connection's ``_send``: queues what is sent while received data is being handled,
    in order, and writes it in one piece when that handling ends (see the docstring)."""

    __slots__ = ("_send", "_queue")

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self._send = send
        self._queue: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        if not _cork.depth:
            self._send(data)
            return
        if not self._queue:
            _cork.pending.append(self)
        self._queue.append(data)

    def flush(self) -> None:
        queue, self._queue = self._queue, []
        if queue:
            self._send(queue[0] if len(queue) == 1 else b"".join(queue))


def _corking(data_received: Callable[..., None]) -> Callable[..., None]:
    def corked(data: bytes, *args: Any) -> None:
        _cork.depth += 1
        try:
            data_received(data, *args)
        finally:
            _cork.depth -= 1
            if not _cork.depth and _cork.pending:
                pending, _cork.pending = _cork.pending, []
                error: BaseException | None = None
                for send in pending:  # every connection's bytes leave, even if one write raised
                    try:
                        send.flush()
                    except BaseException as exc:  # noqa: BLE001  (re-raised below)
                        error = error or exc
                if error is not None:
                    raise error
    return corked


def _aead(cipher: Any) -> AESGCM:
    cached = cipher.__dict__.get("_zrelay_aead")
    if cached is None:
        cached = cipher._zrelay_aead = AESGCM(cipher._key)
    return cached


@functools.cache
def _install_gcm_cache() -> bool:
    """One AESGCM object per GCMCipher instead of one per packet (same nonces, same output)."""
    gcm = cipher_mod.GCMCipher
    if not _source_matches(("AESGCM(self._key)", "self._update_iv()"), gcm.encrypt_and_sign, gcm.verify_and_decrypt):
        return False
    tag_size = cipher_mod._GCM_MAC_SIZE

    def encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
        sealed = _aead(self).encrypt(self._iv, data, header)
        self._update_iv()
        return header + sealed[:-tag_size], sealed[-tag_size:]

    def verify_and_decrypt(self: Any, header: bytes, data: bytes, mac: bytes) -> bytes | None:
        try:
            opened: bytes | None = _aead(self).decrypt(self._iv, data + mac, header)
        except InvalidTag:
            opened = None
        self._update_iv()
        return opened

    gcm.encrypt_and_sign = encrypt_and_sign
    gcm.verify_and_decrypt = verify_and_decrypt
    return True


_WINDOW_PATTERNS = ("if self._recv_window < self._init_recv_window / 2:",
                    "adjust = self._init_recv_window - self._recv_window",
                    "self.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(adjust))",
                    "self._recv_window = self._init_recv_window",
                    "decoded_data = cast(AnyStr, self._decoder.decode(data))",
                    "self._session.data_received(decoded_data, datatype)")


@functools.cache
def install_window_fix() -> bool:
    """Replace ``SSHChannel._deliver_data`` (once) by one that only re-opens the window for
    bytes the session has actually been given (see the module docstring)."""
    if not _source_matches(_WINDOW_PATTERNS, SSHChannel._deliver_data):
        return False

    def _deliver_data(self: Any, data: bytes, datatype: Any) -> None:
        init = self._init_recv_window
        if self._recv_window < init / 2:
            queued = sum(len(chunk) for chunk, _ in self._recv_buf)
            consumed = init - self._recv_window - queued
            if consumed > init / 2:
                self.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(consumed))
                self._recv_window += consumed
        if self._encoding:
            try:
                decoded = self._decoder.decode(data)
            except UnicodeDecodeError as exc:
                raise ProtocolError(str(exc)) from None
        else:
            decoded = data
        if self._session is not None:
            self._session.data_received(decoded, datatype)

    SSHChannel._deliver_data = _deliver_data
    return True

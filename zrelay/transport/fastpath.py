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

A bulk channel's data and window adjusts are also taken off the input buffer without
asyncssh's per-packet machinery (``_FastRecv``): each packet opened where it lies, its
header read with ``struct``, and the data of the several packets one socket read brings
handed to the session in one piece; such a connection reads its socket a MiB at a time
(``BULK_READ``), and ``_BulkSend`` seals the packets a window allows into one buffer. With
these, relaying 256 MiB on the lab took 1.4 s of CPU instead of 2.3 s (medians of 6
alternating runs, bench/README.md). Send-side padding comes from a block of ``os.urandom``
fetched once per few hundred packets instead of a system call per packet.

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

Nothing here changes asyncssh's classes: every change is made to the objects of one
connection (its input buffer, ``_recv_pkthdr``, ``send_packet``, ``_send``, ``data_received``,
its AES-GCM cipher objects, its transport's read size) or of one bulk channel (``write``,
``_flush_send_buf``, ``_deliver_data``),
so asyncssh used elsewhere in the process, or a host with ``fastpath: false``, runs as
asyncssh ships it.

Guarded: these changes stand in for asyncssh's private code, so they are made only when
that code is exactly what they were tested against. ``GUARDED`` names every asyncssh
function they replace, wrap or do the work of; ``TESTED`` holds, per asyncssh version the
suite passed with, the sha256 of each one's source. Another version, or any function whose
source differs (a distribution's patch, a local edit), and the fast path stays off for the
process, with one debug line naming the first difference (logger
``zrelay.transport.fastpath``). ``ZRELAY_FASTPATH=0`` (off, false, no) turns it off too, and
the inventory setting ``fastpath: false`` for one host's connections. ``status()`` says
which (``zrelay --version`` shows it). To allow a new asyncssh version: add its
``source_hashes()`` to ``TESTED``, then run tests/unit/test_fastpath.py (it checks what each
change assumes of asyncssh) and the transport tests (they run with the fast path on and off).

The source of each function is its lines in its file, exactly what ``inspect.getsource``
returns (a test checks that), read without ``inspect``: ``inspect.getsource`` took 40-80 ms
for these functions (it searches every loaded module for the file, then tokenizes); reading
the lines takes 3-5 ms of CPU, once per process, at the first connection (mostly finding
each function's last line from its code positions). Hashing the bytecode instead
(``co_code``, ``co_consts``: under 1 ms) would differ between Python versions, so an
allow-list of bytecode hashes would turn the fast path off on every Python not tried.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import logging
import operator
import os
import struct
import threading
import time
import types
from dataclasses import dataclass
from typing import Any, Callable

import asyncssh
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_CHANNEL_EOF, MSG_CHANNEL_EXTENDED_DATA, MSG_CHANNEL_WINDOW_ADJUST
from asyncssh.crypto import cipher as cipher_mod
from asyncssh.encryption import GCMEncryption
from asyncssh.misc import ProtocolError
from asyncssh.packet import String, UInt32
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

#: The environment's off switch, and the words it takes (case and spaces do not matter).
ENV = "ZRELAY_FASTPATH"
OFF_WORDS = frozenset({"0", "off", "false", "no"})
ON_WORDS = frozenset({"", "1", "on", "true", "yes"})

#: Every asyncssh function the fast path replaces, wraps, or does the work of, as
#: (module, qualified name): what must be exactly as tested for its changes to be right.
GUARDED: tuple[tuple[str, str], ...] = (
    ("asyncssh.connection", "SSHConnection.data_received"),   # wrapped (corked, adopts ciphers)
    ("asyncssh.connection", "SSHConnection._recv_pkthdr"),    # consumes _inpbuf (_InputBuffer)
    ("asyncssh.connection", "SSHConnection._recv_packet"),    # consumes _inpbuf (_InputBuffer); _FastRecv
    ("asyncssh.connection", "SSHConnection._recv_data"),      # calls _FastRecv while it returns True
    ("asyncssh.connection", "SSHConnection._finish_recv_packet"),   # what _FastRecv counts per packet
    ("asyncssh.connection", "SSHConnection._send"),           # wrapped (_CorkedSend)
    ("asyncssh.connection", "SSHConnection.send_packet"),     # channel data sealed by _FastSend
    ("asyncssh.encryption", "GCMEncryption.encrypt_packet"),  # what _FastSend.seal does
    ("asyncssh.encryption", "GCMEncryption.decrypt_packet"),  # calls verify_and_decrypt; _FastRecv
    ("asyncssh.encryption", "GCMEncryption.decrypt_header"),  # the length is not encrypted (_FastRecv)
    ("asyncssh.crypto.cipher", "GCMCipher.__init__"),         # _key, _iv
    ("asyncssh.crypto.cipher", "GCMCipher._update_iv"),
    ("asyncssh.crypto.cipher", "GCMCipher.encrypt_and_sign"),     # replaced per cipher
    ("asyncssh.crypto.cipher", "GCMCipher.verify_and_decrypt"),   # replaced per cipher
    ("asyncssh.channel", "SSHChannel.write"),                 # replaced per bulk channel (_BulkSend)
    ("asyncssh.channel", "SSHChannel._flush_send_buf"),       # replaced per bulk channel (_BulkSend)
    ("asyncssh.channel", "SSHChannel.send_packet"),           # what _BulkSend's packets carry
    ("asyncssh.channel", "SSHChannel._accept_data"),          # counts the window, queues when paused
    ("asyncssh.channel", "SSHChannel._flush_recv_buf"),       # delivers what was queued
    ("asyncssh.channel", "SSHChannel._deliver_data"),         # replaced per bulk channel (window)
    ("asyncssh.channel", "SSHChannel._process_data"),         # what _FastRecv does for channel data
    ("asyncssh.channel", "SSHChannel._process_window_adjust"),    # what _FastRecv does for window adjusts
)

#: sha256 of the source of each ``GUARDED`` function, per asyncssh version the suite passed with.
TESTED: dict[str, dict[str, str]] = {
    "2.24.1": {
        "asyncssh.connection.SSHConnection.data_received":
            "b2d14a83b2604db65c8775264dfbe38e5920ba749ec627134ddbe708cb43974a",
        "asyncssh.connection.SSHConnection._recv_pkthdr":
            "7adc4d88fe20593cef39c00322547733a2d81f0aed40924e6105d5f57aa2a820",
        "asyncssh.connection.SSHConnection._recv_packet":
            "b3daa22e9763eee9f3ec710d1469c1b54c8df5066bae3e65b66bdf1db8063c8b",
        "asyncssh.connection.SSHConnection._recv_data":
            "fc4e0735191bb0fdd7fa8f91761067015989bfa47246ac1843c9abaeef7d243f",
        "asyncssh.connection.SSHConnection._finish_recv_packet":
            "e12d96db58b3524e90032440bfd6f2705a53a3b74caaa121e14b7d164ad2e6de",
        "asyncssh.connection.SSHConnection._send":
            "c6698a37eb80f574e53595c650f493b6ef52576a411dabc1b2977ba2e3e7b5b3",
        "asyncssh.connection.SSHConnection.send_packet":
            "fb9da7bec6dd395a2f379f8a0f4dbfc5f194ff80e1ed8630d9a6dbf291359406",
        "asyncssh.encryption.GCMEncryption.encrypt_packet":
            "6a59190103eaab06f3c5eed1854732ea902e2cb994ede0ec50ed221a9a018373",
        "asyncssh.encryption.GCMEncryption.decrypt_packet":
            "6feb840baa1102a45480a86f2bba0c24c1cb17d2baef0baefcb6b6bad7217ecb",
        "asyncssh.encryption.GCMEncryption.decrypt_header":
            "50d9112c6d6c1ced2db1cea7cde9f43b079ff0c6ae2b5c2213646c3db51bb293",
        "asyncssh.crypto.cipher.GCMCipher.__init__":
            "8dbe9e768f4ecf7a4bac1641c2e574c2914e72c8c06d47eeb81f1355bc44c6a3",
        "asyncssh.crypto.cipher.GCMCipher._update_iv":
            "bce250a8d9dc82b6aa456657118d8773477e693b34cdb7f5d34da34e76ccba6d",
        "asyncssh.crypto.cipher.GCMCipher.encrypt_and_sign":
            "adb87dbdb4f9039ab1f0029bd845b032bd6571d2ae894c7b067ea1f62bb0726e",
        "asyncssh.crypto.cipher.GCMCipher.verify_and_decrypt":
            "c09eb5b36d0f6a92a6df6430e70d479dbd6354f3403b98b65e9dc9ecccc37b52",
        "asyncssh.channel.SSHChannel.write":
            "1045e200084699330b3c75abe2e63e760dc8a12eb008c85ec5cefcafab372e38",
        "asyncssh.channel.SSHChannel._flush_send_buf":
            "3f11e9dc27c58b18847c12007b945cb36c7767def131c9b96b0c0a81a8b72dbc",
        "asyncssh.channel.SSHChannel.send_packet":
            "00e81b763c8f3dd2f3012a14cb28f5824ab653940b03f548abad871db918c0ae",
        "asyncssh.channel.SSHChannel._accept_data":
            "33121e9e185c98506d75d35b326b5e849ac6e76a92af56299be96e5cb5017ede",
        "asyncssh.channel.SSHChannel._flush_recv_buf":
            "22d7ff2363a4d38d369ca11d4c6840bc915851cf24659cb92ec21e6cc2135bd1",
        "asyncssh.channel.SSHChannel._deliver_data":
            "bd94ccbaa59ab51048f695e4830ba02d0bb9af4cc44dfeb19a63a7afde35e74b",
        "asyncssh.channel.SSHChannel._process_data":
            "342490795c4b893cbff8868df9c32b79230f0fd881b7fa435afd267e3ce22586",
        "asyncssh.channel.SSHChannel._process_window_adjust":
            "7a2e4c4998e0b496a3006855fb24693092ee4950dce3bc0969ca42092913dff2",
    },
}


@dataclass(frozen=True, slots=True)
class Status:
    """Whether the fast path is on in this process, and why."""

    on: bool
    why: str

    def __str__(self) -> str:
        return f"{'on' if self.on else 'off'} ({self.why})"


def status() -> Status:
    """On, unless ``ZRELAY_FASTPATH`` says off or asyncssh is not exactly as tested.
    Cheap after the first call (the verdict is kept); the inventory's per-host switch
    is the caller's (see ``speed_up``)."""
    return _status(os.environ.get(ENV))


def describe() -> str:
    """One line for ``zrelay --version``: asyncssh's version and ``status()``."""
    return f"asyncssh {asyncssh.__version__}, fast path {status()}"


@functools.cache
def _status(switch: str | None) -> Status:
    word = (switch or "").strip().lower()
    if word in ON_WORDS:
        return _guard()
    if word in OFF_WORDS:
        verdict = Status(False, f"{ENV}={switch}")
    else:  # a word meant to switch something: asyncssh as it ships is the safe reading
        verdict = Status(False, f"{ENV}={switch!r} is none of {'/'.join(sorted(OFF_WORDS | ON_WORDS - {''}))}")
    log.debug("asyncssh %s: fast path off: %s", asyncssh.__version__, verdict.why)
    return verdict


@functools.cache
def _guard() -> Status:
    """The versions and source hashes check, once per process; one debug line when it fails."""
    version = asyncssh.__version__
    tested = TESTED.get(version)
    if tested is None:
        verdict = Status(False, f"not a tested asyncssh version (tested: {', '.join(TESTED)})")
    else:
        mismatch = _first_mismatch(tested)
        if mismatch is None:
            return Status(True, f"the {len(GUARDED)} asyncssh functions it stands in for are as tested")
        verdict = Status(False, mismatch)
    log.debug("asyncssh %s: fast path off: %s", version, verdict.why)
    return verdict


def _first_mismatch(tested: dict[str, str]) -> str | None:
    """The first ``GUARDED`` function whose source is not the tested one, said in words."""
    files: dict[str, list[bytes]] = {}
    for module, qualname in GUARDED:
        name = f"{module}.{qualname}"
        try:
            digest = hashlib.sha256(source_of(_lookup(module, qualname), files)).hexdigest()
        except (AttributeError, ImportError, OSError, TypeError, ValueError) as exc:
            return f"{name} cannot be read ({type(exc).__name__}: {exc})"
        if tested.get(name) != digest:
            return f"{name} differs from the tested source (sha256 {digest[:16]}…)"
    return None


def _lookup(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


_END_LINE = operator.itemgetter(1)


#: The functions of this many first lines of a file are read without splitting all of it.
_HEAD_LINES = 4096


def source_of(func: Any, files: dict[str, list[bytes]] | None = None) -> bytes:
    """``func``'s source as ``inspect.getsource`` gives it (UTF-8): its lines in its file,
    from its first line (decorators included) to the last line any of its code spans.
    ``files`` keeps each file's lines (the first ``_HEAD_LINES``, or all) for the next
    function of the same file."""
    code = func.__code__
    end = max(filter(None, map(_END_LINE, code.co_positions())), default=0)
    if not end:  # python -X no_debug_ranges: no end positions; inspect finds the end itself
        return inspect.getsource(func).encode()
    files = {} if files is None else files
    lines = files.get(code.co_filename)
    if lines is None or (end >= len(lines) and len(lines) > _HEAD_LINES):
        with open(code.co_filename, "rb") as f:
            data = f.read()
        # the last entry holds the rest of the file: a line only when the file ends there
        lines = files[code.co_filename] = data.split(b"\n", _HEAD_LINES if end < _HEAD_LINES else -1)
    if end >= len(lines):
        raise ValueError(f"{code.co_filename} has fewer than {end} lines")
    return b"\n".join(lines[code.co_firstlineno - 1:end]) + b"\n"


def source_hashes() -> dict[str, str]:
    """The installed asyncssh's entry for ``TESTED`` (what to add for a new tested version)."""
    files: dict[str, list[bytes]] = {}
    return {f"{m}.{q}": hashlib.sha256(source_of(_lookup(m, q), files)).hexdigest() for m, q in GUARDED}


class _InputBuffer(bytearray):
    """``buf[n:]`` drops the first n bytes in place and returns the buffer itself;
    any other slice is a ``bytes`` copy (hashable, immutable, like asyncssh's own)."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        if type(key) is slice:
            if key.stop is None and key.step is None and key.start:
                del self[:key.start]
                return self
            return bytes(memoryview(self)[key])
        return bytearray.__getitem__(self, key)


#: Set on a connection that was given the fast path (its channels may then be too).
_MARK = "_zrelay_fastpath"


def speed_up(conn: asyncssh.SSHClientConnection) -> bool:
    """Give an established connection the in-place input buffer, the fast channel-data
    send, corked writes and cached AES-GCM objects, when ``status()`` is on; True when the
    input buffer was applied. A host whose inventory says ``fastpath: false`` is not
    passed here (transport/ssh.py), and then keeps asyncssh's own code throughout."""
    if not status().on or getattr(conn, _MARK, False):
        return False
    c: Any = conn
    setattr(c, _MARK, True)
    c.send_packet = _FastSend(conn, conn.send_packet)
    c._send = _CorkedSend(c._send)
    c.data_received = _receiving(conn, conn.data_received)
    _adopt_ciphers(conn)
    handler = getattr(conn, "_recv_handler", None)
    buf = getattr(conn, "_inpbuf", None)
    if handler is None or handler != getattr(conn, "_recv_pkthdr", None) or type(buf) is not bytes:
        return False   # still in the version exchange, or already converted
    c._inpbuf = _InputBuffer(buf)
    # asyncssh looks the header handler up on the connection after every packet
    c._recv_pkthdr = c._recv_handler = _FastRecv(conn, conn._recv_pkthdr)
    return True


#: Random padding fetched at once: enough for a few hundred packets (4 to 19 bytes each).
_PAD_POOL = 4096

#: cryptography ≥ 45 can seal into a buffer that already holds the packet's length.
_SEAL_IN_PLACE = hasattr(AESGCM, "encrypt_into")


class _FastSend:
    """``send_packet`` for channel data under AES-GCM, packet for packet what asyncssh
    sends (same padding rule, sequence numbers and rekey accounting), minus the copies."""

    def __init__(self, conn: Any, fallback: Callable[..., None]) -> None:
        self._conn = conn
        self._fallback = fallback
        self._pad = b""   # random bytes for padding, fetched in bulk (each byte used once)
        self._pad_at = 0

    def _padding(self, n: int) -> bytes:
        """``n`` random bytes, as ``os.urandom(n)`` gives, without a system call per packet."""
        at = self._pad_at
        if at + n > len(self._pad):
            self._pad, at = os.urandom(_PAD_POOL), 0
        self._pad_at = at + n
        return self._pad[at:at + n]

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

    def padded_size(self, payload: int) -> int:
        """Bytes of a packet's padded plaintext for ``payload`` bytes (message type included,
        as asyncssh counts it): what the rekey limit counts."""
        conn = self._conn
        padlen = -(conn._send_enchdrlen + payload) % conn._send_blocksize
        return 1 + payload + (padlen + conn._send_blocksize if padlen < 4 else padlen)

    def _plain(self, head: bytes, *parts: Any) -> bytes:
        """The padded plaintext of a packet whose payload is ``head`` + ``parts``, as asyncssh pads."""
        conn = self._conn
        payload = len(head) + sum(map(len, parts))
        padlen = -(conn._send_enchdrlen + payload) % conn._send_blocksize
        if padlen < 4:
            padlen += conn._send_blocksize
        return b"".join((bytes((padlen,)), head, *parts, self._padding(padlen)))

    def seal_run(self, channel: int, pieces: list[Any]) -> None:
        """One channel data packet for ``channel`` (the recipient's number) per piece, each
        what ``seal`` makes of it, sealed into one buffer that is written at once: no
        buffer per packet, and nothing for the cork to join (``_BulkSend`` sends this way)."""
        head = bytes((MSG_CHANNEL_DATA,)) + UInt32(channel)
        if not _SEAL_IN_PLACE:
            for data in pieces:
                self.seal(head + UInt32(len(data)), data)
            return
        conn = self._conn
        cipher = conn._send_encryption._cipher
        aead = _aead(cipher)
        plains = [self._plain(head + UInt32(len(data)), data) for data in pieces]
        out = bytearray(sum(map(len, plains)) + 20 * len(plains))   # length, ciphertext, 16-byte tag each
        view = memoryview(out)
        at = 0
        for plain in plains:
            size = len(plain)
            header = _HEADER.pack(size)
            view[at:at + 4] = header
            aead.encrypt_into(cipher._iv, plain, header, view[at + 4:at + 20 + size])
            cipher._update_iv()
            at += size + 20
            conn._send_seq = (conn._send_seq + 1) & 0xffffffff
            conn._rekey_bytes_sent += size
        view.release()
        conn._send(out)

    def seal(self, head: bytes, *parts: Any) -> None:
        """Pad, seal and send one packet whose payload is ``head`` + ``parts`` (bytes-like)."""
        conn = self._conn
        cipher = conn._send_encryption._cipher
        plain = self._plain(head, *parts)
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


_HEADER = struct.Struct(">I")
_CHANNEL_AND_LENGTH = struct.Struct(">II")
#: After the padding-length byte: message type (1), recipient channel (4), length or adjust (4).
_CHANNEL_HEAD = 10
#: A bulk channel's receive states in which a window adjust is taken (as asyncssh's).
_ADJUST_STATES = frozenset({"open", "eof_pending", "eof"})


class _FastRecv:
    """A fast connection's ``_recv_pkthdr``: channel data and window adjusts for bulk channels
    under AES-GCM, taken straight from the input buffer.

    asyncssh's way through one received packet: the first block sliced off, the rest and the
    MAC sliced off, the two joined for the cipher, the payload sliced out of the plaintext,
    an ``SSHPacket`` around it, the data sliced out of that, a log call that formats the
    packet's description whatever the log level, the input buffer shortened, then the
    channel's handler and the session's ``data_received``. Here each packet is opened where
    it lies (the cipher reads the input buffer through a view) and its header read with
    ``struct``; the data of consecutive packets for one channel goes to the channel's own
    ``_accept_data`` in one piece (one socket read brings several 32 KiB packets: the
    session, a relay's target channel and its progress meter then run once for all of
    them), and the buffer is shortened once. Sequence numbers, nonces and windows are
    counted as asyncssh counts them; what came before another kind of packet is delivered
    before it. Any other packet, one that fails its tag or is malformed, a channel that is
    not a bulk one or not open, debug logging: that packet is left as it is (its nonce not
    used) to asyncssh's own ``_recv_pkthdr``, so that errors are asyncssh's own."""

    __slots__ = ("_conn", "_fallback")

    def __init__(self, conn: Any, fallback: Callable[[], bool]) -> None:
        self._conn = conn
        self._fallback = fallback

    def __call__(self) -> bool:
        conn = self._conn
        buf = conn._inpbuf
        encryption = conn._recv_encryption
        if (type(buf) is not _InputBuffer or type(encryption) is not GCMEncryption or conn._decompressor is not None
                or not conn._auth_complete or conn._transport is None or conn.logger._debug_level >= 2):
            return self._fallback()
        # None of the above changes within one call but through the data handed on: checked again then
        cipher = encryption._cipher
        aead = _aead(cipher)
        channels = conn._channels
        longest = conn._max_recv_pktlen
        pos = 0                       # bytes of ``buf`` taken and not yet dropped
        held: list[memoryview] = []   # data of consecutive packets for ``chan``, not yet accepted
        held_len = 0
        chan: Any = None
        while True:
            if len(buf) - pos < 4:
                _hand_off(buf, pos, chan, held)
                return False
            pktlen = _HEADER.unpack_from(buf, pos)[0]
            if pktlen > longest or pktlen < 16:
                break   # asyncssh says what is wrong
            end = pos + pktlen + 20   # length, padded payload, 16-byte tag
            if len(buf) < end:
                _hand_off(buf, pos, chan, held)
                return False
            view = memoryview(buf)
            try:
                plain = aead.decrypt(cipher._iv, view[pos + 4:end], view[pos:pos + 4])
            except InvalidTag:
                break
            finally:
                view.release()   # the buffer cannot shrink while a view of it exists
            padlen, pkttype = plain[0], plain[1]
            size = len(plain) - padlen
            if size < _CHANNEL_HEAD or (pkttype != MSG_CHANNEL_DATA and pkttype != MSG_CHANNEL_WINDOW_ADJUST):
                break
            number, value = _CHANNEL_AND_LENGTH.unpack_from(plain, 2)
            if held and (pkttype != MSG_CHANNEL_DATA or channels.get(number) is not chan):
                _hand_off(buf, pos, chan, held)   # what came first is delivered first
                end, pos, held, held_len = end - pos, 0, [], 0
                if conn._inpbuf is not buf or conn._transport is None or conn._recv_encryption is not encryption:
                    break   # the connection ended (or changed) meanwhile: asyncssh's own way on
            chan = channels.get(number)
            if chan is None or not chan.__dict__.get(_BULK):
                break
            if pkttype == MSG_CHANNEL_DATA:
                if (chan._recv_state != "open" or size != _CHANNEL_HEAD + value
                        or value > chan._recv_window - held_len):
                    break
            elif chan._recv_state not in _ADJUST_STATES or size != _CHANNEL_HEAD:
                break
            cipher._update_iv()
            pos = end
            conn._recv_seq = (conn._recv_seq + 1) & 0xffffffff
            conn._auth_final = True
            if pkttype == MSG_CHANNEL_DATA:
                held.append(memoryview(plain)[_CHANNEL_HEAD:size])
                held_len += value
            else:   # taken off the buffer before it acts, as asyncssh does
                del buf[:pos]
                pos = 0
                chan._send_window += value
                chan._flush_send_buf()
                if conn._inpbuf is not buf or conn._transport is None or conn._recv_encryption is not encryption:
                    break
        _hand_off(buf, pos, chan, held)
        return self._fallback()


def _hand_off(buf: _InputBuffer, taken: int, chan: Any, held: list[memoryview]) -> None:
    """Drop what was taken off the front of ``buf``, then give ``chan`` the data held for it."""
    if taken:
        del buf[:taken]
    if held:
        chan._accept_data(held[0].tobytes() if len(held) == 1 else b"".join(held))


#: Set on a bulk channel (speed_up_channel): its data and window adjusts may take _FastRecv.
_BULK = "_zrelay_bulk"
#: Bytes asked of the socket per read on a connection that carries a bulk stream (asyncio's
#: default is 256 KiB): fewer reads, and more packets handed on at once by _FastRecv
#: (relaying 256 MiB: about 6 % less CPU, see bench/README.md).
BULK_READ = 1024 * 1024


def speed_up_channel(chan: Any) -> bool:
    """Give one bulk channel of a fast connection the window fix and, under AES-GCM, the
    copy-free send path (``_BulkSend``); True when the send path was applied."""
    conn = getattr(chan, "_conn", None)
    if conn is None or not getattr(conn, _MARK, False):
        return False   # the fast path is off, for the process or for this host
    if "_deliver_data" not in chan.__dict__:
        chan._deliver_data = types.MethodType(_deliver_data, chan)
    setattr(chan, _BULK, True)
    transport: Any = getattr(conn, "_transport", None)
    if type(getattr(transport, "max_size", None)) is int and transport.max_size < BULK_READ:
        transport.max_size = BULK_READ   # asyncio's selector transport: bytes asked per recv()
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
            if chan._send_buf[0][1] is None and chan._send_chan is not None and self._sender.ready():
                self._send_run()
                continue
            data, datatype = _take_packet(chan)
            if chan._send_chan is None:   # as asyncssh's send_packet: not open yet, or gone
                continue
            if datatype is not None:
                chan.send_packet(MSG_CHANNEL_EXTENDED_DATA, UInt32(datatype), String(bytes(data)))
            else:
                chan.send_packet(MSG_CHANNEL_DATA, String(bytes(data)))
        chan._pause_resume_writing()
        if not chan._send_buf:
            if chan._send_state == "eof_pending":
                chan.send_packet(MSG_CHANNEL_EOF)
                chan._send_state = "eof"
            elif chan._send_state == "close_pending":
                chan._close_send()

    def _send_run(self) -> None:
        """Channel data packets from the front of the send buffer, as many as the window, the
        buffer and the rekey limit allow (the first is: ``ready``), sealed at once
        (``_FastSend.seal_run``). Split and counted exactly as ``flush`` does packet by packet;
        the packet that reaches the rekey limit is the run's last, as asyncssh starts a key
        exchange before the next."""
        chan = self._chan
        sender = self._sender
        conn = sender._conn
        budget = conn._rekey_bytes - conn._rekey_bytes_sent
        pieces: list[memoryview] = []
        while chan._send_buf and chan._send_window and budget > 0:
            if chan._send_buf[0][1] is not None:   # extended data goes packet by packet (flush)
                break
            data, _ = _take_packet(chan)
            pieces.append(data)
            budget -= sender.padded_size(9 + len(data))   # type, channel, length, data
        sender.seal_run(chan._send_chan, pieces)


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


def _receiving(conn: Any, data_received: Callable[..., None]) -> Callable[..., None]:
    """A fast connection's ``data_received``: corks what is sent while it runs (see the module
    docstring) and gives a cipher that a rekey brought the cached AES-GCM object first."""
    def received(data: bytes, *args: Any) -> None:
        if _needs_adopting(conn._recv_encryption) or _needs_adopting(conn._send_encryption):
            _adopt_ciphers(conn)
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
    return received


def _aead(cipher: Any) -> AESGCM:
    cached = cipher.__dict__.get("_zrelay_aead")
    if cached is None:
        cached = cipher._zrelay_aead = AESGCM(cipher._key)
    return cached


def _needs_adopting(encryption: Any) -> bool:
    return type(encryption) is GCMEncryption and "verify_and_decrypt" not in encryption._cipher.__dict__


def _adopt_ciphers(conn: Any) -> None:
    """One AESGCM object per GCMCipher of this connection instead of one per packet (same
    nonces, same output): its current ciphers' two methods replaced on the objects."""
    for encryption in (conn._send_encryption, conn._recv_encryption):
        if _needs_adopting(encryption):
            cipher = encryption._cipher
            cipher.encrypt_and_sign = types.MethodType(_encrypt_and_sign, cipher)
            cipher.verify_and_decrypt = types.MethodType(_verify_and_decrypt, cipher)


_GCM_TAG_SIZE: int = cipher_mod._GCM_MAC_SIZE


def _encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
    sealed = _aead(self).encrypt(self._iv, data, header)
    self._update_iv()
    return header + sealed[:-_GCM_TAG_SIZE], sealed[-_GCM_TAG_SIZE:]


def _verify_and_decrypt(self: Any, header: bytes, data: bytes, mac: bytes) -> bytes | None:
    try:
        opened: bytes | None = _aead(self).decrypt(self._iv, data + mac, header)
    except InvalidTag:
        opened = None
    self._update_iv()
    return opened


def _deliver_data(self: Any, data: bytes, datatype: Any) -> None:
    """A bulk channel's ``_deliver_data``: re-opens the window only for bytes the session
    has actually been given, not for what is still queued (see the module docstring)."""
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


def _take_packet(chan: Any) -> tuple[memoryview, int | None]:
    """The next packet's data off the front of ``chan``'s send buffer (at most the window and
    the packet size), counted off the buffer and the window as asyncssh's ``_flush_send_buf`` does."""
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
    return data, datatype

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
cipher instance (one per direction and key) does the same work once.

Both are applied only when asyncssh's internals look exactly as expected
(``supported()``), else nothing changes; tests/unit/test_fastpath.py checks
the assumptions against the installed asyncssh.
"""

from __future__ import annotations

import inspect
from typing import Any

import asyncssh

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


def _connection_source_ok() -> bool:
    conn_cls = asyncssh.connection.SSHConnection
    try:
        source = "".join(inspect.getsource(getattr(conn_cls, name))
                         for name in ("data_received", "_recv_pkthdr", "_recv_packet"))
    except (AttributeError, OSError, TypeError):
        return False
    return all(p in source for p in _CONSUME_PATTERNS)


_SUPPORTED: bool | None = None


def supported() -> bool:
    """Do asyncssh's receive internals consume ``_inpbuf`` the way _InputBuffer expects?"""
    global _SUPPORTED
    if _SUPPORTED is None:
        _SUPPORTED = _connection_source_ok()
    return _SUPPORTED


def speed_up(conn: asyncssh.SSHClientConnection) -> bool:
    """Give an established connection the in-place input buffer; True when applied."""
    _install_gcm_cache()
    if not supported():
        return False
    handler = getattr(conn, "_recv_handler", None)
    buf = getattr(conn, "_inpbuf", None)
    if handler is None or handler != getattr(conn, "_recv_pkthdr", None) or type(buf) is not bytes:
        return False   # still in the version exchange, or already converted
    conn._inpbuf = _InputBuffer(buf)  # type: ignore[attr-defined]
    return True


_GCM_DONE = False


def _install_gcm_cache() -> None:
    """One AESGCM object per GCMCipher instead of one per packet (same nonces, same output)."""
    global _GCM_DONE
    if _GCM_DONE:
        return
    _GCM_DONE = True
    try:
        from asyncssh.crypto import cipher as cipher_mod
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        gcm = cipher_mod.GCMCipher
        tag_size = cipher_mod._GCM_MAC_SIZE
        source = inspect.getsource(gcm.encrypt_and_sign) + inspect.getsource(gcm.verify_and_decrypt)
    except (ImportError, AttributeError, OSError, TypeError):
        return
    if "AESGCM(self._key)" not in source or "self._update_iv()" not in source:
        return

    def aead(self: Any) -> Any:
        cached = self.__dict__.get("_zrelay_aead")
        if cached is None:
            cached = self._zrelay_aead = AESGCM(self._key)
        return cached

    def encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
        sealed = aead(self).encrypt(self._iv, data, header)
        self._update_iv()
        return header + sealed[:-tag_size], sealed[-tag_size:]

    def verify_and_decrypt(self: Any, header: bytes, data: bytes, mac: bytes) -> bytes | None:
        try:
            opened: bytes | None = aead(self).decrypt(self._iv, data + mac, header)
        except InvalidTag:
            opened = None
        self._update_iv()
        return opened

    gcm.encrypt_and_sign = encrypt_and_sign
    gcm.verify_and_decrypt = verify_and_decrypt

"""Importing asyncssh without the liboqs search: when it is skipped, and that it changes nothing else."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

from zrelay.transport import sshlib

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the search is only skipped on Linux")


def _cache(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "ld.so.cache"
    path.write_bytes(b"glibc-ld.so.cache1.1\0" + content)
    return str(path)


@linux_only
def test_absent_when_neither_the_cache_nor_any_directory_has_it(tmp_path: Path) -> None:
    cache = _cache(tmp_path, b"libc.so.6\0/lib/x86_64-linux-gnu/libc.so.6\0")
    assert not sshlib.liboqs_may_exist(cache, environ={"LD_LIBRARY_PATH": str(tmp_path)})


@linux_only
def test_present_when_the_linker_cache_names_it(tmp_path: Path) -> None:
    cache = _cache(tmp_path, b"liboqs.so.5\0/usr/lib/x86_64-linux-gnu/liboqs.so.5\0")
    assert sshlib.liboqs_may_exist(cache, environ={})


@linux_only
@pytest.mark.parametrize("variable", ["LD_LIBRARY_PATH", "LIBRARY_PATH"])
def test_present_when_a_search_directory_holds_it(tmp_path: Path, variable: str) -> None:
    cache = _cache(tmp_path, b"libc.so.6\0")
    libdir = tmp_path / "opt-lib"
    libdir.mkdir()
    (libdir / "liboqs.so.5").write_bytes(b"")
    assert sshlib.liboqs_may_exist(cache, environ={variable: f"/nonexistent:{libdir}"})


@linux_only
def test_no_cache_means_asyncssh_searches_as_usual(tmp_path: Path) -> None:
    assert sshlib.liboqs_may_exist(str(tmp_path / "missing"), environ={})


def test_only_the_liboqs_names_are_answered_and_find_library_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def real(name: str) -> str | None:
        asked.append(name)
        return f"lib{name}.so.1"

    monkeypatch.setattr(ctypes.util, "find_library", real)
    with sshlib._no_oqs_search():
        assert ctypes.util.find_library("oqs") is None
        assert ctypes.util.find_library("liboqs") is None
        assert ctypes.util.find_library("c") == "libc.so.1"
    assert asked == ["c"]
    assert ctypes.util.find_library is real


def test_asyncssh_imported_the_quick_way_offers_the_same_key_exchanges() -> None:
    """A fresh interpreter each way: the quick import must not change what asyncssh negotiates
    (where liboqs is absent, its search finds nothing either)."""
    code = ("import sys; {imp}; import asyncssh.crypto.pq as pq, asyncssh.kex as k; "
            "print(pq.sntrup_available, pq.mlkem_available, sorted(n.decode() for n in k.get_kex_algs()))")
    quick = subprocess.run([sys.executable, "-c", code.format(imp="import zrelay.transport")],
                           capture_output=True, text=True, check=True).stdout
    plain = subprocess.run([sys.executable, "-c", code.format(imp="import asyncssh")],
                           capture_output=True, text=True, check=True).stdout
    assert quick == plain and "curve25519" in quick

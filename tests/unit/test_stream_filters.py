"""The helper programs a stream passes through: argvs with checked arguments, wire commands."""

from __future__ import annotations

import pytest

from zrelay.errors import InvalidName
from zrelay.zfs import stream_filters

AGE_KEY = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"


def test_zstd_argvs() -> None:
    assert stream_filters.zstd_compress_argv() == ["zstd", "-q", "-c", "-3", "-T1"]
    assert stream_filters.zstd_decompress_argv() == ["zstd", "-q", "-d", "-c"]
    with pytest.raises(ValueError):
        stream_filters.zstd_compress_argv(level=30)


def test_age_argvs_validate_keys_and_paths() -> None:
    assert stream_filters.age_encrypt_argv([AGE_KEY]) == ["age", "-e", "-r", AGE_KEY]
    assert stream_filters.age_encrypt_argv(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"])[-1].startswith("ssh-ed25519 ")
    assert stream_filters.age_decrypt_argv("/root/.config/age/key.txt") == [
        "age", "-d", "-i", "/root/.config/age/key.txt"]
    for bad in ("-r", "age1UPPER", f"{AGE_KEY}; rm -rf /", ""):
        with pytest.raises(InvalidName):
            stream_filters.age_encrypt_argv([bad])
    for bad in ("key.txt", "/a/../b", "/a b", "/x;y", "-i"):
        with pytest.raises(InvalidName):
            stream_filters.age_decrypt_argv(bad)
    with pytest.raises(ValueError):
        stream_filters.age_encrypt_argv([])

"""A lock file's record (who holds it, when it was let go) is written in one write, padded over a
longer earlier record instead of truncating the file first; a look without taking (``probe``) still
sees every take and let-go, also when the file's mtime and size did not move."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from zrelay import locks
from zrelay.locks import RunLock

KEY = "zfs 127.0.0.4 22 backup/records"


@pytest.fixture(autouse=True)
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(locks.ENV_VAR, str(tmp_path))
    return tmp_path


def record_of(lock: RunLock) -> dict:
    value = json.loads(lock.path.read_bytes()[:locks.RECORD_MAX].decode())
    assert isinstance(value, dict)
    return value


def test_records_are_written_without_truncating_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_truncate(*_args: object) -> None:
        raise AssertionError("ftruncate: a journalled metadata change per take and let-go on a disk filesystem")
    first = RunLock(KEY, "nas1:tank/a-long-name-for-a-dataset → vault:backup/a-long-name-for-a-dataset")
    assert first.try_acquire()
    first.release()
    long_size = first.path.stat().st_size
    monkeypatch.setattr(locks.os, "ftruncate", no_truncate)
    short = RunLock(KEY, "n:a → v:a")
    assert short.try_acquire()
    assert short.previous_release is not None, "the previous holder's let-go is read"
    held = record_of(short)
    assert held["what"] == "n:a → v:a" and held["pid"] == os.getpid() and "released" not in held
    assert short.path.stat().st_size == long_size, "the shorter record is padded over the longer one"
    other = RunLock(KEY, "someone else")
    assert not other.try_acquire()
    holder = other.holder()
    assert holder is not None and holder.what == "n:a → v:a", "a loser reads the padded record"
    other.close()
    short.release()
    released = record_of(short)
    assert "released" in released and released["what"] == "n:a → v:a"
    assert RunLock(KEY, "x").holder() is None, "a let-go lock names nobody"


def test_an_unreadable_record_is_written_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    lock = RunLock(KEY, "nas1:tank/a → vault:backup/a")
    lock.path.write_text("x" * 900)   # not a record (another tool, a crash in mid-write of an old version)
    real_pread = os.pread

    def failing(fd: int, size: int, offset: int) -> bytes:
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(locks.os, "pread", failing)
    assert lock.try_acquire()   # its size unknown: the record starts the file afresh
    monkeypatch.setattr(locks.os, "pread", real_pread)
    assert record_of(lock)["what"] == "nas1:tank/a → vault:backup/a"
    lock.release()
    assert "released" in record_of(lock)


def test_probe_sees_a_take_and_let_go_that_left_mtime_and_size_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([1000.25, 1000.50, 1000.75, 1001.25, 1001.50, 1001.75])
    monkeypatch.setattr(locks.time, "time", lambda: next(clock))
    lock = RunLock(KEY, "nas1:tank/a → vault:backup/a")
    assert lock.try_acquire()
    lock.release()
    st = lock.path.stat()
    before = locks.probe(KEY)
    assert lock.try_acquire()   # another run takes and lets go within the same coarse tick
    lock.release()
    os.utime(lock.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert lock.path.stat().st_size == st.st_size
    after = locks.probe(KEY)
    assert after.holder is None and after.changed_since(before), "the record moved, so the look notices"
    assert not locks.probe(KEY).changed_since(after), "a look moves nothing"


def test_lock_paths_follow_the_setting(lock_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert locks.lock_path(KEY).parent == lock_dir
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    monkeypatch.setenv(locks.ENV_VAR, str(elsewhere))
    assert locks.lock_path(KEY).parent == elsewhere
    assert locks.lock_path(KEY, lock_dir) == lock_dir / locks.lock_path(KEY).name
    assert locks.lock_path(KEY).name.startswith("zfs-") and locks.lock_path(KEY).name.endswith(".lock")

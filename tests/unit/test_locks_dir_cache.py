"""The lock directory is chosen once per process and settings, and chosen again when it vanished
(a tmpfs emptied by a reboot of /run, a cleaner): a long-lived daemon keeps taking locks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zrelay import locks


def test_a_vanished_lock_directory_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "locks"
    monkeypatch.setenv(locks.ENV_VAR, str(where))
    first = locks.RunLock("dataset 127.0.0.1:22:tank/a", "test")
    assert first.try_acquire() and first.path.parent == where
    first.close()
    assert locks.lock_dir() == where   # chosen once
    shutil.rmtree(where)
    again = locks.RunLock("dataset 127.0.0.1:22:tank/a", "test")
    assert again.try_acquire() and again.path.exists()
    again.close()


def test_other_settings_choose_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(locks.ENV_VAR, str(tmp_path / "one"))
    assert locks.lock_dir() == tmp_path / "one"
    monkeypatch.setenv(locks.ENV_VAR, str(tmp_path / "two"))
    assert locks.lock_dir() == tmp_path / "two"

"""Validation of ZFS names (and remote paths) before they reach any command line.

ZFS accepts ``[A-Za-z0-9_.:-]`` and space in name components. zrelay accepts
exactly that (minus leading/trailing space), so a name that passes here is
both a valid ZFS name and free of shell metacharacters; argv quoting in
``zrelay.zfs.quoting`` is the second line of defence.
"""

from __future__ import annotations

import re

from zrelay.errors import InvalidName

_REMOTE_PATH = re.compile(r"/[A-Za-z0-9_.@+/-]+")
_COMPONENT = re.compile(r"[A-Za-z0-9_.:-](?:[A-Za-z0-9_.: -]*[A-Za-z0-9_.:-])?")
MAX_NAME = 255


def dataset_problem(name: str) -> str | None:
    """Why ``name`` is not a valid dataset name (``pool/fs/child``), or None."""
    if not isinstance(name, str) or not name:
        return "dataset name is empty"
    if len(name) > MAX_NAME:
        return f"dataset name is longer than {MAX_NAME} characters"
    if "@" in name or "#" in name:
        return f"dataset name {name!r} must not contain '@' or '#'"
    parts = name.split("/")
    for part in parts:
        if not part:
            return f"dataset name {name!r} has an empty component"
        if part in (".", ".."):
            return f"dataset name {name!r} has a '{part}' component"
        if not _COMPONENT.fullmatch(part):
            bad = sorted({c for c in part if not re.match(r"[A-Za-z0-9_.: -]", c)})
            what = f"character(s) {''.join(bad)!r}" if bad else "leading or trailing space"
            return (f"dataset name {name!r} has {what}; "
                    "allowed: letters, digits, '_', '-', '.', ':', inner spaces")
    if not parts[0][0].isalpha():
        return f"dataset name {name!r} must start with a letter (the pool name)"
    return None


def snapshot_problem(name: str) -> str | None:
    """Why ``name`` is not a valid short snapshot name (the part after '@'), or None."""
    if not isinstance(name, str) or not name:
        return "snapshot name is empty"
    if len(name) > MAX_NAME:
        return f"snapshot name is longer than {MAX_NAME} characters"
    if not _COMPONENT.fullmatch(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9_.: -]", c)})
        what = f"character(s) {''.join(bad)!r}" if bad else "leading or trailing space"
        return (f"snapshot name {name!r} has {what}; "
                "allowed: letters, digits, '_', '-', '.', ':', inner spaces")
    return None


def check_dataset(name: str) -> str:
    """Return ``name`` or raise InvalidName."""
    problem = dataset_problem(name)
    if problem:
        raise InvalidName(problem)
    return name


def check_snapshot(name: str) -> str:
    problem = snapshot_problem(name)
    if problem:
        raise InvalidName(problem)
    return name


def check_remote_path(path: str) -> str:
    """An absolute path on a remote host (a key file, known_hosts, an ssh control socket)
    made only of characters that need no quoting, so it reads the same in any shell."""
    if not isinstance(path, str) or not _REMOTE_PATH.fullmatch(path) or "/../" in path + "/":
        raise InvalidName(f"path {path!r} must be absolute and use only letters, digits and _.@+/-")
    return path

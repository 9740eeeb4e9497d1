"""The one place an argv becomes shell text.

A remote command always passes through a shell (ssh hands the far end one
string), so every builder in zrelay returns an argv list and only the
functions here turn argvs into text: ``quote`` for one command,
``remote_command`` for one that may need sudo, ``pipeline`` and
``guarded_pipeline`` for several joined by ``|``. Having a single quoting
function means a quoting mistake can only be made (and fixed) once.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

#: Programs that run under ``sudo -n`` when a pipeline asks for sudo; the helper
#: tools between them (pv, zstd, mbuffer, age, ssh) run as the login user.
SUDO_PROGRAMS = ("zfs", "zpool")
#: Marker a guarded pipeline stage writes to stderr with its exit status
#: (``zrelay-stage N exit S``; parse.split_stage_report reads it).
STAGE_MARK = "zrelay-stage"


def quote(argv: Sequence[str]) -> str:
    """The one place an argv becomes shell text (remote commands go through a shell)."""
    return shlex.join(list(argv))


def remote_command(argv: Sequence[str], *, sudo: bool = False) -> str:
    """``argv`` quoted for the remote shell; ``sudo -n`` so a password prompt fails fast."""
    text = quote(argv)
    return f"sudo -n {text}" if sudo else text


def _stage(argv: Sequence[str], sudo: bool) -> str:
    """One pipeline stage: sudo only for the zfs/zpool stages (SUDO_PROGRAMS)."""
    return remote_command(argv, sudo=sudo and bool(argv) and argv[0] in SUDO_PROGRAMS)


def pipeline(*argvs: Sequence[str], sudo: bool = False) -> str:
    """``a | b | c`` with each stage quoted; sudo is applied to zfs/zpool stages only."""
    if not argvs:
        raise ValueError("pipeline needs at least one command")
    return " | ".join(_stage(a, sudo) for a in argvs)


def guarded_pipeline(*argvs: Sequence[str], sudo: bool = False, first_stage: int = 1) -> str:
    """``a | b | c`` where every stage but the last reports its exit status on stderr.

    POSIX sh (dash) has no ``pipefail``: without this a failing ``zfs send``
    piped into ``zstd`` would end in a clean, empty, "successful" stream. Each
    guarded stage prints ``zrelay-stage N exit S`` (N counts from
    ``first_stage``); the last stage's status is the session's exit status.
    sudo is applied to zfs stages.
    """
    if not argvs:
        raise ValueError("pipeline needs at least one command")
    stages = [_stage(a, sudo) for a in argvs]
    guarded = [f'{{ {s}; echo "{STAGE_MARK} {i} exit $?" >&2; }}'
               for i, s in enumerate(stages[:-1], first_stage)]
    return " | ".join(guarded + [stages[-1]])

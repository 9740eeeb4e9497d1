"""The lines zrelay writes to a long-lived remote ``sh`` (see transport.ssh).

Two uses of one idea, a shell kept open on an SSH connection so a command
costs no new session: the command shell runs many short commands, each
framed by a nonce on stdout and stderr (``shell_request``); a warm session
is a shell opened ahead of time that becomes one stream's command
(``warm_exec_line``). Both hand the command over as one quoted word, so it
can neither break the framing nor change the shell. Pure text: the
transport does the writing and reading.
"""

from __future__ import annotations

import re
import shlex

from zrelay.zfs.quoting import quote

#: The long-lived shell of a connection (see transport.ssh.CommandShell): reads requests on stdin.
COMMAND_SHELL_ARGV = ("sh",)
_NONCE = re.compile(r"[0-9a-f]{16,64}")


def shell_request(command: str, nonce: str) -> str:
    """One request line for the command shell: run ``command`` (a full remote command line,
    handed over as one quoted word to its own ``sh -c``, so it can neither break the framing
    nor change the shell), with stdin from /dev/null, then mark the end of its stdout (with
    its exit status) and of its stderr with ``nonce``."""
    if not _NONCE.fullmatch(nonce):
        raise ValueError("nonce must be lowercase hex")
    return (f"sh -c {quote([command])} </dev/null; printf '\\n%s %d\\n' {nonce} \"$?\"; "
            f"printf '\\n%s\\n' {nonce} >&2\n")


def warm_exec_line(command: str, mark: str) -> str:
    """The one line a pre-opened (warm) session's ``sh`` is given: say ``mark`` on stdout and on
    stderr, then become ``command`` (one quoted word for its own ``sh -c``). Nothing else is written to the
    session before ``mark`` arrives, so the shell cannot read ahead into a stream's bytes."""
    if not _NONCE.fullmatch(mark):
        raise ValueError("mark must be lowercase hex")
    try:
        simple = quote(shlex.split(command)) == command  # a plain quoted argv: no shell syntax in it
    except ValueError:
        simple = False
    # A plain command replaces the shell itself (its parent is the sshd session, as with a session
    # of its own, so killing that session stops it); anything else runs as its own sh -c.
    run = f"exec {command}" if simple else f"exec sh -c {quote([command])}"
    return f"printf '%s\\n' {mark}; printf '%s\\n' {mark} >&2; {run}\n"

"""The command shell: request framing (run by a real local sh) and reply parsing."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from zrelay.errors import ShellBroken
from zrelay.transport.ssh import CommandShell, _ShellSession
from zrelay.zfs import quoting, shell_protocol

NONCE = "0123456789abcdef0123456789abcdef"


def _run_local(*command_lines: str) -> subprocess.CompletedProcess:
    script = "".join(shell_protocol.shell_request(c, NONCE) for c in command_lines)
    return subprocess.run(["sh"], input=script.encode(), capture_output=True, check=True, cwd="/tmp")


def test_request_keeps_output_status_and_shell_intact() -> None:
    # `cd` and `exit` only end their own sh -c: the next command still runs in /tmp
    hostile = "echo 'a b'; printf 'no newline'; echo oops >&2; cd /; exit 7"
    r = _run_local(hostile, "pwd; cat; echo $?")
    assert r.stdout.split(f"\n{NONCE} ".encode()) == [b"a b\nno newline", b"7\n/tmp\n0\n", b"0\n"]
    assert r.stderr == f"oops\n\n{NONCE}\n\n{NONCE}\n".encode()


def test_request_with_quotes_and_newlines_is_one_word() -> None:
    r = _run_local("printf '%s\\n' \"it's\" 'x\ny'")
    assert r.stdout.startswith(b"it's\nx\ny\n\n" + NONCE.encode() + b" 0")


def test_nonce_must_be_hex() -> None:
    with pytest.raises(ValueError):
        shell_protocol.shell_request("true", "x; rm -rf /")


class _Chan:
    def __init__(self, session: _ShellSession, replies: list[tuple[bytes, bytes]]) -> None:
        self.session, self.replies, self.written = session, replies, []
        self.nonce = ""

    def write(self, data: bytes) -> None:
        self.written.append(data)
        out, err = self.replies.pop(0)
        loop = asyncio.get_running_loop()
        # replies arrive in pieces, stderr before stdout
        loop.call_soon(self.session.data_received, err, 1)
        for i in range(0, len(out), 3):
            loop.call_soon(self.session.data_received, out[i:i + 3], None)

    def close(self) -> None:
        self.session.connection_lost(None)


def test_shell_parses_split_replies() -> None:
    async def go() -> list[tuple[int, str, str]]:
        session = _ShellSession()
        shell = CommandShell(None, session)  # type: ignore[arg-type]
        n = shell._nonce
        chan = _Chan(session, [(f"one\n\n{n} 0\n".encode(), f"\n{n}\n".encode()),
                               (f"\n{n} 2\n".encode(), f"bad thing\n\n{n}\n".encode())])
        shell._chan = chan  # type: ignore[assignment]
        first = await shell.run("zfs list")
        second = await shell.run("zfs get")
        chan.close()
        with pytest.raises(ShellBroken) as info:
            await shell.run("true")
        assert info.value.sent is False
        return [first, second]

    assert asyncio.run(go()) == [(0, "one\n", ""), (2, "", "bad thing\n")]


# --- warm sessions: opened ahead of need, handed one command ----------------------------------

MARK = "fedcba9876543210fedcba9876543210"


def test_warm_line_execs_plain_commands_and_wraps_pipelines() -> None:
    assert shell_protocol.warm_exec_line("zfs send tank/a@s1", MARK) == (
        f"printf '%s\\n' {MARK}; printf '%s\\n' {MARK} >&2; exec zfs send tank/a@s1\n")
    pipeline = '{ zfs send tank/a@s1; echo "zrelay-stage 1 exit $?" >&2; } | zstd -q -c -1 -T1'
    assert shell_protocol.warm_exec_line(pipeline, MARK) == (
        f"printf '%s\\n' {MARK}; printf '%s\\n' {MARK} >&2; exec sh -c {quoting.quote([pipeline])}\n")
    # not a plain argv (an unterminated quote): wrapped, so the framing holds
    assert "exec sh -c" in shell_protocol.warm_exec_line("echo 'x", MARK)


def test_warm_line_then_stream_bytes_reach_the_command() -> None:
    """sh reads only the line; everything written after the mark is the command's stdin."""
    line = shell_protocol.warm_exec_line("cat", MARK)
    proc = subprocess.Popen(["sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd="/tmp")
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(line.encode())
    proc.stdin.flush()
    assert proc.stderr.readline() == f"{MARK}\n".encode()
    out, _ = proc.communicate(b"stream bytes\x00\xff" * 1000)
    assert out == f"{MARK}\n".encode() + b"stream bytes\x00\xff" * 1000 and proc.returncode == 0


def test_warm_proxy_drops_noise_waits_for_both_marks_and_delivers_in_order() -> None:
    got: list[tuple[bytes, object]] = []

    class Real:
        def data_received(self, data: bytes, datatype: object) -> None:
            got.append((data, datatype))

        def eof_received(self) -> bool:
            got.append((b"eof", None))
            return False

        def exit_status_received(self, status: int) -> None:
            got.append((b"exit", status))

        def connection_lost(self, exc: object) -> None:
            got.append((b"lost", None))

    proxy = _ShellSession()
    proxy.data_received(b"rc-file noise\n", None)
    proxy.hand_over(Real(), f"{MARK}\n".encode())
    assert not proxy.stdout  # what a command shell had buffered is not the stream's
    # stdout may overtake stderr: the stream's first bytes come right behind the stdout mark
    proxy.data_received(b"motd\n" + MARK[:5].encode(), None)
    proxy.data_received(MARK[5:].encode() + b"\nSTREAM-1", None)
    assert not proxy.marked
    proxy.data_received(b"warning from .bashrc\n" + MARK.encode() + b"\nzfs: first", 1)
    assert proxy.marked
    proxy.data_received(b"STREAM-2", None)
    proxy.eof_received()
    proxy.exit_status_received(0)
    assert got == []  # nothing before the owner is wired up
    proxy.release()
    proxy.data_received(b"late", 1)
    proxy.connection_lost(None)
    assert got == [(b"STREAM-1", None), (b"zfs: first", 1), (b"STREAM-2", None), (b"eof", None),
                   (b"exit", 0), (b"late", 1), (b"lost", None)]


# --- a small pool of command shells per connection ---------------------------------------------


def test_pool_picks_a_free_shell_else_the_shortest_queue() -> None:
    from zrelay.inventory.model import Host
    from zrelay.transport.ssh import Connection

    class Shell:
        def __init__(self, busy: bool, queued: int, broken: bool = False) -> None:
            self.lock, self.queued, self.broken = asyncio.Lock(), queued, broken
            self.busy = busy

    async def go() -> list[int]:
        conn = Connection(Host("h", "127.0.0.1", max_sessions=10))
        assert conn._shell_pool == 3
        shells = [Shell(True, 2), Shell(False, 0), Shell(True, 1)]
        for sh in shells:
            if sh.busy:
                await sh.lock.acquire()
        conn._shells = shells  # type: ignore[assignment]
        picks = [shells.index(await conn._command_shell())]  # type: ignore[arg-type]
        await shells[1].lock.acquire()          # now all busy, pool full: shortest queue
        picks.append(shells.index(await conn._command_shell()))  # type: ignore[arg-type]
        shells[2].broken = True                 # broken shells are never picked (and while
        conn._shells_starting = 1               # a replacement is starting, the pool is full)
        picks.append(shells.index(await conn._command_shell()))  # type: ignore[arg-type]
        return picks

    assert asyncio.run(go()) == [1, 1, 1]


def test_pool_size_follows_max_sessions() -> None:
    from zrelay.inventory.model import Host
    from zrelay.transport.ssh import Connection

    assert [Connection(Host("h", "a", max_sessions=n))._shell_pool for n in (3, 5, 6, 10, 64)] == [1, 1, 2, 3, 3]
    assert Connection(Host("h", "a", max_sessions=2)).use_shell is False

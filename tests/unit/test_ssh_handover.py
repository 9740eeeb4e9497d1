"""Shells opened ahead of need: a command shell that has answered is handed the first stream,
the warm session then serves the commands that follow.

A real asyncssh server runs in this process (127.0.0.1, an ephemeral port, generated keys,
host key checked) and runs every session's command with a real local ``sh``, so the
command-shell framing and the hand-over line go through a real shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import Any, AsyncIterator

import asyncssh

from zrelay.inventory.model import Host
from zrelay.transport.ssh import Connection, ConnectionPool


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True


def _real_sh(opened: list[str], cwd: Path) -> Any:
    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        opened.append(process.command or "")
        proc = await asyncio.create_subprocess_exec(
            "sh", "-c", process.command or "", cwd=cwd, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdin and proc.stdout and proc.stderr

        async def feed() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await process.stdin.read(1 << 16):
                    proc.stdin.write(data)
                    await proc.stdin.drain()
                proc.stdin.close()

        async def pump(src: asyncio.StreamReader, dst: Any) -> None:
            while data := await src.read(1 << 16):
                dst.write(data)
                await dst.drain()

        feeding = asyncio.ensure_future(feed())
        await asyncio.gather(pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr))
        status = await proc.wait()
        feeding.cancel()
        process.exit(status)
    return handle


@contextlib.asynccontextmanager
async def _server(tmp: Path, opened: list[str]) -> AsyncIterator[Host]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp / "id").write_bytes(client_key.export_private_key())
    (tmp / "id").chmod(0o600)
    (tmp / "authorized_keys").write_bytes(client_key.export_public_key())
    server = await asyncssh.create_server(
        _Server, "127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=str(tmp / "authorized_keys"),
        process_factory=_real_sh(opened, tmp), encoding=None)
    port = server.sockets[0].getsockname()[1]
    (tmp / "known_hosts").write_bytes(b"[127.0.0.1]:%d " % port + host_key.export_public_key())
    try:
        yield Host("h", "127.0.0.1", port=port, user="test", identity_file=str(tmp / "id"),
                   known_hosts=str(tmp / "known_hosts"), max_sessions=10)
    finally:
        server.close()
        await server.wait_closed()


class _Sink(asyncssh.SSHClientSession[bytes]):
    def __init__(self) -> None:
        self.data = bytearray()
        self.status: int | None = None
        self.done = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype is None:
            self.data += data

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _scenario(tmp: Path) -> dict[str, Any]:
    opened: list[str] = []
    async with _server(tmp, opened) as host:
        conn = Connection(host)
        try:
            first = await conn.run("echo one; echo err >&2")
            first_shell = conn._shells[0]
            assert conn._warm_task is not None      # started once the shell answered
            await conn._warm_task
            sessions_before_stream = len(opened)
            async with conn.bulk_session(_Sink, "head -c 300000 /dev/urandom | tee stream | cat") as (_, sink):
                shells_during_stream = list(conn._shells)
                warm_during_stream = conn._warm
                await sink.done
            second = await conn.run("sha256sum < stream")
            return {
                "first": (first.exit_status, first.stdout, first.stderr),
                "second": second.stdout.split()[0],
                "streamed": hashlib.sha256(sink.data).hexdigest(), "bytes": len(sink.data), "status": sink.status,
                "sessions_before_stream": sessions_before_stream, "first_shell_detached": first_shell.broken,
                "shells_during_stream": shells_during_stream, "warm_during_stream": warm_during_stream is not None,
                "second_ran_in_former_warm": warm_during_stream is not None
                                             and conn._shells[0]._chan is warm_during_stream[0],
            }
        finally:
            await conn.close()


def test_idle_command_shell_takes_the_stream_and_warm_session_the_next_command(tmp_path: Path) -> None:
    r = asyncio.run(asyncio.wait_for(_scenario(tmp_path), 60))
    assert r["first"] == (0, "one\n", "err\n")
    assert r["sessions_before_stream"] == 2               # the command shell, then the warm session
    assert r["first_shell_detached"] and r["shells_during_stream"] == []
    assert r["warm_during_stream"]                       # kept for what follows
    assert r["bytes"] == 300000 and r["status"] == 0
    assert r["streamed"] == r["second"]                  # no shell noise, no framing in the stream
    assert r["second_ran_in_former_warm"]                # no new login shell for it


class _Owner:
    """The session a stream hands its events to (relay or direct), as a list of what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.events.append(("stderr" if datatype == asyncssh.EXTENDED_DATA_STDERR else "stdout", data))

    def eof_received(self) -> bool:
        self.events.append(("eof",))
        return False

    def exit_status_received(self, status: int) -> None:
        self.events.append(("exit", status))

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("closed",))


def test_exit_status_before_the_stderr_mark_reaches_the_owner() -> None:
    """sshd sends the exit status when the process exits and what is left in its stderr pipe after
    it, so a short command's status can come before the stderr mark. Seen once in 100 concurrent
    small incremental sends; the real server cannot be made to order it so on demand, so the
    events are fed here in that order. The status used to be dropped ("ended without an exit
    status")."""
    from zrelay.transport.ssh import _ShellSession

    shell, owner = _ShellSession(), _Owner()
    shell.hand_over(owner, b"m1\n")
    shell.data_received(b"leftover of the last command\nm1\nstream", None)   # stdout: mark, then the stream
    shell.exit_status_received(0)
    shell.eof_received()
    assert not shell.marked and owner.events == []
    shell.data_received(b"m1\nzfs send said this", asyncssh.EXTENDED_DATA_STDERR)
    assert shell.marked
    shell.connection_lost(None)
    shell.release()
    assert owner.events == [("stdout", b"stream"), ("exit", 0), ("eof",), ("stderr", b"zfs send said this"),
                            ("closed",)]


def test_a_shell_that_ends_before_its_marks_tells_the_owner_nothing() -> None:
    """The shell died before it read the hand-over line: its own end is not the command's."""
    from zrelay.transport.ssh import _ShellSession

    shell, owner = _ShellSession(), _Owner()
    shell.hand_over(owner, b"m2\n")
    shell.exit_status_received(255)
    shell.connection_lost(None)
    assert shell.closed and not shell.marked and owner.events == []


async def _without_warm(tmp: Path) -> dict[str, Any]:
    opened: list[str] = []
    async with _server(tmp, opened) as host:
        pool = ConnectionPool({"h": host})
        pool.without_warm_sessions()
        conn = pool.get("h")
        try:
            first = await conn.run("echo one")
            second = await conn.run("echo two")
            await asyncio.sleep(0.2)   # a warm session would be opening now
            return {"out": (first.stdout, second.stdout), "opened": len(opened), "warm_task": conn._warm_task,
                    "warm": conn._warm}
        finally:
            await pool.close()


def test_a_pool_without_warm_sessions_opens_no_shell_ahead_of_need(tmp_path: Path) -> None:
    """``status`` streams nothing: a shell opened ahead of need would cost every host a login shell."""
    r = asyncio.run(asyncio.wait_for(_without_warm(tmp_path), 60))
    assert r["out"] == ("one\n", "two\n")
    assert r["opened"] == 1 and r["warm_task"] is None and r["warm"] is None   # the command shell only

"""Direct data path: the source host pipes ``zfs send`` into its own ssh to the target.

The stream never passes through the orchestrator: one encryption hop instead of
two, and no Python in the middle. The orchestrator only supervises: it starts the
pipeline on the source, reads progress (``pv -n`` byte counts) and the exit status
of each stage from the session's stderr, and applies the same blame rules as the
relay: the target's ``zfs receive`` error first, ssh's own failures (255) named as
such, the sender blamed only when it failed on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Callable

import asyncssh

from zrelay.errors import ZrelayError
from zrelay.paths.relay import RelayResult, TransferFailed
from zrelay.transport.host import RemoteHost
from zrelay.zfs import commands, parse

SSH_FAILED = 255
STDERR_CAP = 256 * 1024


class _Supervisor(asyncssh.SSHClientSession[bytes]):
    """Turns the pipeline's stderr into progress callbacks and keeps the rest as text."""

    def __init__(self, on_count: Callable[[int], None], done: asyncio.Future[None]) -> None:
        self._on_count = on_count
        self._done = done
        self._partial = b""
        self.stderr = bytearray()
        self.exit_status: int | None = None
        self.exit_signal: str | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype != asyncssh.EXTENDED_DATA_STDERR:
            return  # the pipeline's stdout is ssh's, and ssh forwards zfs receive's (empty)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line.isdigit():
                self._on_count(int(line))
            elif len(self.stderr) < STDERR_CAP:
                self.stderr += line + b"\n"

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        if self._partial and len(self.stderr) < STDERR_CAP:
            self.stderr += self._partial
        if not self._done.done():
            self._done.set_result(None)


#: How long a login check's master outlives its last stream if zrelay never says exit.
MASTER_IDLE_SECONDS = 60


def control_path() -> str:
    """A fresh control socket path on the source for one login check (and its streams)."""
    return f"/tmp/zrelay-login-{secrets.token_hex(8)}"


async def preflight(source: RemoteHost, target_name: str, ssh: list[str], master: str) -> None:
    """Before any byte moves: can the source log in to the target with its own ssh?
    The login's connection stays open at ``master`` for the streams (commands.via_master)."""
    command = commands.login_check_command(ssh, master, keep_seconds=MASTER_IDLE_SECONDS)
    result = await source.conn.run(command, check=False, timeout=60)
    if result.exit_status != 0:
        why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.exit_status}"
        raise TransferFailed(
            f"direct mode: {source.name} cannot log in to {target_name} with its own ssh ({why}); "
            f"forward an agent (SSH_AUTH_SOCK) or set direct_identity_file on {source.name}, make sure "
            f"{target_name}'s host key is in {source.name}'s known_hosts (direct_known_hosts), "
            "or use relay mode (--relay)", source.name)


async def close_master(source: RemoteHost, ssh: list[str], master: str) -> None:
    """End a login check's master once the run is over; where that fails, ControlPersist does."""
    with contextlib.suppress(ZrelayError, asyncssh.Error, OSError, asyncio.TimeoutError):
        await source.conn.run(commands.master_exit_command(ssh, master), check=False, timeout=10)


async def direct(source: RemoteHost, command: str, target_name: str,
                 on_bytes: Callable[[int], None], *, target_dataset: str | None = None) -> RelayResult:
    """Run the direct pipeline ``command`` on ``source``; report bytes as pv counts them."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    seen = 0

    def on_count(total: int) -> None:
        nonlocal seen
        if total > seen:
            on_bytes(total - seen)
            seen = total

    started = time.monotonic()
    session: _Supervisor | None = None
    chan = None
    try:
        # the host's warm session when it has one: its login shell has already started
        async with source.conn.bulk_session(lambda: _Supervisor(on_count, done), command) as (chan, session):
            chan.write_eof()
            await done
    except BaseException:
        if chan is not None:
            chan.close()
        raise
    assert session is not None
    seconds = time.monotonic() - started
    statuses, text = parse.split_stage_report(session.stderr.decode("utf-8", "replace"))
    last = session.exit_status
    if last == 0 and all(code == 0 for code in statuses.values()) and not session.exit_signal:
        return RelayResult(seen, seconds)
    raise _failure(source, target_name, statuses, last, session.exit_signal, text, target_dataset)


def _failure(source: RemoteHost, target_name: str, statuses: dict[int, int], last: int | None,
             signal: str | None, text: str, target_dataset: str | None) -> TransferFailed:
    first_line = text.splitlines()[0] if text else ""
    if signal or last is None:
        how = f"killed by signal {signal}" if signal else "ended without an exit status"
        return TransferFailed(f"{source.name}: direct stream {how}" + (f": {first_line}" if first_line else ""),
                              source.name)
    if last == SSH_FAILED:
        return TransferFailed(f"{source.name}: ssh to {target_name} failed during the stream: "
                              f"{first_line or 'exit 255'}", source.name)
    if last != 0:  # ssh exits with the target's zfs receive status
        cause = parse.map_error(target_name, text or f"exit {last}", last, target_dataset)
        sender = statuses.get(1)
        message = str(cause)
        if sender not in (None, 0):
            message += f"; zfs send on {source.name}: exit {sender}"
        return TransferFailed(message, target_name, cause)
    failed = min(stage for stage, code in statuses.items() if code != 0)
    if failed >= commands.TARGET_STAGE_BASE:  # a stage before zfs receive on the target (mbuffer, zstd -d)
        cause = parse.map_error(target_name, text or f"exit {statuses[failed]}", statuses[failed], target_dataset)
        return TransferFailed(str(cause), target_name, cause)
    cause = parse.map_error(source.name, text or f"exit {statuses[failed]}", statuses[failed])
    return TransferFailed(str(cause), source.name, cause)


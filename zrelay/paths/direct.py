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

from zrelay.errors import TransferFailed, ZrelayError
from zrelay.paths.relay import RelayResult
from zrelay.transport.host import RemoteHost
from zrelay.zfs import direct_ssh, parse

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


class LoginCheck:
    """Can ``source`` log in to the target with its own ssh? Asked once per host pair and
    run, before any byte moves (started at once, in the background). The check's connection
    stays open as a control master at a fresh socket path on the source; the pair's streams
    ride it (``stream_ssh``) until ``close``.

    ``ssh`` may put AES-GCM first (direct_ssh.AES_FIRST_CIPHERS); ``fallback_ssh`` is then the
    same ssh with OpenSSH's own cipher order, for streams between hosts of which one has no
    AES instructions (asked of both hosts meanwhile). Such streams connect on their own: the
    master's cipher was chosen when it connected."""

    def __init__(self, source: RemoteHost, dest: RemoteHost, ssh: list[str],
                 fallback_ssh: list[str] | None = None) -> None:
        self.source = source
        self.target_name = dest.name
        self.ssh = ssh
        self.fallback_ssh = fallback_ssh
        self.master = f"/tmp/zrelay-login-{secrets.token_hex(8)}"
        self.outcome: asyncio.Future[None] = asyncio.ensure_future(self._check())
        self.outcome.add_done_callback(lambda f: f.cancelled() or f.exception())  # unused outcome: no warning
        # with a fallback, both hosts are asked meanwhile whether their CPUs have AES instructions
        self._both_aes = (asyncio.gather(source.cpu_has_aes(), dest.cpu_has_aes())
                          if fallback_ssh is not None else None)

    @property
    def passed(self) -> bool:
        f = self.outcome
        return f.done() and not f.cancelled() and f.exception() is None

    async def stream_ssh(self) -> list[str]:
        """A stream's ssh: on the master once the check passed, else a connection of its own."""
        if self._both_aes is not None and False in await self._both_aes:
            return self.fallback_ssh or self.ssh
        return direct_ssh.via_master(self.ssh, self.master) if self.passed else self.ssh

    async def close(self) -> None:
        """End the master once the run is over; where that fails, ControlPersist does."""
        if not self.passed:
            return
        with contextlib.suppress(ZrelayError, asyncssh.Error, OSError, asyncio.TimeoutError):
            await self.source.conn.run(direct_ssh.master_exit_command(self.ssh, self.master), check=False,
                                       timeout=10)

    async def _check(self) -> None:
        command = direct_ssh.login_check_command(self.ssh, self.master, keep_seconds=MASTER_IDLE_SECONDS)
        result = await self.source.conn.run(command, check=False, timeout=60)
        if result.exit_status != 0:
            why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.exit_status}"
            source, target = self.source.name, self.target_name
            raise TransferFailed(
                f"direct mode: {source} cannot log in to {target} with its own ssh ({why}); "
                f"forward an agent (SSH_AUTH_SOCK) or set direct_identity_file on {source}, make sure "
                f"{target}'s host key is in {source}'s known_hosts (direct_known_hosts), "
                "or use relay mode (--relay)", source)


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
    raise _failure(source, target_name, command, statuses, last, session.exit_signal, text, target_dataset)


def _failure(source: RemoteHost, target_name: str, command: str, statuses: dict[int, int], last: int | None,
             signal: str | None, text: str, target_dataset: str | None) -> TransferFailed:
    """Name the process that failed and its host: the target's ``zfs receive`` first (ssh
    exits with its status), ssh itself (255), then the first failed stage of the pipeline.
    A failed stage on the source is also kept as ``sender_note``: the receive may have
    completed all the same (on zfs-fuse a killed ``zfs send`` client leaves its daemon
    writing the stream)."""
    programs = parse.stage_programs(command)
    text = parse.without_job_reports(text)
    first_line = text.splitlines()[0] if text else ""
    source_failed = sorted(stage for stage, code in statuses.items()
                           if code != 0 and stage < direct_ssh.TARGET_STAGE_BASE)
    note = None
    if source_failed:
        stage = source_failed[0]
        note = parse.process_end(programs.get(stage, f"stage {stage}"), source.name, statuses[stage],
                                 shell_status=True)
    if signal or last is None:
        what = parse.process_end("the direct stream (zfs send | ssh)", source.name, last, signal)
        return TransferFailed(what + (f": {first_line}" if first_line else ""), source.name)
    if last == SSH_FAILED:
        return TransferFailed(f"{source.name}: ssh to {target_name} failed during the stream: "
                              f"{first_line or 'exit 255'}", source.name, sender_note=note)
    if last != 0:  # ssh exits with the target's zfs receive status
        cause = parse.map_error(target_name, text or f"exit {last}", last, target_dataset)
        return TransferFailed(str(cause) + (f"; {note}" if note else ""), target_name, cause, sender_note=note)
    failed = min(stage for stage, code in statuses.items() if code != 0)
    code = statuses[failed]
    if failed >= direct_ssh.TARGET_STAGE_BASE:  # a stage before zfs receive on the target (mbuffer, zstd -d)
        if not text and code > 128:
            what = parse.process_end(programs.get(failed, f"stage {failed}"), target_name, code, shell_status=True)
            return TransferFailed(what, target_name)
        cause = parse.map_error(target_name, text or f"exit {code}", code, target_dataset)
        return TransferFailed(str(cause), target_name, cause)
    if text and code <= 128:
        cause = parse.map_error(source.name, text, code)
        return TransferFailed(str(cause), source.name, cause, sender_note=note)
    return TransferFailed(note or f"{source.name}: stage {failed} exited with status {code}", source.name,
                          sender_note=note)


"""Relay data path: ``zfs send`` on the source → this process → ``zfs receive`` on the target.

Source and target need no trust in each other: each only talks to the
orchestrator. Bytes are forwarded from one SSH channel to the other inside
asyncssh's callbacks (no per-chunk task switch, no extra buffering), with
flow control wired through: when the target channel's send buffer fills,
reading from the source channel pauses, so memory stays bounded whatever
the stream size.

Failure rules: when either side fails, the other is stopped; the receiver's
stderr is the primary message (a sender killed by the broken pipe has no
useful status of its own); the target is left as it was, or resumable where
``receive -s`` is in use.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

import asyncssh

from zrelay.errors import TransferFailed, ZfsError, ZrelayError
from zrelay.paths.throttle import Gate, Metering, Throttle
from zrelay.transport.host import RemoteHost
from zrelay.zfs import parse, quoting

WRITE_HIGH = 8 * 1024 * 1024
WRITE_LOW = 2 * 1024 * 1024
STDERR_CAP = 64 * 1024
#: A receiver that succeeded has read a whole stream, so its sender is about to report
#: its own exit: it gets this long to do so before its channel is closed. Closing at once
#: lost that status whenever a small stream's receive ended before the send's exit arrived.
SENDER_GRACE_SECONDS = 30.0


@dataclass
class _End:
    """What one side of the pipe reported; ``program`` is what it ran (``zfs send``), or the
    stage of its pipeline that failed (``zstd``)."""

    stderr: bytearray
    exit_status: int | None = None
    exit_signal: str | None = None
    closed: bool = False
    program: str = "zfs"
    shell_status: bool = False   # exit_status is a pipeline stage's, as its shell reported it

    def describe(self, host: str) -> str:
        """``zfs send on nas1 was killed (signal KILL)``: which process, where, how."""
        return parse.process_end(self.program, host, self.exit_status, self.exit_signal,
                                 shell_status=self.shell_status)

    @property
    def text(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def settle(self, command: str = "") -> None:
        """Fold a guarded pipeline's stage reports (wire compression, mbuffer) into the
        status: the first failed stage counts, e.g. a failed ``zfs send`` whose stdout went
        into a compressor that then ended cleanly; ``program`` becomes that stage's. The
        markers (and the shell's "Killed" lines) leave the text."""
        text = self.text
        if quoting.STAGE_MARK not in text:
            # a shell between sshd and the command reports a killed command as 128+N and "Killed"
            cleaned = parse.without_job_reports(text)
            if cleaned != text.strip("\n") and (self.exit_status or 0) > 128:
                self.stderr = bytearray(cleaned.encode())
                self.shell_status = True
            return
        statuses, rest = parse.split_stage_report(text)
        self.stderr = bytearray(parse.without_job_reports(rest).encode())
        failed = [(stage, code) for stage, code in sorted(statuses.items()) if code != 0]
        if failed and self.exit_status == 0:
            stage, self.exit_status = failed[0]
            self.program = parse.stage_programs(command).get(stage, self.program)
            self.shell_status = True


class _Session(asyncssh.SSHClientSession[bytes]):
    """Collects stderr and exit status; the pipe decides what to do with data."""

    def __init__(self, pipe: "_Pipe", end: _End, done: asyncio.Future[None]) -> None:
        self._pipe = pipe
        self._end = end
        self._done = done

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            if len(self._end.stderr) < STDERR_CAP:
                self._end.stderr += data
        else:
            self._pipe.on_data(self, data)

    def eof_received(self) -> bool:
        self._pipe.on_eof(self)
        return False

    def exit_status_received(self, status: int) -> None:
        self._end.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._end.exit_signal = signal

    def pause_writing(self) -> None:
        self._pipe.on_pause(self)

    def resume_writing(self) -> None:
        self._pipe.on_resume(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end.closed = True
        if not self._done.done():
            self._done.set_result(None)
        self._pipe.on_closed(self, self._end)


class _Pipe:
    """Wires the sender's stdout into the receiver's stdin, with flow control."""

    def __init__(self, on_bytes: Callable[[int], None], throttle: Throttle | None = None) -> None:
        self.on_bytes = on_bytes
        self.throttle = throttle
        self.metering: Metering | None = None
        self.gate: Gate | None = None
        self.sender_chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.receiver_chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.sender_session: _Session | None = None
        self.receiver_session: _Session | None = None
        self.total = 0
        self.receiver_stdout = bytearray()
        self._eof_sent = False
        self._sender_grace: asyncio.TimerHandle | None = None

    def on_data(self, session: _Session, data: bytes) -> None:
        if session is self.sender_session:
            chan = self.receiver_chan
            if chan is not None and not chan.is_closing():
                chan.write(data)
                self.total += len(data)
                self.on_bytes(len(data))
                if self.metering is not None:
                    self.metering.charge(len(data))
        elif len(self.receiver_stdout) < STDERR_CAP:
            self.receiver_stdout += data

    def on_eof(self, session: _Session) -> None:
        if session is self.sender_session:
            self._send_eof()

    def _send_eof(self) -> None:
        chan = self.receiver_chan
        if chan is not None and not self._eof_sent and not chan.is_closing():
            self._eof_sent = True
            chan.write_eof()

    def bind_sender(self, chan: asyncssh.SSHClientChannel[bytes], session: _Session) -> None:
        """The sender's channel is open: its reading pauses for the receiver or the throttle."""
        self.sender_chan, self.sender_session = chan, session
        self.gate = Gate(chan.pause_reading, chan.resume_reading)
        if self.throttle is not None and self.throttle.rate is not None:
            self.metering = Metering(self.throttle, self.gate)

    def on_pause(self, session: _Session) -> None:
        if session is self.receiver_session and self.gate is not None:
            self.gate.close("receiver")

    def on_resume(self, session: _Session) -> None:
        if session is self.receiver_session and self.gate is not None:
            self.gate.open("receiver")

    def on_closed(self, session: _Session, end: _End) -> None:
        # Whichever side ends first, the other must not wait forever: a failed receiver stops
        # the sender at once; after a successful receive the sender has its grace to exit.
        if session is self.receiver_session and self.sender_chan is not None:
            sender = self.sender_chan
            if end.ok and not end.exit_signal:
                self._sender_grace = asyncio.get_running_loop().call_later(SENDER_GRACE_SECONDS, sender.close)
            else:
                sender.close()
        elif session is self.sender_session:
            if self._sender_grace is not None:
                self._sender_grace.cancel()
            self._send_eof()


@dataclass(frozen=True, slots=True)
class RelayResult:
    bytes: int
    seconds: float


async def relay(source: RemoteHost, send_command: str, target: RemoteHost, receive_command: str,
                on_bytes: Callable[[int], None], *, target_dataset: str | None = None,
                throttle: Throttle | None = None) -> RelayResult:
    """Run ``send_command`` on ``source`` piped into ``receive_command`` on ``target``, at most
    as fast as ``throttle`` lets it (paths/throttle.py; None or no rate: as fast as it goes)."""
    loop = asyncio.get_running_loop()
    pipe = _Pipe(on_bytes, throttle)
    sender_end, receiver_end = _End(bytearray(), program="zfs send"), _End(bytearray(), program="zfs receive")
    sender_done: asyncio.Future[None] = loop.create_future()
    receiver_done: asyncio.Future[None] = loop.create_future()
    started = time.monotonic()
    try:
        async with target.conn.bulk_session(lambda: _Session(pipe, receiver_end, receiver_done),
                                            receive_command) as (rchan, rsession):
            pipe.receiver_chan, pipe.receiver_session = rchan, rsession
            rchan.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
            async with source.conn.bulk_session(lambda: _Session(pipe, sender_end, sender_done),
                                                send_command) as (schan, ssession):
                pipe.bind_sender(schan, ssession)
                schan.write_eof()  # zfs send reads nothing
                await asyncio.gather(sender_done, receiver_done)
    except BaseException:
        for chan in (pipe.sender_chan, pipe.receiver_chan):
            if chan is not None:
                chan.close()
        raise
    finally:
        if pipe.metering is not None:
            pipe.metering.stop()
    seconds = time.monotonic() - started
    sender_end.settle(send_command)
    receiver_end.settle(receive_command)
    if sender_end.ok and receiver_end.ok:
        return RelayResult(pipe.total, seconds)
    raise _failure(source, target, sender_end, receiver_end, target_dataset, pipe.total)


def _failure(source: RemoteHost, target: RemoteHost, sender: _End, receiver: _End,
             target_dataset: str | None, moved: int) -> TransferFailed:
    """Blame the right side: the receiver first, unless the sender failed on its own.

    Whatever went wrong on the sender is also kept on its own (``sender_note``), because
    the receive may have completed all the same."""
    sender_failed_alone = (sender.exit_status not in (None, 0) and not sender.exit_signal
                           and (receiver.ok or not receiver.text.strip()
                                or "stream" in receiver.text and moved == 0))
    note = None
    # a sender killed by the broken pipe of a receiver that failed first has nothing to add
    if not sender.ok and not (sender.exit_signal == "PIPE" and not receiver.ok):
        note = sender.describe(source.name)
        if sender.text.strip() and sender.exit_signal is None and sender.exit_status is not None:
            note += f": {sender.text.strip().splitlines()[0]}"
    cause: ZfsError | None
    if not receiver.ok and not sender_failed_alone:
        cause = parse.map_error(target.name, receiver.text or receiver.describe(target.name),
                                receiver.exit_status, target_dataset)
        message = str(cause) + (f"; {note}" if note else "")
        return TransferFailed(message, target.name, cause, sender_note=note)
    if sender.text.strip():
        cause = parse.map_error(source.name, sender.text, sender.exit_status)
        message = str(cause)
    else:
        cause = None
        message = sender.describe(source.name)
    if not receiver.ok and receiver.text.strip():
        message += f"; zfs receive on {target.name}: {receiver.text.strip().splitlines()[0]}"
    return TransferFailed(message, source.name, cause, sender_note=note)

"""The relay's pipe when the receiver ends first.

A small stream's ``zfs receive`` can finish and close its channel before the sender's exit
status has arrived (seen once with 40 concurrent jobs on a loaded lab: "zfs send ended without
an exit status" for a stream that had been received whole). The lab cannot produce that order
on demand, so these tests feed the relay's session callbacks in that order themselves, with
stand-in channels that record what the pipe does to them.
"""

from __future__ import annotations

import asyncio

import asyncssh
import pytest

from zrelay.paths import relay
from zrelay.paths.relay import _End, _Pipe, _Session


class _Channel:
    def __init__(self) -> None:
        self.closed = False
        self.eof = False
        self.written = bytearray()

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        self.written += data

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Wired:
    """A pipe between two stand-in channels, the stream sent and its EOF forwarded."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.pipe = _Pipe(lambda n: None)
        self.sender_end, self.receiver_end = _End(bytearray()), _End(bytearray())
        self.sender_chan, self.receiver_chan = _Channel(), _Channel()
        self.pipe.sender_chan, self.pipe.receiver_chan = self.sender_chan, self.receiver_chan  # type: ignore[assignment]
        self.sender = _Session(self.pipe, self.sender_end, loop.create_future())
        self.receiver = _Session(self.pipe, self.receiver_end, loop.create_future())
        self.pipe.sender_session, self.pipe.receiver_session = self.sender, self.receiver
        self.sender.data_received(b"a whole small stream", None)  # type: ignore[arg-type]
        self.sender.eof_received()

    def receiver_exits(self, status: int) -> None:
        self.receiver.exit_status_received(status)
        self.receiver.connection_lost(None)


def test_a_successful_receive_leaves_the_sender_time_to_report_its_exit() -> None:
    async def run() -> _Wired:
        w = _Wired()
        assert w.receiver_chan.written == b"a whole small stream" and w.receiver_chan.eof
        w.receiver_exits(0)
        assert not w.sender_chan.closed          # closing now would lose the sender's status
        await asyncio.sleep(0)
        w.sender.exit_status_received(0)
        w.sender.connection_lost(None)
        return w

    w = asyncio.run(run())
    assert w.sender_end.ok and w.receiver_end.ok
    assert w.pipe._sender_grace is not None and w.pipe._sender_grace.cancelled()


def test_a_failed_receive_stops_the_sender_at_once() -> None:
    async def run() -> _Wired:
        w = _Wired()
        w.receiver_exits(1)
        return w

    assert asyncio.run(run()).sender_chan.closed


def test_a_sender_that_never_exits_is_closed_after_its_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "SENDER_GRACE_SECONDS", 0.01)

    async def run() -> _Wired:
        w = _Wired()
        w.receiver_exits(0)
        assert not w.sender_chan.closed
        await asyncio.sleep(0.05)
        return w

    assert asyncio.run(run()).sender_chan.closed


def test_stdout_of_the_sender_is_data_and_stderr_is_kept() -> None:
    async def run() -> _Wired:
        w = _Wired()
        w.sender.data_received(b"warning: x\n", asyncssh.EXTENDED_DATA_STDERR)
        return w

    w = asyncio.run(run())
    assert w.sender_end.text == "warning: x\n"
    assert w.receiver_chan.written == b"a whole small stream"

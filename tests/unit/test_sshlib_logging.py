"""asyncssh's debug messages cost one level check when unwanted, and are logged as before when
wanted (zrelay.transport.sshlib.guard_debug_logging)."""

from __future__ import annotations

import logging

import pytest

from zrelay.transport.sshlib import guard_debug_logging, import_asyncssh


class Loud:
    """An argument that records being turned into text."""

    def __init__(self) -> None:
        self.formatted = 0

    def __str__(self) -> str:
        self.formatted += 1
        return "loud"


def test_an_unwanted_debug_message_is_not_formatted() -> None:
    import_asyncssh()
    from asyncssh.logging import logger

    logger.logger.setLevel(logging.INFO)
    try:
        arg = Loud()
        logger.debug1("opening %s", [arg])   # a list: asyncssh joins its items as text
        assert arg.formatted == 0
    finally:
        logger.logger.setLevel(logging.NOTSET)


def test_a_wanted_debug_message_is_logged_as_before(caplog: pytest.LogCaptureFixture) -> None:
    import_asyncssh()
    guard_debug_logging()   # twice: still one guard
    from asyncssh.logging import logger

    with caplog.at_level(logging.DEBUG, logger="asyncssh"):
        logger.get_child("conn", context="conn=7").debug1("opening %s for %s", [Loud(), b"x"], ("h", 22))
    assert "[conn=7] opening loud,x for h, port 22" in caplog.text

"""The transport tests run twice: with zrelay's asyncssh fast path (the default) and without
it (``ZRELAY_FASTPATH=0``, asyncssh as it ships), so that both ways a user can run are tested.

``BOTH_WAYS`` names the lab tests whose streams take the bulk paths the fast path changes: a
relay's full and incremental sends (received from one connection, forwarded into another),
a stream whose sender dies, and an S3 push (a paused consumer: the window) and restore (bulk
writes) of several objects: about 50 s more than one run (tests/unit/test_fastpath.py has
the byte-for-byte and flow-control checks of both ways). Each of them is
collected as ``[fastpath-on]`` and ``[fastpath-off]``; ``-k fastpath-off`` picks the second
run. Every other test runs as the environment says (on unless ``ZRELAY_FASTPATH`` is set).
The fast path does not depend on the ZFS flavour: on the OpenZFS tier (``ZRELAY_LAB=openzfs``,
qemu guests, several times slower) these tests run once, as the environment says.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest

#: (module name, test function name) of the tests that run both ways.
BOTH_WAYS = frozenset({
    ("test_sync", "test_full_then_incremental_then_noop"),
    ("test_stream_faults", "test_stream_that_arrived_is_a_success_though_its_sender_died"),
    ("test_s3", "test_stream_split_over_several_objects"),
})

MODES = {"fastpath-on": None, "fastpath-off": "0"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if os.environ.get("ZRELAY_LAB") == "openzfs":
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if (module, metafunc.function.__name__) in BOTH_WAYS:
        metafunc.parametrize("fastpath_mode", list(MODES), indirect=True, ids=list(MODES))


@pytest.fixture(autouse=True)
def fastpath_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """``ZRELAY_FASTPATH`` for the zrelay processes a test starts, when the test runs both ways."""
    mode = getattr(request, "param", None)
    if mode is not None:
        value = MODES[mode]
        if value is None:
            monkeypatch.delenv("ZRELAY_FASTPATH", raising=False)
        else:
            monkeypatch.setenv("ZRELAY_FASTPATH", value)
    yield mode

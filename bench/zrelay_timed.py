"""``python -m zrelay ARGS`` plus one hook: every relay's own duration goes to $BENCH_RELAY_LOG.

The CLI runs unchanged (same module, same argv); the hook only wraps
``zrelay.engine.relay`` to note each stream's bytes and seconds as measured by
``zrelay.paths.relay.relay`` itself, so the benchmark can report the transfer
time apart from start-up, connecting and planning.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys

import zrelay.engine


def _install_hook(path: str) -> None:
    original = zrelay.engine.relay
    records: list[dict[str, float]] = []

    async def timed_relay(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = await original(*args, **kwargs)
        records.append({"bytes": result.bytes, "seconds": result.seconds})
        return result

    def write() -> None:
        with open(path, "w") as f:
            json.dump(records, f)

    zrelay.engine.relay = timed_relay  # type: ignore[assignment]
    atexit.register(write)


if __name__ == "__main__":
    log_path = os.environ.get("BENCH_RELAY_LOG")
    if log_path:
        _install_hook(log_path)
    sys.argv = ["zrelay", *sys.argv[1:]]
    runpy.run_module("zrelay", run_name="__main__", alter_sys=True)

"""``python -m zrelay ARGS`` plus two optional hooks, each enabled by its environment variable.

The CLI runs unchanged (same module, same argv). Without either variable nothing of zrelay is
imported here and nothing is patched: the run costs what ``python -m zrelay`` costs.

- ``BENCH_RELAY_LOG=PATH``: every relay's own duration (bytes and seconds as measured by
  ``zrelay.paths.relay.relay`` itself) goes to PATH as JSON, so the benchmark can report the
  transfer time apart from start-up, connecting and planning. The function is wrapped where it
  is defined, before any other module imports it, so it is found wherever the engine lives.
- ``BENCH_PHASES_LOG=PATH``: CLOCK_MONOTONIC timestamps (the same clock in every process of the
  machine, so the benchmark compares them with its own reading taken just before it started this
  process) of the phases up to the first byte of the first stream, as JSON:
  ``hook`` (the interpreter is up, this script runs), ``asyncio_run`` (the command has imported
  its modules and read the inventory; its event loop starts), ``stream`` (the first stream is
  about to be opened: connected, probed, listed, planned), ``first_byte`` (the first bytes of a
  stream passed through this process: they were read from the sender and written towards the
  receiver), ``exit`` (atexit). They come from ``zrelay.paths.progress.Meter``, which every data
  path counts its bytes with, and from ``asyncio.run``; after the first byte the original
  ``Meter.add`` is put back, so the stream itself runs unpatched.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import time
from typing import Any


def _install_relay_hook(path: str) -> None:
    import zrelay.paths.relay as relay_module

    original = relay_module.relay
    records: list[dict[str, float]] = []

    async def timed_relay(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        records.append({"bytes": result.bytes, "seconds": result.seconds})
        return result

    def write() -> None:
        with open(path, "w") as f:
            json.dump(records, f)

    relay_module.relay = timed_relay
    atexit.register(write)


def _install_phase_hook(path: str, hook_at: float) -> None:
    import asyncio

    from zrelay.paths.progress import Meter

    phases: dict[str, float] = {"hook": hook_at}
    original_run = asyncio.run
    original_init = Meter.__init__
    original_add = Meter.add

    def run(*args: Any, **kwargs: Any) -> Any:
        phases.setdefault("asyncio_run", time.monotonic())
        return original_run(*args, **kwargs)

    def init(self: Meter, *args: Any, **kwargs: Any) -> None:
        phases.setdefault("stream", time.monotonic())
        original_init(self, *args, **kwargs)

    def add(self: Meter, n: int) -> None:
        if n > 0 and "first_byte" not in phases:
            phases["first_byte"] = time.monotonic()
            Meter.add = original_add  # type: ignore[method-assign]
        original_add(self, n)

    def write() -> None:
        phases["exit"] = time.monotonic()
        with open(path, "w") as f:
            json.dump(phases, f)

    asyncio.run = run
    Meter.__init__ = init  # type: ignore[method-assign]
    Meter.add = add  # type: ignore[method-assign]
    atexit.register(write)


if __name__ == "__main__":
    started = time.monotonic()
    phases_path = os.environ.get("BENCH_PHASES_LOG")
    if phases_path:
        _install_phase_hook(phases_path, started)
    relay_path = os.environ.get("BENCH_RELAY_LOG")
    if relay_path:
        _install_relay_hook(relay_path)
    sys.argv = ["zrelay", *sys.argv[1:]]
    runpy.run_module("zrelay", run_name="__main__", alter_sys=True)

#!/usr/bin/env python3
"""Where a zrelay run spends its time on the wire: ``python bench/sync_trace.py [--timeline] -- ZRELAY ARGS``.

Runs ``zrelay ARGS`` in this process (the real CLI, unchanged) with every SSH connection
set-up, remote command and stream session of ``zrelay.transport.ssh.Connection`` noted
(host, start and end relative to this process's start, what it ran), then prints to stderr
the counts per host and kind, the busiest seconds, and with ``--timeline`` every event.
With ``--json PATH`` the events also go to PATH. A diagnosis tool: the wrappers add a few
microseconds per command, nothing to a stream's bytes.
"""

from __future__ import annotations

import argparse
import atexit
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's zrelay first

T0 = time.monotonic()
EVENTS: list[dict[str, Any]] = []


def _note(kind: str, host: str, start: float, what: str, ok: bool = True) -> None:
    EVENTS.append({"kind": kind, "host": host, "start": round(start - T0, 4),
                   "end": round(time.monotonic() - T0, 4), "what": what[:200], "ok": ok})


def install() -> None:
    import contextlib

    from zrelay.transport import ssh

    conn_cls = ssh.Connection
    connect, run, bulk = conn_cls._connect, conn_cls.run, conn_cls.bulk_session

    async def traced_connect(self: Any) -> Any:
        start = time.monotonic()
        try:
            result = await connect(self)
        except BaseException:
            _note("connect", self.name, start, "", ok=False)
            raise
        _note("connect", self.name, start, "")
        return result

    async def traced_run(self: Any, command: str, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            result = await run(self, command, **kwargs)
        except BaseException:
            _note("command", self.name, start, command, ok=False)
            raise
        _note("command", self.name, start, command, ok=result.exit_status == 0)
        return result

    @contextlib.asynccontextmanager
    async def traced_bulk(self: Any, factory: Any, command: str) -> Any:
        start = time.monotonic()
        async with bulk(self, factory, command) as pair:
            _note("stream-open", self.name, start, command)
            opened = time.monotonic()
            try:
                yield pair
            finally:
                _note("stream", self.name, opened, command)

    conn_cls._connect = traced_connect  # type: ignore[method-assign]
    conn_cls.run = traced_run  # type: ignore[method-assign]
    conn_cls.bulk_session = traced_bulk  # type: ignore[method-assign]


def report(timeline: bool, json_path: str | None) -> None:
    end = time.monotonic() - T0
    out = sys.stderr
    print(f"\n--- sync_trace: {len(EVENTS)} events, process ran {end:.3f} s", file=out)
    counts = Counter((e["host"], e["kind"]) for e in EVENTS)
    busy: Counter[tuple[str, str]] = Counter()
    for e in EVENTS:
        busy[(e["host"], e["kind"])] += e["end"] - e["start"]
    for (host, kind), n in sorted(counts.items()):
        print(f"  {host:<10} {kind:<12} {n:5d}  summed {busy[(host, kind)]:7.3f} s", file=out)
    verbs = Counter(" ".join(e["what"].split()[:2]) for e in EVENTS if e["kind"] == "command")
    print("  commands by first words: " + ", ".join(f"{v} ×{n}" for v, n in verbs.most_common(12)), file=out)
    if EVENTS:
        first = min(EVENTS, key=lambda e: e["start"])
        print(f"  first event at {first['start']:.3f} s ({first['kind']} {first['host']})", file=out)
    if timeline:
        for e in sorted(EVENTS, key=lambda e: e["start"]):
            print(f"  {e['start']:7.3f} {e['end']:7.3f} {e['end'] - e['start']:6.3f} {e['host']:<7} "
                  f"{e['kind']:<11} {'' if e['ok'] else 'FAIL '}{e['what'][:110]}", file=out)
    if json_path:
        Path(json_path).write_text(json.dumps({"process_seconds": end, "events": EVENTS}, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeline", action="store_true", help="print every event")
    ap.add_argument("--json", metavar="PATH", help="write the events as JSON")
    ap.add_argument("zrelay_args", nargs=argparse.REMAINDER, help="-- then zrelay's own arguments")
    args = ap.parse_args()
    words = args.zrelay_args[1:] if args.zrelay_args[:1] == ["--"] else args.zrelay_args
    install()
    atexit.register(report, args.timeline, args.json)
    from zrelay.cli.main import main as zrelay_main
    code = zrelay_main(words)
    raise SystemExit(code)


if __name__ == "__main__":
    main()

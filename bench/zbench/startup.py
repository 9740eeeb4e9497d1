"""startup: zrelay's fixed cost, from the start of the ``zrelay sync`` process to the first byte
of its first stream, on a tiny incremental (one small file changed, a few KiB of stream).

(a) zrelay: ``python bench/zrelay_timed.py -i INVENTORY sync --json`` (= ``python -m zrelay``) with
    ``BENCH_PHASES_LOG`` set. The clock starts here just before the process is created; the first
    byte is when ``zrelay.paths.progress.Meter`` first counts bytes in that process, i.e. when
    the first bytes read from ``zfs send`` were written towards ``zfs receive`` (both timestamps
    are CLOCK_MONOTONIC, one clock for every process of the machine). The same hook gives the
    phases in between: interpreter start, imports and inventory (until ``asyncio.run``),
    connecting, probing, listing and planning (until the first stream is set up), opening
    the two stream sessions (until the first byte). The hook costs nothing measurable: an
    attribute lookup per call until the first byte, nothing after it; without the variable the
    script is plain ``python -m zrelay``.
(b) OpenSSH relay, for scale: ``ssh nas1 zfs send -i … | ssh vault zfs receive -u …`` with this
    process in the middle (the two ssh started together, the first byte timed when it is read
    from the sender's ssh and written to the receiver's). No interpreter to start, no inventory,
    no probing or listing: what two handshakes, two logins and ``zfs send``'s start cost.

Both replicate the same snapshots into targets of their own (``vault:backup/PREFIX/start-z`` and
``-o``); every repetition takes a new snapshot first (outside the clock), the methods then run in
rotating order, and the received snapshot's GUID is checked against the source's afterwards.
The goal is on (a) alone: ≤ 0.35 s. The whole run's wall time is noted too.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from zbench.common import (BENCH, SOURCE, TARGET, BenchError, Lab, host_trouble, log, rotations, run_timed,
                           summary, zrelay_env, zrelay_sync_results)

NAMES = ("startup",)
METHODS = ("zrelay", "openssh-relay")
GOAL_S = 0.35
REP_ATTEMPTS = 4
#: The hook's timestamps, in order: (phase, from, to).
PHASES = (("interpreter", "start", "hook"), ("imports + inventory", "hook", "asyncio_run"),
          ("connect + probe + list + plan", "asyncio_run", "stream"), ("stream open", "stream", "first_byte"))


def run(lab: Lab, *, reps: int, ssh_opts: list[str], inventory_extra: dict[str, Any],
        workdir: Path) -> dict[str, Any]:
    src = f"tank/{lab.prefix}/start-src"
    targets = {"zrelay": f"backup/{lab.prefix}/start-z", "openssh-relay": f"backup/{lab.prefix}/start-o"}
    log(f"startup: a small dataset {SOURCE}:{src}, replicated twice to {TARGET}")
    lab.zfs(SOURCE, "create", "-p", src)
    lab.zfs(TARGET, "create", "-p", f"backup/{lab.prefix}")
    mnt = lab.zfs(SOURCE, "get", "-H", "-o", "value", "mountpoint", src).strip()
    serial = [1]
    lab.ssh(SOURCE, f"echo 1 > {shlex.quote(mnt)}/f && zfs snapshot {shlex.quote(src)}@s1")
    for tgt in targets.values():
        _openssh(lab, ssh_opts, f"{src}@s1", None, tgt)
    inventory = lab.write_inventory(workdir / "startup.yml", [
        {"name": "bench-startup", "source": f"{SOURCE}:{src}", "targets": [f"{TARGET}:{targets['zrelay']}"]}],
        **inventory_extra)

    def new_snapshot() -> tuple[str, str]:
        serial[0] += 1
        snap = f"s{serial[0]}"
        lab.ssh(SOURCE, f"echo {serial[0]} >> {shlex.quote(mnt)}/f && zfs snapshot {shlex.quote(src)}@{snap}")
        return f"s{serial[0] - 1}", snap

    def zrelay(_base: str, _snap: str) -> dict[str, Any]:
        with tempfile.NamedTemporaryFile(prefix="phases", suffix=".json", dir=workdir, delete=False) as f:
            phases_path = Path(f.name)
        env = zrelay_env()
        env["BENCH_PHASES_LOG"] = str(phases_path)
        start = time.monotonic()
        timed, r = run_timed([sys.executable, str(BENCH / "zrelay_timed.py"), "-i", str(inventory), "sync", "--json"],
                             env=env, what="zrelay sync", ok_codes=(0, 1))
        zrelay_sync_results(r, "zrelay sync", {"ok"})
        marks = json.loads(phases_path.read_text() or "{}")
        phases_path.unlink()
        if "first_byte" not in marks:
            raise BenchError(f"zrelay sync: no first byte noted (phases: {sorted(marks)})")
        marks = {k: round(v - start, 4) for k, v in marks.items()}
        marks["start"] = 0.0
        return {"first_byte_s": marks["first_byte"], "wall_s": round(timed.seconds, 4),
                "cpu_s": round(timed.cpu, 3), "marks": marks,
                "phases_s": {name: round(marks[b] - marks[a], 4) for name, a, b in PHASES}}

    def openssh(base: str, snap: str) -> dict[str, Any]:
        return _openssh(lab, ssh_opts, f"{src}@{snap}", base, targets["openssh-relay"])

    runners = {"zrelay": zrelay, "openssh-relay": openssh}
    log("startup: one untimed round to warm up")
    base, snap = new_snapshot()
    for method in METHODS:
        runners[method](base, snap)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for rep, order in rotations(METHODS, reps):
        for n in range(1, REP_ATTEMPTS + 1):
            lab.wait_up()
            base, snap = new_snapshot()
            got: dict[str, dict[str, Any]] = {}
            try:
                for method in order:
                    got[method] = runners[method](base, snap)
                break
            except BenchError as exc:
                if n == REP_ATTEMPTS or not host_trouble(lab, exc):
                    raise
                log(f"startup rep {rep + 1}: {str(exc)[:300]} — a lab host went away; redoing the rep")
                lab.wait_up()
                for method, tgt in targets.items():   # both targets back on the newest snapshot
                    have = _newest(lab, tgt)
                    if have != snap:
                        _openssh(lab, ssh_opts, f"{src}@{snap}", have, tgt)
        want = lab.guid(SOURCE, f"{src}@{snap}")
        for method in METHODS:
            got_guid = lab.guid(TARGET, f"{targets[method]}@{snap}")
            if got_guid != want:
                raise BenchError(f"startup {method}: received snapshot GUID {got_guid} != source {want}")
            runs[method].append({"rep": rep, **got[method]})
        z, o = got["zrelay"], got["openssh-relay"]
        log(f"startup rep {rep + 1}/{reps}: zrelay first byte {z['first_byte_s']:.3f} s (whole run "
            f"{z['wall_s']:.2f} s; " + ", ".join(f"{k} {v:.3f}" for k, v in z["phases_s"].items())
            + f"), OpenSSH relay {o['first_byte_s']:.3f} s — goal ≤ {GOAL_S} s "
            + ("met" if z["first_byte_s"] <= GOAL_S else "NOT met"))

    def med(method: str, key: str) -> float:
        return summary([r[key] for r in runs[method]])["median"]

    out: dict[str, Any] = {"reps": reps, "goal_s": GOAL_S, "runs": runs,
                           "median_first_byte_s": {m: med(m, "first_byte_s") for m in METHODS},
                           "median_wall_s": {m: med(m, "wall_s") for m in METHODS},
                           "median_phases_s": {name: summary([r["phases_s"][name] for r in runs["zrelay"]])["median"]
                                               for name, _a, _b in PHASES}}
    out["goal_met"] = out["median_first_byte_s"]["zrelay"] <= GOAL_S
    return out


def _openssh(lab: Lab, ssh_opts: list[str], snapshot: str, base: str | None, target: str) -> dict[str, Any]:
    """``ssh SOURCE zfs send [-i @base] snapshot | ssh TARGET zfs receive -u target`` through this
    process: the time to the first byte read from the sender (and written on), and to the end."""
    send = ["zfs", "send"] + (["-i", f"@{base}"] if base else []) + [snapshot]
    receive = ["zfs", "receive", "-u", target]
    start = time.monotonic()
    sender = subprocess.Popen(lab.ssh_argv(SOURCE, *ssh_opts) + [shlex.join(send)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    receiver = subprocess.Popen(lab.ssh_argv(TARGET, *ssh_opts) + [shlex.join(receive)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert sender.stdout is not None and receiver.stdin is not None
    err_r = err_s = b""
    first: float | None = None
    try:
        while chunk := os.read(sender.stdout.fileno(), 1 << 16):
            if first is None:
                first = time.monotonic()
            receiver.stdin.write(chunk)
        receiver.stdin.close()
        receiver.wait(timeout=120)
        sender.wait(timeout=120)
        err_r, err_s = (p.stderr.read() if p.stderr else b"" for p in (receiver, sender))
    except (OSError, subprocess.TimeoutExpired) as exc:
        sender.kill()
        receiver.kill()
        raise BenchError(f"OpenSSH relay {snapshot} → {target}: {exc}") from None
    end = time.monotonic()
    if sender.returncode != 0 or receiver.returncode != 0 or first is None:
        raise BenchError(f"OpenSSH relay {snapshot} → {target}: exit {sender.returncode}|{receiver.returncode}: "
                         f"{err_s.decode(errors='replace').strip()[-300:]} | "
                         f"{err_r.decode(errors='replace').strip()[-300:]}")
    return {"first_byte_s": round(first - start, 4), "wall_s": round(end - start, 4)}


def _newest(lab: Lab, dataset: str) -> str | None:
    """The newest snapshot of ``TARGET:dataset`` (its short name), None when it has none."""
    out = lab.zfs(TARGET, "list", "-H", "-t", "snapshot", "-o", "name", "-s", "createtxg", "-d", "1", dataset)
    names = [line.split("@", 1)[1] for line in out.splitlines() if "@" in line]
    return names[-1] if names else None


def table_rows(d: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    first, wall, ph = d["median_first_byte_s"], d["median_wall_s"], d["median_phases_s"]
    z, o = first["zrelay"], first["openssh-relay"]
    return [
        ("startup: zrelay sync start → first byte of the first stream (vs OpenSSH relay)", f"{z:.3f} s",
         f"{o:.3f} s", o / z if z else None, f"≤ {d['goal_s']} s", z <= d["goal_s"]),
        ("startup phases: " + " / ".join(ph), " / ".join(f"{v:.3f}" for v in ph.values()) + " s", "—", None,
         "info", None),
        ("startup: whole run, tiny incremental (vs OpenSSH relay)", f"{wall['zrelay']:.3f} s",
         f"{wall['openssh-relay']:.3f} s", wall["openssh-relay"] / wall["zrelay"] if wall["zrelay"] else None,
         "info", None),
    ]

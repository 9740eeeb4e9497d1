"""noop-100 and incr-100: many small datasets, where per-dataset overhead (round trips,
listings, connection reuse, concurrency) matters rather than bandwidth.

Source: ``nas1:tank/PREFIX/many`` with N children ``c000``…, each holding one small file.
Two ways to describe the same work to zrelay, both measured:

- ``recursive``: one job, ``recursive: true``, target ``vault:backup/PREFIX/many-r``;
- ``jobs``: N jobs, one per child, targets ``vault:backup/PREFIX/many-j/cNNN``.

full-N   first replication (information only);
noop-N   ``zrelay sync`` when nothing changed (goal ≤ 5 s wall for N = 100);
incr-N   one small change + a new snapshot in every child, then ``zrelay sync`` (goal ≤ 3 s wall).

Baseline for full/incr: the shell loop a cron script would run on nas1, one
``zfs send [-i] … | ssh vault zfs receive -u …`` per dataset, one after another,
into ``vault:backup/PREFIX/many-s``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from zbench.common import (SOURCE, TARGET, BenchError, Lab, Timed, attempt, host_trouble, log, rotations,
                           run_timed, summary, zrelay_env, zrelay_sync_results)

STYLES = ("recursive", "jobs")
REP_ATTEMPTS = 4
#: A sync of 100 datasets with nothing to send (noop-100) takes at most this long, wall time.
GOAL_S = 5.0
#: A sync of 100 datasets with one small change each (incr-100), either layout (since 2026-12-06;
#: it was GOAL_S before).
INCR_GOAL_S = 3.0


def _goal(seconds: float, goal: float = GOAL_S) -> str:
    return f"goal ≤ {goal:.0f} s {'met' if seconds <= goal else 'NOT met'}"


def run(lab: Lab, *, count: int, reps: int, ssh_opts: list[str], inventory_extra: dict[str, Any],
        workdir: Path, want_noop: bool = True, want_incr: bool = True) -> dict[str, Any]:
    root = f"tank/{lab.prefix}/many"
    dst = f"backup/{lab.prefix}"
    shell_root = f"{dst}/many-s"
    children = [f"c{i:03d}" for i in range(count)]
    mnt = f"/tank/{lab.prefix}/many"  # default mountpoints inside nas1's namespace

    log(f"many: creating {count} datasets under {SOURCE}:{root}")
    lab.zfs(TARGET, "create", "-p", dst)
    script = [f"zfs create -p {shlex.quote(root)}"]
    script += [f"zfs create {shlex.quote(root + '/' + c)} && echo 0 > {shlex.quote(mnt + '/' + c)}/f"
               for c in children]
    script.append(f"zfs snapshot -r {shlex.quote(root)}@s1")
    lab.ssh(SOURCE, "set -e\n" + "\n".join(script) + "\n")
    if lab.ssh(SOURCE, f"cat {shlex.quote(mnt + '/' + children[0])}/f").stdout.strip() != "0":
        raise BenchError(f"{SOURCE}: {mnt}/{children[0]}/f was not written (mountpoint?)")

    inventories = {
        "recursive": lab.write_inventory(workdir / "many-recursive.yml", [
            {"name": "bench-many", "source": f"{SOURCE}:{root}", "recursive": True,
             "targets": [f"{TARGET}:{dst}/many-r"]}], **inventory_extra),
        "jobs": lab.write_inventory(workdir / "many-jobs.yml", [
            {"name": f"bench-{c}", "source": f"{SOURCE}:{root}/{c}", "targets": [f"{TARGET}:{dst}/many-j/{c}"]}
            for c in children], **inventory_extra),
    }

    def sync(style: str, expect: set[str]) -> Timed:
        what = f"zrelay sync ({style})"
        timed, r = run_timed([sys.executable, "-m", "zrelay", "-i", str(inventories[style]), "sync", "--json"],
                             env=zrelay_env(), what=what, ok_codes=(0, 1))
        results = zrelay_sync_results(r, what, expect)
        plans = [p["kind"] for x in results for p in x["plans"]]
        timed.extra = {"datasets": len(plans), "plans": {k: plans.count(k) for k in sorted(set(plans))}}
        return timed

    def shell_loop(snap: str) -> Timed:
        """The cron-script baseline: per dataset, send from what the target has (or full), in sequence.
        The target listing happens before the clock starts."""
        have = _newest_snapshots(lab, shell_root)
        recv_ssh = shlex.join(lab.ssh_argv(TARGET, *ssh_opts))
        lines = ["set -e -o pipefail"]
        for c in [""] + children:
            src = root + (f"/{c}" if c else "")
            tgt = shell_root + (f"/{c}" if c else "")
            base = have.get(tgt)
            if base == snap:
                continue
            send = ["zfs", "send"] + (["-i", f"@{base}"] if base else []) + [f"{src}@{snap}"]
            lines.append(f"{shlex.join(send)} | {recv_ssh} {shlex.quote(shlex.join(['zfs', 'receive', '-u', tgt]))}")
        timed, _ = run_timed(lab.in_namespace(SOURCE, ["bash", "-c", "\n".join(lines)]), what="shell loop on nas1")
        timed.cpu = 0.0
        timed.extra = {"datasets": len(lines) - 1}
        return timed

    def row(rep: int, timed: Timed) -> dict[str, Any]:
        return {"rep": rep, "seconds": round(timed.seconds, 3), "orchestrator_cpu_s": round(timed.cpu, 2),
                **timed.extra}

    out: dict[str, Any] = {"count": count, "reps": reps}

    # full: the first replication, each way once. A retry (host stopped by someone else) finishes
    # what is left, so its time is flagged.
    full: dict[str, Any] = {}
    for name in ("recursive", "jobs", "shell-loop"):
        tries = [0]

        def once(name: str = name, tries: list[int] = tries) -> Timed:
            tries[0] += 1
            return shell_loop("s1") if name == "shell-loop" else sync(name, {"ok", "noop"})
        timed = attempt(lab, f"full {name}", once)
        full[name] = {**row(0, timed), "retried": tries[0] > 1}
        log(f"full-{count} {name:<10} {timed.seconds:6.2f} s")
    out["full"] = full

    if want_noop:
        runs: dict[str, list[dict[str, Any]]] = {s: [] for s in STYLES}
        for rep, order in rotations(STYLES, reps):
            for style in order:
                timed = attempt(lab, f"noop {style}", lambda style=style: sync(style, {"noop"}))
                runs[style].append(row(rep, timed))
                log(f"noop-{count} rep {rep + 1}/{reps} {style:<10} {timed.seconds:6.2f} s  cpu {timed.cpu:5.2f} s  "
                    f"{_goal(timed.seconds)}")
        out["noop"] = {"runs": runs, "median_seconds": {s: summary([r["seconds"] for r in runs[s]])["median"]
                                                        for s in STYLES}}
        out["noop"]["goal_s"] = GOAL_S
        out["noop"]["goal_met"] = {s: out["noop"]["median_seconds"][s] <= GOAL_S for s in STYLES}

    if want_incr:
        methods = (*STYLES, "shell-loop")
        runs = {m: [] for m in methods}
        serial = 1
        for rep, order in rotations(methods, reps):
            for n in range(1, REP_ATTEMPTS + 1):
                # a new change and snapshot for every attempt, so each attempt measures a whole increment
                serial += 1
                snap = f"s{serial}"
                change = [f"echo {serial} >> {shlex.quote(mnt + '/' + c)}/f" for c in children]
                lab.wait_up()
                lab.ssh(SOURCE, "set -e\n" + "\n".join(change) + f"\nzfs snapshot -r {shlex.quote(root)}@{snap}\n")
                got: dict[str, Timed] = {}
                try:
                    for method in order:
                        got[method] = shell_loop(snap) if method == "shell-loop" else sync(method, {"ok"})
                        log(f"incr-{count} rep {rep + 1}/{reps} {method:<10} {got[method].seconds:6.2f} s"
                            + ("" if method == "shell-loop" else f"  {_goal(got[method].seconds, INCR_GOAL_S)}"))
                    break
                except BenchError as exc:
                    if n == REP_ATTEMPTS or not host_trouble(lab, exc):
                        raise
                    log(f"incr-{count} rep {rep + 1}: {str(exc)[:300]} — a lab host went away; redoing the rep")
                    lab.wait_up()
            for method, timed in got.items():
                runs[method].append(row(rep, timed))
        out["incr"] = {"runs": runs, "median_seconds": {m: summary([r["seconds"] for r in runs[m]])["median"]
                                                        for m in methods}}
        out["incr"]["goal_s"] = INCR_GOAL_S
        out["incr"]["goal_met"] = {s: out["incr"]["median_seconds"][s] <= INCR_GOAL_S for s in STYLES}
    return out


def _newest_snapshots(lab: Lab, root: str) -> dict[str, str]:
    """dataset → name of its newest snapshot, for every dataset under ``root`` on the target."""
    r = lab.ssh(TARGET, shlex.join(["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-s", "createtxg",
                                    "-r", root]), check=False)
    if r.returncode != 0:
        if "does not exist" in r.stderr:
            return {}
        raise BenchError(f"{TARGET}: zfs list -t snapshot -r {root}: {r.stderr.strip()}")
    newest: dict[str, str] = {}
    for line in r.stdout.split("\n"):
        if "@" in line:
            ds, snap = line.strip().split("@", 1)
            newest[ds] = snap
    return newest

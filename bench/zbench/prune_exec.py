"""prune-exec: ``zrelay prune`` against ``sanoid --prune-snapshots`` on the OpenZFS lab (oz1).

Same state for both, rebuilt every repetition: two trees on oz1, ``tank/pb-s/d00…`` (sanoid's
names, ``autosnap_YYYY-MM-DD_HH:MM:SS_frequently``) and ``tank/pb-z/d00…`` (zrelay's,
``zrelay_%Y-%m-%dT%H:%M:%SZ``), ``datasets`` children each with ``snapshots`` snapshots taken
in ticks one second or more apart (one atomic ``zfs snapshot`` of both trees per tick), and an
equivalent policy on each: keep the ``keep`` newest.

- sanoid 2.1.0 (this machine's Debian package) is copied into the guest with the two Perl modules
  the guest lacks and run there: ``[tank/pb-s] recursive, process_children_only`` with
  ``frequently = keep, frequent_period = 1`` (everything else 0). sanoid prunes a snapshot of a type
  only while there are more than ``keep`` of it AND it is older than ``keep × frequent_period``
  minutes (by creation), so the run waits until the last snapshot to go is that old. Timed as
  ``ssh oz1 'time perl sanoid --prune-snapshots …'`` from here (wall) and by the guest's own
  ``time``. Its snapshot cache is removed first (outside the clock), so it lists, as zrelay does.
- zrelay: ``python -m zrelay -i INVENTORY prune --json`` from here (the whole CLI), one recursive
  job on nas1 (= oz1) ``tank/pb-z`` with ``keep: {source: {last: keep}}`` and no targets.

Both must leave exactly ``keep`` snapshots per dataset, the newest ones (checked after every run).
Methods alternate (rep 1 sanoid first, rep 2 zrelay first, …). The datasets are made once and
destroyed at the end, as is the copy of sanoid, also on failure or Ctrl-C. The JSON is written
after every repetition (``"complete": false`` until the last).

Run: ``python bench/zbench/prune_exec.py --reps 3`` (needs only the OpenZFS guests up).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: zbench importable as a script

from zbench.common import REPO, BenchError, log, ratio, rotations, run_timed, summary, zrelay_env  # noqa: E402

NAMES = ("prune-exec",)
METHODS = ("sanoid", "zrelay")
GOAL = 1.0                    # zrelay wall time / sanoid wall time
GUEST = "oz1"                 # the inventory calls it nas1 (its alias on the OpenZFS tier)
POOL = "tank"
S_ROOT, Z_ROOT = f"{POOL}/pb-s", f"{POOL}/pb-z"
REMOTE_DIR = "/root/zrelay-bench-sanoid"
SANOID = Path("/usr/sbin/sanoid")
SANOID_DEFAULTS = Path("/usr/share/sanoid/sanoid.defaults.conf")
PERL_MODULES = ("Config/IniFiles.pm", "Capture/Tiny.pm")     # what the guest's perl lacks
PERL_DIRS = (Path("/usr/share/perl5"), Path("/usr/lib/x86_64-linux-gnu/perl5/5.36"))
S_NAME = "autosnap_%Y-%m-%d_%H:%M:%S_frequently"
Z_NAME = "zrelay_%Y-%m-%dT%H:%M:%SZ"
# Debian's sanoid reads its defaults from /usr/share/sanoid; upstream's line reads them from the
# config directory, which lets the copy run without writing anywhere else in the guest.
DEFAULTS_DEBIAN = 'my $default_conf_file = "/usr/share/sanoid/sanoid.defaults.conf";'
DEFAULTS_UPSTREAM = 'my $default_conf_file = "$args{\'configdir\'}/sanoid.defaults.conf";'
TIMEFORMAT = "SANOID_TIME real=%R user=%U sys=%S"


class Guest:
    """oz1 of the OpenZFS lab, through the lab's ssh config."""

    def __init__(self) -> None:
        self.dir = Path(os.environ.get("ZRELAY_OPENZFS_DIR") or "/var/tmp/zrelay-lab-openzfs")
        self.ssh_config = self.dir / "ssh_config"
        self.lab_script = REPO / "lab" / "openzfs.py"

    def check_up(self) -> None:
        r = subprocess.run([sys.executable, str(self.lab_script), "status", "--json"], capture_output=True,
                           text=True, timeout=60, check=False)
        try:
            states = json.loads(r.stdout)
        except ValueError:
            raise BenchError(f"openzfs.py status: exit {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}") \
                from None
        guests = states.get("hosts", {}) if isinstance(states, dict) else {}
        state = guests.get(GUEST, {})
        # "booting" also means a running guest too busy to send its ssh banner within 3 s: try ssh itself
        if state.get("state") not in ("up", "booting") or self.sh("true", check=False, timeout=120).returncode:
            raise BenchError(f"OpenZFS guest {GUEST} is not up (python3 lab/openzfs.py status): {state}")

    def ssh_argv(self) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), GUEST]

    def sh(self, script: str, *, check: bool = True, timeout: float = 1800,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
        """``script`` run by bash on the guest."""
        r = subprocess.run(self.ssh_argv() + [shlex.join(["bash", "-c", script])], capture_output=True, text=True,
                           timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           check=False)
        if check and r.returncode != 0:
            raise BenchError(f"{GUEST}$ {script[:200]}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
        return r

    def run(self, *argv: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return self.sh(shlex.join(argv), check=check, timeout=timeout)

    def loadavg(self) -> float | None:
        r = self.sh("cat /proc/loadavg", check=False, timeout=60)
        try:
            return float(r.stdout.split()[0])
        except (IndexError, ValueError):
            return None

    def snapshots(self) -> dict[str, list[tuple[int, str]]]:
        """Snapshots under both trees per dataset, as (createtxg, name), oldest first."""
        r = self.run("zfs", "list", "-H", "-p", "-t", "snapshot", "-o", "name,createtxg", "-r", S_ROOT, Z_ROOT)
        out: dict[str, list[tuple[int, str]]] = {}
        for line in r.stdout.splitlines():
            full, txg = line.split("\t")
            ds, name = full.split("@", 1)
            out.setdefault(ds, []).append((int(txg), name))
        for v in out.values():
            v.sort()
        return out


def children(root: str, datasets: int) -> list[str]:
    return [f"{root}/d{i:02d}" for i in range(datasets)]


def sanoid_conf(keep: int) -> str:
    """The policy equivalent to ``last: keep``: ``keep`` frequentlies of one minute, nothing else."""
    return (f"[{S_ROOT}]\n\tuse_template = bench\n\trecursive = yes\n\tprocess_children_only = yes\n\n"
            f"[template_bench]\n\tfrequent_period = 1\n\tfrequently = {keep}\n\thourly = 0\n\tdaily = 0\n"
            "\tweekly = 0\n\tmonthly = 0\n\tyearly = 0\n\tautosnap = no\n\tautoprune = yes\n\tmonitor = no\n")


def perl_module(rel: str) -> Path:
    for d in PERL_DIRS:
        if (d / rel).is_file():
            return d / rel
    raise BenchError(f"{rel} not found on this machine (apt install libconfig-inifiles-perl libcapture-tiny-perl)")


def install_sanoid(guest: Guest, keep: int) -> str:
    """Copy sanoid, its defaults, the missing Perl modules and the bench's config into the guest."""
    if not SANOID.is_file() or not SANOID_DEFAULTS.is_file():
        raise BenchError(f"{SANOID} / {SANOID_DEFAULTS} missing (apt install sanoid)")
    script = SANOID.read_text()
    if script.count(DEFAULTS_DEBIAN) != 1:
        raise BenchError(f"{SANOID}: the defaults path line is not the one this bench knows: {DEFAULTS_DEBIAN}")
    version = next((ln.split("'")[1] for ln in script.splitlines() if ln.startswith("$::VERSION")), "?")
    with tempfile.TemporaryDirectory(prefix="prune-exec-") as tmp:
        stage = Path(tmp) / "zrelay-bench-sanoid"
        (stage / "conf").mkdir(parents=True)
        (stage / "sanoid").write_text(script.replace(DEFAULTS_DEBIAN, DEFAULTS_UPSTREAM))
        (stage / "sanoid").chmod(0o755)
        (stage / "conf" / "sanoid.defaults.conf").write_text(SANOID_DEFAULTS.read_text())
        (stage / "conf" / "sanoid.conf").write_text(sanoid_conf(keep))
        for rel in PERL_MODULES:
            dst = stage / "lib" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(perl_module(rel).read_text())
        guest.run("rm", "-rf", REMOTE_DIR)
        r = subprocess.run(["scp", "-F", str(guest.ssh_config), "-q", "-r", str(stage), f"{GUEST}:/root/"],
                           capture_output=True, text=True, timeout=300, check=False)
        if r.returncode != 0:
            raise BenchError(f"scp to {GUEST}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    guest.sh(f"cd {REMOTE_DIR} && PERL5LIB={REMOTE_DIR}/lib perl -c sanoid 2>&1 | grep -q 'syntax OK'")
    return version


def write_inventory(path: Path, keep: int) -> Path:
    """oz1 as nas1 (from ``openzfs.py inventory``), one recursive job on tank/pb-z without targets."""
    r = subprocess.run([sys.executable, str(REPO / "lab" / "openzfs.py"), "inventory"], capture_output=True,
                       text=True, timeout=60, check=False)
    if r.returncode != 0:
        raise BenchError(f"openzfs.py inventory: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    lab = json.loads(r.stdout)
    host = {k: v for k, v in lab["all"]["hosts"][GUEST].items() if not k.startswith("direct_")}
    doc = {"all": {"vars": lab["all"]["vars"], "hosts": {"nas1": host}},
           "zrelay": {"snapshot_name": Z_NAME,
                      "jobs": [{"name": "pb-z", "source": f"nas1:{Z_ROOT}", "recursive": True,
                                "keep": {"source": {"last": keep}}}]}}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def create_trees(guest: Guest, datasets: int) -> None:
    """The two trees, children only (the roots get no snapshots); stale ones from an aborted run go first."""
    destroy_trees(guest)
    names = [S_ROOT, Z_ROOT, *children(S_ROOT, datasets), *children(Z_ROOT, datasets)]
    guest.sh("set -e; for d in " + " ".join(shlex.quote(n) for n in names) + "; do zfs create \"$d\"; done")


def destroy_trees(guest: Guest) -> None:
    for root in (S_ROOT, Z_ROOT):
        r = guest.run("zfs", "destroy", "-r", root, check=False)
        if r.returncode != 0 and "does not exist" not in r.stderr:
            raise BenchError(f"{GUEST}: zfs destroy -r {root}: {r.stderr.strip()}")


def clear_snapshots(guest: Guest) -> None:
    """Destroy every snapshot under both trees (one recursive destroy per name and tree)."""
    names: dict[str, set[str]] = {S_ROOT: set(), Z_ROOT: set()}
    for ds, snaps in guest.snapshots().items():
        names[ds.rsplit("/", 1)[0]].update(n for _txg, n in snaps)
    for root, found in names.items():
        if found:
            guest.run("zfs", "destroy", "-r", f"{root}@{','.join(sorted(found))}")


def build_state(guest: Guest, datasets: int, snapshots: int) -> tuple[list[tuple[str, str]], list[float]]:
    """``snapshots`` ticks, each one atomic ``zfs snapshot`` of every child of both trees, at least a
    second apart (sanoid orders by creation, whole seconds). Returns the names and when each tick ended."""
    ticks: list[tuple[str, str]] = []
    ended: list[float] = []
    last_second = -1
    for _ in range(snapshots):
        while int(time.time()) <= last_second:
            time.sleep(0.05)
        now = datetime.now(timezone.utc)
        last_second = int(now.timestamp())
        s_name, z_name = now.strftime(S_NAME), now.strftime(Z_NAME)
        # the guest's clock sets the creation time: wait there too until a new second has begun
        argv = ["zfs", "snapshot", *(f"{d}@{s_name}" for d in children(S_ROOT, datasets)),
                *(f"{d}@{z_name}" for d in children(Z_ROOT, datasets))]
        guest.sh(f"t=$(date +%s); while [ \"$(date +%s)\" = \"$t\" ]; do sleep 0.05; done; {shlex.join(argv)}")
        ticks.append((s_name, z_name))
        ended.append(time.monotonic())
    return ticks, ended


def check_state(guest: Guest, datasets: int, ticks: list[tuple[str, str]], keep: int | None,
                which: str) -> int:
    """Every child of ``which`` tree ("s", "z" or "both") holds exactly the expected names, in order:
    ``keep`` None = every tick's, else the newest ``keep``. Returns how many snapshots are there."""
    snaps = guest.snapshots()
    total = 0
    for tree, root in (("s", S_ROOT), ("z", Z_ROOT)):
        if which not in (tree, "both"):
            continue
        col = 0 if tree == "s" else 1
        want_ticks = ticks if keep is None else ticks[len(ticks) - keep:]
        want = [t[col] for t in want_ticks]
        for ds in children(root, datasets):
            have = [n for _txg, n in snaps.get(ds, [])]
            if have != want:
                raise BenchError(f"{GUEST}:{ds}: expected {len(want)} snapshots {want[:2]}…, found {len(have)}: "
                                 f"{have[:4]}…")
            total += len(have)
        if snaps.get(root):
            raise BenchError(f"{GUEST}:{root} has snapshots: {snaps[root][:3]}")
    return total


def run_sanoid(guest: Guest) -> dict[str, Any]:
    guest.run("rm", "-f", f"{REMOTE_DIR}/cache/snapshots.txt")
    script = (f"cd {REMOTE_DIR} && TIMEFORMAT={shlex.quote(TIMEFORMAT)}; time PERL5LIB={REMOTE_DIR}/lib "
              f"perl {REMOTE_DIR}/sanoid --configdir {REMOTE_DIR}/conf --cache-dir {REMOTE_DIR}/cache "
              f"--run-dir {REMOTE_DIR}/run --prune-snapshots")
    timed, r = run_timed(guest.ssh_argv() + [shlex.join(["bash", "-c", script])], timeout=7200,
                         what="sanoid --prune-snapshots")
    guest_time: dict[str, float] = {}
    for line in r.stderr.splitlines():
        if line.startswith("SANOID_TIME "):
            guest_time = {k: float(v) for k, v in (f.split("=") for f in line.split()[1:])}
    other = [ln for ln in r.stderr.splitlines() if not ln.startswith("SANOID_TIME ") and ln.strip()]
    if other:
        raise BenchError(f"sanoid said: {' | '.join(other)[:600]}")
    return {"seconds": timed.seconds, "guest_seconds": guest_time.get("real"),
            "guest_cpu": round(guest_time.get("user", 0.0) + guest_time.get("sys", 0.0), 2)}


def run_zrelay(inventory: Path, state: Path, keep: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "zrelay", "--state", str(state), "-i", str(inventory), "prune", "--json"]
    timed, r = run_timed(argv, env=zrelay_env(), timeout=7200, what="zrelay prune")
    results = json.loads(r.stdout)
    bad = [x for x in results if x["outcome"] not in ("ok", "noop")]
    if bad:
        raise BenchError(f"zrelay prune: {bad[0]['target']}: {bad[0]['outcome']}: {bad[0]['message']}")
    decisions = [d for x in results for d in x.get("decisions", []) if d["kind"] == "snapshot"]
    return {"seconds": timed.seconds, "cpu": round(timed.cpu, 2),
            "destroyed_planned": sum(1 for d in decisions if not d["keep"]),
            "kept_planned": sum(1 for d in decisions if d["keep"])}


def run(reps: int = 3, *, datasets: int = 50, snapshots: int = 12, keep: int = 2,
        output: Path | None = None) -> dict[str, Any]:
    """Build the state ``reps`` times and time both prunes on it; results (and the JSON) per repetition."""
    if snapshots <= keep:
        raise BenchError("--snapshots must exceed --keep (else nothing is pruned)")
    guest = Guest()
    guest.check_up()
    compileall.compile_dir(str(REPO / "zrelay"), quiet=1)
    expect = datasets * (snapshots - keep)
    d: dict[str, Any] = {
        "benchmark": "prune-exec", "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "complete": False, "reps_asked": reps, "datasets": datasets, "snapshots_per_dataset": snapshots,
        "keep": keep, "destroyed_per_method": expect, "goal": f"zrelay wall ≤ {GOAL:g} × sanoid wall",
        "guest": GUEST, "machine": {"node": platform.node(), "cpus": os.cpu_count()},
        "zrelay_commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True, check=False).stdout.strip(),
        "reps": [],
    }
    with tempfile.TemporaryDirectory(prefix="prune-exec-") as tmp:
        inventory = write_inventory(Path(tmp) / "inventory.yml", keep)
        state = Path(tmp) / "state.db"
        try:
            d["sanoid_version"] = install_sanoid(guest, keep)
            log(f"creating {S_ROOT} and {Z_ROOT} with {datasets} children each on {GUEST}")
            t0 = time.monotonic()
            create_trees(guest, datasets)
            d["create_seconds"] = round(time.monotonic() - t0, 1)
            for rep, order in rotations(METHODS, reps):
                clear_snapshots(guest)
                log(f"rep {rep + 1}/{reps}: {snapshots} ticks of {2 * datasets} snapshots")
                t0 = time.monotonic()
                ticks, ended = build_state(guest, datasets, snapshots)
                build_s = time.monotonic() - t0
                check_state(guest, datasets, ticks, None, "both")
                # sanoid prunes a frequently only once it is older than keep × 1 min (creation time)
                ripe_at = ended[snapshots - keep - 1] + keep * 60 + 5
                row: dict[str, Any] = {"rep": rep + 1, "order": order, "build_seconds": round(build_s, 1)}
                for method in order:
                    if method == "sanoid":
                        wait = ripe_at - time.monotonic()
                        if wait > 0:
                            log(f"waiting {wait:.0f} s until sanoid's snapshots are old enough")
                            time.sleep(wait)
                    load = (os.getloadavg()[0], guest.loadavg())
                    log(f"rep {rep + 1}: {method} (load here {load[0]:.1f}, on {GUEST} {load[1]})")
                    m = run_sanoid(guest) if method == "sanoid" else run_zrelay(inventory, state, keep)
                    m["load_before"] = {"here": round(load[0], 2), GUEST: load[1]}
                    left = check_state(guest, datasets, ticks, keep, method[0])
                    m["left"] = left
                    m["destroyed"] = datasets * snapshots - left
                    if m["destroyed"] != expect:
                        raise BenchError(f"{method}: destroyed {m['destroyed']}, expected {expect}")
                    if method == "zrelay" and m["destroyed_planned"] != expect:
                        raise BenchError(f"zrelay: planned {m['destroyed_planned']} destroys, expected {expect}")
                    log(f"rep {rep + 1}: {method} {m['seconds']:.2f} s, destroyed {m['destroyed']}, left {left}")
                    row[method] = m
                d["reps"].append(row)
                _summarise(d)
                if output is not None:
                    _write(output, d)
            d["complete"] = True
        finally:
            _cleanup(guest)
    _summarise(d)
    if output is not None:
        _write(output, d)
    return d


def _summarise(d: dict[str, Any]) -> None:
    rows = d["reps"]
    if not rows:
        return
    for method in METHODS:
        d[f"{method}_seconds"] = summary([r[method]["seconds"] for r in rows])
    guest_s = [r["sanoid"]["guest_seconds"] for r in rows if r["sanoid"].get("guest_seconds") is not None]
    if guest_s:
        d["sanoid_guest_seconds"] = summary(guest_s)
    d["ratio_zrelay_vs_sanoid"] = ratio(d["zrelay_seconds"]["median"], d["sanoid_seconds"]["median"])
    d["pass"] = d["ratio_zrelay_vs_sanoid"] is not None and d["ratio_zrelay_vs_sanoid"] <= GOAL
    d["load_here_median"] = statistics.median(r[m]["load_before"]["here"] for r in rows for m in METHODS)


def _write(path: Path, d: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d, indent=1) + "\n")


def _cleanup(guest: Guest) -> None:
    """Destroy both trees and the copy of sanoid; say what is left if that fails."""
    log(f"cleaning up: zfs destroy -r {S_ROOT} {Z_ROOT}; rm -rf {REMOTE_DIR}")
    for what, fn in (("datasets", lambda: destroy_trees(guest)),
                     ("sanoid copy", lambda: guest.run("rm", "-rf", REMOTE_DIR))):
        try:
            fn()
        except (BenchError, subprocess.SubprocessError, OSError) as exc:
            log(f"cleanup of the {what} failed: {exc} (on {GUEST}: zfs destroy -r {S_ROOT} {Z_ROOT}; "
                f"rm -rf {REMOTE_DIR})")


def table_rows(d: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    """One row for a table like bench/run.py's."""
    return [(f"prune-exec: {d['destroyed_per_method']} snapshots over {d['datasets']} datasets vs sanoid",
             f"{d['zrelay_seconds']['median']:.2f} s", f"{d['sanoid_seconds']['median']:.2f} s",
             d["ratio_zrelay_vs_sanoid"], f"≤ {GOAL:g}", d["pass"])]


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/zbench/prune_exec.py", description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions (state rebuilt each time; default 3)")
    ap.add_argument("--datasets", type=int, default=50, help="children per tree (default 50)")
    ap.add_argument("--snapshots", type=int, default=12, help="snapshots per dataset (default 12)")
    ap.add_argument("--keep", type=int, default=2, help="snapshots each policy keeps (default 2)")
    ap.add_argument("--output", type=Path, help="JSON file (default bench/results/prune-exec-DATE-TIME.json)")
    args = ap.parse_args(argv)
    if not 1 <= args.datasets <= 100 or args.reps < 1 or args.keep < 1:
        ap.error("--datasets must be 1..100, --reps and --keep at least 1")
    output = args.output or (REPO / "bench" / "results" /
                             f"prune-exec-{datetime.now(timezone.utc).strftime('%Y-%m-%d-%H%M')}.json")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        d = run(args.reps, datasets=args.datasets, snapshots=args.snapshots, keep=args.keep, output=output)
    except BenchError as exc:
        print(f"prune-exec: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prune-exec: interrupted (cleaned up)", file=sys.stderr)
        return 130
    for label, z, s, r, goal, ok in table_rows(d):
        print(f"{label}: zrelay {z}, sanoid {s} (guest's own time "
              f"{d['sanoid_guest_seconds']['median']:.2f} s), ratio {r:.2f}, goal {goal}: "
              f"{'met' if ok else 'NOT met'}; medians of {len(d['reps'])}; {output}")
    return 0 if d["pass"] else 3


if __name__ == "__main__":
    raise SystemExit(main())

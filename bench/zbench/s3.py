"""s3-push, s3-restore, s3-memory: zrelay's S3 data paths against plain boto3, in the same run.

s3-push     ``zrelay s3-push`` (the CLI, a subprocess) of one incompressible snapshot on nas1, against a
            plain boto3 multipart upload of the same stream (bench/plain_s3.py, also a subprocess: both
            sides pay their interpreter's start and imports): ``ssh nas1 zfs send …`` cut into parts of
            the size zrelay chooses, as many in flight as zrelay uploads, each with a Content-MD5, through
            a client with the settings zrelay uses for non-AWS servers
            (``request_checksum_calculation``/``response_checksum_validation`` = ``when_required``).
s3-restore  ``zrelay s3-restore`` of that object into vault, against plain parallel ranged GETs
            (zrelay's chunk size and concurrency; bench/plain_s3.py as a subprocess) written in order
            into ``ssh vault zfs receive -u``.
            Both also report the script's ``work_seconds`` (from its client on, as the baseline was timed
            when it ran inside the benchmark's own warm process), in information rows.
s3-memory   peak RSS of the ``zrelay s3-push`` process for a small and a 4x larger stream, against the
            bound ``part_size × (concurrency + 2) + constant``.

The S3 server is the lab's SeaweedFS (lab/seaweed.py, started when down, never stopped here). Everything
is written under ``bench/bench-XXXXXX/`` in the lab bucket and deleted at the end (objects and any
multipart upload left behind), also on Ctrl-C; datasets live under ``tank/bench-XXXXXX`` and
``backup/bench-XXXXXX`` like every other benchmark's.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from zbench.common import (MB, MiB, REPO, SOURCE, TARGET, BenchError, Lab, Timed, attempt, children_cpu, log,
                           ratio, rotations, summary, zrelay_env)

NAMES = ("s3-push", "s3-restore", "s3-memory")
OFFICIAL = {"stream_mib": 1024, "memory_small_mib": 1024, "memory_large_mib": 4096}
QUICK = {"stream_mib": 128, "memory_small_mib": 128, "memory_large_mib": 512}

PUSH_GOAL = 0.9
RESTORE_GOAL = 0.9
MEMORY_RATIO_GOAL = 1.1      # "memory does not grow with the stream": large/small peak RSS ≤ 1.1
SEAWEED_SCRIPT = REPO / "lab" / "seaweed.py"
PLAIN_SCRIPT = REPO / "bench" / "plain_s3.py"
METHODS_PUSH = ("zrelay", "boto3")
METHODS_RESTORE = ("zrelay", "ranged-gets")
GiB = 1024 * MiB
T = TypeVar("T")


# --------------------------------------------------------------------------- the S3 server


def load_seaweed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("zrelay_bench_seaweed", SEAWEED_SCRIPT)
    if not spec or not spec.loader:
        raise BenchError(f"cannot load {SEAWEED_SCRIPT}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class S3:
    """The lab's SeaweedFS as the S3 benchmarks use it: a lease, a client, a private key prefix."""

    def __init__(self, lab: Lab) -> None:
        self.mod = load_seaweed()
        try:
            self.mod.weed_binary()
        except self.mod.SeaweedError as exc:
            raise BenchError(f"SeaweedFS unavailable: {exc}") from None
        leases = self.mod.paths()["leases"]
        leases.mkdir(parents=True, exist_ok=True)
        self._lease: Path | None = leases / str(os.getpid())
        self._lease.write_text(f"{os.getpid()}\n")   # test sessions ending meanwhile leave it up
        try:
            self.mod.up()
        except self.mod.SeaweedError as exc:
            self.release()
            raise BenchError(f"lab/seaweed.py up failed: {exc}") from None
        self.endpoint: str = self.mod.endpoint()
        self.bucket: str = self.mod.BUCKET
        self.region: str = self.mod.REGION
        self.env: dict[str, str] = self.mod.env_vars()
        self.root = f"bench/{lab.prefix}/"
        self.data_dir: Path = self.mod.paths()["data"]
        self._client: Any = None

    def client(self, pool: int = 10) -> Any:
        """A client with zrelay's settings for non-AWS servers (see zrelay/s3/store.py)."""
        import boto3
        from botocore.config import Config
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required",
                          retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10.0,
                          read_timeout=120.0, max_pool_connections=max(10, pool), tcp_keepalive=True))

    @property
    def admin(self) -> Any:
        if self._client is None:
            self._client = self.client()
        return self._client

    def target(self, prefix: str) -> dict[str, Any]:
        return {"bucket": self.bucket, "endpoint": self.endpoint, "region": self.region,
                "addressing_style": "path", "prefix": prefix}

    def keys(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for page in self.admin.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []) or []:
                out[item["Key"]] = int(item["Size"])
        return out

    def clear(self, prefix: str) -> None:
        """Abort every multipart upload and delete every object under ``prefix``."""
        c = self.admin
        for page in c.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
            for u in page.get("Uploads", []) or []:
                with contextlib.suppress(Exception):
                    c.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])
        for key in self.keys(prefix):
            with contextlib.suppress(Exception):
                c.delete_object(Bucket=self.bucket, Key=key)

    def cleanup(self) -> None:
        try:
            self.clear(self.root)
            left = self.keys(self.root)
            if left:
                log(f"s3 cleanup: {len(left)} object(s) left under s3://{self.bucket}/{self.root}")
        except Exception as exc:  # noqa: BLE001 - never mask the benchmark's own outcome
            log(f"s3 cleanup failed: {exc} (delete s3://{self.bucket}/{self.root} by hand, "
                f"and run zrelay s3-abort-stale)")
        self.release()

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.mod.s3_ready():
            if time.monotonic() > deadline:
                raise BenchError(f"the S3 server at {self.endpoint} did not answer for {timeout:.0f} s")
            time.sleep(1.0)
        time.sleep(1.0)

    def release(self) -> None:
        if self._lease is not None:
            with contextlib.suppress(FileNotFoundError):
                self._lease.unlink()
            self._lease = None


_S3_TROUBLE = ("8333", "could not connect", "cannot reach", "connection failed", "connection refused",
               "endpointconnectionerror", "connection was closed", "service unavailable", "internalerror")


def attempt_s3(lab: Lab, s3: S3, what: str, fn: Callable[[], T], reset: Callable[[], None],
               attempts: int = 4) -> T:
    """``attempt`` (lab hosts going away) plus the S3 server going away: other sessions' tests restart
    the shared SeaweedFS ("restart mid-upload"). Then wait until it answers, undo, measure again."""
    import botocore.exceptions
    for n in range(1, attempts + 1):
        try:
            return attempt(lab, what, fn, reset)
        except (BenchError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            down = not s3.mod.s3_ready()
            if n == attempts or not (down or any(t in str(exc).lower() for t in _S3_TROUBLE)):
                raise BenchError(f"{what}: {exc}") from exc
            log(f"{what}: {str(exc)[:300]} — the S3 server went away (restarted by another session?); "
                "measuring again")
            s3.wait_ready()
            with contextlib.suppress(Exception):
                reset()
    raise AssertionError("not reached")


# --------------------------------------------------------------------------- running zrelay


def run_measured(argv: list[str], *, env: dict[str, str], timeout: float = 3600,
                 what: str = "") -> tuple[Timed, int, str, str]:
    """Run ``argv``, timed; extra = its peak RSS and an RSS trace.

    The peak comes from GNU time (``/usr/bin/time -f %M``, i.e. wait4's ru_maxrss of a child forked
    from the small ``time`` process: ru_maxrss of a child forked from this big process would start at
    this process's own RSS, Linux carries it across exec), cross-checked with VmHWM sampled from /proc
    every 0.1 s, which also gives the trace. On any interruption the child's process group gets SIGINT
    (zrelay then aborts its uploads), then, after 60 s, SIGKILL."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    with tempfile.NamedTemporaryFile(prefix="zrelay-bench-time", delete=False) as f:
        time_file = Path(f.name)
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    full = [gnu_time, "-f", "%M", "-o", str(time_file), *argv] if gnu_time else list(argv)
    samples: list[tuple[float, int]] = []
    hwm = [0]
    cpu0, t0 = children_cpu(), time.perf_counter()
    # Own process group, SIGINT at its default: on an interruption of the benchmark zrelay gets SIGINT
    # (and aborts its uploads) even when this process was started with SIGINT ignored (``cmd &``).
    proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=REPO,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    done = threading.Event()

    def sample() -> None:
        pid = proc.pid
        while not done.wait(0.1):
            try:
                if gnu_time and pid == proc.pid:
                    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
                    if not children:
                        continue
                    pid = int(children[0])
                rss = 0
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
                    elif line.startswith("VmHWM:"):
                        hwm[0] = max(hwm[0], int(line.split()[1]) * 1024)
                if rss:
                    samples.append((time.perf_counter() - t0, rss))
            except (OSError, ValueError):
                if pid != proc.pid:
                    return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    finished = False
    try:
        proc.wait()
        finished = True
    finally:
        timer.cancel()
        done.set()
        if not finished:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)   # GNU time ignores it, zrelay aborts its uploads
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        sampler.join(1)
    seconds = time.perf_counter() - t0
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    out.close()
    err.close()
    peak = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        peak = int(time_file.read_text().split()[-1]) * 1024
    time_file.unlink(missing_ok=True)
    code = proc.returncode
    timed = Timed(seconds, children_cpu() - cpu0,
                  {"peak_rss": peak or hwm[0], "peak_rss_sampled": hwm[0], "rss_trace": samples})
    return timed, code, stdout, stderr


def trace_points(trace: list[tuple[float, int]], seconds: float) -> dict[str, float]:
    """RSS (MiB) at 25 / 50 / 75 / 95 % of the run: flat when memory does not grow with the stream."""
    out: dict[str, float] = {}
    for pct in (25, 50, 75, 95):
        at = seconds * pct / 100
        before = [rss for t, rss in trace if t <= at]
        if before:
            out[f"{pct}%"] = round(before[-1] / MiB, 1)
    return out


# --------------------------------------------------------------------------- the benchmarks


class S3Bench:
    def __init__(self, lab: Lab, s3: S3, *, ssh_opts: list[str], inventory_extra: dict[str, Any],
                 workdir: Path) -> None:
        self.lab, self.s3 = lab, s3
        self.ssh_opts = ssh_opts
        self.extra = inventory_extra
        self.workdir = workdir
        self.base_src, self.base_dst = f"tank/{lab.prefix}", f"backup/{lab.prefix}"
        self.env = zrelay_env()
        self.env.update(s3.env)
        self.env["ZRELAY_STATE"] = str(workdir / "s3-state.db")   # never the user's own state store
        self.env.pop("ZRELAY_INVENTORY", None)
        from zrelay.s3.options import S3Options
        from zrelay.s3.sizing import plan_parts
        self.concurrency = S3Options().concurrency
        self.part_size = plan_parts().part_size   # zfs-fuse has no -nvP estimate: zrelay's planning default

    # -- helpers ----------------------------------------------------------------

    def inventory(self, name: str, source: str, prefix: str) -> Path:
        path = self.lab.write_inventory(self.workdir / f"{name}.yml",
                                        [{"name": "bench-s3", "source": f"{SOURCE}:{source}",
                                          "targets": ["s3:bench"]}], **self.extra)
        doc = json.loads(path.read_text())
        doc["zrelay"]["s3_targets"] = {"bench": self.s3.target(prefix)}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path

    def make_source(self, name: str, size_mib: int, *, random: bool) -> tuple[str, str, int]:
        """A dataset with one file of ``size_mib`` MiB and snapshot @s1; returns (dataset, snapshot, stream bytes).

        random: incompressible data (compression off). Otherwise a constant non-zero byte in a dataset
        with compression on: a few MiB on disk for a full-size stream (zfs send sends it uncompressed).
        """
        ds = f"{self.base_src}/{name}"
        snap = f"{ds}@s1"
        need = size_mib * MiB * (1.15 if random else 0.1) + 64 * MiB
        avail = self.lab.avail(SOURCE, "tank")
        if avail < need:
            raise BenchError(f"{SOURCE}:tank has {avail / MiB:.0f} MiB free, {name} needs {need / MiB:.0f} MiB")
        log(f"s3: writing {size_mib} MiB of {'random data' if random else 'constant bytes (compression on)'} "
            f"to {SOURCE}:{ds}")
        self.lab.zfs(SOURCE, "create", "-p", "-o", f"compression={'off' if random else 'on'}", ds)
        mnt = self.lab.zfs(SOURCE, "get", "-H", "-o", "value", "mountpoint", ds).strip()
        data = (f"head -c {size_mib * MiB} /dev/urandom" if random
                else f"head -c {size_mib * MiB} /dev/zero | tr '\\0' z")
        self.lab.ssh(SOURCE, f"set -o pipefail; {data} >{shlex.quote(mnt)}/data && sync", timeout=1800)
        self.lab.zfs(SOURCE, "snapshot", snap)
        stream = int(self.lab.ssh(SOURCE, f"zfs send {shlex.quote(snap)} | wc -c", timeout=1800).stdout.strip())
        log(f"s3: {snap}: stream {stream / MiB:.1f} MiB")
        return ds, snap, stream

    def check_room(self, stream_bytes: int, copies: int = 2) -> None:
        free = shutil.disk_usage(self.s3.data_dir if self.s3.data_dir.exists() else "/").free
        if free < stream_bytes * copies + 2 * GiB:
            raise BenchError(f"SeaweedFS's disk ({self.s3.data_dir}) has {free / GiB:.1f} GiB free, "
                             f"{(stream_bytes * copies) / GiB + 2:.1f} GiB needed")

    def zrelay_push(self, inventory: Path, what: str) -> tuple[Timed, dict[str, Any]]:
        argv = [sys.executable, "-m", "zrelay", "-i", str(inventory), "s3-push", "--json", "--compression", "none"]
        timed, code, stdout, stderr = run_measured(argv, env=self.env, what=what)
        try:
            results = json.loads(stdout)
        except ValueError:
            raise BenchError(f"{what}: exit {code}, no JSON: {(stderr or stdout).strip()[-800:]}") from None
        if code != 0 or len(results) != 1 or results[0]["outcome"] not in ("ok", "noop"):
            detail = "; ".join(f"{r['dataset']}: {r['outcome']}: {r['message']}" for r in results)
            raise BenchError(f"{what}: exit {code}: {detail or stderr.strip()[-800:]}")
        return timed, results[0]

    # -- s3-push ------------------------------------------------------------------

    def plain(self, mode: str, what: str, **params: Any) -> Timed:
        """The plain boto3 baseline (bench/plain_s3.py) as a process of its own, timed as zrelay's CLI
        is: interpreter start and imports included. extra: its output (bytes, parts or chunks,
        ``work_seconds``: from just before its client is made, the in-process baseline's old clock)."""
        argv = [sys.executable, str(PLAIN_SCRIPT), mode, "--endpoint", self.s3.endpoint, "--bucket", self.s3.bucket,
                "--concurrency", str(self.concurrency)]
        for name, value in params.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        argv.append(what)
        timed, code, stdout, stderr = run_measured(argv, env=self.env, what=f"plain {mode}")
        if code != 0:
            raise BenchError(f"plain {mode}: exit {code}: {(stderr or stdout).strip()[-800:]}")
        try:
            timed.extra.update(json.loads(stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            raise BenchError(f"plain {mode}: no JSON result: {(stderr or stdout).strip()[-800:]}") from None
        return timed

    def plain_push(self, snap: str, key: str) -> Timed:
        """``ssh nas1 zfs send SNAP`` → a multipart upload (zrelay's part size and concurrency, a
        Content-MD5 per part): the baseline."""
        return self.plain("push", snap, key=key, part_size=self.part_size,
                          ssh=json.dumps(self.lab.ssh_argv(SOURCE, *self.ssh_opts)))

    def push(self, *, size_mib: int, reps: int, src: str, snap: str, stream: int) -> dict[str, Any]:
        self.check_room(stream, copies=2)
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS_PUSH}
        kept: dict[str, Any] | None = None
        for rep, order in rotations(METHODS_PUSH, reps):
            for method in order:
                prefix = f"{self.s3.root}push-{rep}-{method}/"
                reset = lambda p=prefix: self.s3.clear(p)  # noqa: E731
                if method == "zrelay":
                    inv = self.inventory(f"push-{rep}", src, prefix)

                    def go(inv: Path = inv) -> tuple[Timed, dict[str, Any]]:
                        return self.zrelay_push(inv, "zrelay s3-push")
                    timed, result = attempt_s3(self.lab, self.s3, "s3-push zrelay", go, reset)
                    step = result["steps"][0]
                    keys = self.s3.keys(prefix)
                    obj = step["objects"][0]
                    if result["outcome"] != "ok" or keys.get(obj) != stream or result["bytes"] != stream:
                        raise BenchError(f"zrelay s3-push stored {keys.get(obj)} bytes in {obj}, "
                                         f"reported {result['bytes']}; the stream is {stream}")
                    if step["part_size"] != self.part_size:
                        raise BenchError(f"zrelay chose {step['part_size']}-byte parts, the baseline uses "
                                         f"{self.part_size}: not comparable")
                    row = {"push_seconds": result["seconds"], "part_size": step["part_size"],
                           "memory_bound_buffers": step["memory_bound"],
                           "peak_rss": timed.extra["peak_rss"], "peak_rss_sampled": timed.extra["peak_rss_sampled"],
                           "rss_at": trace_points(timed.extra["rss_trace"], timed.seconds)}
                    if kept is None:
                        kept = {"prefix": prefix, "inventory": str(inv), "key": obj}
                    else:
                        self.s3.clear(prefix)
                else:
                    key = f"{prefix}stream.zfs"

                    def go_plain(key: str = key) -> Timed:
                        return self.plain_push(snap, key)
                    timed = attempt_s3(self.lab, self.s3, "s3-push boto3", go_plain, reset)
                    got = self.s3.keys(prefix).get(key)
                    if got != stream:
                        raise BenchError(f"plain push stored {got} bytes, the stream is {stream}")
                    row = {"parts": timed.extra["parts"], "work_seconds": timed.extra["work_seconds"],
                           "peak_rss": timed.extra["peak_rss"]}
                    self.s3.clear(prefix)
                row.update({"rep": rep, "seconds": round(timed.seconds, 3),
                            "mb_s": round(stream / timed.seconds / MB, 1), "cpu_s": round(timed.cpu, 2)})
                runs[method].append(row)
                log(f"s3-push rep {rep + 1}/{reps} {method:<8} {timed.seconds:6.2f} s  {row['mb_s']:6.1f} MB/s  "
                    f"cpu {timed.cpu:5.2f} s" + (f"  peak RSS {row['peak_rss'] / MiB:.0f} MiB"
                                                 if "peak_rss" in row else ""))

        def med(method: str, key: str = "mb_s") -> float:
            return summary([r[key] for r in runs[method]])["median"]

        out: dict[str, Any] = {
            "size_mib": size_mib, "stream_bytes": stream, "reps": reps, "runs": runs,
            "part_size": self.part_size, "concurrency": self.concurrency, "part_checksum": "md5",
            "compression": "none",
            "median_mb_s": {m: med(m) for m in METHODS_PUSH},
            "median_seconds": {m: med(m, "seconds") for m in METHODS_PUSH},
            "median_cpu_s": {m: med(m, "cpu_s") for m in METHODS_PUSH},
            "zrelay_push_alone_mb_s": round(stream / med("zrelay", "push_seconds") / MB, 1),
            "zrelay_peak_rss_median": med("zrelay", "peak_rss"),
            "restore_source": kept,
        }
        out["boto3_work_mb_s"] = round(stream / med("boto3", "work_seconds") / MB, 1)
        out["ratio_zrelay_vs_boto3"] = ratio(out["median_mb_s"]["zrelay"], out["median_mb_s"]["boto3"])
        out["ratio_push_alone_vs_boto3"] = ratio(out["zrelay_push_alone_mb_s"], out["boto3_work_mb_s"])
        out["ratio_zrelay_vs_boto3_work"] = ratio(out["median_mb_s"]["zrelay"], out["boto3_work_mb_s"])
        return out

    # -- s3-restore ------------------------------------------------------------------

    def plain_restore(self, key: str, size: int, copy: str) -> Timed:
        """Ranged GETs (zrelay's chunk, concurrency) in order → ``ssh vault zfs receive -u COPY``."""
        from zrelay.paths.s3restore import CHUNK
        return self.plain("restore", shlex.join(["zfs", "receive", "-u", copy]), key=key, size=size, chunk=CHUNK,
                          ssh=json.dumps(self.lab.ssh_argv(TARGET, *self.ssh_opts)))

    def zrelay_restore(self, inventory: Path, src: str, copy: str) -> Timed:
        argv = [sys.executable, "-m", "zrelay", "-i", str(inventory), "s3-restore", "bench", f"{SOURCE}:{src}",
                "--to", f"{TARGET}:{copy}", "--json"]
        timed, code, stdout, stderr = run_measured(argv, env=self.env, what="zrelay s3-restore")
        if code != 0:
            raise BenchError(f"zrelay s3-restore: exit {code}: {(stderr or stdout).strip()[-800:]}")
        with contextlib.suppress(ValueError, TypeError, KeyError):
            data = json.loads(stdout)
            timed.extra["reported"] = {k: data[k] for k in ("bytes", "seconds") if k in data}
        return timed

    def restore(self, *, reps: int, src: str, snap: str, stream: int, source: dict[str, Any]) -> dict[str, Any]:
        copy = f"{self.base_dst}/s3-copy"
        self.lab.zfs(TARGET, "create", "-p", self.base_dst)
        if self.lab.avail(TARGET, "backup") < stream * 1.15:
            raise BenchError(f"{TARGET}:backup has less than {stream * 1.15 / MiB:.0f} MiB free")
        src_guid = self.lab.guid(SOURCE, snap)
        inventory = Path(source["inventory"])
        key = source["key"]
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS_RESTORE}
        runners: dict[str, Callable[[], Timed]] = {
            "zrelay": lambda: self.zrelay_restore(inventory, src, copy),
            "ranged-gets": lambda: self.plain_restore(key, stream, copy)}
        # Warm cache, as relay-512 has: one untimed restore first. The first read of a freshly
        # pushed object (and the first big receive on the target) ran 1.6-1.9x slower than every
        # later one, and rep 1 always gave it to whichever method came first.
        self.lab.destroy(TARGET, copy)
        attempt_s3(self.lab, self.s3, "s3-restore warm-up", runners["ranged-gets"],
                   lambda: self.lab.destroy(TARGET, copy))
        self.lab.destroy(TARGET, copy)
        log("s3-restore: one untimed restore done (warm cache)")
        for rep, order in rotations(METHODS_RESTORE, reps):
            for method in order:
                self.lab.destroy(TARGET, copy)
                timed = attempt_s3(self.lab, self.s3, f"s3-restore {method}", runners[method],
                                lambda: self.lab.destroy(TARGET, copy))
                got = self.lab.guid(TARGET, f"{copy}@s1")
                if got != src_guid:
                    raise BenchError(f"s3-restore {method}: received snapshot GUID {got} != source {src_guid}")
                self.lab.destroy(TARGET, copy)
                row: dict[str, Any] = {"rep": rep, "seconds": round(timed.seconds, 3),
                                       "mb_s": round(stream / timed.seconds / MB, 1), "cpu_s": round(timed.cpu, 2)}
                if "peak_rss" in timed.extra:
                    row["peak_rss"] = timed.extra["peak_rss"]
                if timed.extra.get("reported"):
                    row["reported"] = timed.extra["reported"]
                if "work_seconds" in timed.extra:
                    row["work_seconds"] = timed.extra["work_seconds"]
                runs[method].append(row)
                log(f"s3-restore rep {rep + 1}/{reps} {method:<11} {timed.seconds:6.2f} s  {row['mb_s']:6.1f} MB/s  "
                    f"cpu {timed.cpu:5.2f} s")

        def med(method: str, key: str = "mb_s") -> float:
            return summary([r[key] for r in runs[method]])["median"]

        from zrelay.paths.s3restore import CHUNK
        out: dict[str, Any] = {
            "stream_bytes": stream, "reps": reps, "runs": runs, "chunk": CHUNK, "concurrency": self.concurrency,
            "median_mb_s": {m: med(m) for m in METHODS_RESTORE},
            "median_seconds": {m: med(m, "seconds") for m in METHODS_RESTORE},
            "median_cpu_s": {m: med(m, "cpu_s") for m in METHODS_RESTORE},
        }
        out["ratio_zrelay_vs_ranged_gets"] = ratio(out["median_mb_s"]["zrelay"], out["median_mb_s"]["ranged-gets"])
        alone = [r["reported"]["seconds"] for r in runs["zrelay"] if r.get("reported", {}).get("seconds")]
        out["ranged_gets_work_mb_s"] = round(stream / med("ranged-gets", "work_seconds") / MB, 1)
        out["ratio_zrelay_vs_ranged_gets_work"] = ratio(out["median_mb_s"]["zrelay"], out["ranged_gets_work_mb_s"])
        if alone:
            out["zrelay_restore_alone_mb_s"] = round(stream / summary(alone)["median"] / MB, 1)
            out["ratio_restore_alone_vs_ranged_gets"] = ratio(out["zrelay_restore_alone_mb_s"],
                                                              out["ranged_gets_work_mb_s"])
        return out

    # -- s3-memory ---------------------------------------------------------------------

    def memory(self, *, small_mib: int, large_mib: int, reps: int) -> dict[str, Any]:
        notes: list[str] = []
        # the constant-byte datasets need ~3 % of their size on disk; zfs-fuse's pools are 4 GiB files
        avail = self.lab.avail(SOURCE, "tank")
        fits = int((avail - 128 * MiB) / 0.1 / MiB) - small_mib
        if fits < large_mib:
            scaled = max(small_mib * 2, fits)
            notes.append(f"{SOURCE}:tank has {avail / MiB:.0f} MiB free: large stream scaled from "
                         f"{large_mib} to {scaled} MiB")
            large_mib = scaled
        sizes = {"small": small_mib, "large": large_mib}
        out: dict[str, Any] = {"sizes_mib": sizes, "notes": notes, "reps": reps, "runs": {k: [] for k in sizes}}
        sources = {label: self.make_source(f"mem-{label}", mib, random=False) for label, mib in sizes.items()}
        for _ds, _snap, stream in sources.values():
            self.check_room(stream, copies=1)
        for rep, order in rotations(list(sizes), reps):
            for label in order:
                ds, _snap, stream = sources[label]
                prefix = f"{self.s3.root}memory-{label}-{rep}/"
                inv = self.inventory(f"memory-{label}-{rep}", ds, prefix)
                timed, result = attempt_s3(
                    self.lab, self.s3, f"s3-memory {label}",
                    lambda inv=inv: self.zrelay_push(inv, f"zrelay s3-push ({sizes[label]} MiB)"),
                    lambda p=prefix: self.s3.clear(p))
                if result["outcome"] != "ok" or result["bytes"] != stream:
                    raise BenchError(f"s3-memory {label}: pushed {result['bytes']} bytes, the stream is {stream}")
                step = result["steps"][0]
                row: dict[str, Any] = {"rep": rep, "stream_bytes": stream, "seconds": round(timed.seconds, 2),
                                       "mb_s": round(stream / timed.seconds / MB, 1),
                                       "peak_rss": timed.extra["peak_rss"],
                                       "peak_rss_sampled": timed.extra["peak_rss_sampled"],
                                       "rss_at": trace_points(timed.extra["rss_trace"], timed.seconds),
                                       "part_size": step["part_size"], "memory_bound_buffers": step["memory_bound"]}
                if "noop_peak_rss" not in out:
                    # The constant: the same process doing everything but streaming (imports, SSH, boto3
                    # client, listing the stored send): a no-op push of what is now stored.
                    noop, again = self.zrelay_push(inv, "zrelay s3-push (no-op)")
                    if again["outcome"] != "noop":
                        raise BenchError(f"s3-memory: the second push was {again['outcome']}, not a no-op")
                    out["noop_peak_rss"] = noop.extra["peak_rss"]
                self.s3.clear(prefix)
                out["runs"][label].append(row)
                log(f"s3-memory rep {rep + 1}/{reps} {label}: {stream / MiB:.0f} MiB stream, peak RSS "
                    f"{row['peak_rss'] / MiB:.1f} MiB, {row['mb_s']:.1f} MB/s, RSS over the run {row['rss_at']}")
        for ds, _snap, _stream in sources.values():
            self.lab.destroy(SOURCE, ds)
        med = {k: summary([r["peak_rss"] for r in v])["median"] for k, v in out["runs"].items()}
        worst = {k: max(r["peak_rss"] for r in v) for k, v in out["runs"].items()}
        buffers = out["runs"]["large"][0]["memory_bound_buffers"]
        from zrelay.transport.ssh import BULK_WINDOW  # data that may be in flight towards a paused channel
        constant = out["noop_peak_rss"] + BULK_WINDOW
        out.update({
            "stream_bytes": {k: sources[k][2] for k in sizes},
            "part_size": out["runs"]["large"][0]["part_size"], "concurrency": self.concurrency,
            "buffers_bound": buffers, "constant": constant,
            "constant_is": f"peak RSS of a no-op s3-push + SSH window ({BULK_WINDOW // MiB} MiB)", "bound": buffers + constant,
            "median_peak_rss": med, "max_peak_rss": worst,
            "ratio_large_vs_small": ratio(med["large"], med["small"]),
            "under_bound": {k: v <= buffers + constant for k, v in med.items()},
            "growth_mib": round((med["large"] - med["small"]) / MiB, 1),
        })
        return out


# --------------------------------------------------------------------------- entry points


def run(lab: Lab, *, wanted: set[str], quick: bool, reps: int, ssh_opts: list[str],
        inventory_extra: dict[str, Any], workdir: Path, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """The S3 benchmarks in ``wanted``; each finished one is stored in ``out`` at once, so a later
    failure keeps the figures already measured."""
    sizes = QUICK if quick else OFFICIAL
    s3 = S3(lab)
    out = {} if out is None else out
    out.update({"sizes": sizes, "endpoint": s3.endpoint, "bucket": s3.bucket, "prefix": s3.root})
    try:
        bench = S3Bench(lab, s3, ssh_opts=ssh_opts, inventory_extra=inventory_extra, workdir=workdir)
        if wanted & {"s3-push", "s3-restore"}:
            src, snap, stream = bench.make_source("s3-src", sizes["stream_mib"], random=True)
            source: dict[str, Any] | None = None
            if "s3-push" in wanted:
                out["s3-push"] = bench.push(size_mib=sizes["stream_mib"], reps=reps, src=src, snap=snap,
                                            stream=stream)
                source = out["s3-push"]["restore_source"]
            if "s3-restore" in wanted:
                if source is None:   # the object to restore: one untimed push
                    prefix = f"{s3.root}restore-src/"
                    inv = bench.inventory("restore-src", src, prefix)
                    _, result = bench.zrelay_push(inv, "zrelay s3-push (restore source)")
                    source = {"prefix": prefix, "inventory": str(inv), "key": result["steps"][0]["objects"][0]}
                out["s3-restore"] = bench.restore(reps=reps, src=src, snap=snap, stream=stream, source=source)
            lab.destroy(SOURCE, src)
        if "s3-memory" in wanted:
            out["s3-memory"] = bench.memory(small_mib=sizes["memory_small_mib"], large_mib=sizes["memory_large_mib"],
                                            reps=reps)
    finally:
        s3.cleanup()
    return out


def table_rows(r: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    """(benchmark, zrelay, baseline, ratio, goal, ok) rows for bench/run.py's table."""
    rows: list[tuple[str, str, str, float | None, str, bool | None]] = []
    p = r.get("s3-push")
    if p:
        size = f"{p['stream_bytes'] / MiB:.0f} MiB"
        mb = p["median_mb_s"]
        rows.append((f"s3-push {size} (zrelay CLI vs boto3 multipart script)", f"{mb['zrelay']:.1f} MB/s",
                     f"{mb['boto3']:.1f} MB/s", p["ratio_zrelay_vs_boto3"], f"≥ {PUSH_GOAL}",
                     p["ratio_zrelay_vs_boto3"] is not None and p["ratio_zrelay_vs_boto3"] >= PUSH_GOAL))
        rows.append((f"s3-push {size} (zrelay push alone vs boto3 script's work alone)",
                     f"{p['zrelay_push_alone_mb_s']:.1f} MB/s", f"{p['boto3_work_mb_s']:.1f} MB/s",
                     p["ratio_push_alone_vs_boto3"], "—", None))
        rows.append((f"s3-push {size} (zrelay CLI vs boto3 script's work alone)",
                     f"{mb['zrelay']:.1f} MB/s", f"{p['boto3_work_mb_s']:.1f} MB/s",
                     p["ratio_zrelay_vs_boto3_work"], "—", None))
    s = r.get("s3-restore")
    if s:
        mb = s["median_mb_s"]
        rows.append((f"s3-restore {s['stream_bytes'] / MiB:.0f} MiB (zrelay CLI vs ranged-GET script | ssh receive)",
                     f"{mb['zrelay']:.1f} MB/s", f"{mb['ranged-gets']:.1f} MB/s", s["ratio_zrelay_vs_ranged_gets"],
                     f"≥ {RESTORE_GOAL}", s["ratio_zrelay_vs_ranged_gets"] is not None
                     and s["ratio_zrelay_vs_ranged_gets"] >= RESTORE_GOAL))
        if s.get("zrelay_restore_alone_mb_s"):
            rows.append((f"s3-restore {s['stream_bytes'] / MiB:.0f} MiB (zrelay restore alone vs GET script's "
                         "work alone)", f"{s['zrelay_restore_alone_mb_s']:.1f} MB/s",
                         f"{s['ranged_gets_work_mb_s']:.1f} MB/s", s["ratio_restore_alone_vs_ranged_gets"], "—", None))
        rows.append((f"s3-restore {s['stream_bytes'] / MiB:.0f} MiB (zrelay CLI vs GET script's work alone)",
                     f"{mb['zrelay']:.1f} MB/s", f"{s['ranged_gets_work_mb_s']:.1f} MB/s",
                     s["ratio_zrelay_vs_ranged_gets_work"], "—", None))
    m = r.get("s3-memory")
    if m:
        bound, med = m["bound"], m["median_peak_rss"]
        n = f" (median of {m['reps']})" if m["reps"] > 1 else ""
        for label in ("small", "large"):
            rows.append((f"s3-memory peak RSS, {m['stream_bytes'][label] / MiB:.0f} MiB stream{n} vs bound",
                         f"{med[label] / MiB:.0f} MiB", f"{bound / MiB:.0f} MiB", med[label] / bound, "≤ bound",
                         m["under_bound"][label]))
        rows.append((f"s3-memory peak RSS, {m['stream_bytes']['large'] / MiB:.0f} vs "
                     f"{m['stream_bytes']['small'] / MiB:.0f} MiB stream{n}", f"{med['large'] / MiB:.0f} MiB",
                     f"{med['small'] / MiB:.0f} MiB", m["ratio_large_vs_small"], f"≤ {MEMORY_RATIO_GOAL}",
                     m["ratio_large_vs_small"] is not None and m["ratio_large_vs_small"] <= MEMORY_RATIO_GOAL))
    return rows

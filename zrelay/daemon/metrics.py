"""The daemon's Prometheus metrics and the HTTP endpoint that serves them.

Everything lives in one private ``CollectorRegistry`` (never prometheus_client's global one), so
a test or a second daemon in one process sees only its own values, and the exposition format is
prometheus_client's own. Labels name jobs, kinds and targets, nothing else: never a URL or a
secret. The ``job`` label is the zrelay job; Prometheus renames it ``exported_job`` next to its
own scrape ``job`` unless the scrape sets ``honor_labels: true``.

Per-target gauges come from the daemon's surveys (``zrelay status --json`` rows, with each target's
newest drill from the ``drills`` table): a job or target
that a reload removed loses its samples, it does not linger with its last value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.exposition import start_http_server
from prometheus_client.process_collector import ProcessCollector

import zrelay
from zrelay.errors import UsageError

#: Run durations: a no-change cycle takes seconds, a full send of a large dataset hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
_SUCCESS = ("ok", "noop")
_FAILURE = ("failed", "refused")


class _Tracked:
    """A labelled metric and the label values it has samples for, so they can be removed."""

    def __init__(self, metric: Gauge | Counter | Histogram) -> None:
        self.metric = metric
        self.keys: set[tuple[str, ...]] = set()

    def child(self, *labels: str) -> Any:
        self.keys.add(labels)
        return self.metric.labels(*labels)

    def remove(self, labels: tuple[str, ...]) -> None:
        if labels in self.keys:
            self.keys.discard(labels)
            self.metric.remove(*labels)

    def keep_only(self, keep: set[tuple[str, ...]], width: int | None = None) -> None:
        """Remove every sample whose first ``width`` label values (all when None) are not in ``keep``."""
        for labels in list(self.keys):
            if (labels if width is None else labels[:width]) not in keep:
                self.remove(labels)


class _Known(Collector):
    """Gauges without labels that have no sample until their value is known: an audit not run
    yet is not ``0 unprotected datasets``, an inventory not loaded yet not a failed load."""

    HELP = {
        "zrelay_survey_timestamp_seconds": "When the per-target gauges were last read from the hosts.",
        "zrelay_unprotected_datasets": "Datasets no job protects (zrelay audit).",
        "zrelay_rpo_stale_targets": "Targets whose common base is older than their job's RPO (zrelay audit).",
        "zrelay_inventory_reload_success": "1 when the last inventory load succeeded, else 0.",
        "zrelay_inventory_reload_timestamp_seconds": "When the inventory was last loaded (or tried).",
    }

    def __init__(self, registry: CollectorRegistry) -> None:
        self._values: dict[str, float] = {}
        registry.register(self)

    def set(self, name: str, value: float) -> None:
        self._values[name] = float(value)

    def collect(self) -> Iterator[Metric]:
        values = dict(self._values)
        for name, help_text in self.HELP.items():
            if name in values:
                yield GaugeMetricFamily(name, help_text, value=values[name])

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: the registry then asks collect() at every scrape."""
        return iter(())


class DaemonMetrics:
    """All the daemon's metrics in one private CollectorRegistry (never the global default registry)."""

    def __init__(self) -> None:
        # No ``*_created`` series beside each counter and histogram: they double the series of a
        # large fleet and say only when the daemon started (process_start_time_seconds does).
        disable_created_metrics()
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        Info("zrelay_daemon", "The zrelay version running the daemon.", registry=r).info(
            {"version": zrelay.__version__})
        self._running = _Tracked(Gauge(
            "zrelay_runs_running", "Runs in progress, per job and kind.", ["job", "kind"], registry=r))
        self._runs = _Tracked(Counter(
            "zrelay_runs", "Finished runs, per job, kind and outcome.", ["job", "kind", "outcome"],
            registry=r))
        self._failures = _Tracked(Counter(
            "zrelay_failures", "Failed or refused runs, per job, kind and error kind (the error's class, "
            "or refused).", ["job", "kind", "error_kind"], registry=r))
        self._duration = Histogram(
            "zrelay_run_duration_seconds", "How long runs took, per kind.", ["kind"],
            buckets=DURATION_BUCKETS, registry=r)
        self._run_bytes = _Tracked(Counter(
            "zrelay_run_bytes", "Bytes moved by finished runs, per job and kind.", ["job", "kind"],
            registry=r))
        self._last_run = _Tracked(Gauge(
            "zrelay_last_run_timestamp_seconds", "When the job's last run of this kind finished.",
            ["job", "kind"], registry=r))
        self._last_success = _Tracked(Gauge(
            "zrelay_last_success_timestamp_seconds",
            "When the job's last run of this kind finished ok or with nothing to do.", ["job", "kind"],
            registry=r))
        self._next_run = _Tracked(Gauge(
            "zrelay_next_run_timestamp_seconds", "When the job's next run of this kind is due.",
            ["job", "kind"], registry=r))
        self._transfer_bytes = _Tracked(Counter(
            "zrelay_transfer_bytes", "Bytes streamed to the target so far, counted as streams move.",
            ["job", "target"], registry=r))
        self._transfers = Gauge("zrelay_transfers_running", "Streams moving now.", registry=r)
        self._lag = _Tracked(Gauge(
            "zrelay_lag_seconds", "Creation time of the newest selected source snapshot minus the "
            "target's common base (status lag_seconds).", ["job", "target"], registry=r))
        self._behind = _Tracked(Gauge(
            "zrelay_behind_snapshots", "Selected source snapshots the target lacks (status behind).",
            ["job", "target"], registry=r))
        self._rpo = _Tracked(Gauge(
            "zrelay_rpo_seconds", "The job's recovery point objective.", ["job", "target"], registry=r))
        self._rpo_breach = _Tracked(Gauge(
            "zrelay_rpo_breach", "1 when the target's common base is older than the job's RPO "
            "(or there is none), else 0.", ["job", "target"], registry=r))
        self._snapshots = _Tracked(Gauge(
            "zrelay_snapshots", "The job's snapshots on each side: as its keep policy counts them, "
            "and for an S3 target the stored sends.", ["job", "target", "side"], registry=r))
        self._drill_at = _Tracked(Gauge(
            "zrelay_last_drill_timestamp_seconds", "When the newest restore drill of the target finished "
            "(zrelay drill, or the daemon's scheduled drill).", ["job", "target"], registry=r))
        self._drill_result = _Tracked(Gauge(
            "zrelay_last_drill_result", "1 for the result of the target's newest restore drill (ok, "
            "mismatch or failed); the other results have no sample.", ["job", "target", "result"], registry=r))
        self._known = _Known(registry=r)
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], int] = {}

    # --- runs ----------------------------------------------------------------------------------

    def run_started(self, job: str, kind: str) -> None:
        with self._lock:
            self._active[(job, kind)] = self._active.get((job, kind), 0) + 1
            self._running.child(job, kind).set(self._active[(job, kind)])

    def run_finished(self, job: str, kind: str, outcome: str, seconds: float, nbytes: int, at: float,
                     error_kind: str | None = None) -> None:
        """A run's end: its outcome counted, its duration and bytes, its time (and, for ``ok`` or
        ``noop``, its time as the last success)."""
        with self._lock:
            left = max(self._active.get((job, kind), 0) - 1, 0)
            self._active[(job, kind)] = left
            self._running.child(job, kind).set(left)
        self._runs.child(job, kind, outcome).inc()
        if outcome in _FAILURE:
            self._failures.child(job, kind, error_kind or ("refused" if outcome == "refused" else "error")).inc()
        self._duration.labels(kind).observe(max(seconds, 0.0))
        self._run_bytes.child(job, kind).inc(max(nbytes, 0))
        self._last_run.child(job, kind).set(at)
        if outcome in _SUCCESS:
            self._last_success.child(job, kind).set(at)

    def transfer(self, job: str, target: str, delta_bytes: int) -> None:
        if delta_bytes > 0:
            self._transfer_bytes.child(job, target).inc(delta_bytes)

    def transfers_running(self, n: int) -> None:
        self._transfers.set(max(n, 0))

    def next_run(self, job: str, kind: str, at: float | None) -> None:
        if at is None:
            self._next_run.remove((job, kind))
        else:
            self._next_run.child(job, kind).set(at)

    def retain_jobs(self, jobs: Iterable[str]) -> None:
        """After a reload: drop every per-job sample of jobs the inventory no longer has."""
        keep: set[tuple[str, ...]] = {(job,) for job in jobs}
        with self._lock:
            for key in [k for k in self._active if (k[0],) not in keep]:
                del self._active[key]
        for metric in (self._running, self._runs, self._failures, self._run_bytes, self._last_run,
                       self._last_success, self._next_run, self._transfer_bytes, *self._per_target()):
            metric.keep_only(keep, width=1)

    # --- targets -------------------------------------------------------------------------------

    def _per_target(self) -> tuple[_Tracked, ...]:
        return (self._lag, self._behind, self._rpo, self._rpo_breach, self._snapshots, self._drill_at,
                self._drill_result)

    def target_status(self, rows: Sequence[Mapping[str, Any]], now: float) -> None:
        """Per-target gauges from a survey's ``status --json`` rows; a value the row does not know
        (``null``) has no sample, and jobs and targets not in ``rows`` lose theirs.

        ``now``: when the rows were read (``zrelay_survey_timestamp_seconds``).
        """
        self._known.set("zrelay_survey_timestamp_seconds", now)
        seen: dict[_Tracked, set[tuple[str, ...]]] = {m: set() for m in self._per_target()}

        def put(metric: _Tracked, value: float | int | bool | None, *labels: str) -> None:
            if value is None:
                return
            metric.child(*labels).set(float(value))
            seen[metric].add(labels)

        for row in rows:
            job, target = str(row["job"]), str(row["target"])
            inspected = row.get("state") not in ("unreachable", "error", "busy", "not-checked") \
                and row.get("planned_state") != "busy"
            put(self._lag, row.get("lag_seconds"), job, target)
            if inspected:
                put(self._behind, row.get("behind"), job, target)
            put(self._rpo, row.get("rpo_seconds"), job, target)
            breach = row.get("rpo_breach")
            put(self._rpo_breach, None if breach is None else int(bool(breach)), job, target)
            for side, count in _snapshot_counts(row).items():
                put(self._snapshots, count, job, target, side)
            drill = row.get("last_drill")
            if isinstance(drill, Mapping) and drill.get("result"):
                put(self._drill_at, drill.get("when"), job, target)
                put(self._drill_result, 1, job, target, str(drill["result"]))
        for metric, labels in seen.items():
            metric.keep_only(labels)

    def audit(self, unprotected: int, stale: int) -> None:
        """Coverage: datasets no job protects, targets past their job's RPO."""
        self._known.set("zrelay_unprotected_datasets", unprotected)
        self._known.set("zrelay_rpo_stale_targets", stale)

    def inventory_loaded(self, ok: bool, at: float) -> None:
        """The last inventory (re)load: whether it succeeded, and when."""
        self._known.set("zrelay_inventory_reload_success", 1 if ok else 0)
        self._known.set("zrelay_inventory_reload_timestamp_seconds", at)

    def render(self) -> bytes:
        """The exposition text, as the endpoint serves it."""
        return generate_latest(self.registry)


def _snapshot_counts(row: Mapping[str, Any]) -> dict[str, int]:
    """``source`` and ``target`` snapshot counts a row knows: from its lifecycle (kept and next
    prune's drops, where the side counts snapshots) and, for an S3 target, its stored sends."""
    out: dict[str, int] = {}
    life = row.get("lifecycle") or {}
    for side in ("source", "target"):
        plan = life.get(side)
        if isinstance(plan, Mapping) and plan.get("unit", "snapshots") == "snapshots":
            kept, drops = plan.get("kept"), plan.get("drops")
            if isinstance(kept, int) and isinstance(drops, int):
                out[side] = kept + drops
    s3 = row.get("s3")
    if isinstance(s3, Mapping) and isinstance(s3.get("sends"), int):
        out["target"] = s3["sends"]
    return out


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` → (host, port). The host is required: an endpoint that
    listens on every interface is written so (``0.0.0.0:9811``), never by leaving it out."""
    text = text.strip()
    if "/" in text:
        raise ValueError(f"metrics address {text!r}: write HOST:PORT (no scheme or path), e.g. 127.0.0.1:9811")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":") or not host:
            raise ValueError(f"metrics address {text!r}: write [IPV6]:PORT, e.g. [::1]:9811")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"metrics address {text!r}: write HOST:PORT, e.g. 127.0.0.1:9811")
        if ":" in host:
            raise ValueError(f"metrics address {text!r}: an IPv6 address goes in brackets, e.g. [::1]:9811")
        if not host:
            raise ValueError(f"metrics address {text!r} has no host: write 127.0.0.1{text} (this machine) "
                             f"or 0.0.0.0{text} (every interface)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"metrics address {text!r}: the port must be a number from 0 to 65535")
    if any(c.isspace() or c in "@[]" for c in host):
        raise ValueError(f"metrics address {text!r}: {host!r} is not a host name or address")
    return host, int(port_text)


class MetricsServer:
    """Serves DaemonMetrics over HTTP on ADDRESS:PORT (default 127.0.0.1:9811) with
    prometheus_client's own server in a daemon thread; stoppable, so a reload can move it."""

    def __init__(self, metrics: DaemonMetrics, address: str) -> None:
        self.metrics = metrics
        self.address = address
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Listen and serve; the bound host and port (port 0 → the one the system chose).
        A bad address or one that cannot be bound is a UsageError naming it."""
        try:
            host, port = parse_listen(self.address)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.metrics.registry)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise UsageError(f"metrics address {self.address}: cannot listen there: {why}") from None
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def stop(self) -> None:
        """Stop serving and close the socket; nothing when not started."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

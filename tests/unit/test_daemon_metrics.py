"""The daemon's metrics: what each call records, read back through prometheus_client's own parser
and over the real HTTP endpoint."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from zrelay.daemon.metrics import DaemonMetrics, MetricsServer, parse_listen
from zrelay.errors import UsageError


def samples(metrics: DaemonMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples called ``name`` (a sample name, e.g. ``zrelay_runs_total``) → value, keyed by labels."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(metrics: DaemonMetrics, name: str, **labels: str) -> float | None:
    return samples(metrics, name).get(tuple(sorted(labels.items())))


def test_a_run_counted_by_outcome_with_duration_bytes_and_times() -> None:
    m = DaemonMetrics()
    m.run_started("j", "sync")
    assert one(m, "zrelay_runs_running", job="j", kind="sync") == 1
    m.run_finished("j", "sync", "ok", 42.0, 1000, at=1700000000.0)
    assert one(m, "zrelay_runs_running", job="j", kind="sync") == 0
    m.run_started("j", "sync")
    m.run_finished("j", "sync", "failed", 3.0, 10, at=1700000100.0, error_kind="TransportError")
    m.run_started("j", "sync")
    m.run_finished("j", "sync", "refused", 1.0, 0, at=1700000200.0)
    m.run_started("j", "snapshot")
    m.run_finished("j", "snapshot", "noop", 0.5, 0, at=1700000300.0)
    assert samples(m, "zrelay_runs_total") == {
        (("job", "j"), ("kind", "sync"), ("outcome", "ok")): 1,
        (("job", "j"), ("kind", "sync"), ("outcome", "failed")): 1,
        (("job", "j"), ("kind", "sync"), ("outcome", "refused")): 1,
        (("job", "j"), ("kind", "snapshot"), ("outcome", "noop")): 1,
    }
    assert samples(m, "zrelay_failures_total") == {
        (("error_kind", "TransportError"), ("job", "j"), ("kind", "sync")): 1,
        (("error_kind", "refused"), ("job", "j"), ("kind", "sync")): 1,
    }
    assert one(m, "zrelay_run_bytes_total", job="j", kind="sync") == 1010
    assert one(m, "zrelay_run_duration_seconds_count", kind="sync") == 3
    assert one(m, "zrelay_run_duration_seconds_sum", kind="sync") == 46.0
    assert one(m, "zrelay_run_duration_seconds_bucket", kind="sync", le="5.0") == 2
    assert one(m, "zrelay_last_run_timestamp_seconds", job="j", kind="sync") == 1700000200.0
    assert one(m, "zrelay_last_success_timestamp_seconds", job="j", kind="sync") == 1700000000.0
    assert one(m, "zrelay_last_success_timestamp_seconds", job="j", kind="snapshot") == 1700000300.0


def test_a_failure_without_its_class_is_an_error_and_busy_is_no_failure() -> None:
    m = DaemonMetrics()
    m.run_finished("j", "prune", "failed", 1.0, 0, at=1.0)
    m.run_finished("j", "prune", "busy", 1.0, 0, at=2.0)
    assert samples(m, "zrelay_failures_total") == {(("error_kind", "error"), ("job", "j"), ("kind", "prune")): 1}
    assert one(m, "zrelay_runs_running", job="j", kind="prune") == 0   # never below zero
    assert samples(m, "zrelay_last_success_timestamp_seconds") == {}


def test_concurrent_runs_of_one_job_and_kind() -> None:
    m = DaemonMetrics()
    m.run_started("j", "s3-push")
    m.run_started("j", "s3-push")
    m.run_finished("j", "s3-push", "ok", 1.0, 0, at=1.0)
    assert one(m, "zrelay_runs_running", job="j", kind="s3-push") == 1


def test_transfers_next_runs_and_coverage() -> None:
    m = DaemonMetrics()
    assert samples(m, "zrelay_unprotected_datasets") == {}   # unknown until an audit ran
    assert samples(m, "zrelay_inventory_reload_success") == {}
    m.transfer("j", "vault:backup/x", 100)
    m.transfer("j", "vault:backup/x", 50)
    m.transfer("j", "vault:backup/x", 0)
    m.transfers_running(2)
    m.next_run("j", "sync", 1700000900.0)
    m.next_run("j", "prune", 1700000950.0)
    m.next_run("j", "prune", None)
    m.audit(unprotected=3, stale=1)
    m.inventory_loaded(False, 1700000000.0)
    assert one(m, "zrelay_transfer_bytes_total", job="j", target="vault:backup/x") == 150
    assert one(m, "zrelay_transfers_running") == 2
    assert samples(m, "zrelay_next_run_timestamp_seconds") == {(("job", "j"), ("kind", "sync")): 1700000900.0}
    assert one(m, "zrelay_unprotected_datasets") == 3 and one(m, "zrelay_rpo_stale_targets") == 1
    assert one(m, "zrelay_inventory_reload_success") == 0
    assert one(m, "zrelay_inventory_reload_timestamp_seconds") == 1700000000.0
    m.inventory_loaded(True, 1700000060.0)
    assert one(m, "zrelay_inventory_reload_success") == 1


def row(job: str, target: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"job": job, "target": target, "state": "behind", "lag_seconds": 60, "behind": 2,
                            "rpo_seconds": 3600, "rpo_breach": False, "lifecycle": None, "s3": None,
                            "planned_state": None}
    return {**base, **fields}


def test_target_gauges_from_status_rows() -> None:
    m = DaemonMetrics()
    life = {"next_snapshot_at": None, "snapshot_due": None, "error": None,
            "source": {"kept": 10, "drops": 2, "unit": "snapshots"},
            "target": {"kept": 7, "drops": 0, "unit": "snapshots"}}
    m.target_status([
        row("a", "vault:backup/a", lifecycle=life),
        row("a", "s3:off", rpo_breach=True, lifecycle={**life, "target": {"kept": 2, "drops": 1, "unit": "chains"}},
            s3={"sends": 5}),
        row("b", "vault:backup/b", state="unreachable", lag_seconds=None, behind=0, rpo_seconds=None,
            rpo_breach=None),
        row("c", "nas2:tank/c", state="running", planned_state="busy", lag_seconds=None, behind=0),
    ], now=1700000000.0)
    assert samples(m, "zrelay_lag_seconds") == {(("job", "a"), ("target", "vault:backup/a")): 60,
                                                (("job", "a"), ("target", "s3:off")): 60}
    assert samples(m, "zrelay_behind_snapshots") == {(("job", "a"), ("target", "vault:backup/a")): 2,
                                                     (("job", "a"), ("target", "s3:off")): 2}
    assert samples(m, "zrelay_rpo_breach") == {(("job", "a"), ("target", "vault:backup/a")): 0,
                                               (("job", "a"), ("target", "s3:off")): 1,
                                               (("job", "c"), ("target", "nas2:tank/c")): 0}
    assert one(m, "zrelay_rpo_seconds", job="c", target="nas2:tank/c") == 3600
    assert samples(m, "zrelay_snapshots") == {
        (("job", "a"), ("side", "source"), ("target", "vault:backup/a")): 12,
        (("job", "a"), ("side", "target"), ("target", "vault:backup/a")): 7,
        (("job", "a"), ("side", "source"), ("target", "s3:off")): 12,
        (("job", "a"), ("side", "target"), ("target", "s3:off")): 5,
    }
    assert one(m, "zrelay_survey_timestamp_seconds") == 1700000000.0


def test_targets_gone_from_the_rows_leave_no_ghosts() -> None:
    m = DaemonMetrics()
    life = {"source": {"kept": 1, "drops": 0, "unit": "snapshots"}, "target": None}
    m.target_status([row("a", "vault:backup/a", lifecycle=life), row("b", "vault:backup/b")], now=1.0)
    m.target_status([row("a", "vault:backup/a", lag_seconds=None)], now=2.0)
    assert samples(m, "zrelay_lag_seconds") == {}
    assert set(samples(m, "zrelay_rpo_seconds")) == {(("job", "a"), ("target", "vault:backup/a"))}
    assert samples(m, "zrelay_snapshots") == {}
    m.target_status([], now=3.0)
    for name in ("zrelay_rpo_seconds", "zrelay_rpo_breach", "zrelay_behind_snapshots"):
        assert samples(m, name) == {}, name


def test_retain_jobs_drops_the_samples_of_removed_jobs() -> None:
    m = DaemonMetrics()
    for job in ("keep", "gone"):
        m.run_started(job, "sync")
        m.run_finished(job, "sync", "failed", 1.0, 5, at=1.0, error_kind="X")
        m.next_run(job, "sync", 10.0)
        m.transfer(job, "vault:x", 5)
    m.target_status([row("keep", "vault:x"), row("gone", "vault:y")], now=1.0)
    m.retain_jobs(["keep"])
    text = m.render().decode()
    assert 'job="gone"' not in text
    assert one(m, "zrelay_runs_total", job="keep", kind="sync", outcome="failed") == 1
    assert one(m, "zrelay_lag_seconds", job="keep", target="vault:x") == 60


def test_a_private_registry_per_daemon() -> None:
    a, b = DaemonMetrics(), DaemonMetrics()
    a.run_finished("j", "sync", "ok", 1.0, 0, at=1.0)
    assert samples(b, "zrelay_runs_total") == {}
    assert not any(name.startswith("zrelay_") for name in REGISTRY._names_to_collectors)  # noqa: SLF001
    assert samples(a, "zrelay_daemon_info")


def test_label_values_are_escaped_by_the_library() -> None:
    m = DaemonMetrics()
    m.run_finished('odd "job"\\x\n', "sync", "ok", 1.0, 0, at=1.0)
    assert one(m, "zrelay_runs_total", job='odd "job"\\x\n', kind="sync", outcome="ok") == 1


# --- the endpoint --------------------------------------------------------------------------------


def get(host: str, port: int, path: str = "/metrics") -> tuple[int, str, bytes]:
    url_host = f"[{host}]" if ":" in host else host
    with urllib.request.urlopen(f"http://{url_host}:{port}{path}", timeout=10) as answer:
        return answer.status, answer.headers["Content-Type"], answer.read()


def test_the_endpoint_serves_the_registry_and_stops() -> None:
    m = DaemonMetrics()
    m.run_finished("j", "sync", "ok", 1.0, 7, at=1.0)
    server = MetricsServer(m, "127.0.0.1:0")
    host, port = server.start()
    try:
        assert host == "127.0.0.1" and port > 0
        status, ctype, body = get(host, port)
        assert status == 200 and ctype.startswith("text/plain")
        assert 'zrelay_runs_total{job="j",kind="sync",outcome="ok"} 1.0' in body.decode()
        m.run_finished("j", "sync", "ok", 1.0, 7, at=2.0)
        assert 'zrelay_runs_total{job="j",kind="sync",outcome="ok"} 2.0' in get(host, port)[2].decode()
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        get(host, port)
    server.stop()   # twice is fine


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_the_endpoint_on_ipv6() -> None:
    server = MetricsServer(DaemonMetrics(), "[::1]:0")
    host, port = server.start()
    try:
        assert host == "::1"
        assert b"zrelay_daemon_info" in get(host, port)[2]
    finally:
        server.stop()


def test_a_taken_port_is_one_usage_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError) as err:
            MetricsServer(DaemonMetrics(), f"127.0.0.1:{port}").start()
    assert str(err.value) == f"metrics address 127.0.0.1:{port}: cannot listen there: Address already in use"


def test_a_bad_address_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="the port must be a number"):
        MetricsServer(DaemonMetrics(), "127.0.0.1:http").start()


@pytest.mark.parametrize("text, parsed", [
    ("127.0.0.1:9811", ("127.0.0.1", 9811)), ("localhost:0", ("localhost", 0)), ("[::1]:9811", ("::1", 9811)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)), (" 127.0.0.1:9811 ", ("127.0.0.1", 9811)),
])
def test_parse_listen(text: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(text) == parsed


@pytest.mark.parametrize("text, message", [
    ("9811", "metrics address '9811': write HOST:PORT, e.g. 127.0.0.1:9811"),
    (":9811", "metrics address ':9811' has no host: write 127.0.0.1:9811 (this machine) or 0.0.0.0:9811 "
              "(every interface)"),
    ("::1:9811", "metrics address '::1:9811': an IPv6 address goes in brackets, e.g. [::1]:9811"),
    ("[::1]9811", "metrics address '[::1]9811': write [IPV6]:PORT, e.g. [::1]:9811"),
    ("127.0.0.1:70000", "metrics address '127.0.0.1:70000': the port must be a number from 0 to 65535"),
    ("127.0.0.1:-1", "metrics address '127.0.0.1:-1': the port must be a number from 0 to 65535"),
    ("a b:1", "metrics address 'a b:1': 'a b' is not a host name or address"),
    ("http://h:1", "metrics address 'http://h:1': write HOST:PORT (no scheme or path), e.g. 127.0.0.1:9811"),
])
def test_parse_listen_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_listen(text)
    assert str(err.value) == message
    assert "\n" not in message

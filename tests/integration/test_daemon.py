"""``zrelay daemon`` on the lab: scheduled snapshot → sync → prune cycles, metrics scraped over HTTP,
hooks, run-now, SIGHUP with a broken inventory, SIGTERM mid-stream, a manual sync serialized with a
scheduled one, a host that goes away and comes back.

Each test starts the real daemon (``python -m zrelay daemon``) as a subprocess with its own state
store and a metrics endpoint on a free loopback port, and stops it by PID. A stream is held in
flight by freezing its ``zfs receive`` (SIGSTOP on the target host, matched by the test's own
dataset name), so signals land mid-stream however fast the machine is. No timing assertions: each
wait has a generous deadline and fails with the daemon's log.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.helpers import (REPO, fingerprint, make_dataset, snapshots, write, write_inventory,
                                       zrelay)
from zrelay.daemonstate import DaemonStore
from zrelay.state import read_view

DEADLINE = 120.0


class Daemon:
    """A ``zrelay daemon`` subprocess: its log, its metrics, its state store."""

    def __init__(self, inventory: Path, state: Path, log: Path) -> None:
        self.inventory, self.state, self.log_path = inventory, state, log
        self.out = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "zrelay", "-i", str(inventory), "--state", str(state),
                                      "daemon", "--metrics", "127.0.0.1:0"],
                                     cwd=REPO, stdout=self.out, stderr=subprocess.STDOUT, text=True)
        self.metrics_port = int(self.wait_log(r"metrics endpoint listening address=127\.0\.0\.1:(\d+)").group(1))

    def log(self) -> str:
        return self.log_path.read_text()

    def wait(self, what: str, condition: Callable[[], Any], deadline: float = DEADLINE) -> Any:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            value = condition()
            if value:
                return value
            if self.proc.poll() is not None:
                break
            time.sleep(0.3)
        raise AssertionError(f"{what}: not within {deadline:g}s (daemon exit {self.proc.poll()})\n{self.log()}")

    def wait_log(self, pattern: str, count: int = 1, deadline: float = DEADLINE) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            matches = list(re.finditer(pattern, self.log()))
            return matches[count - 1] if len(matches) >= count else None
        return self.wait(f"log line /{pattern}/ x{count}", found, deadline)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of the endpoint, parsed by prometheus_client's own parser."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def sample(self, name: str, **labels: str) -> float | None:
        want = tuple(sorted(labels.items()))
        return self.metrics().get((name, want))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.out.close()
        return code


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[[Path], Daemon]]:
    started: list[Daemon] = []

    def start(inventory: Path) -> Daemon:
        daemon = Daemon(inventory, tmp_path / "state.db", tmp_path / f"daemon{len(started)}.log")
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


def daemon_settings(**extra: Any) -> dict[str, Any]:
    return {"daemon": {"survey_every": "10s", "retry": {"first": "2s", "max": "10s", "attempts": 20}, **extra}}


def names(lab: Any, host: str, dataset: str) -> list[str]:
    return [n for n, _ in snapshots(lab, host, dataset)]


def freeze_receive(lab: Any, host: str, dataset: str, sig: str = "STOP") -> bool:
    """Signal the sshd session that serves this test's own ``zfs receive`` on ``host`` (SIGSTOP: the
    stream stalls, as on a link that stopped moving; zfs-fuse reads a receive's stream in its daemon,
    so freezing the zfs command alone would not stop it); True when there was one. ``sig`` "0":
    only whether the receive is still there."""
    pattern = f"zfs (receive|recv) .*{dataset}"
    if sig == "0":
        return lab.run(host, "pgrep", "-f", pattern, check=False).returncode == 0
    script = (f'pid=$(pgrep -f "$1" | head -n1); [ -n "$pid" ] || exit 1\n'
              'while [ "${pid:-1}" -gt 1 ]; do\n'
              '  case "$(ps -o args= -p "$pid")" in "sshd: "*) kill -"$2" "$pid"; exit $?;; esac\n'
              '  pid=$(ps -o ppid= -p "$pid" | tr -d " ")\n'
              'done\nexit 1\n')
    return lab.run(host, "sh", "-c", script, "freeze", pattern, sig, check=False).returncode == 0


def test_scheduled_cycles_snapshot_sync_prune_with_metrics_and_hooks(lab, tmp_path, start_daemon):
    name = lab.unique()
    src, dst = f"tank/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src)
    hook_log = tmp_path / "hooks.log"
    started = time.time()
    settings = daemon_settings(notify={"on_success": f'echo "$ZRELAY_JOB $ZRELAY_KIND $ZRELAY_OUTCOME" >> {hook_log}'})
    inv = write_inventory(tmp_path / "inv.yml", lab, [{
        "name": name, "source": f"nas1:{src}", "targets": [f"vault:{dst}"],
        "snapshot": {"every": "10s", "name": "auto_%Y%m%d-%H%M%S"},
        "keep": {"source": {"last": 2}, "targets": {"last": 3}}}], settings=settings)
    daemon = start_daemon(inv)
    # snapshot runs, each followed by a sync and a prune (fewer on the emulated OpenZFS guests)
    cycles, deadline = (2, 600.0) if lab.tier == "openzfs" else (4, 180.0)
    daemon.wait_log(rf"run finished job={name} kind=prune outcome=(ok|noop)", count=cycles, deadline=deadline)
    source, target = names(lab, "nas1", src), names(lab, "vault", dst)
    assert 1 <= len(source) <= 3, source          # last 2, plus one taken since the prune
    assert 2 <= len(target) <= 4 and set(target) & set(source), (source, target)
    assert all(n.startswith("auto_") for n in source + target)
    assert fingerprint(lab, "vault", dst)

    ok_syncs = daemon.sample("zrelay_runs_total", job=name, kind="sync", outcome="ok")
    assert ok_syncs is not None and ok_syncs >= cycles - 1
    assert (daemon.sample("zrelay_last_success_timestamp_seconds", job=name, kind="sync") or 0) > started
    assert daemon.sample("zrelay_next_run_timestamp_seconds", job=name, kind="snapshot") is not None
    survey = daemon.wait("a survey row for the target",
                         lambda: daemon.sample("zrelay_snapshots", job=name, target=f"vault:{dst}", side="target"))
    assert survey >= 1
    hooks = hook_log.read_text().splitlines()
    assert f"{name} snapshot ok" in hooks and f"{name} sync ok" in hooks
    # every run is in the state store, as the CLI's runs are
    with DaemonStore(daemon.state, readonly=True) as store:
        info = store.daemon()
        assert info is not None and info.alive and info.pid == daemon.proc.pid
        kinds = {row.kind: row for row in store.schedule()}
        assert set(kinds) == {"snapshot", "sync", "prune"}
        assert kinds["sync"].schedule == "default: after each snapshot"
    assert daemon.stop() == 0
    assert "daemon stopped" in daemon.log()


def test_run_now_and_sighup_with_a_broken_inventory(lab, tmp_path, start_daemon):
    name = lab.unique()
    src, dst = f"tank/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    job = {"name": name, "source": f"nas1:{src}", "targets": [f"vault:{dst}"], "schedule": {"sync": "1h"}}
    inv = write_inventory(tmp_path / "inv.yml", lab, [job], settings=daemon_settings())
    good = inv.read_text()
    daemon = start_daemon(inv)
    daemon.wait_log(rf"run finished job={name} kind=sync outcome=ok")
    assert names(lab, "vault", dst) == ["zrelay_1"]

    # a broken inventory: logged with file:line:column, the one in force stays, metrics say so
    inv.write_text(good.replace("sync: 1h", "sync: 1 hour"))
    daemon.signal(signal.SIGHUP)
    line = daemon.wait_log(r"ERROR SIGHUP: inventory refused, the one in force stays error=\"([^\"]+)\"")
    assert re.match(rf"{re.escape(str(inv))}:\d+:\d+: schedule.sync: expected a duration", line.group(1))
    assert daemon.sample("zrelay_inventory_reload_success") == 0
    assert daemon.proc.poll() is None

    # run-now: the daemon takes the request and runs the sync ahead of its hourly schedule
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
    asked = zrelay("run-now", name, "--kind", "sync", inventory=inv, env={"ZRELAY_STATE": str(daemon.state)})
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert asked.stdout.strip() == f"daemon (pid {daemon.proc.pid}): 1 run(s) requested: {name} sync"
    daemon.wait(f"zrelay_2 on {dst}", lambda: names(lab, "vault", dst) == ["zrelay_1", "zrelay_2"])

    # a good inventory again, with a second job: reloaded, and the new job runs
    dst2 = f"{lab.pools['vault']}/{name}-b"
    inv.write_text(good)
    data = yaml.safe_load(good)
    data["zrelay"]["jobs"].append({"name": f"{name}-b", "source": f"nas1:{src}", "targets": [f"vault:{dst2}"]})
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(r"SIGHUP: inventory reloaded runs=2")
    daemon.wait(f"the new job's target {dst2}", lambda: lab.exists("vault", dst2) and names(lab, "vault", dst2))
    assert daemon.sample("zrelay_inventory_reload_success") == 1
    assert daemon.stop() == 0


def test_sigterm_mid_stream_stops_within_the_timeout_and_the_target_recovers(lab, tmp_path, start_daemon):
    name = lab.unique()
    src, dst = f"tank/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    job = {"name": name, "source": f"nas1:{src}", "targets": [f"vault:{dst}"], "schedule": {"sync": "10s"}}
    inv = write_inventory(tmp_path / "inv.yml", lab, [job], settings=daemon_settings(stop_timeout="2s"))
    assert zrelay("sync", inventory=inv).returncode == 0
    write(lab, "nas1", src, "big", mib=lab.mib(64))
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
    before = fingerprint(lab, "vault", dst)
    daemon = start_daemon(inv)
    daemon.wait("the daemon's receive in flight", lambda: freeze_receive(lab, "vault", dst))
    try:
        daemon.wait("bytes moving", lambda: any(t.job == name for t in read_view(daemon.state).active))
        daemon.signal(signal.SIGTERM)
        daemon.wait_log("stop timeout: interrupting runs")
    finally:
        freeze_receive(lab, "vault", dst, "CONT")
    assert daemon.proc.wait(timeout=60) == 0
    log = daemon.log()
    assert "SIGTERM: stopping running=1" in log and "stop timeout: interrupting runs" in log, log
    assert re.search(rf"run finished job={name} kind=sync outcome=failed .*stopped by the daemon's shutdown", log)
    # the target is as it was (OpenZFS may keep a resume token: same snapshots); a manual sync completes it
    receive_gone(lab, "vault", dst)
    assert names(lab, "vault", dst) == ["zrelay_1"]
    assert fingerprint(lab, "vault", dst) == before
    done = zrelay("sync", inventory=inv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert names(lab, "vault", dst) == ["zrelay_1", "zrelay_2"]
    assert snapshots(lab, "vault", dst) == snapshots(lab, "nas1", src)   # names and GUIDs


def test_a_manual_sync_waits_for_the_scheduled_one(lab, tmp_path, start_daemon):
    name = lab.unique()
    src, dst = f"tank/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    job = {"name": name, "source": f"nas1:{src}", "targets": [f"vault:{dst}"], "schedule": {"sync": "1h"}}
    inv = write_inventory(tmp_path / "inv.yml", lab, [job], settings=daemon_settings())
    assert zrelay("sync", inventory=inv).returncode == 0
    write(lab, "nas1", src, "big", mib=lab.mib(32))
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
    daemon = start_daemon(inv)
    daemon.wait("the daemon's receive in flight", lambda: freeze_receive(lab, "vault", dst))
    manual: subprocess.Popen[str] | None = None
    try:
        env = dict(os.environ, ZRELAY_STATE=str(daemon.state))
        manual = subprocess.Popen([sys.executable, "-m", "zrelay", "-i", str(inv), "sync", "--wait-lock", "300",
                                   "--json"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        time.sleep(3)   # the manual run is waiting for the target's lock, not racing the daemon's receive
        assert manual.poll() is None
    finally:
        freeze_receive(lab, "vault", dst, "CONT")
    assert manual is not None
    out, err = manual.communicate(timeout=300)
    assert manual.returncode == 0, out + err
    assert '"outcome": "noop"' in out, out   # the daemon's run had sent zrelay_2 by the time it got the lock
    daemon.wait_log(rf"run finished job={name} kind=sync outcome=ok")
    assert names(lab, "vault", dst) == ["zrelay_1", "zrelay_2"]


def receive_gone(lab: Any, host: str, dataset: str) -> None:
    deadline = time.monotonic() + 60
    while freeze_receive(lab, host, dataset, "0"):   # signal 0: is it still there?
        assert time.monotonic() < deadline, "zfs receive still running after the run ended"
        time.sleep(0.2)


class Proxy:
    """A TCP forwarder on 127.0.0.1 to a lab host's sshd that the test can take down and bring back:
    to zrelay, a host that went away (connections reset, then refused) and came back."""

    def __init__(self, address: str, port: int) -> None:
        self.to = (address, port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []

    def up(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(16)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def down(self) -> None:
        if self.listener is not None:
            try:   # wakes the thread blocked in accept(), which close() alone would leave listening
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.to)
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_a_host_that_is_down_is_retried_without_blocking_the_others(lab, tmp_path, start_daemon):
    name = lab.unique()
    src = f"tank/{name}"
    dst_far, dst_near = f"{lab.pools['vault']}/{name}", f"{lab.pools['nas2']}/{name}"
    make_dataset(lab, "nas1", src, snaps=["zrelay_1"])
    proxy = Proxy(lab.hosts["vault"], lab.ports["vault"])   # not up yet: the far host is down
    far = {"address": "127.0.0.1", "port": proxy.port,
           "ssh_options": {"HostKeyAlias": lab.known_hosts_name("vault"), "ConnectTimeout": "5s"}}
    jobs = [{"name": f"{name}-far", "source": f"nas1:{src}", "targets": [f"faraway:{dst_far}"],
             "schedule": {"sync": "1h"}},
            {"name": f"{name}-near", "source": f"nas1:{src}", "targets": [f"nas2:{dst_near}"],
             "schedule": {"sync": "1h"}}]
    inv = write_inventory(tmp_path / "inv.yml", lab, jobs, hosts={"faraway": far}, settings=daemon_settings())
    try:
        daemon = start_daemon(inv)
        daemon.wait_log(rf"run finished job={name}-far kind=sync outcome=failed", count=2)
        # the other job was not held up by the host that is down
        daemon.wait_log(rf"run finished job={name}-near kind=sync outcome=ok")
        failures = daemon.metrics()
        assert any(k[0] == "zrelay_failures_total" and ("job", f"{name}-far") in k[1] and v >= 2
                   for k, v in failures.items()), failures
        with DaemonStore(daemon.state, readonly=True) as store:
            row = next(r for r in store.schedule() if r.job == f"{name}-far")
            assert row.history["failures"] >= 2 and "retry" in row.reason, row
        proxy.up()   # the host is back: the next retry replicates
        daemon.wait_log(rf"run finished job={name}-far kind=sync outcome=ok", deadline=90)
        assert names(lab, "vault", dst_far) == ["zrelay_1"]
        # and it drops again mid-life: the persistent connection is replaced by a new one
        proxy.down()
        lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
        proxy.up()
        assert zrelay("run-now", f"{name}-far", inventory=inv,
                      env={"ZRELAY_STATE": str(daemon.state)}).returncode == 0
        daemon.wait(f"zrelay_2 on {dst_far}", lambda: names(lab, "vault", dst_far) == ["zrelay_1", "zrelay_2"])
    finally:
        proxy.down()

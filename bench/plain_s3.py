"""The plain boto3 baselines of s3-push and s3-restore, as a program of their own.

A user without zrelay runs a script like this one; the benchmark times it the way it times
``zrelay s3-push`` / ``zrelay s3-restore``: a fresh process, interpreter start and imports
included. Only the standard library and boto3, nothing of zrelay's.

    plain_s3.py push    --endpoint URL --bucket B --key K --part-size N --concurrency C --ssh JSON SNAPSHOT
    plain_s3.py restore --endpoint URL --bucket B --key K --size N --chunk N --concurrency C --ssh JSON RECEIVE

push:    ``SSH zfs send SNAPSHOT`` read in parts of N bytes, each uploaded with a Content-MD5,
         C in flight (plus one waiting, as zrelay), then the upload completed (aborted on failure).
restore: ranged GETs of N-byte chunks, C in flight, written in order into ``SSH RECEIVE``.

Credentials and region come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION). The client has the settings zrelay uses for non-AWS servers. Prints one
JSON line: bytes moved, parts, and ``work_seconds`` (from just before the client is made to the
end: what the in-process baseline used to time).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shlex
import subprocess
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config


def client(endpoint: str, pool: int) -> Any:
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                      request_checksum_calculation="when_required", response_checksum_validation="when_required",
                      retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10.0, read_timeout=120.0,
                      max_pool_connections=max(10, pool), tcp_keepalive=True))


def push(args: argparse.Namespace) -> dict[str, Any]:
    s3 = client(args.endpoint, args.concurrency + 4)
    ssh = json.loads(args.ssh)
    proc = subprocess.Popen([*ssh, shlex.join(["zfs", "send", args.what])], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    upload_id = s3.create_multipart_upload(Bucket=args.bucket, Key=args.key,
                                           ContentType="application/octet-stream")["UploadId"]
    slots = threading.BoundedSemaphore(args.concurrency + 1)   # in flight + one waiting, as zrelay
    parts: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    total = 0
    completed = False

    def upload(number: int, body: bytes) -> None:
        try:
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            r = s3.upload_part(Bucket=args.bucket, Key=args.key, UploadId=upload_id, PartNumber=number, Body=body,
                               ContentMD5=md5)
            parts.append({"PartNumber": number, "ETag": r["ETag"]})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            slots.release()

    try:
        assert proc.stdout is not None
        futures: list[Future[None]] = []
        with ThreadPoolExecutor(args.concurrency, thread_name_prefix="plain-part") as pool:
            number = 0
            while not errors:
                body = proc.stdout.read(args.part_size)
                if not body:
                    break
                total += len(body)
                number += 1
                slots.acquire()
                futures.append(pool.submit(upload, number, body))
            for f in futures:
                f.result()
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"plain push: zfs send: exit {proc.returncode}: "
                             f"{err.decode(errors='replace').strip()[-400:]}")
        if errors:
            raise SystemExit(f"plain push: {errors[0]}")
        s3.complete_multipart_upload(Bucket=args.bucket, Key=args.key, UploadId=upload_id, MultipartUpload={
            "Parts": sorted(parts, key=lambda p: p["PartNumber"])})
        completed = True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if not completed:
            try:
                s3.abort_multipart_upload(Bucket=args.bucket, Key=args.key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
    return {"bytes": total, "parts": len(parts)}


def restore(args: argparse.Namespace) -> dict[str, Any]:
    s3 = client(args.endpoint, args.concurrency + 4)
    ssh = json.loads(args.ssh)
    proc = subprocess.Popen([*ssh, args.what], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None

    def get(start: int, end: int) -> bytes:
        r = s3.get_object(Bucket=args.bucket, Key=args.key, Range=f"bytes={start}-{end - 1}")
        data = r["Body"].read()
        if len(data) != end - start:
            raise SystemExit(f"plain restore: ranged GET {start}-{end - 1}: {len(data)} bytes")
        return bytes(data)

    ranges = deque((s, min(args.size, s + args.chunk)) for s in range(0, args.size, args.chunk))
    window: deque[Future[bytes]] = deque()
    moved = 0
    try:
        with ThreadPoolExecutor(args.concurrency, thread_name_prefix="plain-get") as pool:
            try:
                while ranges or window:
                    while ranges and len(window) < args.concurrency:
                        window.append(pool.submit(get, *ranges.popleft()))
                    data = window.popleft().result()
                    proc.stdin.write(data)
                    moved += len(data)
            finally:
                for f in window:
                    f.cancel()
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read()
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"plain restore: zfs receive: exit {proc.returncode}: "
                         f"{err.decode(errors='replace').strip()[-400:]}")
    return {"bytes": moved, "chunks": -(-args.size // args.chunk)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("push", "restore"))
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ssh", required=True, help="the ssh argv to the host, as a JSON list")
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--part-size", type=int, default=0)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--chunk", type=int, default=0)
    p.add_argument("what", help="push: the snapshot to send; restore: the receive command")
    args = p.parse_args()
    started = time.perf_counter()
    result = push(args) if args.mode == "push" else restore(args)
    result["work_seconds"] = round(time.perf_counter() - started, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

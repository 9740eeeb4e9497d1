"""A fresh install, made the way the README says, is silent: no warning of any library reaches stderr.

One venv per test session (``python3 -m venv``, then ``pip install -c constraints.txt .`` from a
copy of this checkout, not editable): building and installing takes a minute or two. Then the
commands a new user runs first each print nothing on stderr but their own message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import REPO, make_dataset, write_inventory

pytestmark = [
    pytest.mark.install,
    pytest.mark.skipif(os.environ.get("ZRELAY_LAB") == "openzfs",
                       reason="an install does not depend on the ZFS tier: it is checked on the fuse tier"),
]

INSTALL_TIMEOUT = 900


@dataclass
class Install:
    root: Path       # the venv
    workdir: Path    # an empty directory to run commands in (not the checkout: nothing to import from)
    pip_output: str  # what `pip install -v` printed, build backend included

    def zrelay(self, *args: str, env: dict[str, str] | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The installed console script, with Python's default warning filters."""
        full = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "PYTHONPATH", "ZRELAY_INVENTORY")}
        full.update({"ZRELAY_STATE": str(self.workdir / "state.db"), "COLUMNS": "200", **(env or {})})
        return subprocess.run([str(self.root / "bin" / "zrelay"), *args], capture_output=True, text=True,
                              cwd=self.workdir, env=full, timeout=timeout, stdin=subprocess.DEVNULL)


def _copy_checkout(dest: Path) -> None:
    """The files git knows about (tracked, or new and not ignored): what a clone would have."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listing):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Install:
    base = tmp_path_factory.mktemp("fresh-install")
    checkout, venv, workdir = base / "zrelay", base / "venv", base / "work"
    workdir.mkdir()
    _copy_checkout(checkout)
    python = shutil.which("python3") or sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-v", "-c", "constraints.txt", "."],
                          cwd=checkout, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=env)
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return Install(venv, workdir, proc.stdout + proc.stderr)


def test_the_build_gives_no_deprecation_warning(fresh: Install) -> None:
    """setuptools reads the license as an SPDX expression: no `project.license` deprecation."""
    assert "SetuptoolsDeprecationWarning" not in fresh.pip_output
    assert "project.license" not in fresh.pip_output


def test_the_installed_versions_are_the_constraints(fresh: Install) -> None:
    pinned = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.lower().replace("_", "-").replace(".", "-")] = version
    listing = subprocess.run([str(fresh.root / "bin" / "pip"), "list", "--format=json"], capture_output=True,
                             text=True, check=True, timeout=120).stdout
    installed = {p["name"].lower().replace("_", "-").replace(".", "-"): p["version"] for p in json.loads(listing)}
    runtime = {"asyncssh", "cryptography", "boto3", "botocore", "pyyaml", "ruamel-yaml", "textual", "rich"}
    assert {name: installed.get(name) for name in runtime} == {name: pinned[name] for name in runtime}


@pytest.mark.parametrize("args", [["--help"], ["sync", "--help"], ["status", "--help"], ["s3-push", "--help"]],
                         ids=" ".join)
def test_help_prints_nothing_on_stderr(fresh: Install, args: list[str]) -> None:
    proc = fresh.zrelay(*args)
    assert proc.returncode == 0, proc.stderr
    assert "usage: zrelay" in proc.stdout
    assert proc.stderr == ""


def test_an_inventory_error_is_one_line(fresh: Install) -> None:
    """`sync` loads asyncssh before it reads the inventory: still only the error, on one line."""
    inv = fresh.workdir / "broken.yml"
    inv.write_text("all:\n  hosts:\n    nas1: {address: 127.0.0.2, port: abc}\n")
    proc = fresh.zrelay("-i", str(inv), "sync", "--dry-run")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"zrelay: error: {inv}:3:") and "port" in lines[0]


def test_lab_status_and_s3_listing_print_nothing_on_stderr(fresh: Install, lab: Any, s3: Any, tmp_path: Path) -> None:
    name = lab.unique("inst")
    prefix = s3.prefix(name)
    make_dataset(lab, "nas1", f"tank/{name}", snaps=["zrelay_1"])
    inv = write_inventory(tmp_path / "inv.yml", lab,
                          [{"source": f"nas1:tank/{name}", "targets": [f"vault:backup/{name}", "s3:offsite"]}],
                          settings={"s3_targets": {"offsite": s3.target(prefix)}})
    try:
        sync = fresh.zrelay("-i", str(inv), "sync", env=s3.env)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        push = fresh.zrelay("-i", str(inv), "s3-push", env=s3.env)
        assert push.returncode == 0, push.stdout + push.stderr
        status = fresh.zrelay("-i", str(inv), "status", env=s3.env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"backup/{name}" in status.stdout
        assert status.stderr == ""
        listing = fresh.zrelay("-i", str(inv), "s3-ls", env=s3.env)
        assert listing.returncode == 0, listing.stderr
        assert name in listing.stdout
        assert listing.stderr == ""
        for proc in (sync, push):  # progress may go to stderr; a warning never does
            assert "Warning" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    finally:
        s3.cleanup(prefix)

"""OpenZFS-only: a receive interrupted under ``receive -s`` keeps its partial stream, so the
message says the next sync resumes from it, not "the target is unchanged"."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import REPO, make_dataset, write_inventory

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def _openzfs_only(lab) -> None:
    if lab.tier != "openzfs":
        pytest.skip("OpenZFS-only: run with ZRELAY_LAB=openzfs (make test-openzfs)")


def _token(lab, host: str, dataset: str) -> str | None:
    value = lab.run(host, "zfs", "get", "-H", "-o", "value", "receive_resume_token", dataset,
                    check=False).stdout.strip()
    return None if value in ("", "-") else value


@pytest.mark.parametrize("mode", ["--relay", "--direct"])
def test_interrupted_receive_says_the_next_sync_resumes(lab, tmp_path: Path, mode: str) -> None:
    lab.require("vault", "resume")
    name = lab.unique()
    src, dst = f"tank/{name}", f"{lab.pools['vault']}/{name}"
    make_dataset(lab, "nas1", src, mib=96, snaps=["s1"])
    inv = write_inventory(tmp_path / "inv.yml", lab, [{"source": f"nas1:{src}", "targets": [f"vault:{dst}"]}],
                          hosts={"nas1": {"address": lab.hosts["nas1"],
                                          "direct_identity_file": str(lab.peer_key),
                                          "direct_known_hosts": str(lab.peer_known_hosts)}})
    argv = [sys.executable, "-m", "zrelay", "-i", str(inv), "--state", str(tmp_path / "state.db"),
            "sync", "--json", mode]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pattern = f"^zfs send (-[a-mo-zA-Z]+ )*{src}@"   # the stream's send, not its `-nvP` size estimate
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if lab.run("nas1", "pgrep", "-f", pattern, check=False).returncode == 0:
            break
        time.sleep(0.2)
    time.sleep(2.0)
    killed = lab.run("nas1", "pkill", "-9", "-f", pattern, check=False)
    out, err = proc.communicate(timeout=300)
    assert killed.returncode == 0, f"the send ended before it could be interrupted: {out}{err}"
    assert proc.returncode == 1, out + err
    result = json.loads(out)[0]
    assert _token(lab, "vault", dst), "an interrupted receive -s must leave a resume token"
    message = result["message"]
    assert f"the partial receive is kept on vault:{dst} (receive_resume_token): the next sync resumes from it" \
        in message, message
    assert "the target is unchanged" not in message, message
    assert "zfs send on nas1 was killed (signal KILL)" in message, message
    assert result["bytes"] > 0, result

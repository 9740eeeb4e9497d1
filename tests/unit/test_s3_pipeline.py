"""Remote command lines of S3 streams: filters, guarded pipelines, and reading their exit statuses."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import replace

import pytest

from tests.unit.test_s3_chains import manifest, snap
from zrelay.errors import S3UsageError
from zrelay.inventory.model import S3Target
from zrelay.s3 import pipeline
from zrelay.s3.options import S3Options

AGE = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
TARGET = S3Target("offsite", "bucket-1")


def test_auto_compression_follows_what_is_installed() -> None:
    opts = S3Options.for_target(TARGET)
    assert pipeline.choose_filters("offsite", opts, {"zstd"}, "nas1").compression == "zstd"
    assert pipeline.choose_filters("offsite", opts, set(), "nas1").compression is None


def test_asked_for_filters_never_fall_back_silently() -> None:
    with pytest.raises(S3UsageError, match="zstd is not installed on nas1"):
        pipeline.choose_filters("offsite", S3Options.for_target(TARGET, compression="zstd"), set(), "nas1")
    with pytest.raises(S3UsageError, match="refusing to upload unencrypted"):
        pipeline.choose_filters("offsite", S3Options.for_target(TARGET, age_recipients=(AGE,)), {"zstd"}, "nas1")


def test_push_command() -> None:
    f = pipeline.Filters("zstd", 3, (AGE,))
    command, stages = pipeline.push_command(["zfs", "send", "tank/a@b"], f, sudo=True)
    assert command == ('{ sudo -n zfs send tank/a@b; echo "zrelay-stage 1 exit $?" >&2; } | '
                       '{ zstd -q -c -3 -T1; echo "zrelay-stage 2 exit $?" >&2; } | '
                       f"age -e -r {AGE}")
    assert stages == ["zfs send", "zstd", "age"] and f.extension == ".zst.age"
    plain, stages = pipeline.push_command(["zfs", "send", "tank/a@b"], pipeline.Filters(), sudo=False)
    assert plain == "zfs send tank/a@b" and stages == ["zfs send"]


def test_restore_command_inverts_the_manifest() -> None:
    m = manifest(snap("a", 1, 1), compression="zstd")
    command, stages = pipeline.restore_command(["zfs", "receive", "-u", "backup/x"], m, None, sudo=False)
    assert command == '{ zstd -q -d -c; echo "zrelay-stage 1 exit $?" >&2; } | zfs receive -u backup/x'
    assert stages == ["zstd -d", "zfs receive"]
    enc = replace(m, encryption={"type": "age", "recipients": [AGE]})
    with pytest.raises(S3UsageError, match="--age-identity"):
        pipeline.restore_command(["zfs", "receive", "backup/x"], enc, None, sudo=False)
    command, stages = pipeline.restore_command(["zfs", "receive", "backup/x"], enc, "/root/key.txt", sudo=True)
    assert command.startswith('{ age -d -i /root/key.txt; echo "zrelay-stage 1 exit $?" >&2; } | ')
    assert command.endswith("| sudo -n zfs receive backup/x")
    assert pipeline.restore_tools(enc) == {"zstd", "age"}


def test_stage_report_read_back_from_a_real_shell() -> None:
    """The guarded pipeline, run by dash: a failing first stage is seen although the last succeeds."""
    from zrelay.zfs import quoting
    line = quoting.guarded_pipeline(["sh", "-c", "echo oops >&2; exit 3"], ["cat"])
    r = subprocess.run(["sh", "-c", line], capture_output=True, text=True)
    assert r.returncode == 0
    report = pipeline.read_stage_report(r.stderr)
    assert report.statuses == {1: 3} and report.text == "oops"
    assert report.failed(["zfs send", "cat"], r.returncode, None) == ["zfs send (exit 3)"]
    assert pipeline.read_stage_report("").failed(["a", "b"], 0, None) == ["a (no exit status: killed)"]
    assert pipeline.read_stage_report("zrelay-stage 1 exit 0\n").failed(["a", "b"], None, "KILL") == \
        ["b (killed by signal KILL)"]


def test_parse_space_and_tools() -> None:
    assert pipeline.parse_space("referenced\t3145728\ncompressratio\t2.00x\n") == int(3145728 * 2 * 1.02) + (1 << 20)
    assert pipeline.parse_space("garbage") is None
    assert shlex.split(pipeline.Filters().extension) == []

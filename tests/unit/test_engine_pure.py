"""Pure parts of the transport, relay and engine: option mapping, blame, stream argv, dry-run simulation."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from zrelay.engine.host_receiver import stream_argvs, stream_labels
from zrelay.plan import with_new_snapshot
from zrelay.paths.progress import Meter
from zrelay.errors import BadStream, DatasetNotFound, OutOfSpace, UsageError
from zrelay.inventory.model import Host
from zrelay.paths.relay import _End, _failure
from zrelay.plan import Plan, PlanKind, SendStep, plan
from zrelay.transport.ssh import connect_options
from zrelay.zfs.model import Capabilities, DatasetState, Snapshot

FUSE = Capabilities.zfs_fuse()
OPENZFS = Capabilities.openzfs("2.3.2")


def snap(ds: str, name: str, guid: int, txg: int) -> Snapshot:
    return Snapshot(ds, name, guid, txg, 1_700_000_000 + txg)


# --- transport ------------------------------------------------------------------


def test_connect_options_verify_host_keys_and_map_ssh_options() -> None:
    host = Host(name="nas1", address="192.0.2.1", port=2222, user="backup", identity_file="/k",
                known_hosts="/kh", ssh_options={"ConnectTimeout": "5", "Ciphers": "aes128-gcm@openssh.com,aes256-ctr",
                                                "ForwardAgent": "yes"})
    opts = connect_options(host)
    assert opts["host"] == "192.0.2.1" and opts["port"] == 2222 and opts["username"] == "backup"
    assert opts["client_keys"] == ["/k"] and opts["known_hosts"] == "/kh"
    assert opts["connect_timeout"] == 5.0
    assert opts["encryption_algs"] == "aes128-gcm@openssh.com,aes256-ctr"  # asyncssh reads OpenSSH's list
    assert opts["agent_forwarding"] is True


def test_connect_options_default_known_hosts_is_never_disabled() -> None:
    opts = connect_options(Host(name="h", address="192.0.2.1"))
    # Not passing known_hosts lets asyncssh use ~/.ssh/known_hosts; None would disable checking.
    assert "known_hosts" not in opts


def test_unknown_ssh_option_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="StrictHostKeyChecking"):
        connect_options(Host(name="h", address="192.0.2.1", ssh_options={"StrictHostKeyChecking": "no"}))


# --- relay blame -----------------------------------------------------------------

SRC, DST = SimpleNamespace(name="nas1"), SimpleNamespace(name="vault")


def end(status: int | None, stderr: str = "", signal: str | None = None) -> _End:
    return _End(bytearray(stderr.encode()), exit_status=status, exit_signal=signal)


def test_receiver_error_reported_first_when_sender_died_of_broken_pipe() -> None:
    exc = _failure(SRC, DST, end(None), end(1, "cannot receive new filesystem stream: out of space"), "backup/x", 10)
    assert exc.failed_host == "vault"
    assert isinstance(exc.cause, OutOfSpace)
    assert str(exc).startswith("vault:")


def test_killed_sender_is_mentioned_after_the_receiver() -> None:
    exc = _failure(SRC, DST, _End(bytearray(), exit_signal="KILL", program="zfs send"),
                   end(1, "cannot receive incremental stream: invalid backup stream"), "backup/x", 1000)
    assert exc.failed_host == "vault" and isinstance(exc.cause, BadStream)
    assert "; zfs send on nas1 was killed (signal KILL)" in str(exc)
    assert exc.sender_note == "zfs send on nas1 was killed (signal KILL)"


def test_sender_failing_on_its_own_is_blamed() -> None:
    exc = _failure(SRC, DST, end(1, "cannot open 'tank/x@gone': dataset does not exist"),
                   end(1, "cannot receive: failed to read from stream"), "backup/x", 0)
    assert exc.failed_host == "nas1" and isinstance(exc.cause, DatasetNotFound)
    assert "zfs receive on vault" in str(exc)


def test_sender_failure_with_clean_receiver() -> None:
    exc = _failure(SRC, DST, end(2, "internal error"), end(0), None, 0)
    assert exc.failed_host == "nas1"


# --- engine: plan → commands ----------------------------------------------------------


def test_stream_argvs_full_then_incremental_on_zfs_fuse() -> None:
    a, b, c = snap("tank/d", "a", 1, 1), snap("tank/d", "b", 2, 2), snap("tank/d", "c", 3, 3)
    p = plan(DatasetState("tank/d", snapshots=(a, b, c)), DatasetState.absent("backup/d"))
    argvs = stream_argvs(p, FUSE, FUSE)
    assert argvs[0] == (["zfs", "send", "tank/d@a"], ["zfs", "receive", "-u", "backup/d"])
    assert argvs[1] == (["zfs", "send", "-I", "tank/d@a", "tank/d@c"], ["zfs", "receive", "-u", "backup/d"])
    assert stream_labels(p) == ["tank/d@a (full)", "tank/d@a → @c (-I)"]


def test_stream_argvs_resumable_receive_and_resume_on_openzfs() -> None:
    p = Plan(PlanKind.RESUME, "tank/d", "backup/d", resume_token="1-abc-def")
    assert stream_argvs(p, OPENZFS, OPENZFS) == [
        (["zfs", "send", "-t", "1-abc-def"], ["zfs", "receive", "-s", "-u", "backup/d"])]
    a, b = snap("tank/d", "a", 1, 1), snap("tank/d", "b", 2, 2)
    p2 = Plan(PlanKind.INCREMENTAL, "tank/d", "backup/d", steps=(SendStep(b, a),), base=a)
    assert stream_argvs(p2, OPENZFS, OPENZFS)[0][1] == ["zfs", "receive", "-s", "-u", "backup/d"]


def test_force_receive_is_the_planners_decision_and_said_in_its_reason() -> None:
    a, b = snap("tank/d", "a", 1, 1), snap("tank/d", "b", 2, 2)
    source = DatasetState("tank/d", snapshots=(a, b))
    target = DatasetState("backup/d", snapshots=(snap("backup/d", "a", 1, 5),))
    forced = plan(source, target, rollback=True)
    assert forced.force_receive and "`zfs receive -F`" in forced.reason
    assert "-F" in stream_argvs(forced, FUSE, FUSE)[0][1]   # discards changes since @a
    plain = plan(source, target)
    assert not plain.force_receive and "-F" not in plain.reason
    assert "-F" not in stream_argvs(plain, FUSE, FUSE)[0][1]
    full = plan(source, DatasetState.absent("backup/d"), rollback=True)
    assert not full.force_receive and "-F" not in stream_argvs(full, FUSE, FUSE)[0][1]
    # the argvs follow the plan, not a flag below it
    assert "-F" in stream_argvs(replace(plain, force_receive=True), FUSE, FUSE)[0][1]


def test_dry_run_simulates_the_new_snapshot_everywhere() -> None:
    states = {"tank/d": DatasetState("tank/d", snapshots=(snap("tank/d", "a", 1, 7),)),
              "tank/d/c": DatasetState("tank/d/c"), "tank/gone": DatasetState.absent("tank/gone")}
    out = with_new_snapshot(states, "zrelay_new", 0)
    assert [s.name for s in out["tank/d"].snapshots] == ["a", "zrelay_new"]
    assert out["tank/d"].newest.createtxg == 8
    assert [s.name for s in out["tank/d/c"].snapshots] == ["zrelay_new"]
    assert not out["tank/gone"].exists
    assert out["tank/d"].newest.guid not in {1}


def test_meter_throttles_progress_events(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("zrelay.paths.progress.time.monotonic", lambda: clock[0])
    reports: list[tuple[int, float]] = []
    meter = Meter(lambda done, rate: reports.append((done, rate)))
    for _ in range(100):  # 100 chunks within 0.1 s: no report yet
        clock[0] += 0.001
        meter.add(1000)
    assert reports == []
    clock[0] += 0.2
    meter.add(1000)
    assert len(reports) == 1 and reports[0][0] == 101_000 and reports[0][1] > 0
    meter.flush()
    assert reports[-1][0] == 101_000


# --- encryption: raw by default, refused where an end cannot do raw ----------------------------


def _encrypted_full() -> Plan:
    a = snap("tank/secret", "e1", 1, 1)
    return plan(DatasetState("tank/secret", snapshots=(a,), encrypted=True), DatasetState.absent("backup/secret"))


def test_encrypted_plan_is_sent_raw_without_stream_options() -> None:
    oz = Capabilities.openzfs("2.3.2")
    p = _encrypted_full()
    send, _ = stream_argvs(p, oz, oz, raw=True, send_options=("large_blocks", "compressed"))[0]
    assert send == ["zfs", "send", "-w", "tank/secret@e1"]


def test_encrypted_send_refused_when_target_cannot_receive_raw() -> None:
    # a zfs-fuse target next to an OpenZFS source needs both lab tiers in one run, which the lab does
    # not offer; the refusal itself is pure logic
    from zrelay.engine.host_receiver import encryption_refusal

    oz = Capabilities.openzfs("2.3.2")
    text = encryption_refusal([_encrypted_full()], ("nas1", oz), ("vault", FUSE), decrypt=False)
    assert text is not None
    assert "vault cannot do raw sends" in text and "--decrypt" in text and "UNENCRYPTED" in text
    assert encryption_refusal([_encrypted_full()], ("nas1", oz), ("vault", FUSE), decrypt=True) is None
    assert encryption_refusal([_encrypted_full()], ("nas1", oz), ("vault", oz), decrypt=False) is None


# --- shared listings ------------------------------------------------------------------------


def test_shared_listings_only_for_parents_wanted_three_times() -> None:
    from zrelay.engine import shared_listings

    wanted = ["tank/vm/a", "tank/vm/b", "tank/vm/c", "tank/home", "tank/db/x", "tank/db/y", "tank"]
    assert shared_listings(wanted) == {"tank/vm/a": "tank/vm", "tank/vm/b": "tank/vm", "tank/vm/c": "tank/vm"}
    assert shared_listings(["tank/a", "tank/b", "tank/c"]) == {f"tank/{x}": "tank" for x in "abc"}
    assert shared_listings(["tank/a", "tank/b"]) == {}

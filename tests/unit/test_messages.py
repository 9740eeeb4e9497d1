"""What zrelay says when something is refused or goes wrong: where (host:dataset), which
process on which host, and why, after a look at the target rather than zfs's guess."""

from __future__ import annotations

import zlib
from types import SimpleNamespace

from zrelay.engine.host_receiver import refusal
from zrelay.errors import (AuthFailed, BadStream, HostsUnreachable, HostUnreachable, OutOfSpace,
                           TransportError)
from zrelay.paths.direct import _failure as direct_failure
from zrelay.errors import TransferFailed
from zrelay.paths.relay import _End, _failure as relay_failure
from zrelay.plan import PlanKind, describe, plan
from zrelay.transport.ssh import _Handshake
from zrelay.zfs import direct_ssh, parse, stream_filters
from zrelay.zfs.model import DatasetState, Snapshot


def snaps(ds: str, spec: str, foreign: str = "") -> DatasetState:
    """``"a b"``: snapshots with GUIDs from their names; names in ``foreign`` get GUIDs of their own."""
    out = []
    for i, name in enumerate(spec.split()):
        guid = zlib.crc32((name + ("!" + ds if name in foreign.split() else "")).encode())
        out.append(Snapshot(ds, name, guid, createtxg=10 * (i + 1)))
    return DatasetState(ds, snapshots=tuple(out))


# --- planner: both ends named with their hosts -----------------------------------------------------


def test_diverged_names_both_hosts_when_the_paths_are_equal() -> None:
    p = plan(snaps("tank/x", "a b"), snaps("tank/x", "a local", foreign="local"),
             source_host="nas1", target_host="vault")
    assert p.kind is PlanKind.DIVERGED
    assert p.reason.startswith("vault:tank/x has diverged from nas1:tank/x (@local after"), p.reason
    assert any("on vault:tank/x yourself" in o for o in p.options), p.options
    assert describe(p) == "diverged vault:tank/x: @local (refused)"
    # the refusal line names the target once, not "diverged: tank/x: tank/x has diverged from tank/x"
    assert refusal([p]).startswith("diverged: vault:tank/x has diverged from nas1:tank/x"), refusal([p])
    assert p.source == "tank/x" and p.target == "tank/x"   # datasets stay bare for commands


def test_no_common_base_names_hosts_and_where_to_run_the_command() -> None:
    p = plan(snaps("tank/x", "a"), snaps("backup/x", "other", foreign="other"),
             source_host="nas1", target_host="vault")
    assert p.kind is PlanKind.NO_COMMON_BASE
    assert p.reason.startswith("vault:backup/x exists but shares no snapshot with nas1:tank/x"), p.reason
    assert "(`zfs destroy -r backup/x` on vault)" in p.options[0], p.options
    assert describe(p) == "no common base nas1:tank/x → vault:backup/x (refused)"


def test_rename_advice_runs_on_the_target_host() -> None:
    # @b on the target reuses a source name with another GUID, at the base: rollback cannot fix it
    p = plan(snaps("tank/x", "a b c"), snaps("tank/x", "a b", foreign="a"),
             source_host="nas1", target_host="nas2")
    assert p.kind is PlanKind.DIVERGED
    assert any("`zfs rename tank/x@a tank/x@a-old` on nas2" in o for o in p.options), p.options


def test_plans_without_hosts_read_as_before() -> None:
    p = plan(snaps("tank/x", "a b"), snaps("backup/x", "a"))
    assert p.reason.startswith("backup/x is 1 snapshot behind tank/x@b"), p.reason
    assert describe(p) == "incremental tank/x@a → @b (-i, 1 snapshot)"


def test_full_and_incremental_texts_name_hosts() -> None:
    full = plan(snaps("tank/x", "a"), DatasetState.absent("backup/x"), source_host="nas1", target_host="vault")
    assert full.reason == "vault:backup/x does not exist: one full send of nas1:tank/x@a."
    assert describe(full) == "full nas1:tank/x@a → vault:backup/x (1 snapshot)"


# --- unreachable hosts: every one named ------------------------------------------------------------


def test_several_unreachable_hosts_are_one_error_naming_each() -> None:
    exc = HostsUnreachable([HostUnreachable("nas1", "cannot connect to 127.0.0.2:22: refused"),
                            AuthFailed("vault", "authentication refused for root@127.0.0.4")])
    assert isinstance(exc, TransportError) and exc.host == "nas1" and exc.hosts == ["nas1", "vault"]
    assert str(exc) == ("nas1: cannot connect to 127.0.0.2:22: refused; "
                        "vault: authentication refused for root@127.0.0.4")


def test_timeout_message_tells_how_far_the_connection_got() -> None:
    watch = _Handshake()
    assert watch.timeout_message("127.0.0.9:22", 15.0) == "cannot connect to 127.0.0.9:22: no answer within 15 s"
    watch.conn = SimpleNamespace(get_extra_info=lambda key: None)  # TCP up, nothing said
    assert watch.timeout_message("127.0.0.9:2222", 2.0).startswith("no SSH banner from 127.0.0.9:2222 within 2 s")
    watch.conn = SimpleNamespace(get_extra_info=lambda key: "SSH-2.0-OpenSSH_9.2")
    assert watch.timeout_message("h:22", 5) == "the SSH handshake with h:22 did not finish within 5 s"


# --- which process, on which host ------------------------------------------------------------------


def test_process_end_in_words() -> None:
    assert parse.process_end("zfs send", "nas1", None, "KILL") == "zfs send on nas1 was killed (signal KILL)"
    assert parse.process_end("zfs send", "nas1", 137, shell_status=True) == \
        "zfs send on nas1 was killed (signal KILL)"
    assert parse.process_end("zstd", "nas1", 143, shell_status=True) == "zstd on nas1 was killed (signal TERM)"
    assert parse.process_end("zfs send", "nas1", 1) == "zfs send on nas1 exited with status 1"
    assert parse.process_end("zfs send", "nas1", None).startswith("zfs send on nas1 ended without an exit status")


def test_stage_programs_of_a_direct_pipeline() -> None:
    pipeline = direct_ssh.wire_direct_pipeline(
        ["zfs", "send", "tank/x@a"], ["ssh", "-l", "root", "127.0.0.4"],
        stream_filters.wire_receive_command(["zfs", "receive", "-u", "backup/x"], compress="zstd",
                                      first_stage=direct_ssh.TARGET_STAGE_BASE),
        progress=True, compress="zstd", sudo=True)
    programs = parse.stage_programs(pipeline)
    assert programs[1] == "zfs send" and programs[2] == "pv" and programs[3] == "zstd"
    assert programs[direct_ssh.TARGET_STAGE_BASE] == "zstd"


SRC, DST = SimpleNamespace(name="nas1"), SimpleNamespace(name="vault")
DIRECT = direct_ssh.direct_pipeline(["zfs", "send", "tank/x@a"], ["ssh", "127.0.0.4"], "zfs receive -u backup/x",
                                  progress=True)


def test_direct_killed_send_whose_stream_still_arrived() -> None:
    # zfs-fuse: the daemon finishes the stream, ssh (the receive) exits 0, the shell says "Killed"
    exc = direct_failure(SRC, "vault", DIRECT, {1: 137, 2: 0}, 0, None, "Killed", "backup/x")
    assert str(exc) == "zfs send on nas1 was killed (signal KILL)"
    assert exc.failed_host == "nas1" and exc.sender_note == str(exc)


def test_direct_killed_send_and_the_receive_it_broke() -> None:
    exc = direct_failure(SRC, "vault", DIRECT, {1: 137, 2: 0}, 1,
                         None, "Killed\ncannot receive new filesystem stream: invalid backup stream", "backup/x")
    assert exc.failed_host == "vault" and isinstance(exc.cause, BadStream)
    assert str(exc).startswith("vault: cannot receive new filesystem stream: invalid backup stream (")
    assert str(exc).endswith("; zfs send on nas1 was killed (signal KILL)")
    assert "Killed" not in str(exc).split(";")[0]


def test_direct_failed_pv_is_named() -> None:
    exc = direct_failure(SRC, "vault", DIRECT, {1: 0, 2: 1}, 0, None, "", "backup/x")
    assert str(exc) == "pv on nas1 exited with status 1"


def test_relay_sender_note_and_broken_pipe_silence() -> None:
    killed = relay_failure(SRC, DST, _End(bytearray(), exit_signal="KILL", program="zfs send"),
                           _End(bytearray(), exit_status=0, program="zfs receive"), "backup/x", 100)
    assert killed.failed_host == "nas1" and str(killed) == "zfs send on nas1 was killed (signal KILL)"
    assert killed.sender_note == str(killed)
    piped = relay_failure(SRC, DST, _End(bytearray(), exit_signal="PIPE", program="zfs send"),
                          _End(bytearray(b"cannot receive: out of space\n"), exit_status=1, program="zfs receive"),
                          "backup/x", 100)
    assert isinstance(piped.cause, OutOfSpace) and "PIPE" not in str(piped) and piped.sender_note is None


def test_relay_shell_report_of_a_killed_sender() -> None:
    end = _End(bytearray(b"Killed\n"), exit_status=137, program="zfs send")
    end.settle("zfs send tank/x@a")
    assert end.describe("nas1") == "zfs send on nas1 was killed (signal KILL)" and end.text == ""
    plain = _End(bytearray(b"cannot open 'tank/x@a'\n"), exit_status=1, program="zfs send")
    plain.settle("zfs send tank/x@a")
    assert plain.describe("nas1") == "zfs send on nas1 exited with status 1"


# --- why a receive failed, from a look at the target ---------------------------------------------------


def test_receive_failure_hint_snapshot_taken_meanwhile() -> None:
    source = snaps("tank/x", "a b")
    after = snaps("backup/x", "a meanwhile", foreign="meanwhile")
    base = source.snapshots[0].guid
    hint = parse.receive_failure_hint("vault:backup/x", after, base, [s.guid for s in source.snapshots])
    assert hint is not None and hint.startswith(
        "not a transfer fault: @meanwhile was taken on vault:backup/x while the stream was being received")
    assert "unchanged" in hint and "--rollback" in hint


def test_receive_failure_hint_resumable_partial_receive() -> None:
    after = DatasetState("backup/x", snapshots=snaps("backup/x", "a").snapshots, resume_token="1-abc-def")
    hint = parse.receive_failure_hint("vault:backup/x", after, None, [])
    assert hint == "the partial receive is kept on vault:backup/x (receive_resume_token): the next sync resumes from it"


def test_receive_failure_hint_nothing_new() -> None:
    source = snaps("tank/x", "a b")
    after = snaps("backup/x", "a")
    assert parse.receive_failure_hint("vault:backup/x", after, source.snapshots[0].guid,
                                      [s.guid for s in source.snapshots]) is None


def test_reglossed_failure_keeps_the_rest_of_its_story() -> None:
    cause = BadStream("vault", "cannot receive incremental stream: invalid backup stream", "backup/x", 1)
    exc = TransferFailed(f"{cause}; zfs send on nas1 was killed (signal PIPE)", "vault", cause)
    new = exc.reglossed("not a transfer fault: @m was taken on vault:backup/x …")
    assert str(new) == ("vault: cannot receive incremental stream: invalid backup stream "
                        "(not a transfer fault: @m was taken on vault:backup/x …); "
                        "zfs send on nas1 was killed (signal PIPE)")
    assert isinstance(new.cause, BadStream) and new.failed_host == "vault"
    assert "truncated or corrupted" in str(cause)   # the class's own guess, where nothing was looked at

"""Integration tests clean up the lab datasets they create: the lab pools are small (4 GiB)."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

#: Modules that test zrelay's own behaviour (locks, signals, output, the README, ssh options, the
#: install, S3 chain rules): the ZFS flavour does not enter into it, so they run on the fuse tier
#: only. On the OpenZFS tier (qemu guests under TCG, several times slower) they would only repeat
#: the same checks; what differs by flavour is tested there (tests/openzfs and the other modules).
FUSE_TIER_ONLY = frozenset({"test_install", "test_readme", "test_locks", "test_signals", "test_pipe_output",
                            "test_ssh_options", "test_s3_restore_newest", "test_systemd_unit",
                            "test_daemon_budgets",  # the N-host lab is zfs-fuse only
                            # the inventory and its errors: no ZFS at all
                            "test_cli_inventory", "test_cli_errors",
                            # rows, schema, text and the store: the listings they read are parsed from
                            # both dialects' transcripts in tests/unit; tests/openzfs/test_status_written
                            "test_status", "test_status_s3", "test_status_refused",
                            # schedules, hooks and policies: tests/openzfs/test_lifecycle_openzfs covers
                            # what OpenZFS adds (holds, bookmarks, batched destroys)
                            "test_lifecycle",
                            # coverage and RPO rules over `zfs list -t filesystem,volume`, which both
                            # dialects answer alike (nas2 and vault share one guest on that tier)
                            "test_audit",
                            # the TUI attached to the daemon: what it shows, not how ZFS answers
                            "test_daemon_tui",
                            # which datasets a job covers is decided by zrelay (selection.py) over
                            # `zfs list` and a user property, which both dialects answer alike
                            "test_exclude",
                            # the limiter is zrelay's own (relay, S3) or pv/mbuffer on the source
                            # (direct): the same programs on both tiers
                            "test_bandwidth",
                            # the bucket's side: what S3 lists and retains, whatever sent the stream
                            "test_s3_cost", "test_s3_object_lock",
                            # the daemon's cached listings and plans: zrelay's own, over either dialect
                            "test_cycle_memo",
                            # restore drills and resumed S3 uploads pass on the OpenZFS guests too
                            # (run there by hand), but cost 17 minutes of the VM tier's time there
                            "test_drill", "test_s3_resume",
                            # drills of a damaged replica, of a recursive job's tree and from the daemon:
                            # zrelay's comparisons and bookkeeping over the same commands
                            # (tests/openzfs/test_drill_volume covers what only OpenZFS has)
                            "test_drill_mismatch", "test_drill_recursive", "test_drill_daemon"})

#: Single tests of mixed modules that are zrelay's own behaviour too (S3 failure handling and
#: refusals, host keys, logins, quoting of inventory values, connection sharing, Ctrl-C): the
#: same modules' replication tests still run on both tiers.
FUSE_TIER_ONLY_TESTS = frozenset({
    # the daemon's loop, signals, locks and retries do not depend on the ZFS flavour; its cycles and a
    # SIGTERM mid-stream (resumable on OpenZFS) run on both tiers
    "test_daemon.py::test_run_now_and_sighup_with_a_broken_inventory",
    "test_daemon.py::test_a_manual_sync_waits_for_the_scheduled_one",
    "test_daemon.py::test_a_host_that_is_down_is_retried_without_blocking_the_others",
    "test_s3.py::test_killed_push_leaves_no_object_and_a_stale_upload",
    "test_s3.py::test_interrupted_push_aborts_its_upload",
    "test_s3.py::test_restarting_the_s3_server_mid_upload",
    "test_s3.py::test_damaged_object_fails_verify_and_restore_naming_it",
    "test_s3.py::test_missing_middle_incremental_breaks_the_chain_and_prune_refuses",
    "test_s3.py::test_prune_deletes_old_chains_newest_sends_first",
    "test_s3.py::test_stream_larger_than_max_is_refused_before_upload",
    "test_s3.py::test_stream_split_over_several_objects",
    "test_s3.py::test_errors_are_one_line",
    "test_sync.py::test_wrong_host_key_refused",
    "test_sync.py::test_auth_failure_named",
    "test_sync.py::test_injection_in_inventory_rejected",
    "test_sync.py::test_one_host_down_others_complete",
    "test_sync.py::test_ctrl_c_stops_cleanly_and_target_is_unchanged",
    "test_sync.py::test_many_jobs_share_one_connection_per_host_within_max_sessions",
    "test_stream_faults.py::test_dry_run_after_connection_failures_names_every_host",
    "test_stream_faults.py::test_dry_run_of_an_unreachable_host_is_not_nothing_to_do",
    "test_stream_faults.py::test_port_that_never_speaks_ssh_is_not_cannot_connect",
    "test_stream_faults.py::test_refusals_name_the_hosts_when_both_paths_are_the_same",
    "test_direct.py::test_direct_refused_before_sending_without_agent_or_key",
    "test_direct.py::test_direct_refused_when_source_does_not_know_the_target_key",
    "test_direct.py::test_direct_ciphers_setting_is_passed_to_the_source_ssh",
    "test_direct.py::test_direct_with_a_key_on_the_source_via_inventory",
    # planning and fan-out: the same sends on both tiers; OpenZFS runs its recursive, stepwise and
    # concurrent cases through test_dry_run_is_what_runs and tests/openzfs
    "test_sync.py::test_recursive_job_with_children",
    "test_sync.py::test_two_targets_for_one_source",
    "test_sync.py::test_third_host_push_concurrent",
    "test_sync.py::test_snapshot_option_and_prefix_filter_stepwise",
    "test_sync.py::test_space_in_names_quoted_safely",
    "test_dry_run_is_what_runs.py::test_stepwise_incremental_around_an_unselected_snapshot",
    # the basic sync cycle, a killed send, a refused divergence and the forwarded agent: their
    # OpenZFS sides (resume tokens, -F, the guests' ssh) run in test_dry_run_is_what_runs and
    # tests/openzfs (test_features, test_stream_faults_openzfs)
    "test_sync.py::test_full_then_incremental_then_noop",
    "test_sync.py::test_killed_send_leaves_target_unchanged_and_next_sync_works",
    "test_sync.py::test_diverged_target_refused_then_rollback",
    "test_direct.py::test_direct_with_forwarded_agent_full_and_incremental",
    # S3 pushes and restores of OpenZFS streams run in tests/openzfs/test_s3_openzfs.py (anchored
    # chain restored whole, raw encrypted restore); the chain walk itself is zrelay's own
    "test_s3.py::test_push_full_and_incrementals_then_restore_identical",
    "test_s3.py::test_restore_an_older_snapshot_then_continue",
    # exit statuses of a pipeline and the host tools around zfs (zstd, age, mbuffer)
    "test_stream_faults.py::test_stream_that_arrived_is_a_success_though_its_sender_died",
    "test_s3.py::test_zstd_and_age_filters_on_the_hosts",
    "test_wire.py::test_relay_with_zstd_and_mbuffer_full_and_incremental",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("ZRELAY_LAB") != "openzfs":
        return
    skip = pytest.mark.skip(reason="zrelay's own behaviour, independent of the ZFS flavour: run on the fuse tier")
    seen: set[str] = set()
    modules: set[str] = set()
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        test = f"{module}.py::{getattr(item, 'originalname', item.name)}"
        seen.add(test)
        modules.add(module)
        if module in FUSE_TIER_ONLY or test in FUSE_TIER_ONLY_TESTS:
            item.add_marker(skip)
    stale = sorted(t for t in FUSE_TIER_ONLY_TESTS if t.split(".py::")[0] in modules and t not in seen)
    if stale:   # a renamed test would otherwise quietly run on both tiers again
        raise pytest.UsageError(f"FUSE_TIER_ONLY_TESTS names tests that do not exist: {', '.join(stale)}")


@pytest.fixture(autouse=True)
def _destroy_test_datasets(request: pytest.FixtureRequest) -> Iterator[None]:
    if "lab" not in request.fixturenames:
        yield
        return
    lab = request.getfixturevalue("lab")
    before = set(lab._issued)
    yield
    names = set(lab._issued) - before
    if not names:
        return
    # one listing per machine: on the OpenZFS tier nas2 and vault are pools of the same guest
    by_machine: dict[str, str] = {}
    for host in lab.hosts:
        by_machine.setdefault(lab.machines[host], host)
    for host in by_machine.values():
        listing = lab.run(host, "zfs", "list", "-H", "-o", "name", check=False).stdout.splitlines()
        doomed = [ds for ds in listing if any(n in ds.split("/")[-1] for n in names)]
        for ds in sorted(doomed, key=len):
            if not any(ds.startswith(d + "/") for d in doomed if d != ds):
                try:
                    lab.destroy(host, ds)
                except Exception as exc:  # cleanup must not hide the test's own result
                    print(f"cleanup: {host}:{ds}: {exc}")

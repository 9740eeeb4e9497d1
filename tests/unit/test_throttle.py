"""Bandwidth limits: which limit a stream gets, how budget groups are shared, the token bucket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from zrelay.errors import InventoryError, TransferFailed
from zrelay.inventory import load_inventory
from zrelay.paths import throttle
from zrelay.paths.throttle import Gate, Limit, Metering, Registry, Throttle, fair_shares, stream_limit
from zrelay.zfs import direct_ssh, stream_filters

MiB = 1 << 20

INVENTORY = """\
all:
  children:
    branch:
      vars: {bandwidth: 30M}
      hosts:
        nas1: {address: 192.0.2.10, bandwidth: 10MiB/s}
        nas3: {address: 192.0.2.13}
    dc:
      hosts:
        nas2: {address: 192.0.2.11}
        vault: {address: 192.0.2.20, bandwidth: 4M}
zrelay:
  bandwidth_groups: {branch: 20M}
  s3_targets:
    offsite: {bucket: backups, bandwidth: 5M}
  jobs:
    - source: nas1:tank/a
      bandwidth: 50M
      targets: [nas2:tank/a, vault:backup/a, s3:offsite]
    - source: nas2:tank/b
      targets: [vault:backup/b, s3:offsite]
    - source: nas3:tank/c
      bandwidth: 1.5M
      targets: [nas2:tank/c]
"""


@pytest.fixture
def inventory(tmp_path: Path):
    path = tmp_path / "inv.yml"
    path.write_text(INVENTORY)
    return load_inventory(path)


# --------------------------------------------------------------------------- inventory keys


def test_the_keys_are_read_in_binary_units(inventory) -> None:
    assert inventory.hosts["nas1"].bandwidth == 10 * MiB          # the host's own wins over its group's
    assert inventory.hosts["nas3"].bandwidth == 30 * MiB          # a group variable, per host
    assert inventory.hosts["nas2"].bandwidth is None
    assert inventory.jobs[0].bandwidth == 50 * MiB
    assert inventory.jobs[2].bandwidth == int(1.5 * MiB)
    assert inventory.s3_targets["offsite"].bandwidth == 5 * MiB
    assert inventory.settings.bandwidth_groups == {"branch": 20 * MiB}


@pytest.mark.parametrize("where, value, message", [
    ("job", "fast", "4:18: bandwidth: expected a rate in bytes per second like 50M or 1.5G, got 'fast'"),
    ("job", "0", "4:18: bandwidth: 0 is below the smallest limit, 1K"),
    ("job", "true", "4:18: bandwidth: expected a rate in bytes per second like 50M or 1.5G, got the boolean"),
    ("group", "{nope: 20M}", "2:22: bandwidth_groups: unknown group 'nope'"),
    ("group", "{nas: 2X}", "2:27: bandwidth_groups.nas: expected a rate"),
    ("host", "-5", "bandwidth: -5 is below the smallest limit"),
    ("s3", "lots", "bandwidth: expected a rate in bytes per second"),
])
def test_bad_values_name_file_line_and_column(tmp_path: Path, where: str, value: str, message: str) -> None:
    host_var = f", bandwidth: {value}" if where == "host" else ""
    s3_var = f", bandwidth: {value}" if where == "s3" else ""
    groups = f"\n  bandwidth_groups: {value}" if where == "group" else ""
    job_var = f"\n      bandwidth: {value}" if where == "job" else ""
    text = (f"zrelay:{groups}\n  jobs:\n    - source: nas1:tank/a{job_var}\n"
            f"      targets: [nas2:tank/a]\n"
            f"  s3_targets:\n    offsite: {{bucket: backups{s3_var}}}\n"
            f"all:\n  children:\n    nas:\n      hosts:\n        nas1: {{address: 192.0.2.10{host_var}}}\n"
            f"        nas2: {{address: 192.0.2.11}}\n")
    path = tmp_path / "inv.yml"
    path.write_text(text)
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert message in str(info.value)
    assert str(info.value).startswith(str(path) + ":")


# --------------------------------------------------------------------------- which limit


def test_the_smallest_limit_applies_and_says_who_set_it(inventory) -> None:
    job_a, job_b, job_c = inventory.jobs
    offsite = inventory.s3_targets["offsite"]
    a_nas2 = stream_limit(inventory, job=job_a, source="nas1", target="nas2")
    assert (a_nas2.rate, a_nas2.by) == (10 * MiB, "source host nas1")
    assert a_nas2.groups == (("branch", 20 * MiB),)
    assert stream_limit(inventory, job=job_a, source="nas1", target="vault").by == "target host vault"
    assert stream_limit(inventory, job=job_a, source="nas1", s3=offsite).rate == 5 * MiB
    b = stream_limit(inventory, job=job_b, source="nas2", target="vault")
    assert (b.rate, b.groups) == (4 * MiB, ())                    # no host of the budget group
    assert stream_limit(inventory, job=job_c, source="nas3", target="nas2").by == "job"
    restore = stream_limit(inventory, target="nas2", s3=offsite)
    assert (restore.rate, restore.by) == (5 * MiB, "S3 target offsite")
    assert stream_limit(inventory, source="nas2", target="nas2") == throttle.NONE


def test_the_dry_run_text_names_every_limit() -> None:
    limit = Limit(10 * MiB, "source host nas1", (("branch", 20 * MiB),))
    assert limit.alone == 10 * MiB
    assert limit.describe() == "bandwidth 10.0 MiB/s (source host nas1 10.0 MiB/s; group branch 20.0 MiB/s shared)"
    assert Limit(None, "", (("branch", 20 * MiB),)).describe() == "bandwidth 20.0 MiB/s (group branch 20.0 MiB/s shared)"
    assert throttle.NONE.describe() == "" and throttle.NONE.alone is None


# --------------------------------------------------------------------------- sharing budgets


def test_a_budget_is_divided_equally_among_uncapped_streams() -> None:
    shares = fair_shares({1: (None, ["g"]), 2: (None, ["g"]), 3: (None, ["g"]), 4: (None, [])}, {"g": 30.0})
    assert shares == {1: pytest.approx(10.0), 2: pytest.approx(10.0), 3: pytest.approx(10.0), 4: None}


def test_a_capped_stream_leaves_the_rest_of_its_share_to_the_others() -> None:
    shares = fair_shares({1: (4.0, ["g"]), 2: (None, ["g"]), 3: (None, ["g"])}, {"g": 30.0})
    assert shares[1] == pytest.approx(4.0)
    assert shares[2] == pytest.approx(13.0) and shares[3] == pytest.approx(13.0)


def test_a_stream_in_two_groups_gets_the_smaller_share_and_the_other_group_uses_the_rest() -> None:
    # stream 1 touches both groups; group a is crowded, so b's other stream gets what 1 cannot use
    shares = fair_shares({1: (None, ["a", "b"]), 2: (None, ["a"]), 3: (None, ["a"]), 4: (None, ["b"])},
                         {"a": 30.0, "b": 40.0})
    assert shares[1] == pytest.approx(10.0)
    assert shares[4] == pytest.approx(30.0)
    assert sum(shares[k] for k in (1, 2, 3)) == pytest.approx(30.0)


def test_fixed_direct_streams_come_off_the_budget_but_never_starve_the_others() -> None:
    shares = fair_shares({1: (None, ["g"]), 2: (None, ["g"])}, {"g": 30.0}, fixed={1: 10.0})
    assert 1 not in shares and shares[2] == pytest.approx(20.0)
    # a direct stream that started alone holds the whole budget: the next one gets an equal share
    shares = fair_shares({1: (None, ["g"]), 2: (None, ["g"])}, {"g": 30.0}, fixed={1: 30.0})
    assert shares[2] == pytest.approx(15.0)


def test_a_stream_never_gets_more_than_its_own_cap() -> None:
    assert fair_shares({1: (5.0, ["g"])}, {"g": 30.0}) == {1: pytest.approx(5.0)}
    assert fair_shares({1: (5.0, [])}, {}) == {1: 5.0}


def test_the_registry_rebalances_running_streams_as_others_start_and_end() -> None:
    async def scenario() -> None:
        registry = Registry()
        limit = Limit(None, "", (("g", 30 * MiB),))
        async with registry.stream(limit) as first:
            assert first.rate == 30 * MiB
            async with registry.stream(limit) as second:
                assert first.rate == second.rate == 15 * MiB
                async with registry.fixed(limit) as direct_rate:
                    assert direct_rate == 10 * MiB            # a third of the budget as it starts
                    assert first.rate == second.rate == 10 * MiB
                    assert registry.running("g") == 3
                assert first.rate == 15 * MiB                 # the direct stream ended
            assert first.rate == 30 * MiB
        assert registry.running("g") == 0
        async with registry.stream(Limit(7 * MiB, "job")) as alone:   # no group: not registered
            assert alone.rate == 7 * MiB and registry.running("g") == 0
    asyncio.run(scenario())


# --------------------------------------------------------------------------- the token bucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_starts_with_one_burst_then_charges_every_byte() -> None:
    clock = Clock()
    bucket = Throttle(float(MiB), clock)
    burst = MiB * throttle.BURST_SECONDS
    assert bucket.spend(int(burst)) == 0.0
    assert bucket.spend(MiB // 2) == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.spend(0) == 0.0
    clock.now += 0.1
    assert bucket.spend(MiB // 10) == pytest.approx(0.0, abs=1e-9)   # 0.1 s earned 0.1 MiB


def test_idle_time_earns_at_most_a_burst() -> None:
    clock = Clock()
    bucket = Throttle(10 * MiB, clock)
    clock.now += 60
    burst = 10 * MiB * throttle.BURST_SECONDS
    assert bucket.spend(int(burst)) == 0.0
    assert bucket.spend(MiB) == pytest.approx(0.1)   # nothing left after one burst


def test_a_rate_change_applies_from_then_on() -> None:
    clock = Clock()
    bucket = Throttle(1000.0, clock)
    bucket.spend(throttle.MIN_BURST + 1000)           # one second in debt at 1000 B/s
    bucket.set_rate(500.0)
    assert bucket.spend(0) == pytest.approx(2.0)      # the same debt takes twice as long


def test_no_rate_means_no_wait() -> None:
    assert Throttle(None).spend(10**12) == 0.0


def test_take_waits_for_the_tokens() -> None:
    slept: list[float] = []

    async def scenario() -> None:
        clock = Clock()
        bucket = Throttle(1000.0, clock)
        bucket.spend(throttle.MIN_BURST)              # the starting burst, spent
        real_sleep = asyncio.sleep

        async def fake_sleep(seconds: float) -> None:
            slept.append(seconds)
            clock.now += seconds
            await real_sleep(0)
        throttle.asyncio.sleep = fake_sleep   # type: ignore[assignment]
        try:
            await bucket.take(2500)
        finally:
            throttle.asyncio.sleep = real_sleep   # type: ignore[assignment]
    asyncio.run(scenario())
    assert sum(slept) == pytest.approx(2.5)


def test_the_gate_resumes_only_when_no_reason_is_left() -> None:
    calls: list[str] = []
    gate = Gate(lambda: calls.append("pause"), lambda: calls.append("resume"))
    gate.close("receiver")
    gate.close("throttle")
    gate.open("receiver")
    assert calls == ["pause"]
    gate.open("throttle")
    gate.open("throttle")
    assert calls == ["pause", "resume"]


def test_metering_pauses_the_channel_until_the_debt_is_paid() -> None:
    calls: list[str] = []

    async def scenario() -> None:
        gate = Gate(lambda: calls.append("pause"), lambda: calls.append("resume"))
        metering = Metering(Throttle(float(MiB)), gate)
        metering.charge(int(MiB * throttle.BURST_SECONDS) + 1024)   # the burst and 1 ms: no pause
        assert calls == []
        metering.charge(MiB // 10)                    # 0.1 s ahead: paused, a timer resumes it
        assert calls == ["pause"]
        await asyncio.sleep(0.3)
        assert calls == ["pause", "resume"]
        metering.stop()
    asyncio.run(scenario())


# --------------------------------------------------------------------------- direct streams


def test_the_direct_limiter_is_what_the_source_has() -> None:
    limit = Limit(20 * MiB, "job")
    assert throttle.direct_limiter(limit, 20 * MiB, "nas1", {"pv", "mbuffer"}) == ["pv", "-q", "-L", "20971520"]
    assert throttle.direct_limiter(limit, 20 * MiB, "nas1", {"mbuffer"}) == ["mbuffer", "-q", "-r", "20971520"]
    assert throttle.direct_limiter(throttle.NONE, None, "nas1", set()) is None
    with pytest.raises(TransferFailed, match="cannot be kept on nas1, which has neither pv nor mbuffer"):
        throttle.direct_limiter(limit, 20 * MiB, "nas1", {"zstd"})


def test_the_limiter_is_the_last_stage_before_ssh() -> None:
    send = ["zfs", "send", "tank/a@1"]
    ssh = direct_ssh.ssh_argv("192.0.2.11")
    limiter = stream_filters.rate_limit_argv("pv", 1024)
    line = direct_ssh.wire_direct_pipeline(send, ssh, "zfs receive -u tank/b", progress=True, compress="zstd",
                                           limiter=limiter)
    stages = line.split(" | ")
    assert "pv -q -L 1024;" in stages[3] and stages[4].startswith("ssh ")
    assert "pv -n -b" in stages[1] and "zstd" in stages[2]
    assert direct_ssh.wire_direct_pipeline(send, ssh, "zfs receive -u tank/b", progress=False) == \
        direct_ssh.direct_pipeline(send, ssh, "zfs receive -u tank/b", progress=False)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_a_rate_limit_argv_takes_positive_whole_bytes(bad: object) -> None:
    with pytest.raises(ValueError):
        stream_filters.rate_limit_argv("pv", bad)   # type: ignore[arg-type]

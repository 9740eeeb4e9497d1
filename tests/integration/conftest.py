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
                            "test_ssh_options", "test_s3_restore_newest"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("ZRELAY_LAB") != "openzfs":
        return
    skip = pytest.mark.skip(reason="zrelay's own behaviour, independent of the ZFS flavour: run on the fuse tier")
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in FUSE_TIER_ONLY:
            item.add_marker(skip)


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

"""Integration tests clean up the lab datasets they create: the lab pools are small (4 GiB)."""

from __future__ import annotations

from typing import Iterator

import pytest


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

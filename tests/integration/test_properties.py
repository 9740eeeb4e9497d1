"""Properties on replicas, against the real lab (either tier).

A replica carries the source's properties (``zfs send -p``: compression, recordsize, user
properties), gets the job's ``set:`` and loses its ``exclude:``, and is never mounted and never
at the source's mountpoint: at receive (``-o``/``-x``) where the target's zfs takes them, else set
and inherited right after the full receive, which the run says in one warning line (zfs-fuse).
A zfs-fuse source sends without ``-p`` (a stopped ``zfs send -p`` leaves its snapshots busy there
until the daemon restarts) and the run says so: its replicas carry no properties of the source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import make_dataset, write, write_inventory, zrelay

pytestmark = pytest.mark.lab


def prop(lab: Any, host: str, dataset: str, name: str) -> tuple[str, str]:
    """(value, source) of one property, as ``zfs get`` says them."""
    value, source = lab.zfs(host, "get", "-H", "-o", "value,source", name, dataset).rstrip("\n").split("\t")
    return value, source


def source_dataset(lab: Any, name: str) -> str:
    """tank/NAME with the properties a replica should carry, its own mountpoint, and a snapshot."""
    src = f"tank/{name}"
    lab.run("nas1", "zfs", "create", "-p", "-o", "compression=gzip", "-o", "recordsize=32K",
            "-o", f"mountpoint=/tank/{name}-mnt", src)
    lab.run("nas1", "zfs", "set", "zrelay-test:tag=x", src)
    lab.run("nas1", "zfs", "set", "zrelay-test:drop=y", src)
    write(lab, "nas1", src, "f0", lab.mib(1))
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_1")
    return src


def send_words(command: str) -> tuple[bool, list[str]]:
    """(whether the send carries -p, its words after the options): OpenZFS adds -L -e -c before."""
    words = command.split()
    at = words.index("send") + 1
    options = []
    while at < len(words) and words[at].startswith("-") and words[at] != "-i":
        options.append(words[at])
        at += 1
    return "-p" in options, words[at:]


def receive_line(commands: list[dict[str, str]], host: str) -> str:
    return next(c["command"] for c in commands if c["host"] == host and "zfs receive" in c["command"])


def test_properties_travel_set_and_exclude_apply_and_replica_stays_unmounted(lab, tmp_path: Path) -> None:
    name = lab.unique()
    src, dst = source_dataset(lab, name), f"backup/{name}"
    inv = write_inventory(tmp_path / "inv.yml", lab, [{
        "source": f"nas1:{src}", "targets": [f"vault:{dst}"],
        "properties": {"set": {"zrelay-test:set": "yes", "atime": "off"}, "exclude": ["zrelay-test:drop"]}}])
    at_receive = lab.capabilities("vault").receive_props
    carried = lab.capabilities("nas1").send_props

    dry = zrelay("sync", "--dry-run", "--json", inventory=inv)
    assert dry.returncode == 0, dry.stderr
    commands = json.loads(dry.stdout)[0]["commands"]
    assert send_words(commands[0]["command"]) == (carried, [f"{src}@zrelay_1"])
    recv = receive_line(commands, "vault")
    lines = [c["command"] for c in commands if c["host"] == "vault"]
    safe = ["mountpoint", "sharenfs", "sharesmb"] if carried else []
    if at_receive:
        assert (f"-u -o canmount=noauto -o zrelay-test:set=yes -o atime=off {''.join(f'-x {n} ' for n in safe)}"
                f"-x zrelay-test:drop {dst}") in recv, recv
        assert not any(line.startswith(("zfs set", "zfs inherit")) for line in lines), lines
    else:   # zfs-fuse: no receive -o/-x, so the same right after the full receive
        assert recv.endswith(f"zfs receive -u {dst}"), recv
        want = [f"zfs set canmount=noauto {dst}", *(f"zfs inherit {n} {dst}" for n in safe),
                f"zfs inherit zrelay-test:drop {dst}", f"zfs set zrelay-test:set=yes {dst}", f"zfs set atime=off {dst}"]
        assert lines[lines.index(recv) + 1:][:len(want)] == want, lines

    full = zrelay("sync", "--json", inventory=inv)
    assert full.returncode == 0, full.stderr + full.stdout
    result = json.loads(full.stdout)[0]
    assert result["outcome"] == "ok"
    warnings = result["warnings"]   # one line for each thing done otherwise
    assert any(w.startswith("warning: vault (zfs-fuse) cannot set properties at receive")
               for w in warnings) is not at_receive, warnings
    assert any(w.startswith("warning: nas1 (zfs-fuse) sends without -p") for w in warnings) is not carried
    assert len(warnings) == (not at_receive) + (not carried), warnings

    def replica_is_right(tag: str) -> None:
        if carried:
            assert prop(lab, "vault", dst, "compression") == ("gzip", "received")
            assert prop(lab, "vault", dst, "recordsize") == ("32K", "received")
            assert prop(lab, "vault", dst, "zrelay-test:tag") == (tag, "received")
        else:
            assert prop(lab, "vault", dst, "compression")[1] != "received"
            assert prop(lab, "vault", dst, "zrelay-test:tag")[0] == "-"
        assert prop(lab, "vault", dst, "zrelay-test:set") == ("yes", "local")
        assert prop(lab, "vault", dst, "atime") == ("off", "local")
        assert prop(lab, "vault", dst, "zrelay-test:drop")[0] == "-"
        assert prop(lab, "vault", dst, "canmount") == ("noauto", "local")
        assert prop(lab, "vault", dst, "mounted")[0] == "no"
        mountpoint, where = prop(lab, "vault", dst, "mountpoint")
        assert mountpoint == f"/backup/{name}" and where in ("default", "inherited from backup"), (mountpoint, where)

    replica_is_right("x")

    # an incremental brings changed properties, and the same rules hold
    lab.run("nas1", "zfs", "set", "zrelay-test:tag=x2", src)
    lab.run("nas1", "zfs", "set", "zrelay-test:drop=y2", src)
    write(lab, "nas1", src, "f1", lab.mib(1))
    lab.run("nas1", "zfs", "snapshot", f"{src}@zrelay_2")
    dry = zrelay("sync", "--dry-run", "--json", inventory=inv)
    commands = json.loads(dry.stdout)[0]["commands"]
    assert send_words(commands[0]["command"]) == (carried, ["-i", f"{src}@zrelay_1", f"{src}@zrelay_2"])
    if at_receive:
        assert "-o canmount=noauto" in receive_line(commands, "vault")
    incr = zrelay("sync", "--json", inventory=inv)
    assert incr.returncode == 0, incr.stderr + incr.stdout
    assert json.loads(incr.stdout)[0]["plans"][0]["kind"] == "incremental"
    replica_is_right("x2")


def test_a_target_entry_overrides_the_job(lab, tmp_path: Path) -> None:
    """``send: false`` on one target: that replica has zfs's defaults, the other the source's."""
    name = lab.unique()
    src = source_dataset(lab, name)
    carried, plain = f"backup/{name}", f"tank/{name}-plain"
    inv = write_inventory(tmp_path / "inv.yml", lab, [{
        "source": f"nas1:{src}", "properties": {"set": {"zrelay-test:set": "job"}},
        "targets": [f"vault:{carried}",
                    {"target": f"nas2:{plain}", "properties": {"send": False}}]}])
    dry = zrelay("sync", "--dry-run", "--json", inventory=inv)
    assert dry.returncode == 0, dry.stderr
    by_target = {r["target"]: r["commands"] for r in json.loads(dry.stdout)}
    sends = lab.capabilities("nas1").send_props
    assert send_words(by_target[f"vault:{carried}"][0]["command"]) == (sends, [f"{src}@zrelay_1"])
    assert send_words(by_target[f"nas2:{plain}"][0]["command"]) == (False, [f"{src}@zrelay_1"])

    run = zrelay("sync", "--json", inventory=inv)
    assert run.returncode == 0, run.stderr + run.stdout
    if sends:
        assert prop(lab, "vault", carried, "compression") == ("gzip", "received")
    assert prop(lab, "nas2", plain, "compression")[1] != "received"
    assert prop(lab, "nas2", plain, "zrelay-test:tag")[0] == "-"
    assert prop(lab, "nas2", plain, "zrelay-test:set") == ("job", "local")   # set: is the job's still
    assert prop(lab, "nas2", plain, "canmount") == ("noauto", "local")
    assert prop(lab, "nas2", plain, "mounted")[0] == "no"


def test_recursive_children_inherit_from_the_replica_and_a_replica_of_a_replica_keeps_the_rules(
        lab, tmp_path: Path) -> None:
    """set: lands on the job's own dataset and its children inherit it; a cascade keeps every rule."""
    name = lab.unique()
    src = source_dataset(lab, name)
    child = f"{src}/child"
    lab.run("nas1", "zfs", "create", "-o", f"mountpoint=/tank/{name}-child-mnt", child)
    lab.run("nas1", "zfs", "snapshot", "-r", f"{src}@zrelay_2")
    first, second = f"tank/{name}-r", f"backup/{name}-rr"
    inv = write_inventory(tmp_path / "inv.yml", lab, [
        {"source": f"nas1:{src}", "recursive": True, "targets": [f"nas2:{first}"],
         "properties": {"set": {"mountpoint": f"/srv/{name}", "zrelay-test:set": "top"}}},
        {"source": f"nas2:{first}", "recursive": True, "targets": [f"vault:{second}"]}])
    carried = lab.capabilities("nas1").send_props and lab.capabilities("nas2").send_props
    one = zrelay("sync", f"nas1:{src}", "--json", inventory=inv)
    assert one.returncode == 0, one.stderr + one.stdout
    assert prop(lab, "nas2", first, "mountpoint") == (f"/srv/{name}", "local")
    assert prop(lab, "nas2", f"{first}/child", "zrelay-test:set") == ("top", f"inherited from {first}")
    assert prop(lab, "nas2", f"{first}/child", "mountpoint") == (f"/srv/{name}/child", f"inherited from {first}")
    for ds in (first, f"{first}/child"):
        assert prop(lab, "nas2", ds, "canmount") == ("noauto", "local")
        assert prop(lab, "nas2", ds, "mounted")[0] == "no"
        if carried:
            assert prop(lab, "nas2", ds, "compression")[0] == "gzip"

    two = zrelay("sync", f"nas2:{first}", "--json", inventory=inv)
    assert two.returncode == 0, two.stderr + two.stdout
    for ds, mnt in ((second, f"/backup/{name}-rr"), (f"{second}/child", f"/backup/{name}-rr/child")):
        assert prop(lab, "vault", ds, "mountpoint")[0] == mnt
        assert prop(lab, "vault", ds, "canmount") == ("noauto", "local")
        assert prop(lab, "vault", ds, "mounted")[0] == "no"
        if carried:
            assert prop(lab, "vault", ds, "compression")[0] == "gzip"
            assert prop(lab, "vault", ds, "recordsize")[0] == "32K"
    if carried:
        assert prop(lab, "vault", second, "zrelay-test:tag")[0] == "x"

"""Inventory edits: each changes exactly the intended lines of a hand-written, commented file,
refuses anything that would break it (leaving the bytes alone), and writes atomically."""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zrelay.errors import InventoryError, UsageError
from zrelay.inventory import load_inventory, validate_inventory
from zrelay.inventory.edit import (InventoryEditor, _guess_indent, parse_assignment, parse_value,
                                   write_atomic)

RICH = """\
# Fleet inventory: hand-written, reviewed in git.
# zrelay edits must not disturb anything they do not touch.

all:
  # Everyone.
  vars:
    user: root                     # break-glass account
    port: 22
    ssh_options: {ServerAliveInterval: 30}

  children:
    storage:                       # file servers
      vars:
        sudo: true
      hosts:
        nas1:
          address: "192.0.2.10"    # double-quoted on purpose
          sends: 3
        nas2: {address: '192.0.2.11', user: zfs}
        nas[03:04]:                # the new rack

    backup:
      # Off-site copies land here.
      hosts:
        vault:
          address: 198.51.100.5
          receives: 4              # fast disks

# ---------------------------------------------------------------- zrelay
zrelay:
  snapshot_name: "zrelay_%Y%m%d-%H%M%S"

  s3_targets:
    offsite:
      bucket: fleet-offsite        # versioned bucket

  jobs:
    # The important one.
    - name: nas1-data
      source: nas1:tank/data
      recursive: true
      targets:
        - vault:backup/nas1/data   # primary copy

    - source: nas2:tank/home
      targets: [vault:backup/nas2/home, s3:offsite]
"""


def changes(old: str, new: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) between two texts."""
    removed, added = [], []
    for line in difflib.ndiff(old.splitlines(), new.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    path = tmp_path / "zrelay.yml"
    path.write_text(RICH)
    assert validate_inventory(path) == []
    return path


def edit(path: Path, change: Callable[[InventoryEditor], None]) -> str:
    """Apply one change, write it, check the file is valid; return the new text."""
    editor = InventoryEditor(path)
    change(editor)
    result = editor.result()
    result.write()
    assert validate_inventory(path) == []
    return path.read_text()


# --------------------------------------------------------------------------- round trips


def test_editor_round_trip_without_changes_is_identity(inv: Path) -> None:
    result = InventoryEditor(inv).result()
    assert result.new == RICH and result.diff() == ""


@pytest.mark.parametrize("change, removed, added", [
    (lambda e: e.add_host("nas5", "192.0.2.15", "storage", [("sends", 2)]), [],
     ["        nas5:", "          address: 192.0.2.15", "          sends: 2"]),
    (lambda e: e.add_host("vault2", None, "backup", []), [], ["        vault2:"]),
    (lambda e: e.add_host("spare", "192.0.2.99", None, [("port", 2222)]), [],
     ["  hosts:", "    spare:", "      address: 192.0.2.99", "      port: 2222"]),
    (lambda e: e.add_host("edge1", None, "edge", []), [],
     ["    edge:", "      hosts:", "        edge1:"]),
    (lambda e: e.set_vars("nas1", [("port", 2222)]), [], ["          port: 2222"]),
    (lambda e: e.set_vars("nas1", [("sends", 4)]),
     ["          sends: 3"], ["          sends: 4"]),
    (lambda e: e.set_vars("nas2", [("port", 2200)]),
     ["        nas2: {address: '192.0.2.11', user: zfs}"],
     ["        nas2: {address: '192.0.2.11', user: zfs, port: 2200}"]),
    (lambda e: e.set_vars("nas2", [("ansible_user", "ops")]),
     ["        nas2: {address: '192.0.2.11', user: zfs}"],
     ["        nas2: {address: '192.0.2.11', user: ops}"]),
    (lambda e: e.set_vars("vault", [("receives", 8)]),
     ["          receives: 4              # fast disks"],
     ["          receives: 8              # fast disks"]),
    (lambda e: e.set_vars("backup", [("sudo", False)]), [],
     ["      vars:", "        sudo: false"]),
    (lambda e: e.set_vars("all", [("user", "zrelay")]),
     ["    user: root                     # break-glass account"],
     ["    user: zrelay                   # break-glass account"]),
    (lambda e: e.set_vars("nas[03:04]", [("user", "yes")]),
     [], ["          user: 'yes'"]),
    (lambda e: e.unset_vars("nas1", ["sends"]), ["          sends: 3"], []),
    (lambda e: e.unset_vars("vault", ["receives"]),
     ["          receives: 4              # fast disks"], []),
    (lambda e: e.unset_vars("storage", ["sudo"]), ["      vars:", "        sudo: true"], []),
    (lambda e: e.remove_host("nas[03:04]", False),
     ["        nas[03:04]:                # the new rack"], []),
    (lambda e: e.remove_host("nas2", True),
     ["        nas2: {address: '192.0.2.11', user: zfs}", "",
      "    - source: nas2:tank/home", "      targets: [vault:backup/nas2/home, s3:offsite]"],
     []),
    (lambda e: e.add_job("nas2:tank/vm", ["vault:backup/nas2/vm"], True, "auto-", "vms"), [],
     ["    - name: vms", "      source: nas2:tank/vm", "      recursive: true",
      "      snapshots: {prefix: auto-}", "      targets: [vault:backup/nas2/vm]"]),
    (lambda e: e.add_s3_target("cold", "fleet-cold", "https://s3.example.net", "z/",
                               "GLACIER_IR", "eu-west-1"), [],
     ["    cold:", "      bucket: fleet-cold", "      endpoint: https://s3.example.net",
      "      prefix: z/", "      region: eu-west-1", "      storage_class: GLACIER_IR"]),
], ids=["add-host-block", "add-host-bare", "add-host-to-all", "add-host-new-group",
        "set-new-key", "set-existing-key", "set-flow", "set-alias-keeps-name",
        "set-keeps-comment", "set-group-new-vars", "set-all", "set-range-quoted-string",
        "unset", "unset-last-key", "unset-drops-empty-vars", "remove-range",
        "remove-host-force", "add-job", "add-s3-target"])
def test_edit_changes_only_intended_lines(inv: Path, change: Callable[[InventoryEditor], None],
                                          removed: list[str], added: list[str]) -> None:
    new = edit(inv, change)
    assert changes(RICH, new) == (removed, added)


def test_insertions_keep_blank_lines_and_section_comments_in_place(inv: Path) -> None:
    new = edit(inv, lambda e: e.add_host("vault2", "198.51.100.6", "backup", []))
    assert ("          receives: 4              # fast disks\n"
            "        vault2:\n          address: 198.51.100.6\n"
            "\n# ---------------------------------------------------------------- zrelay\n"
            "zrelay:\n") in new
    new = edit(inv, lambda e: e.add_job("nas1:tank/vm", ["vault:backup/nas1/vm"], False, None,
                                        None))
    assert new.endswith("      targets: [vault:backup/nas2/home, s3:offsite]\n"
                        "    - source: nas1:tank/vm\n      targets: [vault:backup/nas1/vm]\n")


def test_removing_an_entry_removes_its_own_comment(inv: Path) -> None:
    new = edit(inv, lambda e: e.remove_host("nas1", True))
    assert "# The important one." not in new and "nas1" not in new
    assert "  jobs:\n    - source: nas2:tank/home\n" in new
    assert "    backup:\n      # Off-site copies land here.\n" in new


def test_lines_ruamel_would_reformat_stay_as_written(tmp_path: Path) -> None:
    text = ("all:\n  vars: { user: root,  port: 22 }   # spaced flow\n  hosts:\n"
            "    a:   {address: 192.0.2.1}\n    b:\n      address:    192.0.2.2\n")
    path = tmp_path / "inv.yml"
    path.write_text(text)
    new = edit(path, lambda e: e.set_vars("b", [("port", 2200)]))
    assert changes(text, new) == ([], ["      port: 2200"])


def test_crlf_bom_and_document_markers_survive(tmp_path: Path) -> None:
    text = "\ufeff---\r\n# top\r\nall:\r\n  hosts:\r\n    a: {address: x}\r\n"
    path = tmp_path / "inv.yml"
    path.write_bytes(text.encode("utf-8"))
    edit(path, lambda e: e.set_vars("a", [("port", 2)]))
    assert path.read_bytes().decode("utf-8") == text.replace("{address: x}",
                                                             "{address: x, port: 2}")


def test_values_that_yaml_would_misread_are_quoted(inv: Path) -> None:
    edit(inv, lambda e: e.set_vars("nas1", [("ansible_python_interpreter", "01:30"),
                                            ("user", "on"), ("known_hosts", "~")]))
    host = load_inventory(inv).host("nas1")
    assert host.vars["ansible_python_interpreter"] == "01:30"
    assert host.user == "on" and host.vars["known_hosts"] == "~"


def test_set_on_a_host_from_an_included_inventory(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[web]\nw1 ansible_host=10.0.0.1\n")
    path = tmp_path / "zrelay.yml"
    path.write_text("zrelay:\n  include: [hosts]\n")
    editor = InventoryEditor(path)
    editor.set_vars("w1", [("sends", 2)])
    result = editor.result()
    assert "comes from an included inventory" in result.notes[0]
    result.write()
    assert path.read_text() == "all:\n  hosts:\n    w1:\n      sends: 2\nzrelay:\n" \
        "  include: [hosts]\n"
    assert load_inventory(path).sends_limit("w1") == 2


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("change, message", [
    (lambda e: e.set_vars("nas1", [("port", 0)]), "port: 0 is out of range"),
    (lambda e: e.set_vars("nas1", [("prot", 22)]), "did you mean 'port'?"),
    (lambda e: e.set_vars("nas03", [("port", 2)]), "is written as part of the range"),
    (lambda e: e.set_vars("nope", [("port", 2)]), "no host or group 'nope'"),
    (lambda e: e.add_host("nas1", "x", None, []), "host 'nas1' already exists"),
    (lambda e: e.add_host("nas[02:03]", None, None, []), "host 'nas03' already exists"),
    (lambda e: e.add_host("bad name", None, None, []), "contains whitespace"),
    (lambda e: e.add_host("-x", None, None, []), "would be read as an ssh option"),
    (lambda e: e.add_host("n", "root@n", None, []), "put the login name in 'user'"),
    (lambda e: e.unset_vars("nas1", ["port"]), "host nas1 does not set 'port'"),
    (lambda e: e.remove_host("nas1", False), "is used by job 'nas1-data'"),
    (lambda e: e.remove_host("nas03", False), "is written as part of the range"),
    (lambda e: e.remove_host("nas9", False), "no host 'nas9'"),
    (lambda e: e.add_job("nas1:tank/vm", ["vault:backup/other"], False, None, "nas1-data"),
     "job name 'nas1-data' is already used"),
    (lambda e: e.add_job("nas1:tank/x", ["vault:backup/nas1/data/x"], False, None, None),
     "is inside vault:backup/nas1/data, which job 'nas1-data'"),
    (lambda e: e.add_job("nas1:tank/x", ["s3:offsit"], False, None, None),
     "did you mean 'offsite'?"),
    (lambda e: e.add_job("nas1:tank//x", ["vault:b/x"], False, None, None),
     "has an empty component"),
    (lambda e: e.add_job("nas1:tank/x", [], False, None, None), "needs at least one target"),
    (lambda e: e.add_s3_target("offsite", "b1b", None, None, None, None), "already exists"),
    (lambda e: e.add_s3_target("cold", "b1b", "ftp://x", None, None, None),
     "not an http:// or https:// URL"),
])
def test_refused_edits_leave_the_file_byte_identical(inv: Path, change: Callable[..., None],
                                                     message: str) -> None:
    before = inv.read_bytes()
    with pytest.raises(UsageError) as info:
        editor = InventoryEditor(inv)
        change(editor)
        editor.result().write()
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert inv.read_bytes() == before
    assert os.listdir(inv.parent) == ["zrelay.yml"]


def test_set_refused_when_host_vars_file_wins(inv: Path) -> None:
    (inv.parent / "host_vars").mkdir()
    (inv.parent / "host_vars" / "nas1.yml").write_text("port: 2201\n")
    with pytest.raises(InventoryError, match=r"port of host 'nas1' is also set at .*nas1.yml:1:7, "
                       "which takes precedence"):
        editor = InventoryEditor(inv)
        editor.set_vars("nas1", [("port", 2222)])
        editor.result()


def test_existing_problems_do_not_block_an_unrelated_edit(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  hosts:\n    a: {prot: 1}\n    b:\n")
    editor = InventoryEditor(path)
    editor.set_vars("b", [("port", 2)])
    result = editor.result()
    assert "still has 1 problem(s)" in result.notes[0]
    editor = InventoryEditor(path)
    editor.set_vars("b", [("port", "x")])
    with pytest.raises(InventoryError, match="port: expected an integer"):
        editor.result()


def test_ini_and_broken_yaml_are_not_edited(tmp_path: Path) -> None:
    (tmp_path / "hosts.ini").write_text("[web]\nw1\n")
    with pytest.raises(InventoryError, match="is an Ansible INI inventory"):
        InventoryEditor(tmp_path / "hosts.ini")
    (tmp_path / "bad.yml").write_text("all:\n  hosts: {a: [\n")
    with pytest.raises(InventoryError, match=r"bad.yml:3:1: cannot edit: invalid YAML"):
        InventoryEditor(tmp_path / "bad.yml")
    with pytest.raises(InventoryError, match="inventory file not found"):
        InventoryEditor(tmp_path / "missing.yml")


# --------------------------------------------------------------------------- writing


def test_write_keeps_mode_and_symlink_and_refuses_concurrent_change(tmp_path: Path) -> None:
    real = tmp_path / "real.yml"
    real.write_text(RICH)
    os.chmod(real, 0o600)
    link = tmp_path / "zrelay.yml"
    link.symlink_to(real)
    edit(link, lambda e: e.set_vars("nas1", [("port", 2222)]))
    assert link.is_symlink() and "port: 2222" in real.read_text()
    assert real.stat().st_mode & 0o777 == 0o600
    editor = InventoryEditor(link)
    editor.set_vars("nas1", [("port", 2223)])
    result = editor.result()
    real.write_text(real.read_text() + "# someone else\n")
    with pytest.raises(InventoryError, match="changed on disk"):
        result.write()
    assert real.read_text().endswith("# someone else\n")
    write_atomic(real, "all: {}\n")
    assert real.read_text() == "all: {}\n" and sorted(os.listdir(tmp_path)) == ["real.yml",
                                                                               "zrelay.yml"]


def test_dry_run_diff(inv: Path) -> None:
    editor = InventoryEditor(inv)
    editor.set_vars("nas1", [("sends", 5)])
    diff = editor.result().diff()
    assert f"--- a/{inv}\n+++ b/{inv}\n" in diff
    assert "-          sends: 3\n+          sends: 5\n" in diff
    assert inv.read_text() == RICH


@pytest.mark.parametrize("text, value", [
    ("22", 22), ("-1", -1), ("true", True), ("No", False), ("on", True), ("'22'", "22"),
    ('"yes"', "yes"), ("root", "root"), ("1.5", "1.5"), ('{"Compression": "no"}',
                                                         {"Compression": "no"}),
    ("[1, 2]", [1, 2]), ("a=b", "a=b"),
])
def test_parse_value(text: str, value: Any) -> None:
    assert parse_value(text) == value


def test_parse_assignment_errors() -> None:
    assert parse_assignment("port=22") == ("port", 22)
    assert parse_assignment("opt=a=b") == ("opt", "a=b")
    for bad, message in (("port", "expected key=value"), ("port=", "has no value"),
                         ("9x=1", "is not a variable name"), ("o={bad", "looks like JSON but is not")):
        with pytest.raises(UsageError, match=message):
            parse_assignment(bad)


@pytest.mark.parametrize("text, indent", [
    ("a:\n  b:\n    - c\n", (2, 4, 2)),
    ("a:\n    b:\n    - c\n", (4, 2, 0)),
    ("a:\n  b:\n  - c\n", (2, 2, 0)),
    ("a: 1\n", (2, 4, 2)),
])
def test_guess_indent(text: str, indent: tuple[int, int, int]) -> None:
    assert _guess_indent(text) == indent


# --------------------------------------------------------------------------- property


HOSTS = ["nas1", "nas2", "vault", "n7", "web[1:2]", "web1", "edge"]
GROUPS = ["storage", "backup", "all", "edge", "newgroup"]
VARS = st.sampled_from([("port", 2222), ("port", 0), ("user", "ops"), ("user", "yes"),
                        ("sudo", True), ("max_sessions", 4), ("sends", 2), ("prot", 1),
                        ("ansible_user", "deploy"), ("ansible_port", "22"),
                        ("direct_address", "10.9.9.9")])
DATASETS = ["tank/data", "tank/a", "backup/x", "backup/nas1/data/y", "tank//bad"]

OPERATION = st.one_of(
    st.tuples(st.just("add_host"), st.sampled_from(HOSTS),
              st.sampled_from([None, "192.0.2.50", "root@x"]),
              st.sampled_from([None, "storage", "backup", "edge", "newgroup"]),
              st.lists(VARS, max_size=2, unique_by=lambda v: v[0])),
    st.tuples(st.just("set_vars"), st.sampled_from(HOSTS + GROUPS),
              st.lists(VARS, min_size=1, max_size=3, unique_by=lambda v: v[0])),
    st.tuples(st.just("unset_vars"), st.sampled_from(HOSTS + GROUPS),
              st.lists(st.sampled_from(["port", "user", "sends", "sudo", "receives"]),
                       min_size=1, max_size=2, unique=True)),
    st.tuples(st.just("remove_host"), st.sampled_from(HOSTS + ["nas[03:04]"]), st.booleans()),
    st.tuples(st.just("add_job"),
              st.builds(lambda h, d: f"{h}:{d}", st.sampled_from(HOSTS), st.sampled_from(DATASETS)),
              st.lists(st.builds(lambda h, d: f"{h}:{d}", st.sampled_from(HOSTS),
                                 st.sampled_from(DATASETS)) | st.just("s3:offsite"),
                       max_size=2),
              st.booleans(), st.sampled_from([None, "auto-"]), st.none()),
    st.tuples(st.just("add_s3_target"), st.sampled_from(["offsite", "cold", "warm"]),
              st.sampled_from(["fleet-a", "Bad_Bucket"]), st.none(), st.none(), st.none(),
              st.none()),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATION, min_size=1, max_size=6))
def test_random_edit_sequences_keep_the_inventory_valid(operations: list[tuple[Any, ...]]
                                                        ) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "zrelay.yml"
        path.write_text(RICH)
        for name, *args in operations:
            before = path.read_bytes()
            try:
                editor = InventoryEditor(path)
                getattr(editor, name)(*args)
                result = editor.result()
                result.write()
            except UsageError:
                assert path.read_bytes() == before
                continue
            assert validate_inventory(path) == [], path.read_text()
            load_inventory(path)
            text = path.read_text()
            assert text.startswith("# Fleet inventory: hand-written, reviewed in git.\n")
            assert "# ---------------------------------------------------------------- zrelay\n" \
                in text
            assert sorted(os.listdir(tmp)) == ["zrelay.yml"]

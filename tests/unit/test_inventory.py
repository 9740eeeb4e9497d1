"""Inventory loading: resolved values of the shipped inventories, precedence, and
located errors for broken ones (every error must point at the offending node)."""

from __future__ import annotations

import datetime as dt
import os
import textwrap
from pathlib import Path

import pytest

from zrelay.errors import InventoryError, UsageError
from zrelay.inventory import (Endpoint, Inventory, S3Ref, load_inventory, loads_inventory,
                              validate_inventory, validate_inventory_text)
from zrelay.zfs.model import SnapshotFilter

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventory" / "lab.yml"
EXAMPLE = REPO / "inventory" / "example.yml"


def write(tmp_path: Path, text: str, name: str = "inv.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_text(tmp_path: Path, text: str) -> Inventory:
    return load_inventory(write(tmp_path, text))


# --------------------------------------------------------------------------- shipped inventories


def test_lab_inventory() -> None:
    assert validate_inventory(LAB) == []
    inv = load_inventory(LAB)
    assert list(inv.hosts) == ["nas1", "nas2", "vault"]
    assert {n: h.address for n, h in inv.hosts.items()} == {
        "nas1": "127.0.0.2", "nas2": "127.0.0.3", "vault": "127.0.0.4"}
    for host in inv.hosts.values():
        assert host.port == 22
        assert host.user == "root"
        assert host.identity_file == "/var/tmp/zrelay-lab/id_ed25519"
        assert host.known_hosts == "/var/tmp/zrelay-lab/known_hosts"
        assert host.max_sessions == 10
        assert host.sudo is False
    assert inv.settings.snapshot_name == "zrelay_%Y-%m-%dT%H:%M:%SZ"
    data, home = inv.jobs
    assert data.source == Endpoint("nas1", "tank/data")
    assert data.recursive is True
    assert data.select == SnapshotFilter(prefix="zrelay_")
    assert data.targets == (Endpoint("nas2", "tank/replica/nas1-data"),
                            Endpoint("vault", "backup/nas1/data"))
    assert home.source == Endpoint("nas2", "tank/home")
    assert home.recursive is False
    assert home.targets == (Endpoint("vault", "backup/nas2/home"), S3Ref("offsite"))
    offsite = inv.s3_targets["offsite"]
    assert (offsite.bucket, offsite.endpoint) == ("zrelay-lab", "http://127.0.0.1:8333")
    assert [job.name for job in inv.jobs if job.s3_targets] == ["nas2:tank/home"]


def test_example_inventory() -> None:
    assert validate_inventory(EXAMPLE) == []
    inv = load_inventory(EXAMPLE)
    assert 4 <= len(inv.hosts) <= 5
    nas1, nas2, scratch = inv.host("nas1"), inv.host("nas2"), inv.host("scratch")
    assert nas1.sudo is True and nas1.sends == 3 and nas1.user == "root"
    assert nas2.user == "zrelay" and nas2.direct_address == "10.10.0.11"
    assert nas2.peer_address == "10.10.0.11" and nas1.peer_address == nas1.address
    assert scratch.address == "192.0.2.30" and scratch.user == "admin"
    assert scratch.sudo is False                      # child group 'lab' beats 'storage'
    assert scratch.groups == ("storage", "lab")
    assert inv.host("vault").port == 2222
    assert nas1.known_hosts == str(EXAMPLE.parent / "keys" / "known_hosts")
    assert nas1.identity_file == os.path.expanduser("~/.ssh/zrelay_ed25519")
    assert nas1.ssh_options == {"ConnectTimeout": "10s", "ServerAliveInterval": 30, "Compression": "no"}
    assert inv.sends_limit("nas1") == 3 and inv.sends_limit("nas2") == 2
    assert inv.receives_limit("vault") == 4
    assert any(job.recursive for job in inv.jobs)
    assert any(len(job.targets) >= 2 for job in inv.jobs)
    assert any(job.select.prefix for job in inv.jobs)
    s3_jobs = [job for job in inv.jobs if job.s3_targets]
    assert s3_jobs and inv.s3_targets_of(s3_jobs[0])[0].bucket == "example-zrelay-backups"
    assert inv.jobs[0].name == "nas1-data"
    assert inv.jobs[1].name == "nas2:tank/home"  # default name is the source
    assert inv.host_targets(inv.jobs[1]) == (Endpoint("vault", "backup/nas2/home"),)
    assert inv.hosts_in("storage") == ("nas1", "nas2", "scratch")


# --------------------------------------------------------------------------- precedence and aliases


PRECEDENCE = """\
all:
  vars:
    {port: 1001, user: a, max_sessions: 3, sends: 1, ansible_python_interpreter: /usr/bin/python3}
  hosts:
    solo: {address: 192.0.2.1}
  children:
    parent:
      vars: {port: 1002, user: b, max_sessions: 4}
      children:
        child:
          vars: {port: 1003, user: c}
          hosts:
            deep: {address: 192.0.2.2, port: 1004}
            mid: {address: 192.0.2.3}
      hosts:
        top: {address: 192.0.2.4}
"""


def test_var_precedence(tmp_path: Path) -> None:
    inv = load_text(tmp_path, PRECEDENCE)
    solo, top, mid, deep = (inv.host(n) for n in ("solo", "top", "mid", "deep"))
    assert (solo.port, solo.user, solo.max_sessions) == (1001, "a", 3)     # all only
    assert (top.port, top.user, top.max_sessions) == (1002, "b", 4)        # parent > all
    assert (mid.port, mid.user, mid.max_sessions) == (1003, "c", 4)        # child > parent
    assert (deep.port, deep.user) == (1004, "c")                           # host > child
    assert deep.sends == 1
    assert deep.groups == ("parent", "child")
    assert solo.groups == ()
    assert deep.vars["ansible_python_interpreter"] == "/usr/bin/python3"   # Ansible's, kept
    assert inv.groups["ungrouped"].hosts == ("solo",)
    assert inv.groups["parent"].children == ("child",)


def test_group_precedence_follows_depth_not_file_order(tmp_path: Path) -> None:
    inv = load_text(tmp_path, """\
        all:
          children:
            inner:
              vars: {user: inner}
            outer:
              vars: {user: outer}
              children:
                inner:
                  hosts:
                    h: {address: 192.0.2.9}
        """)
    assert inv.host("h").user == "inner"


def test_top_level_groups_are_ansible_groups(tmp_path: Path) -> None:
    inv = load_text(tmp_path, """\
        web:
          vars: {user: www}
          hosts:
            w1: {ansible_host: 192.0.2.5}
        """)
    assert inv.host("w1").user == "www"
    assert "web" in inv.groups["all"].children


def test_aliases(tmp_path: Path) -> None:
    inv = load_text(tmp_path, """\
        all:
          hosts:
            h:
              ansible_host: 192.0.2.7
              ansible_port: 2200
              ansible_user: deploy
              ansible_ssh_private_key_file: keys/id
              ansible_become: yes
              ansible_connection: ssh
        """)
    h = inv.host("h")
    assert (h.address, h.port, h.user, h.sudo) == ("192.0.2.7", 2200, "deploy", True)
    assert h.identity_file == str(tmp_path / "keys" / "id")
    assert h.vars["ansible_connection"] == "ssh"


def test_alias_and_name_at_different_levels(tmp_path: Path) -> None:
    inv = load_text(tmp_path, """\
        all:
          vars: {ansible_user: deploy}
          hosts:
            h: {address: 192.0.2.7, user: root}
            g: {address: 192.0.2.8}
        """)
    assert inv.host("h").user == "root" and inv.host("g").user == "deploy"


def test_relative_paths_resolve_against_inventory_dir(tmp_path: Path) -> None:
    sub = tmp_path / "site"
    sub.mkdir()
    path = write(sub, """\
        all:
          vars: {identity_file: ../keys/id_ed25519, known_hosts: known_hosts}
          hosts:
            h: {address: 192.0.2.7}
            t: {address: 192.0.2.8, known_hosts: /etc/ssh/ssh_known_hosts, identity_file: ~/k}
        """)
    old = os.getcwd()
    os.chdir("/")
    try:
        inv = load_inventory(path)
    finally:
        os.chdir(old)
    h, t = inv.host("h"), inv.host("t")
    assert h.identity_file == str(tmp_path / "keys" / "id_ed25519")
    assert h.known_hosts == str(sub / "known_hosts")
    assert t.known_hosts == "/etc/ssh/ssh_known_hosts"
    assert t.identity_file == os.path.expanduser("~/k")


def test_defaults(tmp_path: Path) -> None:
    inv = load_text(tmp_path, "all:\n  hosts:\n    h: {address: h.example}\n")
    h = inv.host("h")
    assert (h.port, h.user, h.identity_file, h.known_hosts, h.sudo, h.max_sessions) == (
        22, None, None, None, False, 10)
    assert (h.sends, h.receives, h.direct_address, dict(h.ssh_options)) == (None, None, None, {})
    assert inv.jobs == () and inv.s3_targets == {}
    assert inv.settings.snapshot_name == "zrelay_%Y-%m-%dT%H:%M:%SZ"
    assert inv.settings.snapshot_name_at(dt.datetime(2024, 5, 6, 7, 8, 9)) == \
        "zrelay_2024-05-06T07:08:09Z"


def test_yaml_merge_keys_and_anchors(tmp_path: Path) -> None:
    inv = load_text(tmp_path, """\
        all:
          hosts:
            a: &common {address: 192.0.2.1, port: 2201, user: x}
            b:
              <<: *common
              address: 192.0.2.2
        """)
    assert (inv.host("b").address, inv.host("b").port, inv.host("b").user) == (
        "192.0.2.2", 2201, "x")


def test_host_listed_in_several_groups(tmp_path: Path) -> None:
    inv = load_text(tmp_path, """\
        all:
          children:
            one:
              hosts:
                h: {address: 192.0.2.1}
            two:
              hosts:
                h: {port: 2222}
        """)
    h = inv.host("h")
    assert (h.address, h.port, h.groups) == ("192.0.2.1", 2222, ("one", "two"))
    assert inv.groups["one"].hosts == ("h",) and inv.groups["two"].hosts == ("h",)


def test_unknown_host_lookup_names_the_file() -> None:
    inv = load_inventory(LAB)
    with pytest.raises(InventoryError, match=r"lab\.yml: unknown host 'nas3' \(did you mean"):
        inv.host("nas3")


# --------------------------------------------------------------------------- jobs_matching


MATCHING = """\
all:
  hosts:
    nas1: {address: 192.0.2.1}
    nas2: {address: 192.0.2.2}
    vault: {address: 192.0.2.3}
  children:
    sources: {hosts: {nas1: , nas2: }}
zrelay:
  jobs:
    - {source: "nas1:tank/data", recursive: true, targets: ["vault:backup/nas1/data"]}
    - {source: "nas1:tank/vm", name: vms, targets: ["vault:backup/nas1/vm"]}
    - {source: "nas2:tank/home", targets: ["vault:backup/nas2/home"]}
"""


def test_jobs_matching(tmp_path: Path) -> None:
    inv = load_text(tmp_path, MATCHING)
    data, vms, home = inv.jobs
    assert inv.jobs_matching([]) == [data, vms, home]
    assert inv.jobs_matching(["nas1"]) == [data, vms]
    assert inv.jobs_matching(["vms"]) == [vms]
    assert inv.jobs_matching(["nas1:tank/vm"]) == [vms]
    assert inv.jobs_matching(["nas2:tank/home", "nas1:tank/data"]) == [data, home]
    assert inv.jobs_matching(["sources"]) == [data, vms, home]
    assert inv.jobs_matching(["vms", "nas1:tank/vm", "nas1"]) == [data, vms]  # no duplicates


def test_jobs_matching_descendant_of_recursive_job(tmp_path: Path) -> None:
    inv = load_text(tmp_path, MATCHING)
    [narrow] = inv.jobs_matching(["nas1:tank/data/photos"])
    assert narrow.name == "nas1:tank/data"
    assert narrow.source == Endpoint("nas1", "tank/data/photos")
    assert narrow.targets == (Endpoint("vault", "backup/nas1/data/photos"),)
    assert narrow.recursive is True
    both = inv.jobs_matching(["nas1:tank/data/a", "nas1:tank/data/a/b", "nas1:tank/data/c"])
    assert [str(j.source) for j in both] == ["nas1:tank/data/a", "nas1:tank/data/c"]
    assert inv.jobs_matching(["nas1:tank/data/a", "nas1:tank/data"]) == [inv.jobs[0]]


@pytest.mark.parametrize("pattern, message", [
    ("nas9", "'nas9' matches no job name, host, group or job source"),
    ("vault", "no job replicates from host 'vault'"),
    ("ungrouped", "no job replicates from a host in group 'ungrouped'"),
    ("nas1:tank/vm/disk0", "matches no job"),      # vms is not recursive
    ("nas2:tank", "matches no job"),               # an ancestor is not a match
    ("nas1:tank/dat", "did you mean 'nas1:tank/data'"),
])
def test_jobs_matching_errors(tmp_path: Path, pattern: str, message: str) -> None:
    inv = load_text(tmp_path, MATCHING)
    with pytest.raises(UsageError) as info:
        inv.jobs_matching(["nas1", pattern])
    assert message in str(info.value)
    assert "job sources: nas1:tank/data, nas1:tank/vm, nas2:tank/home" in str(info.value)
    assert not isinstance(info.value, InventoryError)


# --------------------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(info.value) == f"{path}: inventory file not found"


def test_directory(tmp_path: Path) -> None:
    [err] = validate_inventory(tmp_path)
    assert "is a directory" in err.message and err.line is None


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "all: {}\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    [err] = validate_inventory(path)
    assert err.render() == f"{path}: cannot read inventory: Permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_bytes(b"all:\n  hosts:\n    caf\xe9: {}\n")
    [err] = validate_inventory(path)
    assert (err.line, err.column) == (3, 8) and "UTF-8" in err.message


def test_validate_collects_every_problem(tmp_path: Path) -> None:
    errors = validate_inventory(write(tmp_path, """\
        all:
          hosts:
            a: {address: 192.0.2.1, port: 0}
            b: {adress: 192.0.2.2}
        zrelay:
          jobs:
            - {source: "a:tank", targets: ["zz:backup/a"]}
        """))
    assert [(e.line, e.column) for e in errors] == [(3, 35), (4, 9), (7, 36)]
    with pytest.raises(InventoryError) as info:
        load_inventory(tmp_path / "inv.yml")
    assert (info.value.line, info.value.column) == (3, 35)  # the first one


def test_alias_reached_twice_reports_once(tmp_path: Path) -> None:
    errors = validate_inventory(write(tmp_path, """\
        all:
          vars:
            ssh_options: &opts {ServerAliveCountMax: 1, ServerAliveCountMax: 2}
          hosts:
            h: {address: a, ssh_options: *opts}
        """))
    assert [(e.line, e.column) for e in errors] == [(3, 49)]


def test_broken_host_entry_does_not_cascade(tmp_path: Path) -> None:
    errors = validate_inventory(write(tmp_path, """\
        all:
          hosts:
            nas1: 192.0.2.1
            vault: {address: 192.0.2.3}
        zrelay:
          jobs:
            - {source: "nas1:tank/a", targets: ["vault:backup/a"]}
        """))
    assert [(e.line, e.column) for e in errors] == [(3, 11)]


def test_endpoint_and_refs() -> None:
    assert Endpoint.parse("nas1:tank/a b:c") == Endpoint("nas1", "tank/a b:c")
    assert str(Endpoint("nas1", "tank/x")) == "nas1:tank/x"
    assert str(S3Ref("offsite")) == "s3:offsite"
    assert Endpoint("h", "a/b").contains(Endpoint("h", "a/b/c"))
    assert not Endpoint("h", "a/b").contains(Endpoint("h", "a/bc"))
    assert not Endpoint("h", "a").contains(Endpoint("g", "a"))
    for bad in ("nas1", ":tank", "nas1:", "nas1:/tank", "na s1:tank"):
        with pytest.raises(UsageError):
            Endpoint.parse(bad)


def test_narrowed_rejects_outside_dataset(tmp_path: Path) -> None:
    job = load_text(tmp_path, MATCHING).jobs[0]
    assert job.narrowed("tank/data") is job
    with pytest.raises(ValueError):
        job.narrowed("tank/other")


def test_snapshot_name_renders_in_utc() -> None:
    inv = load_inventory(LAB)
    cest = dt.timezone(dt.timedelta(hours=2))
    when = dt.datetime(2024, 5, 6, 9, 8, 9, tzinfo=cest)
    assert inv.settings.snapshot_name_at(when) == "zrelay_2024-05-06T07:08:09Z"


def test_text_entry_points() -> None:
    assert validate_inventory_text("all:\n  hosts:\n    h: {port: 0}\n", "x.yml")[0].render() == (
        "x.yml:3:15: port: 0 is out of range (expected 1-65535)")
    # As in Ansible, a host without an address is reached by its name.
    assert loads_inventory("all:\n  hosts:\n    h: {}\n").host("h").address == "h"
    assert loads_inventory("all:\n  hosts:\n    h: {address: a}\n").host("h").address == "a"


# --------------------------------------------------------------------------- located errors

HOSTS = """\
all:
  hosts:
    nas1: {address: 192.0.2.1}
    vault: {address: 192.0.2.3}
"""

# (id, inventory text, line, column, substring of the message)
BAD: list[tuple[str, str, int, int, str]] = [
    ("yaml-unclosed-flow", "all:\n  hosts:\n    nas1: {address: 1.2.3.4\n", 3, 11,
     "invalid YAML: the '{' mapping that starts here is never closed"),
    ("yaml-tab", "all:\n\thosts: {}\n", 2, 1, "tabs cannot indent YAML"),
    ("yaml-two-documents", "all: {}\n---\nall: {}\n", 2, 1, "expected a single document"),
    ("empty", "", 1, 1, "inventory is empty"),
    ("only-comments", "# nothing here\n", 1, 1, "inventory is empty"),
    ("top-level-list", "- nas1\n- nas2\n", 1, 1, "inventory: expected a mapping, got a list"),
    ("duplicate-host", HOSTS + "    nas1: {address: 192.0.2.9}\n", 5, 5,
     "duplicate key 'nas1' in hosts of group 'all' (first at line 3)"),
    ("duplicate-top-level", "all: {}\nall: {}\n", 2, 1, "duplicate key 'all'"),
    ("duplicate-nested-var", "all:\n  vars:\n    ssh_options:\n      ConnectTimeout: 1\n"
     "      ConnectTimeout: 2\n", 5, 7, "duplicate key 'ConnectTimeout'"),
    ("unknown-host-var", "all:\n  hosts:\n    nas1: {adress: 192.0.2.1}\n", 3, 12,
     "unknown key 'adress' in host 'nas1' (did you mean 'address'?)"),
    ("hint-host-var", "all:\n  hosts:\n    nas1:\n      hostname: x\n", 4, 7,
     "unknown key 'hostname' in host 'nas1' (did you mean 'address'?)"),
    ("unknown-group-var", "all:\n  vars:\n    prot: 22\n", 3, 5,
     "unknown key 'prot' in vars of group 'all' (did you mean 'port'?)"),
    ("vars-under-host", "all:\n  hosts:\n    nas1:\n      vars: {address: x}\n", 4, 7,
     "host vars go directly under the host"),
    ("name-not-an-address", "all:\n  children:\n    g:\n      hosts:\n        root@nas1: {}\n",
     5, 9, "the host name is its address unless 'address' (or 'ansible_host') is set"),
    ("port-range", "all:\n  hosts:\n    nas1: {address: a, port: 70000}\n", 3, 30,
     "port: 70000 is out of range (expected 1-65535)"),
    ("port-string", "all:\n  hosts:\n    nas1: {address: a, ansible_port: ssh}\n", 3, 38,
     "ansible_port: expected an integer, got the string 'ssh'"),
    ("sudo-string", "all:\n  vars: {sudo: 'yes'}\n", 2, 16, "sudo: expected true or false"),
    ("max-sessions-zero", "all:\n  vars:\n    max_sessions: 0\n", 3, 19,
     "max_sessions: 0 is out of range (expected >= 1)"),
    ("address-number", "all:\n  hosts:\n    nas1: {address: 10.5}\n", 3, 21,
     "address: expected a string, got the number 10.5 (quote it)"),
    ("address-with-user", "all:\n  hosts:\n    nas1: {address: root@nas1}\n", 3, 21,
     "put the login name in 'user'"),
    ("address-option-injection", "all:\n  hosts:\n    nas1: {address: -oProxyCommand=x}\n",
     3, 21, "would be read as an ssh option"),
    ("address-template", "all:\n  hosts:\n    nas1: {ansible_host: '{{ ip }}'}\n", 3, 26,
     "templates"),
    ("address-vault-tag", "all:\n  hosts:\n    nas1:\n      address: !vault |\n        abc\n",
     4, 16, "YAML tag !vault is not supported"),
    ("alias-conflict", "all:\n  hosts:\n    nas1: {address: a, ansible_host: b}\n", 3, 24,
     "'ansible_host' and 'address' both set 'address' here"),
    ("ssh-options-list", "all:\n  vars:\n    ssh_options: [Compression=yes]\n", 3, 18,
     "ssh_options: expected a mapping of ssh option names"),
    ("identity-file-empty", "all:\n  vars:\n    identity_file: ''\n", 3, 20,
     "identity_file: expected a non-empty string"),
    ("hosts-as-list", "all:\n  hosts:\n    - nas1\n    - nas2\n", 3, 5,
     "hosts of group 'all': expected a mapping of host names"),
    ("host-value-scalar", "all:\n  hosts:\n    nas1: 192.0.2.1\n", 3, 11,
     "host 'nas1': expected its vars as a mapping (or nothing), got the value '192.0.2.1'"),
    ("host-range-widths", "all:\n  hosts:\n    web[01:100]:\n", 3, 5,
     "a zero-padded range needs begin and end of equal width"),
    ("host-port-name", "all:\n  hosts:\n    'nas1:2222':\n", 3, 5, "contains ':'"),
    ("unknown-group-key", "all:\n  children:\n    g:\n      child: {}\n", 4, 7,
     "unknown key 'child' in group 'g' (did you mean 'children'?)"),
    ("group-cycle",
     "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n"
     "            a: {}\n", 7, 13, "group cycle: a -> b -> a"),
    ("all-as-child", "all:\n  children:\n    g:\n      children:\n        all: {}\n", 5, 9,
     "'all' cannot be a child group"),
    ("zrelay-typo", "zrealy:\n  jobs: []\n", 1, 1,
     "unknown top-level key 'zrealy' (did you mean 'zrelay'?)"),
    ("zrelay-unknown-key", HOSTS + "zrelay:\n  job: []\n", 6, 3,
     "unknown key 'job' in the zrelay section (did you mean 'jobs'?)"),
    ("zrelay-not-mapping", HOSTS + "zrelay: [a]\n", 5, 9,
     "zrelay section: expected a mapping, got a list"),
    ("snapshot-name-bad-char", HOSTS + "zrelay:\n  snapshot_name: zrelay/%Y%m%d%H%M%S\n", 6, 18,
     "renders as 'zrelay/20010203040506'"),
    ("snapshot-name-constant", HOSTS + "zrelay:\n  snapshot_name: nightly\n", 6, 18,
     "has no date or time field"),
    ("snapshot-name-offset", HOSTS + "zrelay:\n  snapshot_name: 's_%Y%m%d%z'\n", 6, 18,
     "character(s) '+'"),
    ("limits-zero", HOSTS + "zrelay:\n  limits: {sends_per_host: 0}\n", 6, 28,
     "sends_per_host: 0 is out of range"),
    ("limits-unknown", HOSTS + "zrelay:\n  limits: {sends: 2}\n", 6, 12,
     "unknown key 'sends' in limits"),
    ("s3-no-bucket", HOSTS + "zrelay:\n  s3_targets:\n    off: {endpoint: 'http://x'}\n", 7, 10,
     "S3 target 'off' has no 'bucket'"),
    ("s3-bad-bucket", HOSTS + "zrelay:\n  s3_targets:\n    off: {bucket: My_Bucket}\n", 7, 19,
     "'My_Bucket' is not a valid bucket name"),
    ("s3-bad-endpoint",
     HOSTS + "zrelay:\n  s3_targets:\n    off: {bucket: b1b, endpoint: ftp://x}\n",
     7, 34, "not an http:// or https:// URL"),
    ("s3-unknown-key",
     HOSTS + "zrelay:\n  s3_targets:\n    off: {bucket: b1b, storage: X}\n", 7, 24,
     "unknown key 'storage' in S3 target 'off' (did you mean 'storage_class'?)"),
    ("jobs-mapping", HOSTS + "zrelay:\n  jobs: {source: x}\n", 6, 9,
     "jobs: expected a list of jobs"),
    ("job-no-targets", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n", 7, 7,
     "job has no 'targets'"),
    ("job-no-source", HOSTS + "zrelay:\n  jobs:\n    - targets: [vault:backup/x]\n", 7, 7,
     "job has no 'source'"),
    ("job-unknown-key", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      target: [vault:backup/x]\n", 8, 7,
     "unknown key 'target' in job (did you mean 'targets'?)"),
    ("source-no-colon", HOSTS + "zrelay:\n  jobs:\n    - source: nas1/tank/data\n"
     "      targets: [vault:backup/x]\n", 7, 15, "expected 'host:dataset', got 'nas1/tank/data'"),
    ("source-bad-dataset", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank//data\n"
     "      targets: [vault:backup/x]\n", 7, 15, "has an empty component"),
    ("source-bad-char", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/da$ta\n"
     "      targets: [vault:backup/x]\n", 7, 15, "character(s) '$'"),
    ("source-unknown-host", HOSTS + "zrelay:\n  jobs:\n    - source: nas2:tank/data\n"
     "      targets: [vault:backup/x]\n", 7, 15,
     "unknown host 'nas2' in source (did you mean 'nas1'?)"),
    ("target-unknown-host", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      targets: [vault:backup/x, valt:backup/y]\n", 8, 33,
     "unknown host 'valt' in target (did you mean 'vault'?)"),
    ("target-unknown-s3", HOSTS + "zrelay:\n  s3_targets: {offsite: {bucket: b1b}}\n  jobs:\n"
     "    - source: nas1:tank/data\n      targets: [s3:ofsite]\n", 9, 17,
     "unknown S3 target 'ofsite' (did you mean 'offsite'?)"),
    ("target-s3-none-defined", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      targets: [s3:offsite]\n", 8, 17, "zrelay.s3_targets defines none"),
    ("targets-empty", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      targets: []\n", 8, 16, "the list is empty"),
    ("targets-string", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      targets: vault:backup/x\n", 8, 16, "targets: expected a list"),
    ("target-is-source", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      targets: [nas1:tank/data]\n", 8, 17, "is the job's own source"),
    ("target-contains-source", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      targets: [nas1:tank]\n", 8, 17, "contains the source nas1:tank/data"),
    ("target-inside-recursive-source", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      recursive: true\n      targets: [nas1:tank/data/copy]\n", 9, 17,
     "inside the recursive source"),
    ("target-pool-root", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      targets: [vault:backup]\n", 8, 17, "is the root dataset of pool 'backup'"),
    ("target-twice", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      targets: [vault:backup/x, vault:backup/x]\n", 8, 33, "listed twice in this job"),
    ("two-jobs-same-target", HOSTS + "zrelay:\n  jobs:\n"
     "    - {source: 'nas1:tank/a', targets: ['vault:backup/x']}\n"
     "    - {source: 'nas1:tank/b', targets: ['vault:backup/x']}\n", 8, 41,
     "target vault:backup/x is also written by job 'nas1:tank/a' (line 7)"),
    ("target-inside-recursive-target", HOSTS + "zrelay:\n  jobs:\n"
     "    - {source: 'nas1:tank/a', recursive: true, targets: ['vault:backup/x']}\n"
     "    - {source: 'nas1:tank/b', targets: ['vault:backup/x/b']}\n", 8, 41,
     "is inside vault:backup/x, which job 'nas1:tank/a' (line 7) writes recursively"),
    ("replication-loop", HOSTS + "zrelay:\n  jobs:\n"
     "    - {source: 'nas1:tank/a', targets: ['vault:backup/a']}\n"
     "    - {source: 'vault:backup/a', targets: ['nas1:tank/a']}\n", 8, 7,
     "replication loop: nas1:tank/a -> vault:backup/a -> nas1:tank/a"),
    ("duplicate-job-name", HOSTS + "zrelay:\n  jobs:\n"
     "    - {source: 'nas1:tank/a', name: x, targets: ['vault:backup/a']}\n"
     "    - {source: 'nas1:tank/b', name: x, targets: ['vault:backup/b']}\n", 8, 37,
     "job name 'x' is already used by the job at line 7"),
    ("recursive-string", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      recursive: 'true'\n      targets: [vault:backup/x]\n", 8, 18,
     "recursive: expected true or false, got the string 'true'"),
    ("bad-regex", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      snapshots: {regex: '^(daily'}\n      targets: [vault:backup/x]\n", 8, 26,
     "snapshots.regex '^(daily' is not a valid regular expression"),
    ("bad-prefix", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      snapshots: {prefix: auto/}\n      targets: [vault:backup/x]\n", 8, 27,
     "snapshots.prefix: snapshot name 'auto/' has character(s) '/'"),
    ("group-not-mapping", "all:\n  children:\n    g: [a]\n", 3, 8,
     "group 'g': expected a mapping, got a list"),
    ("children-list", "all:\n  children: [a, b]\n", 2, 13,
     "children of group 'all': expected a mapping, got a list"),
    ("non-scalar-key", "all:\n  hosts:\n    ? [a]\n    : {}\n", 3, 7, "keys must be plain names"),
    ("recursive-alias", "all:\n  vars:\n    ansible_x: &x [*x]\n", 3, 20,
     "ansible_x: recursive YAML alias"),
    ("bad-timestamp", "all:\n  vars:\n    ansible_when: 2024-13-45\n", 3, 19,
     "ansible_when: cannot read '2024-13-45'"),
    ("python-tag", "all:\n  vars:\n    ansible_x: !!python/object:os.system x\n", 3, 16,
     "could not determine a constructor"),
    ("s3-null", HOSTS + "zrelay:\n  s3_targets:\n    off:\n", 7, 5, "has no 'bucket'"),
    ("job-not-mapping", HOSTS + "zrelay:\n  jobs:\n    - nas1:tank/data\n", 7, 7,
     "job: expected a mapping, got the value 'nas1:tank/data'"),
    ("snapshots-unknown-key", HOSTS + "zrelay:\n  jobs:\n    - source: nas1:tank/data\n"
     "      snapshots: {prefx: a}\n      targets: [vault:backup/x]\n", 8, 19,
     "unknown key 'prefx' in snapshots (did you mean 'prefix'?)"),
]


@pytest.mark.parametrize("text, line, column, message",
                         [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_inventory(tmp_path: Path, text: str, line: int, column: int, message: str) -> None:
    path = write(tmp_path, text)
    errors = validate_inventory(path)
    assert errors, "expected an error"
    rendered = [e.render() for e in errors]
    assert len(errors) == 1, rendered
    err = errors[0]
    assert (err.file, err.line, err.column) == (str(path), line, column), rendered
    assert message in err.message, rendered
    assert "\n" not in err.render()
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert info.value.render() == err.render()


def test_bad_cases_are_many_and_distinct() -> None:
    assert len(BAD) >= 30
    assert len({case[0] for case in BAD}) == len(BAD)


# --------------------------------------------------------------------------- send_options


_SEND_OPTIONS_INV = """\
all:
  hosts:
    a: {address: 192.0.2.1}
    b: {address: 192.0.2.2}
zrelay:
  jobs:
    - source: a:tank/x
      targets: [b:tank/x]
      send_options: %s
"""


def test_send_options_default_list_and_empty(tmp_path: Path) -> None:
    assert load_text(tmp_path, _SEND_OPTIONS_INV % "[compressed, large_blocks]").jobs[0].send_options == (
        "compressed", "large_blocks")
    assert load_text(tmp_path, _SEND_OPTIONS_INV % "[]").jobs[0].send_options == ()
    assert load_text(tmp_path, (_SEND_OPTIONS_INV % "[]").replace("      send_options: []\n", "")
                     ).jobs[0].send_options is None


@pytest.mark.parametrize("value, message", [
    ("[dedup]", "send_options: unknown option 'dedup'; expected some of large_blocks, embedded, compressed"),
    ("compressed", "send_options must be a list of names"),
])
def test_send_options_errors_name_the_line(tmp_path: Path, value: str, message: str) -> None:
    [err] = validate_inventory(write(tmp_path, _SEND_OPTIONS_INV % value))
    assert (err.line, err.column) == (9, 21) and message in err.message

"""Ansible compatibility: host ranges, INI inventories, group_vars/host_vars, include:, lookup.

The fixtures in tests/fixtures/ansible are written like real inventories (an
INI file with ranges, ports, children and vars directories; a YAML one with
custom variables) and every expectation here is what Ansible itself resolves.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from zrelay.errors import UsageError
from zrelay.inventory import Endpoint, load_inventory, validate_inventory
from zrelay.inventory.ansible import (RangeError, ansible_bool, expand_range, ini_value,
                                      looks_like_ini, parse_ini, split_port)
from zrelay.inventory.lookup import find_inventory

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ansible"
INI = FIXTURES / "ini" / "hosts"
YAML_INV = FIXTURES / "yaml" / "inventory.yml"
SITE = FIXTURES / "site" / "zrelay.yml"


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))


# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize("pattern, names", [
    ("nas[01:03]", ["nas01", "nas02", "nas03"]),
    ("nas[1:3].lan", ["nas1.lan", "nas2.lan", "nas3.lan"]),
    ("web[a:c]", ["weba", "webb", "webc"]),
    ("db[1:9:4]", ["db1", "db5", "db9"]),
    ("x[:2]", ["x0", "x1", "x2"]),
    ("r[1:2]n[a:b]", ["r1na", "r1nb", "r2na", "r2nb"]),
    ("[8:10]-node", ["8-node", "9-node", "10-node"]),
    ("plain", ["plain"]),
])
def test_expand_range(pattern: str, names: list[str]) -> None:
    assert expand_range(pattern) == names


@pytest.mark.parametrize("pattern, message", [
    ("n[3:1]", "runs backwards"),
    ("n[c:a]", "runs backwards"),
    ("n[01:100]", "equal width"),
    ("n[1:b]", "two numbers or two letters"),
    ("n[1:2:x]", "step 'x'"),
    ("n[1]", "must be [begin:end]"),
    ("n[1:3", "no closing ']'"),
    ("n[1:]", "has no end"),
    ("n[1:100][1:200]", "more than 10000 hosts"),
])
def test_expand_range_errors(pattern: str, message: str) -> None:
    with pytest.raises(RangeError, match=message.replace("[", r"\[")):
        expand_range(pattern)


@pytest.mark.parametrize("text, result", [
    ("nas1:2222", ("nas1", 2222)),
    ("10.0.0.1:22", ("10.0.0.1", 22)),
    ("[2001:db8::1]:2200", ("2001:db8::1", 2200)),
    ("2001:db8::1", ("2001:db8::1", None)),
    ("web[01:03]:2222", ("web[01:03]", 2222)),
    ("web[01:03]", ("web[01:03]", None)),
])
def test_split_port(text: str, result: tuple[str, int | None]) -> None:
    assert split_port(text) == result


def test_ansible_values() -> None:
    assert [ansible_bool(v) for v in ("yes", "On", "1", "t", True, 1, "no", "off", 0, "maybe")] \
        == [True, True, True, True, True, True, False, False, False, None]
    assert ini_value("22") == 22 and ini_value("True") is True and ini_value("'22'") == "22"
    assert ini_value("[1, 2]") == [1, 2] and ini_value("{'a': 1}") == {"a": 1}
    assert ini_value("8080 # comment") == 8080          # Python's tokenizer drops the comment
    assert ini_value("10.0.0.1") == "10.0.0.1" and ini_value("yes") == "yes"
    assert ini_value("(1, 2)") == [1, 2] and ini_value("b'x'") == "b'x'"


@pytest.mark.parametrize("name, text, ini", [
    ("hosts", "[web]\nw1\n", True),
    ("hosts", "# comment\nw1 ansible_host=1.2.3.4\n", True),
    ("hosts", "all:\n  hosts: {}\n", False),
    ("hosts", "---\nall: {}\n", False),
    ("inv.ini", "all:\n", True),
    ("inv.yml", "[web]\n", False),
    ("hosts", "", False),
])
def test_format_detection(name: str, text: str, ini: bool) -> None:
    assert looks_like_ini(text, Path(name)) is ini


def test_parse_ini_as_ansible_documents_it() -> None:
    sections, problems = parse_ini(textwrap.dedent("""\
        host1 # this is 'ungrouped'
        [web]
        host2 ansible_port=222 # defined inline
        [web:vars]
        http_port=8080 # all members of 'web' will inherit these
        [apache]
        tomcat3 mysecret="'03#pa33w0rd'"
        [web:children]
        apache
        [nginx:vars]
        has_java = True
        [nginx]
        """))
    assert problems == []
    by_kind = {(s.group, s.kind): s for s in sections}
    assert by_kind[("ungrouped", "hosts")].hosts[0].pattern == "host1"
    host2 = by_kind[("web", "hosts")].hosts[0]
    assert (host2.vars[0].key, host2.vars[0].value, host2.vars[0].column) == ("ansible_port", 222,
                                                                              7)
    assert by_kind[("web", "vars")].vars[0].value == 8080
    assert by_kind[("apache", "hosts")].hosts[0].vars[0].value == "03#pa33w0rd"
    assert by_kind[("web", "children")].children == [("apache", 9, 1)]
    assert by_kind[("nginx", "vars")].vars[0].value is True


# --------------------------------------------------------------------------- realistic inventories


def test_ini_inventory_resolves_as_ansible() -> None:
    assert validate_inventory(INI) == []
    inv = load_inventory(INI)
    assert list(inv.hosts) == [
        "nas01.dc1.example.net", "nas02.dc1.example.net", "nas03.dc1.example.net",
        "nas04.dc1.example.net", "vault.dc2.example.net", "tape01", "wwwa.example.net",
        "wwwb.example.net", "wwwc.example.net"]
    nas01, nas02, nas04 = (inv.host(f"nas0{n}.dc1.example.net") for n in (1, 2, 4))
    assert nas01.address == "nas01.dc1.example.net"          # no ansible_host: the name
    assert nas02.address == "10.1.0.12"                      # host_vars/<host>.yml
    assert (nas04.address, nas04.port) == ("10.1.0.14", 2222)
    # group_vars/dc1.yml beats [storage:vars] and [all:vars] (Ansible's precedence)
    assert {nas01.user, nas04.user, inv.host("wwwa.example.net").user} == {"dc1ops"}
    assert nas01.sudo is True and inv.host("wwwa.example.net").sudo is False
    assert nas01.groups == ("dc1", "storage")
    vault = inv.host("vault.dc2.example.net")
    assert (vault.port, vault.user) == (2200, "backup")      # host:port, inline var
    tape = inv.host("tape01")
    assert (tape.address, tape.port, tape.user, tape.sudo) == ("10.2.0.50", 2022, "deploy", False)
    assert tape.identity_file == str(INI.parent / "keys" / "tape.pem")
    assert tape.vars["retention_days"] == 400 and tape.vars["ntp_server"] == "ntp.example.net"
    assert tape.vars["users"] == [{"name": "alice", "groups": ["wheel"]}]
    assert nas01.vars["zfs_arc_max"] == 8589934592
    assert inv.host("nas02.dc1.example.net").vars["zfs_arc_max"] == 4294967296
    assert inv.groups["dc1"].children == ("storage", "web")
    assert inv.hosts_in("dc2") == ("vault.dc2.example.net", "tape01")
    assert str(INI.parent / "group_vars" / "all" / "vault.yml") in inv.sources  # seen, skipped


def test_site_inventory_includes_ini_and_yaml() -> None:
    assert validate_inventory(SITE) == []
    inv = load_inventory(SITE)
    assert len(inv.hosts) == 13
    db1, db2, db3 = (inv.host(f"db{n}.prod.example.com") for n in (1, 2, 3))
    assert (db1.address, db1.port, db1.sudo) == ("db1.prod.example.com", 22, True)
    assert db2.address == "192.0.2.32"
    assert (db3.address, db3.port) == ("192.0.2.33", 2201)    # "2201" converted, as Ansible
    assert db1.vars["port"] == 5432 and db1.port == 22        # an Ansible var, not ssh's port
    assert db1.user == "postgres-admin"                       # deeper group's group_vars win
    archive = inv.host("archive.prod.example.com")
    assert (archive.port, archive.user, archive.sudo) == (2022, "zfs", False)
    assert archive.identity_file == os.path.expanduser("~/.ssh/fleet_ed25519")
    nas03 = inv.host("nas03.dc1.example.net")
    assert nas03.address == "10.1.0.13"                       # zrelay's own host_vars
    assert inv.sends_limit("nas01.dc1.example.net") == 3     # zrelay vars on an included group
    assert inv.receives_limit("vault.dc2.example.net") == 4
    # two sources set all's ansible_user: the later one wins for hosts without a closer value
    assert inv.host("tape01").user == "ansible"
    assert [str(j.source) for j in inv.jobs] == ["nas01.dc1.example.net:tank/data",
                                                 "db1.prod.example.com:tank/pg"]
    assert inv.jobs[1].targets == (Endpoint("archive.prod.example.com", "tank/pg/db1"),)
    assert inv.sources[:3] == (str(SITE), str(INI), str(YAML_INV))


def test_include_a_directory(tmp_path: Path) -> None:
    write(tmp_path, {
        "ansible/10-web": "[web]\nw1 ansible_host=10.0.0.1\n",
        "ansible/20-db.yml": "db:\n  hosts:\n    d1: {ansible_user: pg}\n",
        "ansible/old.ini": "[web]\nw9\n",                    # Ansible skips .ini in a directory
        "ansible/README.md": "# notes\n",
        "ansible/group_vars/web.yml": "ansible_port: 2200\n",
        "zrelay.yml": "zrelay:\n  include: [ansible]\n",
    })
    inv = load_inventory(tmp_path / "zrelay.yml")
    assert list(inv.hosts) == ["w1", "d1"]
    assert (inv.host("w1").address, inv.host("w1").port) == ("10.0.0.1", 2200)
    assert inv.host("d1").user == "pg"


# --------------------------------------------------------------------------- precedence


def test_precedence_with_vars_directories(tmp_path: Path) -> None:
    write(tmp_path, {
        "inv.yml": """\
            all:
              vars: {user: all-inline, port: 1001}
              children:
                parent:
                  vars: {user: parent-inline, max_sessions: 3}
                  children:
                    child:
                      vars: {user: child-inline, sends: 1}
                      hosts:
                        h1: {user: host-inline}
                        h2:
            """,
        "group_vars/all.yml": "port: 1002\nmax_sessions: 9\n",
        "group_vars/parent.yml": "sends: 5\n",
        "group_vars/child/a.yml": "receives: 6\n",
        "group_vars/child/b.yml": "receives: 7\n",
        "host_vars/h1.yml": "user: host-file\n",
    })
    inv = load_inventory(tmp_path / "inv.yml")
    h1, h2 = inv.host("h1"), inv.host("h2")
    assert h1.user == "host-file" and h2.user == "child-inline"
    assert h2.port == 1002                      # group_vars/all beats all's inline vars
    assert h2.max_sessions == 9                 # ... and, as in Ansible, a parent's inline vars
    assert h2.sends == 5                        # group_vars/parent beats child's inline vars
    assert h2.receives == 7                     # files of a group_vars/NAME/ dir in order
    src = h1.setting_sources
    user_origin = src["user"].origin
    assert user_origin is not None and src["user"].scope == "host h1"
    assert Path(user_origin.file).name == "h1.yml"
    assert src["port"].scope == "group all" and src["sends"].scope == "group parent"
    assert h2.setting_sources["address"].scope == "host name" and h2.address == "h2"


def test_ansible_mode_checks_only_values_a_host_uses(tmp_path: Path) -> None:
    hosts = """\
        [web]
        w1 ansible_port=2200
        w2 ansible_host=10.0.0.2 ansible_ssh_host=10.0.0.3 ansible_port=22
        [web:vars]
        ansible_port=http
        port=not-a-port
        """
    write(tmp_path, {"hosts": hosts})
    inv = load_inventory(tmp_path / "hosts")
    assert inv.host("w1").port == 2200           # the bad group value is overridden: harmless
    assert inv.host("w2").address == "10.0.0.3"  # Ansible's ssh plugin prefers ansible_ssh_host
    assert inv.host("w2").vars["port"] == "not-a-port"  # not zrelay's business in Ansible's file
    write(tmp_path, {"hosts": hosts.replace("[web:vars]", "w3\n        [web:vars]")})
    [problem] = validate_inventory(tmp_path / "hosts")
    assert problem.render() == (f"{tmp_path / 'hosts'}:6:14: ansible_port: expected an integer, "
                                "got the string 'http' (used by host 'w3')")


def test_zrelay_inventory_stays_strict_next_to_an_included_one(tmp_path: Path) -> None:
    write(tmp_path, {
        "site/zrelay.yml": "all:\n  vars: {ntp_server: x}\nzrelay:\n  include: [../a/hosts]\n",
        "a/hosts": "[web]\nw1 ntp_server=y\n",
    })
    [problem] = validate_inventory(tmp_path / "site" / "zrelay.yml")
    assert problem.line == 2 and "unknown key 'ntp_server' in vars of group 'all'" in \
        problem.message


# --------------------------------------------------------------------------- lookup


def test_lookup(tmp_path: Path) -> None:
    env: dict[str, str] = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    with pytest.raises(UsageError, match="no inventory found"):
        find_inventory(None, env, tmp_path)
    write(tmp_path, {"cfg/zrelay/zrelay.yml": "all: {}\n"})
    assert find_inventory(None, env, tmp_path) == tmp_path / "cfg" / "zrelay" / "zrelay.yml"
    write(tmp_path, {"inventory/lab.yml": "all: {}\n"})
    assert find_inventory(None, env, tmp_path) == tmp_path / "cfg" / "zrelay" / "zrelay.yml"
    write(tmp_path, {"inventory/zrelay.yml": "all: {}\n"})
    assert find_inventory(None, env, tmp_path) == tmp_path / "inventory" / "zrelay.yml"
    env["ZRELAY_INVENTORY"] = str(tmp_path / "inventory" / "lab.yml")
    assert find_inventory(None, env, tmp_path) == tmp_path / "inventory" / "lab.yml"
    assert find_inventory(str(tmp_path / "x.yml"), env, tmp_path) == tmp_path / "x.yml"
    assert find_inventory(str(tmp_path / "inventory"), env) == tmp_path / "inventory" / "zrelay.yml"
    write(tmp_path, {"inventory/zrelay.yaml": "all: {}\n"})
    with pytest.raises(UsageError, match="has both zrelay.yml and zrelay.yaml"):
        find_inventory(str(tmp_path / "inventory"), env)
    with pytest.raises(UsageError, match=r"has no zrelay.yml \(it has a.yml"):
        write(tmp_path, {"other/a.yml": "all: {}\n"})
        find_inventory(str(tmp_path / "other"), env)

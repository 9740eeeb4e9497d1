"""The loader's own YAML composer and model building, against PyYAML and the model itself.

The loader composes YAML with a composer of its own (fast on big files, one node per
alias) and builds Hosts without their dataclass ``__init__``: these tests hold both to
what PyYAML and the plain model would give.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from zrelay.inventory import Host, loads_inventory
from zrelay.inventory.yamlread import Composer as _Composer

#: Scalars whose YAML 1.1 type depends on every character (int bases, sexagesimal numbers,
#: timestamps, the many booleans), under every style and tag a scalar can have.
TRICKY = """\
int: 1
hex: 0x1F
octal: 012
underscored: 1_000
sexagesimal: 190:20:30
negative: -12
plus: +12
zero: 0
float: 1.5
exponent: 1.0e+3
inf: .inf
nan: -.NaN
yes: yes
Off: Off
on: ON
tilde: ~
null: null
empty:
quoted: '1'
double: "0x1F"
str tag: !!str 1
local tag: !vault abc
timestamp: 2001-12-14t21:59:43.10-05:00
date: 2002-12-14
value: =
address: 10.0.0.1
v6: "::1"
flow: [1, a, {x: y}, [], {}]
block: |
  text
  more
folded: >-
  folded
  text
? complex key
: its value
nested:
  - - deep
    - 2
  - {a: b}
merge:
  <<: {z: 1}
  own: 2
"""


def shape(node: Any) -> Any:
    """A node tree as plain data: kind, tag, where it starts, and its value."""
    where = (node.start_mark.line, node.start_mark.column)
    if isinstance(node, (yaml.ScalarNode, yaml.ScalarEvent)):
        return ("scalar", node.tag, where, node.value)
    if isinstance(node, (yaml.SequenceNode, yaml.SequenceStartEvent)):
        return ("seq", node.tag, where, [shape(item) for item in node.value])
    return ("map", node.tag, where, [(shape(k), shape(v)) for k, v in node.value])


def composed(text: str) -> tuple[Any, Any]:
    """(the loader's tree, PyYAML's), or the classes of the errors they raised."""
    try:
        ours = shape(_Composer(text).compose())
    except yaml.YAMLError as exc:
        ours = type(exc)
    try:
        theirs = shape(yaml.compose(text, Loader=yaml.CSafeLoader))
    except yaml.YAMLError as exc:
        theirs = type(exc)
    return ours, theirs


@pytest.mark.parametrize("text", [
    TRICKY, "- a\n- - b\n  - c\n- {d: e}\n", "plain", "--- !!map\na: b\n", "[a, b]",
    "a: b\nc\n", "a: [b\n", "'a': \"b\"\n", "!!set {a, b}\n", "a: &x 1\nb: &y [2]\n",
])
def test_tree_is_pyyaml_s(text: str) -> None:
    """Same nodes, tags and positions as PyYAML's composer (documents without aliases)."""
    ours, theirs = composed(text)
    assert ours == theirs


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789.:-+_eEx bBoOnNyYtTfFlLsSuU~=<'\"[]{},#!&|>?",
                        max_size=14), min_size=1, max_size=4))
def test_plain_scalars_resolve_as_pyyaml_resolves_them(values: list[str]) -> None:
    """Every scalar gets PyYAML's tag (the loader resolves them with a table of its own),
    and what PyYAML cannot read, the loader cannot either."""
    text = "".join(f"k{i}: {value}\n" for i, value in enumerate(values))
    ours, theirs = composed(text)
    if isinstance(theirs, type):
        assert isinstance(ours, type), (text, ours)
    else:
        assert ours == theirs, text


def test_hosts_are_the_hosts_the_model_makes(tmp_path: Any) -> None:
    """Hosts are built without Host's own ``__init__`` (a fleet makes 50,000): each must
    equal, hash and read like the Host that ``__init__`` makes of the same fields."""
    inventory = loads_inventory(f"""\
all:
  vars:
    user: root
    ansible_everyone: 1
  hosts:
    plain:
    full:
      address: 192.0.2.1
      port: 2222
      identity_file: key
      ssh_options: {{ConnectTimeout: 5}}
      sudo: true
      max_sessions: 3
      sends: 2
      receives: 4
      direct_address: 192.0.2.11
      direct: true
      direct_ciphers: default
      compress: zstd
      buffer: 64M
      ansible_own: x
  children:
    g:
      vars: {{port: 2200}}
      hosts:
        grouped:
          ansible_host: 192.0.2.2
""", tmp_path / "inv.yml")
    assert set(inventory.hosts) == {"plain", "full", "grouped"}
    for host in inventory.hosts.values():
        again = dataclasses.replace(host)  # through Host.__init__
        assert again == host and hash(again) == hash(host)
        for f in dataclasses.fields(Host):
            assert getattr(again, f.name) is getattr(host, f.name), (host.name, f.name)
        with pytest.raises(dataclasses.FrozenInstanceError):
            host.port = 1  # type: ignore[misc]
        assert list(host.var_sources) == list(host.vars)
        assert len(host.var_sources) == len(host.vars)
        assert dict(host.var_sources) == {k: host.var_sources[k] for k in host.vars}
        assert "no-such-var" not in host.var_sources
        assert host.var_sources.get("no-such-var") is None
    plain, full, grouped = (inventory.hosts[n] for n in ("plain", "full", "grouped"))
    assert plain.ssh_options == {} and plain.ssh_options is not grouped.ssh_options
    assert plain.address == "plain" and plain.port == 22 and plain.user == "root"
    assert list(plain.setting_sources) == ["user", "address"]
    assert plain.setting_sources["address"].scope == "host name"
    assert full.setting_sources["port"].scope == "host full"
    assert str(full.setting_sources["port"].origin) == f"{tmp_path / 'inv.yml'}:9:13"
    assert full.var_sources["ansible_everyone"].scope == "group all"
    assert (full.port, full.sends, full.compress, full.buffer) == (2222, 2, "zstd", "64M")
    assert full.identity_file == str(tmp_path / "key")
    assert grouped.port == 2200 and grouped.setting_sources["port"].scope == "group g"
    assert list(grouped.setting_sources) == ["user", "port", "address"]

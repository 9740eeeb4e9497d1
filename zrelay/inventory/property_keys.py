"""A job's ``properties:`` (and a target entry's), read and checked: what replicas keep of the
source's ZFS properties and what they get at receive.

Internal to zrelay.inventory. Every value is checked where it is written (file:line:column), so a
bad name or value never reaches a command line; what zrelay adds on top (a replica is never
mounted, never at the source's paths) is in zrelay.zfs.commands.receive_properties.

    properties:
      send: true                  # zfs send -p (default): compression, recordsize, user props travel
      set: {compression: zstd}    # zfs receive -o compression=zstd
      exclude: [com.example:tag]  # zfs receive -x com.example:tag

A target entry (``- {target: vault:backup/x, properties: {...}}``) replaces the keys it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zrelay.errors import InvalidName
from zrelay.inventory.values import Bad, describe, unknown_key, want_bool
from zrelay.inventory.yamlread import MappingNode, Node, NodeReader, SequenceNode
from zrelay.zfs.commands import (NOT_AT_RECEIVE, REPLICA_PROPERTIES, check_property_name,
                                 check_property_value)
from zrelay.zfs.model import ReplicaProperties

PROPERTY_KEYS = ["send", "set", "exclude"]


@dataclass
class RawProperties:
    """The keys one ``properties:`` mapping gave (None: not given, so the job's or the default)."""

    send: bool | None = None
    set: dict[str, str] | None = None
    exclude: tuple[str, ...] | None = None

    def over(self, base: ReplicaProperties) -> ReplicaProperties:
        """``base`` with the keys given here replaced."""
        return base.override(self.send, self.set, self.exclude)


def read_properties(reader: NodeReader, node: Node, where: str) -> RawProperties | None:
    """A ``properties:`` mapping; None (its problems reported) when any part of it is wrong."""
    what = f"{where}: properties"
    items = reader.pairs(node, what)
    if items is None:
        return None
    before = len(reader.errors.items)
    out = RawProperties()
    set_nodes: dict[str, Node] = {}
    exclude_nodes: dict[str, Node] = {}
    for key, k_node, v_node in items:
        try:
            if key == "send":
                out.send = want_bool(reader.value(v_node), f"{what}.send")
            elif key == "set":
                set_nodes = _read_set(reader, v_node, f"{what}.set")
                out.set = {name: value for name, (value, _) in set_nodes.items()}
            elif key == "exclude":
                exclude_nodes = _read_exclude(reader, v_node, f"{what}.exclude")
                out.exclude = tuple(exclude_nodes)
            else:
                reader.fail(k_node, unknown_key(key, PROPERTY_KEYS, what))
        except Bad as bad:
            reader.fail(v_node, str(bad))
    for name, n_node in exclude_nodes.items():
        if name in set_nodes:
            reader.fail(n_node, f"{what}: {name} is both set and excluded; keep one")
    return out if len(reader.errors.items) == before else None
def _read_set(reader: NodeReader, node: Node, what: str) -> dict[str, tuple[str, Node]]:
    """name → (value, the name's node); each bad entry is reported where it is written."""
    if not isinstance(node, MappingNode):
        raise Bad(f"{what}: expected a mapping of property: value, such as {{compression: zstd}}, "
                  f"got {reader.kind(node)}")
    out: dict[str, tuple[str, Node]] = {}
    for name, k_node, v_node in reader.pairs(node, what) or []:
        problem = _name_problem(name)
        if problem:
            reader.fail(k_node, f"{what}: {problem}")
            continue
        if name in NOT_AT_RECEIVE:
            reader.fail(k_node, f"{what}: {name} cannot be given at receive (zfs fixes it when the dataset "
                                "is created, or it is the volume's own)")
            continue
        raw = reader.value(v_node)
        value = _property_value(raw)
        if value is None:
            reader.fail(v_node, f"{what}.{name}: expected a value such as zstd, 1M, on, 2, got {describe(raw)}")
            continue
        try:
            check_property_value(name, value)
        except InvalidName as exc:
            reader.fail(v_node, f"{what}.{name}: {exc}")
            continue
        out[name] = (value, k_node)
    return out


def _read_exclude(reader: NodeReader, node: Node, what: str) -> dict[str, Node]:
    """name → its node, in the order written; each bad entry is reported where it is written."""
    if not isinstance(node, SequenceNode):
        raise Bad(f"{what}: expected a list of property names, such as [mountpoint, com.example:tag], "
                  f"got {reader.kind(node)}")
    names: dict[str, Node] = {}
    for item in node.value:
        name = reader.value(item)
        problem = _name_problem(name)
        if problem:
            reader.fail(item, f"{what}: {problem}")
        elif name in REPLICA_PROPERTIES:
            reader.fail(item, f"{what}: {name} cannot be excluded: every replica gets "
                              f"{name}={REPLICA_PROPERTIES[name]}; set it to choose another value")
        elif name in names:
            reader.fail(item, f"{what}: {name} is listed twice")
        else:
            names[name] = item
    return names


def _name_problem(name: Any) -> str | None:
    if not isinstance(name, str):
        return f"expected a property name, got {describe(name)}"
    try:
        check_property_name(name)
    except InvalidName as exc:
        return str(exc)
    return None


def _property_value(value: Any) -> str | None:
    """A property value as zfs takes it: YAML's booleans are on/off, numbers are written as such."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None

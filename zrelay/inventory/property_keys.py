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
    out = RawProperties()
    ok = True
    set_nodes: dict[str, Node] = {}
    exclude_nodes: dict[str, Node] = {}
    for key, k_node, v_node in items:
        try:
            if key == "send":
                out.send = want_bool(reader.value(v_node), f"{what}.send")
            elif key == "set":
                out.set, set_nodes = _read_set(reader, v_node, f"{what}.set")
            elif key == "exclude":
                out.exclude, exclude_nodes = _read_exclude(reader, v_node, f"{what}.exclude")
            else:
                reader.fail(k_node, unknown_key(key, PROPERTY_KEYS, what))
                ok = False
        except _Fault as fault:
            reader.fail(fault.node, fault.message)
            ok = False
        except Bad as bad:
            reader.fail(v_node, str(bad))
            ok = False
    for name, n_node in exclude_nodes.items():
        if name in set_nodes:
            reader.fail(n_node, f"{what}: {name} is both set and excluded; keep one")
            ok = False
    return out if ok else None


class _Fault(Exception):
    """A problem at one entry of a ``set`` mapping or an ``exclude`` list."""

    def __init__(self, node: Node, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.message = message


def _read_set(reader: NodeReader, node: Node, what: str) -> tuple[dict[str, str], dict[str, Node]]:
    if not isinstance(node, MappingNode):
        raise Bad(f"{what}: expected a mapping of property: value, such as {{compression: zstd}}, "
                  f"got {reader.kind(node)}")
    values: dict[str, str] = {}
    nodes: dict[str, Node] = {}
    for name, k_node, v_node in reader.pairs(node, what) or []:
        problem = _name_problem(name)
        if problem:
            raise _Fault(k_node, f"{what}: {problem}")
        if name in NOT_AT_RECEIVE:
            raise _Fault(k_node, f"{what}: {name} cannot be given at receive (zfs fixes it when the dataset "
                                 "is created, or it is the volume's own)")
        value = _property_value(reader.value(v_node))
        if value is None:
            raise _Fault(v_node, f"{what}.{name}: expected a value such as zstd, 1M, on, 2, "
                                 f"got {describe(reader.value(v_node))}")
        try:
            check_property_value(name, value)
        except InvalidName as exc:
            raise _Fault(v_node, f"{what}.{name}: {exc}") from None
        values[name] = value
        nodes[name] = k_node
    return values, nodes


def _read_exclude(reader: NodeReader, node: Node, what: str) -> tuple[tuple[str, ...], dict[str, Node]]:
    if not isinstance(node, SequenceNode):
        raise Bad(f"{what}: expected a list of property names, such as [mountpoint, com.example:tag], "
                  f"got {reader.kind(node)}")
    names: dict[str, Node] = {}
    for item in node.value:
        name = reader.value(item)
        if not isinstance(name, str):
            raise _Fault(item, f"{what}: expected a property name, got {describe(name)}")
        problem = _name_problem(name)
        if problem:
            raise _Fault(item, f"{what}: {problem}")
        if name in REPLICA_PROPERTIES:
            raise _Fault(item, f"{what}: {name} cannot be excluded: every replica gets "
                               f"{name}={REPLICA_PROPERTIES[name]}; set it to choose another value")
        if name in names:
            raise _Fault(item, f"{what}: {name} is listed twice")
        names[name] = item
    return tuple(names), names


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

"""YAML read as a tree of nodes that know where they were written, and values made of them.

Internal to zrelay.inventory. YAML is composed to a node tree rather than loaded,
because only nodes know their line and column, and because PyYAML silently keeps
the last of two duplicate keys (a classic way to lose a host): here that is an
error. ``Composer`` is PyYAML's composer made fast on big files and with one node
per alias; ``NodeReader`` turns nodes into values, expanding aliases against one
budget for a whole inventory (``AliasBudget``), so an alias bomb is refused at an
alias instead of filling memory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode as _YamlScalarNode

from zrelay.inventory.model import Origin
from zrelay.inventory.problems import Errors, Place

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

STR_TAG = "tag:yaml.org,2002:str"
INT_TAG = "tag:yaml.org,2002:int"
SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"
NULL_TAG = "tag:yaml.org,2002:null"
MERGE_TAG = "tag:yaml.org,2002:merge"


# The node tree is made of the parser's own events, so composing a 50,000-host file makes
# no object beyond what the parser made: a scalar is its ScalarEvent (``tag`` resolved in
# place), a list or mapping is the event that opened it, given ``value`` (its items, or its
# (key, value) pairs). Every node has ``tag``, ``value``, ``start_mark`` and ``anchor``.
ScalarNode = yaml.ScalarEvent
SequenceNode = yaml.SequenceStartEvent
MappingNode = yaml.MappingStartEvent
#: Any node of that tree (PyYAML has no type hints to name them by).
Node = Any


class AliasNode:
    """Mixin for a node written as ``*anchor``: it shares the anchored node's value.

    The composer makes one small node per alias (never a copy of what it names), so
    a problem can be reported at the alias itself, and readers can count what an
    alias would expand to (see ``InventoryReader.value``). ``anchor`` is the name it uses.
    """

    anchor: str
    target: Node
    value: Any


class _AliasScalar(AliasNode, yaml.ScalarEvent):
    pass


class _AliasSequence(AliasNode, yaml.SequenceStartEvent):
    pass


class AliasMapping(AliasNode, yaml.MappingStartEvent):
    pass


def _alias(target: Node, event: Any) -> Node:
    """A node at ``event`` (an alias) standing for ``target``, sharing its value."""
    node: Any
    if isinstance(target, ScalarNode):
        node = _AliasScalar(event.anchor, target.tag, target.implicit, target.value,
                            event.start_mark, event.end_mark, target.style)
    else:
        kind = _AliasSequence if isinstance(target, SequenceNode) else AliasMapping
        node = kind(event.anchor, target.tag, target.implicit, event.start_mark,
                    event.end_mark, target.flow_style)
        node.value = target.value
    node.target = target
    return node


def _resolver_table() -> dict[str, tuple[re.Pattern[str], dict[str, str]]]:
    """PyYAML's implicit resolvers, for each first character as one regex of named
    alternatives in PyYAML's order: one match per plain scalar instead of one per
    candidate tag (an address like 10.0.0.1 was tried as float, int, then timestamp)."""
    resolvers = _LOADER.yaml_implicit_resolvers
    wildcard = resolvers.get(None, [])
    table: dict[str, tuple[re.Pattern[str], dict[str, str]]] = {}
    for first, candidates in resolvers.items():
        if first is None:
            continue
        candidates = list(candidates) + list(wildcard)
        flags = {regexp.flags for _, regexp in candidates}
        tags = {f"t{i}": tag for i, (tag, _) in enumerate(candidates)}
        if len(flags) != 1:  # not expected from PyYAML: keep them apart, tried in order
            raise ValueError(f"YAML resolvers for {first!r} mix regex flags")
        pattern = "|".join(f"(?P<t{i}>{regexp.pattern})" for i, (_, regexp) in
                           enumerate(candidates))
        table[first] = (re.compile(pattern, flags.pop()), tags)
    return table


_RESOLVERS = _resolver_table()


class Composer:
    """PyYAML's composer, without recursion, with one node per alias, and fast on big files.

    Why not ``yaml.compose``: it returns an alias as the anchored node itself (so
    nothing can tell where the alias was written, which a refused alias bomb must
    say), recurses once per nesting level, makes a node object for every event, and
    resolves every plain scalar's tag through PyYAML's generic resolver: most of the
    composing time of a 50,000-host inventory. Tags are resolved with the same rules
    (YAML 1.1).
    """

    def __init__(self, text: str) -> None:
        self.loader = _LOADER(text)
        #: Open collections, outermost first: (node, and its parent's state when it opened).
        self.stack: list[tuple[Node, list[Any] | None, bool, Node]] = []

    def dispose(self) -> None:
        self.loader.dispose()

    def open_flow(self) -> Any:
        """Where the innermost ``[`` or ``{`` still open starts (for an error at the end)."""
        for node, _, _, _ in reversed(self.stack):
            if node.flow_style:
                return node.start_mark
        return None

    def compose(self) -> Node | None:
        get = self.loader.get_event
        get()  # stream start
        event = get()
        if isinstance(event, yaml.StreamEndEvent):
            return None
        root = self._document()
        get()  # document end
        event = get()
        if not isinstance(event, yaml.StreamEndEvent):
            raise ComposerError(
                "expected a single document in the stream", root.start_mark,
                "but found another document", event.start_mark)
        return root

    def _document(self) -> Node:
        get = self.loader.get_event
        table = _RESOLVERS
        firsts = frozenset(k for k in table if k)
        resolved: dict[str, str] = {}
        anchors: dict[str, Node] = {}
        stack = self.stack
        scalar_event, alias_event = ScalarNode, yaml.AliasEvent
        sequence_start, mapping_start = SequenceNode, MappingNode
        items: list[Any] | None = None  # the open collection's value (None: none is open)
        pairs = False                   # ... and whether it is a mapping
        key: Node = None                # a mapping's key waiting for its value
        while True:
            event = get()
            kind = event.__class__
            if kind is scalar_event:
                tag = event.tag
                if tag is None or tag == "!":
                    value = event.value
                    tag = STR_TAG
                    if event.implicit[0] and (not value or value[0] in firsts):
                        known = resolved.get(value)
                        if known is None:
                            entry = table.get(value[:1])
                            if entry is not None:
                                found = entry[0].match(value)
                                if found is not None:
                                    tag = entry[1][found.lastgroup]  # type: ignore[index]
                            if len(resolved) < 10_000:
                                resolved[value] = tag
                        else:
                            tag = known
                    event.tag = tag
                event.end_mark = None  # nothing reports where a node ends: its memory back now
                node = event
            elif kind is mapping_start or kind is sequence_start:
                tag = event.tag
                if tag is None or tag == "!":
                    event.tag = MAP_TAG if kind is mapping_start else SEQ_TAG
                event.value = []
                event.end_mark = None
                node = event
            elif kind is alias_event:
                target = anchors.get(event.anchor)
                if target is None:
                    raise ComposerError(
                        None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
                node = _alias(target, event)
            else:  # the end of a list or mapping: back to its parent
                done, items, pairs, key = stack.pop()
                if not stack:
                    return done
                continue
            if kind is not alias_event:
                anchor = event.anchor
                if anchor is not None:
                    if anchor in anchors:
                        raise ComposerError(
                            f"found duplicate anchor {anchor!r}; first occurrence",
                            anchors[anchor].start_mark, "second occurrence", event.start_mark)
                    anchors[anchor] = node
            if items is None:  # the document itself
                if kind is scalar_event or kind is alias_event:
                    return node
            elif not pairs:
                items.append(node)
            elif key is None:
                key = node
            else:
                items.append((key, node))
                key = None
            if kind is mapping_start or kind is sequence_start:
                stack.append((node, items, pairs, key))
                items, pairs, key = node.value, kind is mapping_start, None


def _yaml_message(exc: yaml.MarkedYAMLError, text: str, mark: Any) -> str:
    """PyYAML's problem and context as one line, with a hint for the usual tab mistake."""
    problem, context = exc.problem or "", exc.context or ""
    if problem and context.startswith("while"):
        message = f"{problem} ({context})"
    else:
        message = ", ".join(p for p in (context, problem) if p) or "syntax error"
    if mark is not None:
        lines = text.splitlines()
        if mark.line < len(lines) and "\t" in lines[mark.line][:mark.column + 1]:
            message += "; tabs cannot indent YAML, use spaces"
    return " ".join(message.split())


#: What a construct left open at the end of the file is, by PyYAML's context message.
_UNCLOSED = {
    "while scanning a quoted scalar": "the quoted string",
    "while scanning a double-quoted scalar": "the quoted string",
    "while parsing a quoted scalar": "the quoted string",
    "while parsing a flow sequence": "the '[' list",
    "while parsing a flow mapping": "the '{' mapping",
    "while scanning a block scalar": "the block scalar",
}


def compose(text: str, path: Path, errors: Errors) -> Node | None:
    """The YAML node tree of ``text`` (None if empty or broken; the problem is recorded).

    A construct left open (a quote, a ``[`` or ``{``) makes the parser fail at the end
    of the file, where nothing can be fixed: that error is reported where it was opened.
    """
    file = str(path)
    composer = Composer(text)
    try:
        return composer.compose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = _yaml_message(exc, text, mark)
        if mark is not None and not text[mark.index:].strip():
            opened, what = exc.context_mark, _UNCLOSED.get(exc.context or "")
            if opened is None or not text[opened.index:].strip():
                opened, what = composer.open_flow(), None
                if opened is not None:
                    what = "the '[' list" if text[opened.index:].startswith("[") else \
                        "the '{' mapping"
            if opened is not None:
                end = f"found the end of the file at line {mark.line + 1}"
                message = (f"{what} that starts here is never closed ({end})" if what
                           else f"{message}; it starts here ({end})")
                mark = opened
        errors.add(Origin(file, mark.line + 1, mark.column + 1) if mark else Origin(file),
                   f"invalid YAML: {message}")
    except yaml.YAMLError as exc:
        errors.add(Origin(file), f"invalid YAML: {exc}")
    finally:
        composer.dispose()
    return None


def same_yaml_data(first: str, second: str) -> bool:
    """True if two YAML texts hold the same data, aliases compared by anchor name.

    Linear in the texts: loading both and comparing with ``==`` walks every alias's
    expansion, which an alias bomb makes endless. False if either is not valid YAML.
    """
    try:
        pending = [(Composer(first).compose(), Composer(second).compose())]
    except yaml.YAMLError:
        return False
    while pending:
        a, b = pending.pop()
        if a is None or b is None:
            if a is not b:
                return False
            continue
        if type(a) is not type(b) or a.tag != b.tag:
            return False
        if isinstance(a, AliasNode):
            if a.anchor != b.anchor:
                return False
        elif isinstance(a, ScalarNode):
            if a.value != b.value:
                return False
        elif len(a.value) != len(b.value):
            return False
        elif isinstance(a, SequenceNode):
            pending.extend(zip(a.value, b.value))
        else:  # a mapping: keys in any order, as dicts compare
            b_items = {(k.tag, k.value): v for k, v in b.value if isinstance(k, ScalarNode)}
            for a_key, a_value in a.value:
                if not isinstance(a_key, ScalarNode):
                    return False
                b_value = b_items.pop((a_key.tag, a_key.value), None)
                if b_value is None:
                    return False
                pending.append((a_value, b_value))
            if b_items or len(a.value) != len(b.value):
                return False
    return True


# --------------------------------------------------------------------------- values of nodes


class Tagged(str):
    """A scalar under a tag zrelay does not interpret (Ansible's !vault, !unsafe): kept as text."""

    tag: str

    def __new__(cls, value: str, tag: str) -> Tagged:
        obj = super().__new__(cls, value)
        obj.tag = tag
        return obj


class _Constructor(SafeConstructor):
    """Builds scalar values with YAML 1.1 rules (what Ansible sees)."""


#: Values that YAML aliases may expand to, in one inventory and every file it reads:
#: far more than any real inventory shares, far less than an alias bomb.
ALIAS_BUDGET = 1_000_000
#: Levels of nesting a value may have (expanded through its aliases): recursive walkers
#: of the data (JSON output, Ansible) must never run out of stack.
MAX_NESTING = 100
_BUILDING = (None, 0, 0)  # a collection being built: met again, it is a recursive alias


class AliasBudget:
    """What the YAML aliases of one inventory (every file it reads) have expanded to so far."""

    def __init__(self) -> None:
        self.values = 0  # -1: refused (reported once)


class NodeReader:
    """Reads the nodes of one YAML document: mappings, scalars and values, errors located."""

    def __init__(self, file: str, errors: Errors, aliases: AliasBudget) -> None:
        self.file = file
        self.errors = errors
        self.aliases = aliases
        self.ctor = _Constructor()
        #: Collections built so far (by id of their value list, which aliases share):
        #: (data, values it expands to, nesting levels), or _BUILDING.
        self._built: dict[int, tuple[Any, int, int]] = {}
        self._merged: dict[int, list[tuple[Node, Node]]] = {}  # merge sources

    # -- node helpers

    def at(self, node: Node) -> Origin:
        mark = node.start_mark
        return Origin(self.file, mark.line + 1, mark.column + 1)

    def fail(self, node: Node, message: str) -> None:
        self.errors.add(self.at(node), message)

    @staticmethod
    def is_null(node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == NULL_TAG

    def place(self, node: Node) -> Place:
        mark = node.start_mark
        return (self.file, mark.line + 1, mark.column + 1)

    def entry_at(self, node: Node, key: str, name: bool) -> Place | None:
        """Where ``key`` (its name, or else its value) is written in mapping ``node``."""
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.value == key:
                    return self.place(key_node if name else value_node)
        return None

    @staticmethod
    def kind(node: Node) -> str:
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        if node.tag == NULL_TAG:
            return "nothing"
        return f"the value {node.value!r}"

    def pairs(self, node: Node, what: str) -> list[tuple[str, Node, Node]] | None:
        """A mapping's (key, key node, value node), as ``entries`` reads them."""
        entries = self.entries(node, what)
        return None if entries is None else [(k.value, k, v) for k, v in entries]

    def entries(self, node: Node, what: str, _seen: frozenset[int] = frozenset()
                ) -> list[tuple[Node, Node]] | None:
        """A mapping's (key node, value node) pairs; null counts as empty.

        Merge keys (``<<: *anchor``) are expanded with YAML's rule (explicit
        keys win); duplicate explicit keys are reported, keeping the first.
        A merged mapping is expanded once per file, however often it is merged
        (merges of merges would otherwise double at each level). The usual
        mapping (string keys, none twice, no merge) is answered with the node's
        own list of pairs: read it, never change it.
        """
        if node.__class__ is MappingNode and not _seen:  # not an alias: the usual mapping
            pairs: list[tuple[Node, Node]] = node.value
            keys: set[str] = set()
            for k, _ in pairs:
                if k.__class__ is not ScalarNode or k.tag != STR_TAG or k.value in keys:
                    break
                keys.add(k.value)
            else:
                return pairs
        if self.is_null(node):
            return []
        if not isinstance(node, MappingNode):
            self.fail(node, f"{what}: expected a mapping, got {self.kind(node)}")
            return None
        ident = id(node.value)  # an alias shares its anchor's list
        if ident in _seen:
            self.fail(node, f"{what}: recursive YAML merge")
            return None
        explicit: dict[str, tuple[Node, Node]] = {}
        merged: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    items = self._merged.get(id(source.value))
                    if items is None:
                        items = self.entries(source, f"{what} (merged)", _seen | {ident}) or []
                        if isinstance(source, MappingNode):
                            self._merged[id(source.value)] = items
                    for item in items:
                        merged.setdefault(item[0].value, item)
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag == NULL_TAG:
                self.fail(key_node, f"{what}: keys must be plain names, got {self.kind(key_node)}")
                continue
            key = key_node.value
            if key in explicit:
                first = explicit[key][0].start_mark.line + 1
                self.fail(key_node, f"duplicate key {key!r} in {what} (first at line {first}); "
                          "YAML would silently keep only the last one")
                continue
            explicit[key] = (key_node, value_node)
        if not merged:
            return list(explicit.values())
        inherited = [item for key, item in merged.items() if key not in explicit]
        return inherited + list(explicit.values())

    def scalar(self, node: Node, what: str) -> Any:
        """A scalar's value under YAML 1.1 rules; a local tag (``!vault``) keeps the text."""
        tag = node.tag
        if tag == STR_TAG:
            return node.value
        if tag == INT_TAG and node.value.isdigit() and (node.value[0] != "0" or node.value == "0"):
            return int(node.value)  # the usual port or count: no sign, base prefix, _ or ':'
        if tag.startswith("!") and not tag.startswith("!!"):
            return Tagged(node.value, tag)
        build = self.ctor.yaml_constructors.get(tag)
        try:
            if build is None:
                return self.ctor.construct_undefined(node)
            return build(self.ctor, _YamlScalarNode(tag, node.value, node.start_mark,
                                                    node.end_mark, node.style))
        except Exception as exc:  # bad timestamps, unknown !!tags, ...
            problem = getattr(exc, "problem", None) or str(exc)
            self.fail(node, f"{what}: cannot read {node.value!r}: {problem}")
            return node.value

    def value(self, node: Node, what: str = "value", _depth: int = 0) -> Any:
        """A node as plain Python data, reporting duplicate keys at any depth.

        An alias gives the very object its anchor gave (built once, never copied), so
        building is linear in the size of the file whatever the aliases. What they
        would expand to when the value is walked as a tree (``inventory list --json``,
        Ansible) is counted against one budget for the whole inventory, and nesting is
        capped, so the "billion laughs" is refused at an alias instead of filling memory.
        """
        if isinstance(node, ScalarNode):
            if isinstance(node, AliasNode) and not self.spend(node, 1, what):
                return None
            return self.scalar(node, what)
        ident = id(node.value)  # an alias shares its anchor's list
        built = self._built.get(ident)
        if built is None:
            if _depth >= MAX_NESTING:
                self.fail(node, f"{what}: nested more than {MAX_NESTING} levels deep")
                return None
            self._built[ident] = _BUILDING
            built = self._build(node, what, _depth)
            self._built[ident] = built
        elif built is _BUILDING:
            self.fail(node, f"{what}: recursive YAML alias")
            return None
        if isinstance(node, AliasNode) and not self.spend(node, built[1], what):
            return None
        return built[0]

    def _build(self, node: Node, what: str, depth: int) -> tuple[Any, int, int]:
        """(data, values it stands for when expanded, levels of nesting) of a collection."""
        size, deepest, culprit = 1, 0, node
        data: Any
        items: list[tuple[str | None, Node]]
        if isinstance(node, SequenceNode):
            data, items = [], [(None, item) for item in node.value]
        else:
            data, items = {}, [(k.value, v) for k, v in self.entries(node, what) or []]
        for key, item in items:
            child = self.value(item, what if key is None else f"{what}.{key}", depth + 1)
            if key is None:
                data.append(child)
            else:
                data[key] = child
                size += 1
            built = None if isinstance(item, ScalarNode) else self._built.get(id(item.value))
            if isinstance(built, tuple) and child is built[0]:
                size += built[1]
                if built[2] > deepest:
                    deepest, culprit = built[2], item
            else:
                size += 1
        if deepest >= MAX_NESTING:  # reported where it first goes too deep, not above
            if deepest == MAX_NESTING:
                self.fail(culprit, f"{what}: nested more than {MAX_NESTING} levels deep")
            return None, 1, deepest + 1
        return data, size, deepest + 1

    def spend(self, alias: Node, size: int, what: str) -> bool:
        """Count ``size`` values expanded through ``alias``; past the budget, False
        (reported once)."""
        aliases = self.aliases
        if aliases.values < 0:
            return False  # already refused: one report is enough
        aliases.values += size
        if aliases.values <= ALIAS_BUDGET:
            return True
        name = f"*{alias.anchor}" if isinstance(alias, AliasNode) else "an alias"
        self.fail(alias, f"{what}: alias {name} expands to {size:,} values, taking this "
                  f"inventory's YAML aliases past {ALIAS_BUDGET:,} expanded values "
                  "(an alias bomb?)")
        aliases.values = -1
        return False

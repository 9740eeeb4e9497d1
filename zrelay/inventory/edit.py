"""Edit a zrelay inventory file the way a careful person would: change only what was asked.

Why this is more than "load, change, dump": inventories are written and
commented by hand, and a tool that reflows them gets banned from the repo. So:

* the file is loaded with ruamel.yaml in round-trip mode (comments, key order
  and quoting survive) with the file's own indentation;
* the change is made on that tree, both trees are dumped, and only the lines
  that differ between the two dumps are spliced into the *original* text, so
  a line ruamel would format differently is left exactly as it was unless the
  edit touches it; blank lines and comments that introduce what follows an
  insertion or deletion stay where they were;
* the new text is validated with the real loader before anything is written:
  an edit that adds a problem is refused and the file stays byte-identical
  (problems the file already had do not block an edit that fixes another);
* the write is atomic (a temporary file in the same directory, same
  permissions, then ``os.replace``), and refused if the file changed meanwhile.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import re
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from zrelay.errors import InventoryError, UsageError
from zrelay.inventory.ansible import RangeError, expand_range, looks_like_ini
from zrelay.inventory.load import (HOST_ALIASES, ZRELAY_SECTION, inspect_inventory_text,
                                   same_yaml_data)
from zrelay.inventory.model import S3_SCHEME, Endpoint, Inventory, suggest

_INDENT = re.compile(r"^( *)")


# --------------------------------------------------------------------------- values


def parse_value(text: str) -> Any:
    """A command-line value typed as people mean it.

    ``22`` is an integer, ``true``/``false``/``yes``/``no`` are booleans, a value
    in quotes (``'22'``) is that string, ``{...}``/``[...]`` is JSON (for
    ``ssh_options``), anything else is a string.
    """
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"value {text!r} looks like JSON but is not: {exc.msg}") from None
    return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` → (key, typed value); one-line usage errors for anything else."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep:
        raise UsageError(f"expected key=value, got {text!r}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise UsageError(f"{key!r} is not a variable name (letters, digits, '_')")
    if value == "":
        raise UsageError(f"{key}= has no value; use `zrelay inventory unset` to remove a variable")
    return key, parse_value(value)


def _node(value: Any) -> Any:
    """A value as ruamel should write it, quoted where YAML 1.1 (what Ansible and zrelay
    read) would otherwise turn the text into something else (``yes``, ``01:30``, ``~``)."""
    if isinstance(value, dict):
        mapping = CommentedMap()
        for key, item in value.items():
            mapping[key] = _node(item)
        mapping.fa.set_flow_style()
        return mapping
    if isinstance(value, list):
        seq = CommentedSeq(_node(item) for item in value)
        seq.fa.set_flow_style()
        return seq
    if isinstance(value, str):
        try:
            same = pyyaml.safe_load(f"k: {value}\n") == {"k": value}
        except pyyaml.YAMLError:
            same = False
        if not same or value != value.strip():
            return (SingleQuotedScalarString(value) if "'" not in value
                    else DoubleQuotedScalarString(value))
    return value


# --------------------------------------------------------------------------- text splicing


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) as the file is written.

    ruamel's own guess mistakes ``key:\\n  - item`` layouts, so look at the
    first nested mapping line and the first block sequence under a key.
    """
    mapping, offset = 0, None
    lines = [line for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    for before, line in zip(lines, lines[1:]):
        outer = len(_INDENT.match(before).group(1))  # type: ignore[union-attr]
        inner = len(_INDENT.match(line).group(1))  # type: ignore[union-attr]
        if not before.rstrip().endswith(":") and not re.search(r":\s+#", before):
            continue
        if line.lstrip().startswith("- "):
            if offset is None and inner >= outer:
                offset = inner - outer
        elif inner > outer and not mapping:
            mapping = inner - outer
    mapping = mapping or 2
    offset = mapping if offset is None else offset
    return mapping, offset + 2, offset


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_filler(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def _outer_filler(line: str, indent: int) -> bool:
    """A blank line, or a comment less indented than ``indent``: it introduces what follows."""
    return not line.strip() or (line.lstrip().startswith("#") and _indent(line) < indent)


def _splice(original: list[str], before: list[str], after: list[str]) -> list[str]:
    """Apply the changes ``before`` → ``after`` to ``original`` (which ``before`` renders).

    Lines of ``original`` that ruamel renders identically are matched to
    ``before``; each changed run is mapped onto the original through them.
    Insertions slide above blank lines and outer comments (they belong to
    what follows), and deletions leave them in place, because ruamel keeps
    such lines attached to the entry before them.
    """
    mapping: dict[int, int] = {}
    for block in difflib.SequenceMatcher(None, original, before, autojunk=False) \
            .get_matching_blocks():
        for k in range(block.size):
            mapping[block.b + k] = block.a + k

    def start_of(i: int) -> int:
        """Where R0 line i sits in the original (just after the last matched line before it)."""
        k = i - 1
        while k >= 0 and k not in mapping:
            k -= 1
        return mapping[k] + 1 if k >= 0 else 0

    def end_of(i: int) -> int:
        k = i
        while k < len(before) and k not in mapping:
            k += 1
        return mapping[k] if k < len(before) else len(original)

    edits: list[tuple[int, int, list[str]]] = []
    done = 0  # original lines before this index belong to earlier edits or context
    ops = difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            continue
        new = after[j1:j2]
        if tag == "insert":
            a = mapping[i1] if i1 in mapping else start_of(i1)
            first = next((line for line in new if line.strip()), None)
            if first is not None:
                depth = _indent(first)
                while a > done and _outer_filler(original[a - 1], depth):
                    a -= 1
            b = a
        else:
            a, b = start_of(i1), end_of(i2)
            if tag == "delete":
                depth = next((_indent(line) for line in original[a:b] if line.strip()), 0)
                while b > a and _outer_filler(original[b - 1], depth):
                    b -= 1
                # A comment right above a removed entry, at its indentation, describes it.
                while a > done and original[a - 1].strip().startswith("#") and \
                        _indent(original[a - 1]) == depth:
                    a -= 1
                # No blank line left right after an opening "key:" or another blank line.
                before_line = original[a - 1] if a > 0 else ""
                opener = re.sub(r"\s+#.*$", "", before_line).rstrip().endswith(":")
                if a == 0 or not before_line.strip() or opener:
                    while b < end_of(i2) and not original[b].strip():
                        b += 1
        edits.append((a, b, new))
        done = max(done, b)
    result = list(original)
    for a, b, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        result[a:b] = new
    return result


# --------------------------------------------------------------------------- results


@dataclass
class EditResult:
    """What an edit would do: the old and new text, and one line per change made."""

    path: Path
    old: str
    new: str
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def diff(self) -> str:
        """A unified diff, as ``--dry-run`` prints it."""
        name = str(self.path)
        return "".join(difflib.unified_diff(self.old.splitlines(keepends=True),
                                            self.new.splitlines(keepends=True),
                                            f"a/{name}", f"b/{name}"))

    def write(self) -> None:
        """Replace the file atomically; refuse if someone changed it since it was read."""
        write_atomic(self.path, self.new, expected=self.old)


def write_atomic(path: Path, text: str, expected: str | None = None) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory.

    Permissions (and, where allowed, owner) are copied from the file being
    replaced; a symlink is followed so the link itself survives.
    """
    real = Path(os.path.realpath(path))
    info = real.stat()
    if expected is not None and _read(real) != expected:
        raise InventoryError("changed on disk while the edit was prepared; run the command "
                             "again", str(path))
    fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.S_IMODE(info.st_mode))
        try:
            os.chown(tmp, info.st_uid, info.st_gid)
        except OSError:
            pass
        os.replace(tmp, real)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(real.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _read(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def _normalise(message: str) -> str:
    """A problem's text without line numbers, so moved-but-unchanged problems compare equal."""
    return re.sub(r"\bline \d+", "line N", message)


# --------------------------------------------------------------------------- editor


class InventoryEditor:
    """One zrelay inventory file opened for editing; each method changes the tree."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.original = _read(self.path)
        except FileNotFoundError:
            raise InventoryError("inventory file not found", str(self.path)) from None
        except IsADirectoryError:
            raise InventoryError("is a directory; expected an inventory file",
                                 str(self.path)) from None
        except UnicodeDecodeError:
            raise InventoryError("not valid UTF-8 text", str(self.path)) from None
        except OSError as exc:
            raise InventoryError(f"cannot read inventory: {exc.strerror or exc}",
                                 str(self.path)) from None
        text = self.original
        self.bom = text.startswith("\ufeff")
        text = text.removeprefix("\ufeff")
        self.crlf = "\r\n" in text
        self.text = text.replace("\r\n", "\n")
        if looks_like_ini(self.text, self.path):
            raise InventoryError("is an Ansible INI inventory; zrelay edits only YAML inventories "
                                 "(include this file from one and edit that)", str(self.path))
        mapping, sequence, offset = _guess_indent(self.text)
        self.yaml = YAML(typ="rt")
        self.yaml.preserve_quotes = True
        self.yaml.width = 4096
        self.yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        self.before_data = self._load()
        self.data = self._load()
        if self.data is None:
            self.data = CommentedMap()
        if not isinstance(self.data, CommentedMap):
            raise InventoryError("expected a mapping at the top of the inventory", str(self.path),
                                 1, 1)
        self.inventory, self.problems = inspect_inventory_text(self.text, self.path)
        self.changes: list[str] = []
        self.notes: list[str] = []
        self.host_checks: list[tuple[str, str]] = []  # (host, var) that must come from here

    def _load(self) -> Any:
        try:
            return self.yaml.load(self.text)
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = (str(self.path), mark.line + 1, mark.column + 1) if mark else (str(self.path),)
            problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
            raise InventoryError(f"cannot edit: invalid YAML: {problem}", *where) from None
        except Exception as exc:  # ruamel raises a few non-YAML errors for odd input
            raise InventoryError(f"cannot edit: {exc}", str(self.path)) from None

    # -- finding things in the tree

    def _groups(self) -> Iterator[tuple[str, Any, Any]]:
        """(name, group mapping or None, container holding it) for every group entry."""

        def walk(name: str, container: Any, seen: tuple[int, ...]) -> Iterator[tuple[str, Any,
                                                                                     Any]]:
            value = container[name]
            yield name, value, container
            if isinstance(value, CommentedMap) and id(value) not in seen:
                children = value.get("children")
                if isinstance(children, CommentedMap):
                    for child in list(children):
                        if isinstance(child, str):
                            yield from walk(child, children, seen + (id(value),))

        for key in list(self.data):
            if key != ZRELAY_SECTION and isinstance(key, str):
                yield from walk(key, self.data, ())

    def _host_entries(self, name: str) -> tuple[list[tuple[CommentedMap, str]],
                                                list[tuple[CommentedMap, str]]]:
        """(entries keyed exactly ``name``, entries whose range key includes ``name``)."""
        exact: list[tuple[CommentedMap, str]] = []
        ranged: list[tuple[CommentedMap, str]] = []
        for _, group, _ in self._groups():
            hosts = group.get("hosts") if isinstance(group, CommentedMap) else None
            if not isinstance(hosts, CommentedMap):
                continue
            for key in hosts:
                if not isinstance(key, str):
                    continue
                if key == name:
                    exact.append((hosts, key))
                elif "[" in key:
                    try:
                        if name in expand_range(key):
                            ranged.append((hosts, key))
                    except RangeError:
                        pass
        return exact, ranged

    def _group_entries(self, name: str) -> list[tuple[Any, CommentedMap | None, Any]]:
        return [(n, g, c) for n, g, c in self._groups() if n == name]

    def _where(self, container: Any, key: Any) -> str:
        try:
            line, column = container.lc.key(key)
            return f"{self.path}:{line + 1}:{column + 1}"
        except (AttributeError, KeyError, TypeError):
            return str(self.path)

    def _zrelay(self) -> CommentedMap:
        section = self.data.get(ZRELAY_SECTION)
        if not isinstance(section, CommentedMap):
            if section is not None:
                raise InventoryError("the zrelay section is not a mapping; fix it by hand first",
                                     str(self.path))
            section = CommentedMap()
            self.data[ZRELAY_SECTION] = section
        return section

    def _all_group(self) -> CommentedMap:
        group = self.data.get("all")
        if isinstance(group, CommentedMap):
            return group
        if group is not None:
            raise InventoryError("group 'all' is not a mapping; fix it by hand first",
                                 str(self.path))
        group = CommentedMap()
        if ZRELAY_SECTION in self.data:
            self.data.insert(list(self.data).index(ZRELAY_SECTION), "all", group)
        else:
            self.data["all"] = group
        return group

    @staticmethod
    def _child_map(parent: CommentedMap, key: str, flow: bool = False) -> CommentedMap:
        """``parent[key]`` as a mapping, created (empty ``key:`` becomes a mapping) if needed."""
        value = parent.get(key)
        if isinstance(value, CommentedMap):
            return value
        if value is not None:
            raise UsageError(f"{key!r} is not a mapping; fix it by hand first")
        value = CommentedMap()
        if flow:
            value.fa.set_flow_style()
        parent[key] = value
        return value

    # -- operations

    def add_host(self, name: str, address: str | None, group: str | None,
                 variables: list[tuple[str, Any]]) -> None:
        """A new host entry, in ``group`` (created under ``all`` if new) or ``all``."""
        if not name or any(c.isspace() for c in name):
            raise UsageError(f"host name {name!r} is empty or contains whitespace")
        try:
            names = expand_range(name)
        except RangeError as exc:
            raise UsageError(str(exc)) from None
        known = self.inventory.hosts if self.inventory else {}
        for host in names:
            if host in known or self._host_entries(host)[0]:
                where = known[host].origin if host in known else None
                raise UsageError(f"host {host!r} already exists"
                                 + (f" ({where})" if where else "")
                                 + "; use `zrelay inventory set` to change it")
        entry: dict[str, Any] = {}
        if address is not None:
            entry["address"] = address
        entry.update(variables)
        parent: Any
        if group in (None, "all"):
            parent = self._all_group()
            label = "group 'all'"
        else:
            assert group is not None
            entries: list[Any] = [g for _, g, _ in self._group_entries(group)]
            if entries and not isinstance(entries[0], CommentedMap):
                container = next(c for n, g, c in self._group_entries(group))
                container[group] = CommentedMap()
                entries = [container[group]]
            if entries:
                parent = entries[0]
                label = f"group {group!r}"
            else:
                if self.inventory and group in self.inventory.groups:
                    label = f"group {group!r}"
                else:
                    label = f"new group {group!r}"
                children = self._child_map(self._all_group(), "children")
                parent = children[group] = CommentedMap()
        hosts = self._child_map(parent, "hosts")
        siblings = [hosts[k] for k in hosts]
        flow = bool(siblings) and isinstance(siblings[-1], CommentedMap) and \
            siblings[-1].fa.flow_style()
        value: Any = None
        if entry:
            value = CommentedMap()
            for key, item in entry.items():
                value[key] = _node(item)
            if flow:
                value.fa.set_flow_style()
            else:
                value.fa.set_block_style()
        hosts[name] = value
        self.changes.append(f"added host {name} to {label}")

    def _target(self, name: str) -> str:
        """Whether ``name`` is a host or a group here (hosts listed by a range count too)."""
        is_host = bool(self._host_entries(name)[0]) or bool(
            self.inventory and name in self.inventory.hosts)
        is_group = name == "all" or bool(self._group_entries(name)) or bool(
            self.inventory and name in self.inventory.groups)
        if is_host and is_group:
            raise UsageError(f"{name!r} is both a host and a group; rename one first")
        if is_host:
            return "host"
        if is_group:
            return "group"
        known = list(self.inventory.hosts if self.inventory else []) + list(
            self.inventory.groups if self.inventory else [])
        raise UsageError(f"no host or group {name!r}{suggest(name, known)}")

    def _host_vars_map(self, name: str, create: bool) -> CommentedMap | None:
        """The mapping holding host ``name``'s own vars in this file (made if ``create``)."""
        exact, ranged = self._host_entries(name)
        if not exact:
            if ranged:
                hosts, key = ranged[0]
                raise UsageError(f"host {name!r} is written as part of the range {key!r} "
                                 f"({self._where(hosts, key)}); name the range to change all "
                                 "of its hosts, or write the host out by hand")
            if not create:
                return None
            hosts = self._child_map(self._all_group(), "hosts")
            hosts[name] = CommentedMap()
            self.notes.append(f"host {name} comes from an included inventory; its settings "
                              f"go under all.hosts here, which take precedence")
            return hosts[name]
        with_vars = [(h, k) for h, k in exact if isinstance(h[k], CommentedMap) and h[k]]
        hosts, key = (with_vars or exact)[0]
        value = hosts[key]
        if not isinstance(value, CommentedMap):
            if not create:
                return None
            filled = [v for v in hosts.values() if isinstance(v, CommentedMap) and v]
            flow = bool(filled) and all(v.fa.flow_style() for v in filled)
            value = CommentedMap()
            if flow:
                value.fa.set_flow_style()
            hosts[key] = value
        return value

    def _group_vars_map(self, name: str, create: bool) -> CommentedMap | None:
        entries = self._group_entries(name)
        if name == "all" and not entries:
            if not create:
                return None
            entries = [("all", self._all_group(), self.data)]
        if not entries:
            if not create:
                return None
            children = self._child_map(self._all_group(), "children")
            children[name] = CommentedMap()
            entries = [(name, children[name], children)]
            self.notes.append(f"group {name} comes from an included inventory; its vars go "
                              "under all.children here")
        with_vars = [e for e in entries if isinstance(e[1], CommentedMap)
                     and isinstance(e[1].get("vars"), CommentedMap)]
        _, group, container = (with_vars or entries)[0]
        if not isinstance(group, CommentedMap):
            if not create:
                return None
            group = CommentedMap()
            container[name] = group
        current = group.get("vars")
        if isinstance(current, CommentedMap):
            return current
        if not create:
            return None
        if current is not None:
            raise UsageError(f"vars of group {name!r} is not a mapping; fix it by hand first")
        current = CommentedMap()
        if "vars" in group:
            group["vars"] = current
        else:
            group.insert(0, "vars", current)
        return current

    @staticmethod
    def _same_setting(mapping: CommentedMap, key: str) -> str | None:
        """The key in ``mapping`` that sets the same zrelay setting as ``key`` (an alias)."""
        canonical = HOST_ALIASES.get(key, key)
        for existing in mapping:
            if existing != key and HOST_ALIASES.get(existing, existing) == canonical:
                return str(existing)
        return None

    def set_vars(self, name: str, assignments: list[tuple[str, Any]]) -> None:
        """Set variables on a host (its own entry) or a group (its ``vars:``)."""
        if not assignments:
            raise UsageError("nothing to set: give at least one key=value")
        kind = self._target(name)
        mapping = (self._host_vars_map(name, create=True) if kind == "host"
                   else self._group_vars_map(name, create=True))
        assert mapping is not None
        for key, value in assignments:
            written = key if key in mapping else (self._same_setting(mapping, key) or key)
            old = mapping.get(written, _MISSING)
            mapping[written] = _node(value)
            shown = json.dumps(value) if not isinstance(value, str) else value
            alias = f" (written as {written!r}, the name this entry uses)" if written != key else ""
            if old is _MISSING:
                self.changes.append(f"set {key}={shown} on {kind} {name}{alias}")
            else:
                self.changes.append(f"changed {key} to {shown} on {kind} {name}{alias}")
            if kind == "host":
                self.host_checks.append((name, written))

    def unset_vars(self, name: str, keys: list[str]) -> None:
        """Remove variables from a host's own entry or a group's ``vars:`` in this file."""
        if not keys:
            raise UsageError("nothing to unset: give at least one variable name")
        kind = self._target(name)
        mapping = (self._host_vars_map(name, create=False) if kind == "host"
                   else self._group_vars_map(name, create=False))
        for key in keys:
            written = None
            if mapping is not None:
                written = key if key in mapping else self._same_setting(mapping, key)
            if written is None:
                raise UsageError(self._not_set(kind, name, key))
            del mapping[written]  # type: ignore[union-attr]
            self.changes.append(f"removed {written} from {kind} {name}")
        if mapping is not None and not mapping:
            self._drop_empty(kind, name)

    def _not_set(self, kind: str, name: str, key: str) -> str:
        message = f"{kind} {name} does not set {key!r} in {self.path}"
        if kind == "host" and self.inventory and name in self.inventory.hosts:
            source = self.inventory.hosts[name].var_sources.get(key)
            if source is not None:
                message += f"; its {key} comes from {source}"
        return message

    def _drop_empty(self, kind: str, name: str) -> None:
        """An emptied vars mapping goes; an emptied host entry becomes ``name:``."""
        if kind == "host":
            for hosts, key in self._host_entries(name)[0]:
                if isinstance(hosts[key], CommentedMap) and not hosts[key]:
                    hosts[key] = None
            return
        for _, group, _ in self._group_entries(name) or [("all", self.data.get("all"), None)]:
            if isinstance(group, CommentedMap) and isinstance(group.get("vars"), CommentedMap) \
                    and not group["vars"]:
                del group["vars"]

    def remove_host(self, name: str, force: bool) -> None:
        """Remove a host from every group here; refuse while jobs use it unless ``force``."""
        exact, ranged = self._host_entries(name)
        if not exact:
            if ranged:
                hosts, key = ranged[0]
                raise UsageError(f"host {name!r} is written as part of the range {key!r} "
                                 f"({self._where(hosts, key)}); remove the range or write its "
                                 "hosts out by hand")
            if self.inventory and name in self.inventory.hosts:
                origin = self.inventory.hosts[name].origin
                raise UsageError(f"host {name!r} comes from {origin}, an included inventory; "
                                 "remove it there")
            known = list(self.inventory.hosts) if self.inventory else []
            raise UsageError(f"no host {name!r} in {self.path}{suggest(name, known)}")
        names = set(expand_range(name)) if "[" in name else {name}
        users = self._jobs_using(names)
        if users and not force:
            first_index, first_job = users[0]
            more = f" and {len(users) - 1} more" if len(users) > 1 else ""
            raise UsageError(f"host {name!r} is used by job {self._job_label(first_job)} "
                             f"({self._where(self._zrelay()['jobs'], first_index)}){more}; "
                             "remove those jobs first, or pass --force to remove the host's "
                             "jobs and targets too")
        for hosts, key in exact:
            del hosts[key]
        self._prune_empty_hosts()
        self.changes.append(f"removed host {name}")
        if users:
            self._drop_job_references(names)
        if self.inventory and name in self.inventory.hosts:
            for var_file in self.inventory.sources:
                if Path(var_file).parent.name == "host_vars" and \
                        Path(var_file).stem == name:
                    self.notes.append(f"{var_file} is left in place")

    def _prune_empty_hosts(self) -> None:
        for group_name, group, container in list(self._groups()):
            if isinstance(group, CommentedMap) and isinstance(group.get("hosts"), CommentedMap) \
                    and not group["hosts"]:
                del group["hosts"]
                if not group and container is not self.data:
                    container[group_name] = None

    def _jobs(self) -> list[tuple[int, CommentedMap]]:
        section = self.data.get(ZRELAY_SECTION)
        jobs = section.get("jobs") if isinstance(section, CommentedMap) else None
        if not isinstance(jobs, CommentedSeq):
            return []
        return [(i, job) for i, job in enumerate(jobs) if isinstance(job, CommentedMap)]

    @staticmethod
    def _job_label(job: CommentedMap) -> str:
        return repr(str(job.get("name") or job.get("source")))

    @staticmethod
    def _host_of(text: Any) -> str | None:
        if not isinstance(text, str) or text.startswith(S3_SCHEME + ":"):
            return None
        return text.partition(":")[0] if ":" in text else None

    def _jobs_using(self, names: set[str]) -> list[tuple[int, CommentedMap]]:
        used = []
        for index, job in self._jobs():
            targets = job.get("targets")
            hosts = {self._host_of(job.get("source"))}
            if isinstance(targets, list):
                hosts |= {self._host_of(t) for t in targets}
            if hosts & names:
                used.append((index, job))
        return used

    def _drop_job_references(self, names: set[str]) -> None:
        jobs = self._zrelay()["jobs"]
        for index, job in reversed(self._jobs()):
            label = self._job_label(job)
            if self._host_of(job.get("source")) in names:
                del jobs[index]
                self.changes.append(f"removed job {label} (its source was on the host)")
                continue
            targets = job.get("targets")
            if not isinstance(targets, list):
                continue
            for t_index in reversed(range(len(targets))):
                if self._host_of(targets[t_index]) in names:
                    self.changes.append(f"removed target {targets[t_index]} from job {label}")
                    del targets[t_index]
            if not targets:
                del jobs[index]
                self.changes.append(f"removed job {label} (no targets left)")

    def add_job(self, source: str, targets: list[str], recursive: bool, prefix: str | None,
                name: str | None) -> None:
        """Append a job to ``zrelay.jobs`` in the style of the jobs already there."""
        if not targets:
            raise UsageError("a job needs at least one target: --to HOST:DATASET or --to s3:NAME")
        try:
            Endpoint.parse(source)
        except UsageError as exc:
            raise UsageError(f"source: {exc}") from None
        section = self._zrelay()
        jobs = section.get("jobs")
        if jobs is None:
            jobs = section["jobs"] = CommentedSeq()
        if not isinstance(jobs, CommentedSeq):
            raise UsageError("zrelay.jobs is not a list; fix it by hand first")
        previous = jobs[-1] if len(jobs) and isinstance(jobs[-1], CommentedMap) else None
        job = CommentedMap()
        if name:
            job["name"] = _node(name)
        job["source"] = _node(source)
        if recursive:
            job["recursive"] = True
        if prefix:
            job["snapshots"] = _node({"prefix": prefix})
        target_list = CommentedSeq(_node(t) for t in targets)
        prev_targets = previous.get("targets") if previous is not None else None
        if not isinstance(prev_targets, CommentedSeq) or prev_targets.fa.flow_style():
            target_list.fa.set_flow_style()
        else:
            target_list.fa.set_block_style()
        job["targets"] = target_list
        if previous is not None and previous.fa.flow_style():
            job.fa.set_flow_style()
        jobs.append(job)
        self.changes.append(f"added job {name or source} -> {', '.join(targets)}")

    def add_s3_target(self, name: str, bucket: str, endpoint: str | None, prefix: str | None,
                      storage_class: str | None, region: str | None) -> None:
        """Add an entry to ``zrelay.s3_targets``."""
        section = self._zrelay()
        targets = self._child_map(section, "s3_targets")
        if name in targets:
            raise UsageError(f"S3 target {name!r} already exists "
                             f"({self._where(targets, name)})")
        entry = CommentedMap()
        for key, value in (("bucket", bucket), ("endpoint", endpoint), ("prefix", prefix),
                           ("region", region), ("storage_class", storage_class)):
            if value is not None:
                entry[key] = _node(value)
        targets[name] = entry
        self.changes.append(f"added S3 target {name} (bucket {bucket})")

    # -- result

    def _dump(self, data: Any) -> str:
        stream = io.StringIO()
        self.yaml.dump(data, stream)
        return stream.getvalue()

    def result(self) -> EditResult:
        """The edited text, validated; InventoryError (exit 2) if the edit adds a problem."""
        before = self._dump(self.before_data) if self.before_data is not None else ""
        after = self._dump(self.data)
        spliced = "".join(_splice(self.text.splitlines(keepends=True),
                                  before.splitlines(keepends=True),
                                  after.splitlines(keepends=True)))
        same = same_yaml_data(spliced, after)  # never expands aliases: a bomb must not hang
        text = spliced if same else after
        if text.endswith("\n\n") and not self.text.endswith("\n\n"):
            text = text.rstrip("\n") + "\n"  # a removed last entry leaves no blank tail
        if self.crlf:
            text = text.replace("\n", "\r\n")
        if self.bom:
            text = "\ufeff" + text
        inventory, problems = inspect_inventory_text(text.removeprefix("\ufeff"), self.path)
        self._refuse_new_problems(problems)
        self._check_effect(inventory)
        return EditResult(self.path, self.original, text, list(self.changes), list(self.notes))

    def _refuse_new_problems(self, problems: list[InventoryError]) -> None:
        old = Counter(_normalise(p.message) for p in self.problems)
        for problem in problems:
            key = _normalise(problem.message)
            if old[key] > 0:
                old[key] -= 1
                continue
            raise InventoryError(f"{problem.message} (edit refused; {self.path} is unchanged)",
                                 problem.file, problem.line, problem.column)
        if self.problems:
            self.notes.append(f"{self.path} still has {len(problems)} problem(s) it had before; "
                              "see `zrelay inventory validate`")

    def _check_effect(self, inventory: Inventory | None) -> None:
        """A host setting overridden by a host_vars file would be a silent no-op: refuse it."""
        if inventory is None:
            return
        mine = str(self.path)
        for host, key in self.host_checks:
            resolved = inventory.hosts.get(host)
            if resolved is None:
                continue
            source = resolved.setting_sources.get(HOST_ALIASES.get(key, key)) or \
                resolved.var_sources.get(key)
            if source is not None and source.origin is not None and source.origin.file != mine:
                raise InventoryError(f"{key} of host {host!r} is also set at {source.origin}, "
                                     f"which takes precedence; change it there (edit refused; "
                                     f"{self.path} is unchanged)", str(self.path))


_MISSING = object()

__all__ = ["EditResult", "InventoryEditor", "parse_assignment", "parse_value", "write_atomic"]

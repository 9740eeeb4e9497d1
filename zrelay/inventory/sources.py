"""Every source of an inventory read into a Builder: the zrelay inventory, Ansible
inventories (INI or YAML), and the group_vars/ and host_vars/ directories beside them.

Internal to zrelay.inventory. zrelay's own inventory is read strictly (unknown keys
are errors); an Ansible inventory (INI, or anything named in ``zrelay.include``) is
read as Ansible reads it (see ``resolve.VarsChecker``). Ansible's own text rules
(ranges, INI syntax, vars file names) live in ``ansible.py``.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

from zrelay.inventory.ansible import (IniSection, RangeError, directory_sources, expand_range,
                                      looks_like_ini, parse_ini, split_port, vars_files,
                                      vars_names)
from zrelay.inventory.build import Builder
from zrelay.inventory.model import Origin, suggest
from zrelay.inventory.problems import Errors
from zrelay.inventory.resolve import Vars, VarsChecker, new_origin
from zrelay.inventory.section import ZrelaySection
from zrelay.inventory.values import Bad, resolve_path, unknown_key, want_str
from zrelay.inventory.yamlread import (INT_TAG, MERGE_TAG, STR_TAG, AliasMapping, AliasNode,
                                       MappingNode, Node, ScalarNode, SequenceNode, compose)

#: Keys in the top level of the file that are not groups.
ZRELAY_SECTION = "zrelay"
GROUP_KEYS = ("hosts", "vars", "children")
_SPACE = re.compile(r"\s")  # what str.isspace() calls whitespace
#: A host name with nothing to look at twice: no whitespace, no range ('['), no port (':').
_PLAIN_NAME = re.compile(r"[^\s:\[]+")


class InventoryReader(ZrelaySection):
    """Walks one YAML document's node tree into a Builder: groups, hosts, their vars, the
    inventories it includes, and (for zrelay's own inventory) the ``zrelay:`` section."""

    def __init__(self, file: str, base_dir: str, builder: Builder, errors: Errors,
                 ansible: bool = False) -> None:
        super().__init__(file, errors, builder.aliases)
        self.base_dir = base_dir
        self.builder = builder
        self.ansible = ansible  # an Ansible inventory (included), not zrelay's own
        self.checker = VarsChecker(errors, base_dir, ansible)
        self._groups_read: set[tuple[str, int]] = set()  # (group, id of its body's list)

    # -- document

    def read(self, root: Node) -> None:
        top = self.pairs(root, "inventory")
        if top is None:
            return
        if not top:
            self.fail(root, "inventory is empty; expected a mapping with an 'all:' group")
            return
        zrelay_node: Node | None = None
        for key, key_node, value_node in top:
            if key == ZRELAY_SECTION:
                if self.ansible:
                    self.fail(key_node, "an included inventory cannot have a zrelay: section; "
                              "jobs and settings belong in the including inventory")
                    continue
                zrelay_node = value_node
                # Included inventories first: this file's own settings override theirs.
                self.read_includes(value_node)
        for key, key_node, value_node in top:
            if key == ZRELAY_SECTION:
                continue
            if (not self.ansible and key != "all" and suggest(key, [ZRELAY_SECTION])
                    and self.has_foreign_keys(value_node)):
                hint = suggest(key, [ZRELAY_SECTION])
                self.fail(key_node, f"unknown top-level key {key!r}{hint}")
            else:
                self.read_group(key, key_node, value_node, parent=None)
        if zrelay_node is not None:
            self.read_zrelay(zrelay_node)

    # -- include:

    def read_includes(self, node: Node) -> None:
        """``zrelay.include``: Ansible inventories (files or directories) to take hosts from."""
        if not isinstance(node, MappingNode):
            return  # read_zrelay reports it
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == "include":
                break
        else:
            return
        items = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
        if self.is_null(value_node):
            return
        if isinstance(value_node, MappingNode):
            self.fail(value_node, "include: expected a path or a list of paths to Ansible "
                      "inventories, got a mapping")
            return
        seen: dict[str, int] = {}
        for item in items:
            try:
                text = want_str(self.value(item, "include"), "include")
            except Bad as bad:
                self.fail(item, str(bad))
                continue
            path = Path(resolve_path(text, self.base_dir))
            key = str(path)
            if key in seen:
                self.fail(item, f"include: {text!r} is already included at line {seen[key]}")
                continue
            seen[key] = item.start_mark.line + 1
            if path == Path(os.path.abspath(self.file)):
                self.fail(item, f"include: {text!r} is this inventory itself")
                continue
            if not path.exists():
                self.fail(item, f"include: {text!r} not found (looked for {path})")
                continue
            if path.is_dir():
                try:
                    files = directory_sources(path)
                except OSError as exc:
                    self.fail(item, f"include: cannot list {path}: {exc.strerror or exc}")
                    continue
                if not files:
                    self.fail(item, f"include: directory {text!r} holds no inventory file")
                    continue
                self.builder.add_vars_dir(str(path), ansible=True)
            else:
                files = [path]
                self.builder.add_vars_dir(str(path.parent), ansible=True)
            for file in files:
                read_ansible_source(self.builder, file)

    @staticmethod
    def has_foreign_keys(node: Node) -> bool:
        """True for a mapping with keys a group cannot have: a misspelt section, not a group."""
        return isinstance(node, MappingNode) and any(
            isinstance(k, ScalarNode) and k.tag != MERGE_TAG and k.value not in GROUP_KEYS
            for k, _ in node.value)

    def name(self, key: str, key_node: Node, what: str) -> str | None:
        """A host or group name as written (YAML's own typing of keys is ignored)."""
        if not key.strip():
            self.fail(key_node, f"{what} name is empty")
            return None
        if _SPACE.search(key):
            self.fail(key_node, f"{what} name {key!r} contains whitespace")
            return None
        return key

    def read_group(self, name: str, key_node: Node, node: Node, parent: str | None) -> None:
        if self.name(name, key_node, "group") is None:
            return
        where = f"group {name!r}"
        if name == "all" and parent is not None:
            self.fail(key_node, "'all' cannot be a child group: every group is already in 'all'")
            return
        group = self.builder.group(name, self.at(key_node), parent)
        if isinstance(node, MappingNode):
            # A group's body reached again (through an alias) under the same name says
            # nothing new: read it once, so an alias of a group inside itself, or a tree
            # that lists one subtree twice per level, stays finite and linear.
            seen = (name, id(node.value))
            if seen in self._groups_read:
                return
            self._groups_read.add(seen)
            size = len(node.value)
            if isinstance(node, AliasNode) and not self.spend(node, size, where):
                return
        items = self.pairs(node, where)
        for key, k_node, v_node in items or []:
            if key == "vars":
                group.vars.update(self.read_vars(v_node, f"vars of {where}", for_host=False))
            elif key == "hosts":
                self.read_hosts(name, v_node, where)
            elif key == "children":
                for child, c_key, c_node in self.pairs(v_node, f"children of {where}") or []:
                    self.read_group(child, c_key, c_node, parent=name)
            else:
                self.fail(k_node, unknown_key(key, list(GROUP_KEYS), where))

    def read_hosts(self, group: str, node: Node, where: str) -> None:
        if isinstance(node, SequenceNode):
            self.fail(node, f"hosts of {where}: expected a mapping of host names (each "
                      "followed by ':' and optional vars), got a list")
            return
        if isinstance(node, AliasMapping) and not self.spend(node, len(node.value), where):
            return
        listed: dict[str, str] = {}  # host -> the key that listed it (a range, maybe)
        file, host, read_vars = self.file, self.builder.host, self.read_vars
        for key_node, value_node in self.entries(node, f"hosts of {where}") or []:
            key = key_node.value
            if _PLAIN_NAME.fullmatch(key):  # the usual name: no range, port or space in it
                names, port = [key], None
            else:
                if self.name(key, key_node, "host") is None:
                    continue
                pattern, port = split_port(key) if self.ansible else (key, None)
                try:
                    names = expand_range(pattern)
                except RangeError as exc:
                    self.fail(key_node, str(exc))
                    continue
                if (not self.ansible and ":" in pattern
                    and ":" in re.sub(r"\[[^\]]*\]", "", pattern)):
                    self.fail(key_node, f"host name {key!r} contains ':'; set 'port' instead "
                              "(host:port names are not supported)")
                    continue
            if value_node.__class__ is MappingNode or (
                    isinstance(value_node, MappingNode) or self.is_null(value_node)):
                host_vars = read_vars(value_node, f"host {key!r}", for_host=True)
            else:
                self.fail(value_node, f"host {key!r}: expected its vars as a mapping (or "
                          f"nothing), got {self.kind(value_node)}")
                host_vars = Vars(broken={"?"})  # still a host, so jobs naming it do not cascade
            mark = key_node.start_mark
            at = new_origin(file, mark.line + 1, mark.column + 1)
            if port is not None:
                place = (file, mark.line + 1, mark.column + 1)
                self.checker.add(host_vars, "ansible_port", port, place, place, f"host {key!r}",
                                 True)
            for name in names:
                if name in listed:
                    first = listed[name]
                    also = f" (by {first!r})" if first != name else ""
                    self.fail(key_node, f"host {name!r} is listed twice in hosts of {where}"
                              f"{also}")
                    continue
                listed[name] = key
                # host() copies what it keeps, unless a range shares nothing
                host(name, at, group, host_vars, owned=len(names) == 1)

    def read_vars(self, node: Node, where: str, *, for_host: bool) -> Vars:
        """One vars mapping, each setting checked and every alias mapped to its zrelay name."""
        result = Vars()
        if node.__class__ is not MappingNode:  # null, an alias, or not a mapping at all
            if not self.is_null(node) and not isinstance(node, MappingNode) and self.ansible:
                self.fail(node, f"{where}: expected a mapping of variables, got "
                          f"{self.kind(node)}")
                return result
            if isinstance(node, AliasMapping) and not self.spend(node, len(node.value), where):
                return result
        file, add, scalar, value_of = self.file, self.checker.add, self.scalar, self.value
        for key_node, value_node in self.entries(node, where) or []:
            key = key_node.value
            # A plain scalar (no alias, nothing to count or share): its value directly.
            locate = None
            if value_node.__class__ is ScalarNode:
                value, tag = value_node.value, value_node.tag
                if tag == STR_TAG:
                    pass
                elif tag == INT_TAG and value.isdigit() and (value[0] != "0" or value == "0"):
                    value = int(value)  # the usual port: as scalar() reads it, without the call
                else:
                    value = scalar(value_node, key)
            else:
                value = value_of(value_node, key)
                locate = functools.partial(self.entry_at, value_node)
            key_mark, value_mark = key_node.start_mark, value_node.start_mark
            add(result, key, value, (file, key_mark.line + 1, key_mark.column + 1),
                (file, value_mark.line + 1, value_mark.column + 1), where, for_host, locate)
        return result


# --------------------------------------------------------------------------- Ansible sources


def read_ansible_source(builder: Builder, path: Path) -> None:
    """One Ansible inventory file (INI or YAML), read as Ansible reads it."""
    builder.sources.append(str(path))
    text = read_text(path, builder.errors, "inventory")
    if text is None:
        return
    base_dir = os.path.dirname(os.path.abspath(path))
    if looks_like_ini(text, path):
        read_ini(builder, text, path, base_dir)
        return
    root = compose(text, path, builder.errors)
    if root is None:
        return  # an empty Ansible inventory is allowed
    InventoryReader(str(path), base_dir, builder, builder.errors, ansible=True).read(root)


def read_ini(builder: Builder, text: str, path: Path, base_dir: str) -> None:
    """An Ansible INI inventory into the builder; every problem located at line:column."""
    file = str(path)
    errors = builder.errors
    sections, problems = parse_ini(text)
    for problem in problems:
        errors.add(Origin(file, problem.line, problem.column), problem.message)
    checker = VarsChecker(errors, base_dir, ansible=True)
    for section in sections:
        _read_ini_section(builder, checker, file, section)


def _read_ini_section(builder: Builder, checker: VarsChecker, file: str,
                      section: IniSection) -> None:
    origin = Origin(file, section.line, section.column)
    name = "all" if section.group == "ungrouped" else section.group
    group = builder.group(name, origin, parent=None)
    where = f"group {section.group!r}"
    if section.kind == "vars":
        for var in section.vars:
            checker.add(group.vars, var.key, var.value, (file, var.line, var.column),
                        (file, var.line, var.value_column), f"vars of {where}", False)
    elif section.kind == "children":
        for child, line, column in section.children:
            if child == "all":
                builder.errors.add(Origin(file, line, column),
                                   "'all' cannot be a child group: every group is already in 'all'")
                continue
            builder.group(child, Origin(file, line, column), parent=name)
    elif section.kind == "hosts":
        for host in section.hosts:
            at = Origin(file, host.line, host.column)
            try:
                names = expand_range(host.pattern)
            except RangeError as exc:
                builder.errors.add(at, str(exc))
                continue
            host_vars = Vars()
            if host.port is not None:
                place = (file, host.line, host.column)
                checker.add(host_vars, "ansible_port", host.port, place, place,
                            f"host {host.pattern!r}", True)
            for var in host.vars:
                checker.add(host_vars, var.key, var.value, (file, var.line, var.column),
                            (file, var.line, var.value_column), f"host {host.pattern!r}", True)
            for host_name in names:
                builder.host(host_name, at, name, host_vars.copy())


# --------------------------------------------------------------------------- files


def read_vars_dirs(builder: Builder) -> None:
    """Read group_vars/NAME* and host_vars/NAME* for every known group and host."""
    listing: dict[str, list[str]] = {}
    for directory, ansible in builder.vars_dirs.items():
        base = Path(directory)
        checker = VarsChecker(builder.errors, directory, ansible)
        group_dir, host_dir = base / "group_vars", base / "host_vars"
        present = vars_names(group_dir, listing)
        for name, group in builder.groups.items():
            if name in present:
                for file in vars_files(group_dir, listing, name):
                    group.dir_vars.update(_vars_file(builder, file, checker,
                                                     f"group {name!r}", for_host=False))
        present = vars_names(host_dir, listing)  # a few files for a fleet, or none
        for name, host in builder.hosts.items():
            if name in present:
                for file in vars_files(host_dir, listing, name):
                    if host.dir_vars is None:
                        host.dir_vars = Vars()
                    host.dir_vars.update(_vars_file(builder, file, checker,
                                                    f"host {name!r}", for_host=True))


def _vars_file(builder: Builder, path: Path, checker: VarsChecker, owner: str,
               for_host: bool) -> Vars:
    """One group_vars/host_vars file: a mapping of variables (empty is fine)."""
    builder.sources.append(str(path))
    text = read_text(path, builder.errors, "variables file")
    if text is None:
        return Vars()
    if text.lstrip().startswith("$ANSIBLE_VAULT"):
        if not checker.ansible:
            builder.errors.add(Origin(str(path), 1, 1), "encrypted with ansible-vault; zrelay "
                               "cannot read it (keep zrelay's settings in plain files)")
        return Vars()
    root = compose(text, path, builder.errors)
    if root is None:
        return Vars()
    reader = InventoryReader(str(path), checker.base_dir, builder, builder.errors,
                             checker.ansible)
    return reader.read_vars(root, f"vars of {owner}", for_host=for_host)


def read_text(path: Path, errors: Errors, what: str = "inventory") -> str | None:
    where = Origin(str(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        errors.add(where, f"{what} file not found")
        return None
    except IsADirectoryError:
        errors.add(where, f"is a directory; expected an {what} file" if what[0] in "aeiou"
                   else f"is a directory; expected a {what} file")
        return None
    except OSError as exc:
        errors.add(where, f"cannot read {what}: {exc.strerror or exc}")
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        errors.add(Origin(str(path), line, column), "not valid UTF-8 text")
        return None

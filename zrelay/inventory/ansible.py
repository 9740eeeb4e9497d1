"""Ansible's inventory conventions that are not YAML: host ranges, the INI format, vars directories.

Why a module of its own: these rules are Ansible's, not zrelay's, and are kept
as close to Ansible's behaviour as possible so an inventory written for Ansible
means the same thing to zrelay. Everything here is plain text processing with
line and column numbers; the loader (``sources.py``) turns the results into checked
settings.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import string
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: More hosts than this from one range is almost certainly a typo (``[1:10000]``).
MAX_RANGE_HOSTS = 10_000

#: Extensions of variable files in ``group_vars/`` and ``host_vars/`` (as Ansible's
#: host_group_vars plugin): YAML, JSON, or no extension at all.
VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")

#: Values Ansible's ``boolean()`` accepts, for INI values and ``ansible_become``.
_TRUE = frozenset({"y", "yes", "on", "1", "true", "t"})
_FALSE = frozenset({"n", "no", "off", "0", "false", "f"})

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUP_NAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")


class RangeError(ValueError):
    """A host range that cannot be expanded; the message is one line."""


# --------------------------------------------------------------------------- host ranges


def has_range(name: str) -> bool:
    """True when ``name`` holds a ``[begin:end]`` range (Ansible only looks for '[')."""
    return "[" in name


def expand_range(pattern: str, limit: int = MAX_RANGE_HOSTS) -> list[str]:
    """Every host name ``pattern`` stands for, as Ansible expands it.

    ``nas[01:03]`` → nas01, nas02, nas03 (a leading zero fixes the width);
    ``web[a:c]`` → weba, webb, webc; ``db[1:9:4]`` → db1, db5, db9; several
    ranges multiply out left to right.
    """
    if not has_range(pattern):
        return [pattern]
    start = pattern.index("[")
    close = pattern.find("]", start)
    if close < 0:
        raise RangeError(f"host range in {pattern!r} has no closing ']'")
    head, body, tail = pattern[:start], pattern[start + 1:close], pattern[close + 1:]
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise RangeError(f"host range [{body}] in {pattern!r} must be [begin:end] or "
                         "[begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    if not end:
        raise RangeError(f"host range [{body}] in {pattern!r} has no end")
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not step_text.isdigit() or int(step_text) < 1:
        raise RangeError(f"host range [{body}] in {pattern!r}: step {step_text!r} is not a "
                         "positive integer")
    step = int(step_text)
    items: list[str]
    if begin in string.ascii_letters and end in string.ascii_letters:
        lo, hi = string.ascii_letters.index(begin), string.ascii_letters.index(end)
        if lo > hi:
            raise RangeError(f"host range [{body}] in {pattern!r} runs backwards")
        items = list(string.ascii_letters[lo:hi + 1:step])
    elif begin.isdigit() and end.isdigit():
        lo, hi = int(begin), int(end)
        if lo > hi:
            raise RangeError(f"host range [{body}] in {pattern!r} runs backwards")
        width = 0
        if begin.startswith("0") and len(begin) > 1:
            if len(begin) != len(end):
                raise RangeError(f"host range [{body}] in {pattern!r}: a zero-padded range "
                                 f"needs begin and end of equal width, e.g. [{begin}:"
                                 f"{str(hi).zfill(len(begin))}]")
            width = len(begin)
        count = (hi - lo) // step + 1
        if count > limit:
            raise RangeError(f"host range [{body}] in {pattern!r} makes {count} hosts "
                             f"(at most {limit})")
        items = [str(n).zfill(width) for n in range(lo, hi + 1, step)]
    else:
        raise RangeError(f"host range [{body}] in {pattern!r} must be two numbers or two "
                         "letters")
    names: list[str] = []
    for item in items:
        names.extend(expand_range(head + item + tail, limit))
        if len(names) > limit:
            raise RangeError(f"host range {pattern!r} makes more than {limit} hosts")
    return names


def split_port(pattern: str) -> tuple[str, int | None]:
    """``host:2222`` → (``host``, 2222), as Ansible reads host keys; IPv6 stays whole."""
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", pattern)
    if bracketed:
        return bracketed.group(1), int(bracketed.group(2))
    plain = re.fullmatch(r"([^:\[\]]+(?:\[[^\]]*\][^:\[\]]*)*):(\d+)", pattern)
    if plain:
        return plain.group(1), int(plain.group(2))
    return pattern, None


# --------------------------------------------------------------------------- Ansible values


def ansible_bool(value: Any) -> bool | None:
    """Ansible's ``boolean()``: True/False for the words it accepts, else None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    return None


def ini_value(text: str) -> Any:
    """An INI value as Ansible reads it: a Python literal if it is one, else the text."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, (bytes, complex)) or value is Ellipsis:
        return text
    return value


# --------------------------------------------------------------------------- INI format


@dataclass
class IniVar:
    """``key=value`` with the columns of both halves (1-based)."""

    key: str
    value: Any
    line: int
    column: int
    value_column: int


@dataclass
class IniHost:
    """One host line: the name (or range) as written, its port, its vars."""

    pattern: str
    line: int
    column: int
    port: int | None = None
    vars: list[IniVar] = field(default_factory=list)


@dataclass
class IniSection:
    """One ``[name]``, ``[name:vars]`` or ``[name:children]`` block."""

    group: str
    kind: str  # hosts | vars | children
    line: int
    column: int
    hosts: list[IniHost] = field(default_factory=list)
    vars: list[IniVar] = field(default_factory=list)
    children: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass
class IniProblem:
    line: int
    column: int
    message: str


def looks_like_ini(text: str, path: Path) -> bool:
    """True for an Ansible INI inventory; YAML otherwise.

    ``.ini`` is INI and ``.yml``/``.yaml``/``.json`` are YAML; anything else is
    INI when its first meaningful line is a ``[section]`` or a host line that
    YAML would not read as a mapping key (Ansible's ``hosts`` file is the
    classic extension-less INI inventory).
    """
    suffix = path.suffix.lower()
    if suffix in (".ini", ".cfg"):
        return True
    if suffix in (".yml", ".yaml", ".json"):
        return False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line == "---" or line.startswith("%"):
            return False
        if _SECTION.match(line):
            return True
        first = line.split()[0]
        return not first.endswith(":") and ": " not in line and not line.startswith(("{", "-"))
    return False


def parse_ini(text: str) -> tuple[list[IniSection], list[IniProblem]]:
    """Sections of an Ansible INI inventory, and every problem found (with line:column).

    Lines before the first section belong to ``ungrouped``, as in Ansible.
    A ``[g:vars]`` or ``[p:children]`` naming a group that is never declared
    (by ``[g]``, ``[g:children]``, or as someone's child) is an error, as in Ansible.
    """
    sections = [IniSection("ungrouped", "hosts", 1, 1)]
    problems: list[IniProblem] = []
    declared: set[str] = {"all", "ungrouped"}
    wanted: dict[str, tuple[int, int, str]] = {}  # group -> where first needed, why
    current = sections[0]
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        column = len(raw) - len(raw.lstrip()) + 1
        match = _SECTION.match(stripped)
        if match:
            group, kind = match.group(1), match.group(2) or "hosts"
            if kind not in ("hosts", "vars", "children"):
                problems.append(IniProblem(number, column, f"section [{group}:{kind}] has "
                                           "unknown type; expected [NAME], [NAME:vars] or "
                                           "[NAME:children]"))
                current = IniSection(group, "ignored", number, column)
                continue
            current = IniSection(group, kind, number, column + 1)
            sections.append(current)
            if kind == "vars":
                wanted.setdefault(group, (number, column + 1,
                                          f"section [{group}:vars] is for group {group!r}, "
                                          "which this file never declares"))
            else:
                declared.add(group)
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            problems.append(IniProblem(number, column, f"invalid section header {stripped!r}: "
                                       "no spaces inside the brackets, one optional :vars or "
                                       ":children"))
            current = IniSection("?", "ignored", number, column)
            continue
        if current.kind == "ignored":
            continue
        if current.kind == "hosts":
            host = _ini_host(raw, number, column, problems)
            if host is not None:
                current.hosts.append(host)
        elif current.kind == "vars":
            if "=" not in stripped:
                problems.append(IniProblem(number, column, f"expected key=value in "
                                           f"[{current.group}:vars], got {stripped!r}"))
                continue
            key, _, value = stripped.partition("=")
            key = key.strip()
            value_column = raw.index("=") + 2 + (len(value) - len(value.lstrip()))
            if not key:
                problems.append(IniProblem(number, column, "variable name before '=' is empty"))
                continue
            current.vars.append(IniVar(key, ini_value(value.strip()), number, column,
                                       value_column))
        else:
            child = _GROUP_NAME.match(stripped)
            if not child:
                problems.append(IniProblem(number, column, f"expected a group name in "
                                           f"[{current.group}:children], got {stripped!r}"))
                continue
            name = child.group(1)
            current.children.append((name, number, column))
            wanted.setdefault(name, (number, column,
                                     f"[{current.group}:children] names group {name!r}, "
                                     "which this file never declares"))
    for group, (line, column, message) in wanted.items():
        if group not in declared:
            problems.append(IniProblem(line, column, message + f"; add a [{group}] section"))
    problems.sort(key=lambda p: (p.line, p.column))
    return sections, problems


def _ini_host(raw: str, number: int, column: int, problems: list[IniProblem]) -> IniHost | None:
    """One host line: ``name[:port] [key=value ...]  # comment``."""
    try:
        lexer = shlex.shlex(raw, posix=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError as exc:
        problems.append(IniProblem(number, column, f"cannot read host line: {exc}"))
        return None
    if not tokens:
        return None
    pattern, port = split_port(tokens[0])
    if tokens[0].endswith(":"):
        problems.append(IniProblem(number, column, f"host {tokens[0]!r} ends with ':'; "
                                   "write the port after it (host:2222)"))
        return None
    if pattern.strip() == "---":
        problems.append(IniProblem(number, column, "'---' starts a YAML document; name YAML "
                                   "inventories .yml"))
        return None
    host = IniHost(pattern, number, column, port)
    search_from = column - 1 + len(tokens[0])
    for token in tokens[1:]:
        at = raw.find(token.split("=", 1)[0], search_from)
        token_column = (at if at >= 0 else search_from) + 1
        if "=" not in token:
            problems.append(IniProblem(number, token_column, f"expected key=value after host "
                                       f"{pattern!r}, got {token!r}"))
            return None
        key, _, value = token.partition("=")
        search_from = max(search_from, token_column - 1 + len(key) + 1)
        host.vars.append(IniVar(key, ini_value(value), number, token_column,
                                token_column + len(key) + 1))
    return host


# --------------------------------------------------------------------------- vars directories


def _listing(directory: Path, listing: dict[str, list[str]]) -> list[str]:
    """The sorted entries of ``directory`` (none if it cannot be read), listed once."""
    entries = listing.get(str(directory))
    if entries is None:
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            entries = []
        listing[str(directory)] = entries
    return entries


def vars_names(directory: Path, listing: dict[str, list[str]]) -> set[str]:
    """Every name that may have variables in ``directory`` (a superset): a fleet of
    thousands of hosts asks ``vars_files`` only for the few that have a file."""
    entries = _listing(directory, listing)
    return set(entries) | {os.path.splitext(entry)[0] for entry in entries}


def vars_files(directory: Path, listing: dict[str, list[str]], name: str) -> list[Path]:
    """The files that hold ``name``'s variables in ``group_vars/`` or ``host_vars/``.

    As Ansible: ``NAME``, ``NAME.yml``, ``NAME.yaml``, ``NAME.json``, and every
    such file under a ``NAME/`` directory (sorted, recursively); hidden files and
    other extensions are skipped. ``listing`` caches one ``os.listdir`` per directory.
    """
    entries = _listing(directory, listing)
    found: list[Path] = []
    for ext in VARS_EXTENSIONS:
        if name + ext in entries:
            path = directory / (name + ext)
            if path.is_file():
                found.append(path)
    if name in entries and (directory / name).is_dir():
        found.extend(_dir_vars_files(directory / name))
    return found


def _dir_vars_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return found
    for entry in entries:
        if entry.startswith("."):
            continue
        path = directory / entry
        if path.is_dir():
            found.extend(_dir_vars_files(path))
        elif os.path.splitext(entry)[1] in VARS_EXTENSIONS:
            found.append(path)
    return found


#: Files Ansible skips when an inventory source is a directory (INVENTORY_IGNORE_EXTS).
IGNORED_IN_DIRECTORY = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst",
                        ".orig", ".ini", ".cfg", ".retry")


def directory_sources(directory: Path) -> list[Path]:
    """The inventory files Ansible reads from an inventory directory, in its order."""
    sources: list[Path] = []
    for entry in sorted(os.listdir(directory)):
        path = directory / entry
        if entry.startswith(".") or entry in ("group_vars", "host_vars"):
            continue
        if entry.endswith(IGNORED_IN_DIRECTORY) or not path.is_file():
            continue
        sources.append(path)
    return sources

"""Read an inventory file into an Inventory, locating every problem at file:line:column.

Why two stages: *readers* walk each source into a ``_Builder`` of raw groups,
hosts, vars and the ``zrelay:`` section, each value checked on its own and
tagged with where it was written; then ``_Builder.finish`` merges variables by
precedence, resolves references and builds the model.

Sources, all feeding the same builder: the zrelay inventory (YAML, strict:
unknown keys are errors), Ansible inventories (INI, or anything named in
``zrelay.include``; read as Ansible reads them, see ``_VarsChecker``), and the
group_vars/ and host_vars/ directories beside each. Ansible's own text rules
(ranges, INI syntax, vars file names) live in ``ansible.py``.

YAML is composed to a node tree rather than loaded, because only nodes know
their line and column, and because PyYAML silently keeps the last of two
duplicate keys (a classic way to lose a host) — here that is an error.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as _dt
import difflib
import functools
import gc
import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, NamedTuple, TypeVar

import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode as _YamlScalarNode

from zrelay.errors import InvalidName, InventoryError, UsageError
from zrelay.inventory.ansible import (IniSection, RangeError, ansible_bool, directory_sources,
                                      expand_range, looks_like_ini, parse_ini,
                                      split_port, vars_files, vars_names)
from zrelay.inventory.model import (DEFAULT_MAX_SESSIONS, DEFAULT_PORT, DEFAULT_STORAGE_CLASS,
                                    S3_SCHEME, Endpoint, Group, Host, Inventory, Job, Origin,
                                    S3Ref, S3Target, Settings, Target, VarSource, name_list,
                                    suggest)
from zrelay.zfs.commands import SEND_OPTIONS
from zrelay.zfs.direct_ssh import check_ssh_ciphers, check_ssh_host
from zrelay.zfs.model import SnapshotFilter
from zrelay.zfs.names import snapshot_problem
from zrelay.inventory.endpoints import s3_endpoint_problem, s3_region_problem
from zrelay.inventory.ssh_options import SshOptionError, convert_ssh_option
from zrelay.zfs.names import check_remote_path
from zrelay.zfs.stream_filters import check_age_recipient

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_MERGE_TAG = "tag:yaml.org,2002:merge"
_SPACE = re.compile(r"\s")  # what str.isspace() calls whitespace
#: A host name with nothing to look at twice: no whitespace, no range ('['), no port (':').
_PLAIN_NAME = re.compile(r"[^\s:\[]+")
_CONTROL = re.compile(r"[\x00-\x1f]")
_NULL_TAG = "tag:yaml.org,2002:null"

#: Keys in the top level of the file that are not groups.
ZRELAY_SECTION = "zrelay"
_GROUP_KEYS = ("hosts", "vars", "children")

# --------------------------------------------------------------------------- errors


class _Bad(Exception):
    """A value check failed; the caller knows where the value was written.

    ``key``: the entry of a mapping value at fault (an ``ssh_options`` option), so the
    error can point at that entry rather than at the start of the mapping.
    """

    def __init__(self, message: str, key: str | None = None, in_name: bool = False) -> None:
        super().__init__(message)
        self.key = key
        self.in_name = in_name  # the entry's name is at fault, not its value


#: Where a value was written, as (file, line, column), both 1-based: what readers keep for
#: every key and value. A tuple costs a fraction of an Origin, and a fleet of 50,000 hosts
#: needs only few of them as Origins (an error, a source someone asks about).
Place = tuple[str, int, int]


class _Errors:
    """Every problem found so far, in the order found."""

    def __init__(self) -> None:
        self.items: list[InventoryError] = []
        self._seen: set[str] = set()

    def add(self, where: Origin | Place, message: str) -> None:
        """Record one problem; a node reached twice (through a YAML alias) is reported once."""
        origin = where if isinstance(where, Origin) else Origin(*where)
        error = origin.error(message)
        if error.render() not in self._seen:
            self._seen.add(error.render())
            self.items.append(error)

    def sorted(self) -> list[InventoryError]:
        """File order, so the first error is the first one a reader of the file meets."""
        return sorted(self.items, key=lambda e: (e.file or "", e.line or 0, e.column or 0))


# --------------------------------------------------------------------------- value checks
#
# These take plain Python values (as any reader produces them) and raise _Bad
# with a one-line message saying what was expected.


def _describe(value: Any) -> str:
    """How a wrong value reads in an error message."""
    if isinstance(value, _Tagged):
        return f"a value tagged {value.tag}"
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (_dt.date, _dt.datetime)):
        return f"the date {value}"
    return f"a {type(value).__name__}"


def _want_str(value: Any, what: str) -> str:
    """A non-empty one-line literal string (no Ansible templates: zrelay cannot render them)."""
    if isinstance(value, _Tagged):
        raise _Bad(f"{what}: YAML tag {value.tag} is not supported here")
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, (int, float, _dt.date)) else ""
        raise _Bad(f"{what}: expected a string, got {_describe(value)}{hint}")
    if not value.strip():
        raise _Bad(f"{what}: expected a non-empty string")
    if "{{" in value or "{%" in value:
        raise _Bad(f"{what}: templates ('{{{{ ... }}}}') are not supported; write the value itself")
    if _CONTROL.search(value):
        raise _Bad(f"{what}: must not contain control characters or newlines")
    return value


def _want_int(value: Any, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{what}: expected an integer, got {_describe(value)}")
    if value < low or (high is not None and value > high):
        span = f"{low}-{high}" if high is not None else f">= {low}"
        raise _Bad(f"{what}: {value} is out of range (expected {span})")
    return value


def _want_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"{what}: expected true or false, got {_describe(value)}")
    return value


#: An address every check below would pass as it is (the usual host name or IP address).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]*")


def _check_address(value: Any, what: str) -> str:
    """A host name or IP address that is safe to hand to ssh."""
    if value.__class__ is str and _PLAIN_ADDRESS.fullmatch(value):
        return value  # one match instead of eight checks: a fleet has one per host
    text = _want_str(value, what)
    if _SPACE.search(text):
        raise _Bad(f"{what}: {text!r} contains whitespace")
    if text.startswith("-"):
        raise _Bad(f"{what}: {text!r} starts with '-' and would be read as an ssh option")
    if "@" in text:
        raise _Bad(f"{what}: {text!r} contains '@'; put the login name in 'user'")
    if "/" in text:
        raise _Bad(f"{what}: {text!r} contains '/'; expected a host name or IP address")
    return text


def _check_port(value: Any, what: str) -> int:
    return _want_int(value, what, 1, 65535)


def _check_user(value: Any, what: str) -> str:
    text = _want_str(value, what)
    if any(c.isspace() for c in text) or text.startswith("-") or "@" in text:
        raise _Bad(f"{what}: {text!r} is not a valid login name")
    return text


def _check_positive(value: Any, what: str) -> int:
    return _want_int(value, what, 1)


def _check_ssh_options(value: Any, what: str) -> dict[str, str | int]:
    """OpenSSH options as ``Name: value``, each converted now by the function the
    transport connects with (inventory.ssh_options), so a run never meets a value
    asyncssh cannot take. Kept as written; YAML's yes/no booleans become "yes"/"no"."""
    if not isinstance(value, dict):
        raise _Bad(f"{what}: expected a mapping of ssh option names to values, "
                   f"got {_describe(value)}")
    options: dict[str, str | int] = {}
    seen: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, _Tagged):
            raise _Bad(f"{what}.{key}: YAML tag {item.tag} is not supported here", key)
        if isinstance(item, str) and ("{{" in item or "{%" in item):
            raise _Bad(f"{what}.{key}: templates ('{{{{ ... }}}}') are not supported; "
                       "write the value itself", key)
        try:
            convert_ssh_option(key, item)
        except SshOptionError as exc:
            raise _Bad(f"{what}.{exc}", key, exc.in_name) from None
        if key.lower() in seen:
            raise _Bad(f"{what}.{key}: given twice (also as {seen[key.lower()]!r}); OpenSSH "
                       "option names ignore case", key, in_name=True)
        seen[key.lower()] = key
        options[key] = ("yes" if item else "no") if isinstance(item, bool) else item
    return options


#: ``compress``: wire compression of host-to-host streams (see zrelay.paths.wire).
COMPRESS_CHOICES = ("auto", "zstd", "lz4", "off")
_BUFFER_SIZE = re.compile(r"[1-9][0-9]{0,5}[kKMG]?")


def _check_compress(value: Any, what: str) -> str:
    """auto | zstd | lz4 | off (YAML's bare off/on read as booleans are accepted too)."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    text = _want_str(value, what).strip().lower()
    if text not in COMPRESS_CHOICES:
        raise _Bad(f"{what}: {value!r} is not one of {', '.join(COMPRESS_CHOICES)}")
    return text


def _check_buffer(value: Any, what: str) -> str:
    """auto | off | SIZE (mbuffer memory per end, e.g. 64M)."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    if isinstance(value, int) and value > 0:
        value = str(value)
    text = _want_str(value, what).strip()
    if text.lower() in ("auto", "off"):
        return text.lower()
    if not _BUFFER_SIZE.fullmatch(text):
        raise _Bad(f"{what}: {value!r} must be auto, off or a size like 64M (k, M or G)")
    return text


def _check_ciphers(value: Any, what: str) -> str:
    """auto | default | an OpenSSH Ciphers list (names, comma-separated; a list may start with +, - or ^)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        value = ",".join(v.strip() for v in value)
    text = _want_str(value, what).strip()
    if text.lower() in ("auto", "default"):
        return text.lower()
    try:
        return check_ssh_ciphers(text)
    except InvalidName:
        raise _Bad(f"{what}: {value!r} must be auto, default or ssh cipher names separated by commas "
                   "(e.g. aes128-gcm@openssh.com,chacha20-poly1305@openssh.com)") from None


def _check_remote_file(value: Any, what: str) -> str:
    """A path on the host itself, for its own ssh in direct mode: checked by the function
    that puts it on that ssh's command line (names.check_remote_path)."""
    text = _want_str(value, what)
    try:
        return check_remote_path(text)
    except InvalidName as exc:
        hint = " ('~' is not expanded on the host)" if text.startswith("~") else ""
        raise _Bad(f"{what}: {exc}{hint}") from None


def _check_direct_address(value: Any, what: str) -> str:
    """How other hosts reach this one in direct mode: their ssh's destination argument,
    checked by the function that builds that ssh's command line (direct_ssh.check_ssh_host)."""
    text = _check_address(value, what)
    try:
        return check_ssh_host(text)
    except InvalidName as exc:
        raise _Bad(f"{what}: {exc}") from None


_HOST_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "address": _check_address,
    "port": _check_port,
    "user": _check_user,
    "identity_file": lambda v, w: _want_str(v, w),
    "known_hosts": lambda v, w: _want_str(v, w),
    "ssh_options": _check_ssh_options,
    "sudo": _want_bool,
    "max_sessions": _check_positive,
    "sends": _check_positive,
    "receives": _check_positive,
    "direct_address": lambda v, w: _check_direct_address(v, w),
    "direct": _want_bool,
    "direct_identity_file": lambda v, w: _check_remote_file(v, w),  # a path on this host
    "direct_known_hosts": lambda v, w: _check_remote_file(v, w),    # a path on this host
    "direct_ciphers": _check_ciphers,
    "compress": _check_compress,
    "buffer": _check_buffer,
    "fastpath": _want_bool,
}
_PATH_SETTINGS = frozenset({"identity_file", "known_hosts"})

#: Ansible's names for zrelay's host settings (including the pre-2.0 ``ansible_ssh_*`` ones).
HOST_ALIASES: dict[str, str] = {
    "ansible_host": "address",
    "ansible_ssh_host": "address",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "identity_file",
    "ansible_private_key_file": "identity_file",
    "ansible_become": "sudo",
}

#: Within one level of an Ansible inventory, the alias Ansible's ssh plugin prefers
#: (it reads the list in order, the last one set wins): no conflict error there.
_ANSIBLE_ALIAS_RANK: dict[str, int] = {
    "ansible_host": 1, "ansible_ssh_host": 2, "ansible_port": 1, "ansible_ssh_port": 2,
    "ansible_user": 1, "ansible_ssh_user": 2, "ansible_private_key_file": 1,
    "ansible_ssh_private_key_file": 2, "ansible_become": 1,
}

#: Words people reach for that are not settings, and what they mean.
_HOST_HINTS: dict[str, str] = {
    "host": "address", "hostname": "address", "ip": "address", "addr": "address",
    "username": "user", "login": "user", "key": "identity_file", "ssh_key": "identity_file",
    "private_key": "identity_file", "become": "sudo", "known_hosts_file": "known_hosts",
}


def _resolve_path(text: str, base_dir: str) -> str:
    """``~`` expanded, relative paths taken from the directory of the file that set them."""
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    return os.path.normpath(path)


def _unknown_key(key: str, valid: list[str], where: str,
                 hints: dict[str, str] | None = None) -> str:
    """One line naming the bad key, the likely intended one, and every valid one."""
    if hints and key in hints:
        hint = f" (did you mean {hints[key]!r}?)"
    else:
        hint = suggest(key, valid)
    return f"unknown key {key!r} in {where}{hint}; expected one of: {', '.join(valid)}"


# --------------------------------------------------------------------------- raw model


class _Setting(NamedTuple):
    """One checked host setting and where it was written.

    ``problem`` is set for a bad value in an Ansible inventory: Ansible only
    minds a variable when a play uses it, so zrelay reports it only when a host
    ends up using that value (a value overridden elsewhere is harmless).
    A tuple: a fleet makes one or two per host.
    """

    value: Any
    origin: Place
    problem: str | None
    key: str  # the name as written (``ansible_port`` or ``port``)


_new_setting = functools.partial(tuple.__new__, _Setting)  # _Setting(*fields) without its __new__


class _Vars:
    """One source of variables (a host entry or a group's ``vars:``), already checked.

    A plain class with slots: a fleet makes one per host.
    """

    __slots__ = ("settings", "raw", "raw_origins", "broken")

    def __init__(self, settings: dict[str, _Setting] | None = None,
                 raw: dict[str, Any] | None = None, raw_origins: dict[str, Place] | None = None,
                 broken: set[str] | None = None) -> None:
        self.settings = {} if settings is None else settings  # canonical zrelay names
        self.raw = {} if raw is None else raw                  # as written, ansible_* too
        self.raw_origins = {} if raw_origins is None else raw_origins
        #: Settings rejected here ("?" for an unknown key, maybe a misspelt one): a later
        #: "missing" error for one of them would only repeat the error already reported.
        self.broken = set() if broken is None else broken

    def update(self, other: _Vars) -> None:
        self.settings.update(other.settings)
        self.raw.update(other.raw)
        self.raw_origins.update(other.raw_origins)
        if other.broken:
            self.broken |= other.broken

    def copy(self) -> _Vars:
        return _Vars(dict(self.settings), dict(self.raw), dict(self.raw_origins), set(self.broken))


class _VarsChecker:
    """Turns one source's ``key: value`` pairs into a checked _Vars.

    zrelay's own inventory is strict: every key must be a zrelay setting, one
    of Ansible's names for it, or another ``ansible_*`` variable. An Ansible
    inventory (INI, or anything listed in ``include:``) is read as Ansible
    would: only its connection variables mean something to zrelay, values are
    coerced as Ansible coerces them, and every other variable is kept unchecked.
    """

    def __init__(self, errors: _Errors, base_dir: str, ansible: bool) -> None:
        self.errors = errors
        self.base_dir = base_dir
        self.ansible = ansible
        #: What each variable name is: (its zrelay setting, that setting's check), or
        #: (None, None) for a name that is not a setting.
        self._names: dict[str, tuple[str | None, Callable[[Any, str], Any] | None]] = {}

    def add(self, result: _Vars, key: str, value: Any, key_origin: Place,
            value_origin: Place, where: str, for_host: bool,
            locate: Callable[[str, bool], Place | None] | None = None) -> None:
        """Check one variable into ``result``; problems go to the error list (or are deferred).

        ``locate(entry, name)``: where an entry of a mapping value (its name, or its value)
        is written, for a problem in one entry of it.
        """
        result.raw[key] = value
        result.raw_origins[key] = key_origin
        known = self._names.get(key)
        if known is None:
            canonical = HOST_ALIASES.get(key) if self.ansible else HOST_ALIASES.get(key, key)
            known = self._names[key] = (
                (canonical, _HOST_CHECKS[canonical]) if canonical in _HOST_CHECKS else (None, None))
        canonical, check = known
        if canonical is None or check is None:
            if self.ansible or key.startswith("ansible_"):
                return  # Ansible's business; kept in raw
            if key == "vars" and for_host:
                self.errors.add(key_origin, f"{where}: host vars go directly under the host, "
                                "not under 'vars:'")
            else:
                self.errors.add(key_origin, _unknown_key(key, list(_HOST_CHECKS), where,
                                                         _HOST_HINTS))
            result.broken.add("?")
            return
        if self.ansible:
            value = _ansible_coerce(canonical, value)
        try:
            checked = check(value, key)
        except _Bad as bad:
            if bad.key is not None and locate is not None:
                value_origin = locate(bad.key, bad.in_name) or value_origin
            if self.ansible:
                self._keep(result, canonical, _Setting(None, value_origin, str(bad), key))
            else:
                self.errors.add(value_origin, str(bad))
                result.broken.add(canonical)
            return
        if canonical in _PATH_SETTINGS:
            checked = _resolve_path(checked, self.base_dir)
        setting = _new_setting((checked, value_origin, None, key))
        if canonical in result.settings:
            self._keep(result, canonical, setting, key_origin)
        else:
            result.settings[canonical] = setting

    def _keep(self, result: _Vars, canonical: str, setting: _Setting,
              key_origin: Place | None = None) -> None:
        previous = result.settings.get(canonical)
        if previous is not None and previous.key != setting.key:
            if self.ansible:  # Ansible's own order between its aliases decides, silently
                if _ANSIBLE_ALIAS_RANK.get(previous.key, 0) > _ANSIBLE_ALIAS_RANK.get(
                        setting.key, 0):
                    return
            elif previous.value != setting.value or setting.problem or previous.problem:
                self.errors.add(key_origin or setting.origin,
                                f"{setting.key!r} and {previous.key!r} both set {canonical!r} "
                                "here, to different values; keep one")
                result.broken.add(canonical)
                return
        result.settings[canonical] = setting


def _ansible_coerce(canonical: str, value: Any) -> Any:
    """Ansible's own conversions: ``ansible_port="2222"`` is a port, ``ansible_become=yes`` true."""
    if canonical == "port" and isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if canonical == "sudo":
        flag = ansible_bool(value)
        return value if flag is None else flag
    return value


@dataclass
class _Inherited:
    """Variables merged level by level, and which level (scope, origin) set each."""

    groups: tuple[str, ...]
    vars: _Vars = field(default_factory=_Vars)
    var_sources: dict[str, VarSource] = field(default_factory=dict)
    setting_sources: dict[str, VarSource] = field(default_factory=dict)
    #: Once every level is added: the settings with a problem, and the value of each of
    #: Host's setting fields (in its order), its default where no level sets it.
    problems: dict[str, _Setting] = field(default_factory=dict)
    fields: list[Any] = field(default_factory=list)

    def add(self, scope: str, level: _Vars) -> None:
        """``level`` over what is merged so far."""
        self.vars.update(level)
        for key, origin in level.raw_origins.items():
            self.var_sources[key] = VarSource(scope, Origin(*origin))
        for key, setting in level.settings.items():
            self.setting_sources[key] = VarSource(scope, Origin(*setting.origin))

    def done(self) -> None:
        settings = self.vars.settings
        self.problems = {key: setting for key, setting in settings.items() if setting.problem}
        self.fields = [settings[name].value if name in settings else default
                       for name, default in _HOST_SETTINGS]


class _Sources(Mapping[str, VarSource]):
    """A host's ``var_sources`` or ``setting_sources``, each VarSource made when asked.

    ``own``: what the host itself sets (scope ``host NAME``), as a Place, a _Setting or a
    VarSource; the other keys come from ``below``, what its groups set (one dict for every
    host in the same groups). A fleet would otherwise make for every host several
    VarSources that nobody reads. Keys are in the order the levels set them, as in ``vars``.
    """

    __slots__ = ("_own", "_below", "_scope")

    def __init__(self, own: Mapping[str, Place | _Setting | VarSource],
                 below: Mapping[str, VarSource], scope: str) -> None:
        self._own = own
        self._below = below
        self._scope = scope

    def __getitem__(self, key: str) -> VarSource:
        own = self._own.get(key)
        if own is None:
            return self._below[key]
        if isinstance(own, VarSource):
            return own
        place = own.origin if isinstance(own, _Setting) else own
        return VarSource(self._scope, Origin(*place))

    def __contains__(self, key: object) -> bool:
        return key in self._own or key in self._below

    def __iter__(self) -> Iterator[str]:
        yield from self._below
        for key in self._own:
            if key not in self._below:
                yield key

    def __len__(self) -> int:
        return len(self._below) + sum(1 for key in self._own if key not in self._below)

    def __repr__(self) -> str:
        return repr(dict(self))


@dataclass(slots=True)
class _RawHost:
    name: str
    origin: Origin
    vars: _Vars = field(default_factory=_Vars)
    dir_vars: _Vars | None = None  # host_vars/NAME*, when there are any


@dataclass
class _RawGroup:
    name: str
    origin: Origin
    vars: _Vars = field(default_factory=_Vars)
    dir_vars: _Vars = field(default_factory=_Vars)  # group_vars/NAME*
    hosts: dict[str, None] = field(default_factory=dict)  # an ordered set
    children: dict[str, Origin] = field(default_factory=dict)  # child → where the edge is written


def _want_send_options(value: Any) -> tuple[str, ...]:
    """``send_options: [large_blocks, embedded, compressed]`` (any subset; ``[]`` for none)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"send_options must be a list of names from {', '.join(SEND_OPTIONS)}, got {value!r}")
    unknown = [v for v in value if v not in SEND_OPTIONS]
    if unknown:
        raise _Bad(f"send_options: unknown option {unknown[0]!r}; expected some of {', '.join(SEND_OPTIONS)}")
    return tuple(dict.fromkeys(value))


@dataclass
class _RawJob:
    origin: Origin
    name: str | None = None
    name_origin: Origin | None = None
    source: Endpoint | None = None
    source_origin: Origin | None = None
    recursive: bool = False
    select: SnapshotFilter = SnapshotFilter()
    targets: list[tuple[Target, Origin]] = field(default_factory=list)
    direct: bool | None = None
    send_options: tuple[str, ...] | None = None
    compress: str | None = None
    buffer: str | None = None
    complete: bool = True  # False when a required part was missing or invalid


# --------------------------------------------------------------------------- builder


class _Builder:
    """Collects what readers found, then merges and cross-checks it into an Inventory."""

    def __init__(self, path: Path, errors: _Errors) -> None:
        self.path = path
        self.errors = errors
        top = Origin(str(path), 1, 1)
        self.groups: dict[str, _RawGroup] = {"all": _RawGroup("all", top)}
        self.hosts: dict[str, _RawHost] = {}
        self.jobs: list[_RawJob] = []
        self.s3_targets: dict[str, S3Target] = {}
        self.settings: dict[str, Any] = {}
        self.sources: list[str] = [str(path)]
        self.strict_files: set[str] = set()  # files read as zrelay inventories
        #: Values expanded through YAML aliases so far, in every file (-1: refused).
        self.alias_values = 0
        #: Directories whose group_vars/ and host_vars/ apply, in reading order, and
        #: whether they belong to an Ansible inventory (read leniently).
        self.vars_dirs: dict[str, bool] = {}

    # -- fed by readers

    def group(self, name: str, origin: Origin, parent: str | None) -> _RawGroup:
        """The group ``name`` (created on first mention), linked under ``parent``."""
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = _RawGroup(name, origin)
        if parent is not None and name not in self.groups[parent].children:
            self.groups[parent].children[name] = origin
        return group

    def host(self, name: str, origin: Origin, group: str, host_vars: _Vars,
             owned: bool = False) -> None:
        """Record that ``group`` lists host ``name``, adding ``host_vars`` (later mentions win).

        In a zrelay inventory, a host listed twice must not be given two different
        values for one setting: which one wins would depend on file order.
        ``owned``: ``host_vars`` belongs to this host alone, so a new host keeps it
        as it is (no copy: a fleet lists each host once).
        """
        raw = self.hosts.get(name)
        if raw is None:
            if owned:
                self.hosts[name] = _RawHost(name, origin, host_vars)
                self.groups[group].hosts.setdefault(name)
                return
            raw = self.hosts[name] = _RawHost(name, origin)
        elif origin.file in self.strict_files:
            for key, new in host_vars.settings.items():
                old = raw.vars.settings.get(key)
                if (old is not None and old.origin[0] == origin.file
                        and old.value != new.value):
                    self.errors.add(new.origin, f"host {name!r} is also listed at line "
                                    f"{old.origin[1]} with {key} {old.value!r}; give a "
                                    "host's settings once, where it is first listed")
                    host_vars = host_vars.copy()
                    host_vars.settings.pop(key)
                    host_vars.broken.add(key)
        raw.vars.update(host_vars)
        self.groups[group].hosts.setdefault(name)

    def add_vars_dir(self, directory: str, ansible: bool) -> None:
        """group_vars/ and host_vars/ beside an inventory apply to every host, as in Ansible."""
        self.vars_dirs[directory] = self.vars_dirs.get(directory, False) or ansible

    def load_vars_dirs(self) -> None:
        """Read group_vars/NAME* and host_vars/NAME* for every known group and host."""
        listing: dict[str, list[str]] = {}
        for directory, ansible in self.vars_dirs.items():
            base = Path(directory)
            checker = _VarsChecker(self.errors, directory, ansible)
            group_dir, host_dir = base / "group_vars", base / "host_vars"
            present = vars_names(group_dir, listing)
            for name, group in self.groups.items():
                if name in present:
                    for file in vars_files(group_dir, listing, name):
                        group.dir_vars.update(self._vars_file(file, checker, f"group {name!r}",
                                                              for_host=False))
            present = vars_names(host_dir, listing)  # a few files for a fleet, or none
            for name, host in self.hosts.items():
                if name in present:
                    for file in vars_files(host_dir, listing, name):
                        if host.dir_vars is None:
                            host.dir_vars = _Vars()
                        host.dir_vars.update(self._vars_file(file, checker, f"host {name!r}",
                                                             for_host=True))

    def _vars_file(self, path: Path, checker: _VarsChecker, owner: str, for_host: bool) -> _Vars:
        """One group_vars/host_vars file: a mapping of variables (empty is fine)."""
        self.sources.append(str(path))
        text = _read_text(path, self.errors, "variables file")
        if text is None:
            return _Vars()
        if text.lstrip().startswith("$ANSIBLE_VAULT"):
            if not checker.ansible:
                self.errors.add(Origin(str(path), 1, 1), "encrypted with ansible-vault; zrelay "
                                "cannot read it (keep zrelay's settings in plain files)")
            return _Vars()
        root = _compose(text, path, self.errors)
        if root is None:
            return _Vars()
        reader = _YamlReader(str(path), checker.base_dir, self, self.errors, checker.ansible)
        return reader.read_vars(root, f"vars of {owner}", for_host=for_host)

    # -- merging

    def finish(self) -> Inventory:
        """Merge, cross-check and build; problems go to ``self.errors``."""
        parents: dict[str, set[str]] = {name: set() for name in self.groups}
        for name, group in self.groups.items():
            for child in group.children:
                parents.setdefault(child, set()).add(name)
        for name in self.groups:  # Ansible: a group without parents is a child of 'all'
            if name != "all" and not parents[name]:
                self.groups["all"].children[name] = self.groups[name].origin
                parents[name].add("all")
        self._check_cycles()
        depth = self._depths()
        direct: dict[str, tuple[str, ...]] = {}  # host -> the groups that list it
        for name, group in self.groups.items():
            alone = (name,)  # one tuple for the hosts listed in this group only
            for host in group.hosts:
                have = direct.get(host)
                direct[host] = alone if have is None else have + alone
        inherited: dict[tuple[str, ...], _Inherited] = {}
        hosts: dict[str, Host] = {}
        for name, raw in self.hosts.items():
            listed_in = direct.get(name, ())
            from_groups = inherited.get(listed_in)
            if from_groups is None:
                from_groups = inherited[listed_in] = self._inherited(listed_in, parents, depth)
            built = self._host(raw, from_groups)
            if built is not None:
                hosts[name] = built
        groups = {
            name: Group(name, tuple(g.hosts), tuple(g.children),
                        {**g.vars.raw, **g.dir_vars.raw}, g.origin)
            for name, g in self.groups.items()
        }
        self._check_host_group_names()
        if "ungrouped" not in groups:  # the hosts no group but 'all' lists
            ungrouped = tuple(h for h in self.hosts if direct.get(h, ()) in ((), ("all",)))
            groups["ungrouped"] = Group("ungrouped", ungrouped, (), {}, self.groups["all"].origin)
        jobs = self._jobs()
        settings = Settings(**self.settings)
        return Inventory(self.path, hosts, groups, jobs, dict(self.s3_targets), settings,
                         tuple(dict.fromkeys(self.sources)))

    def _check_host_group_names(self) -> None:
        """A name that is both a host and a group makes ``zrelay sync NAME`` ambiguous."""
        for name, raw in self.hosts.items():
            group = self.groups.get(name)
            if group is None or name in ("all", "ungrouped"):
                continue
            if raw.origin.file in self.strict_files or group.origin.file in self.strict_files:
                later = max(raw.origin, group.origin,
                            key=lambda o: (o.file in self.strict_files, o.line or 0))
                self.errors.add(later, f"{name!r} is both a host and a group; a command-line "
                                "pattern could not tell them apart, rename one")

    def _check_cycles(self) -> None:
        """Report each group cycle once, at the child edge that closes it."""

        def children(name: str) -> list[str]:
            return [c for c in self.groups[name].children if c in self.groups]

        for loop in _cycles(list(self.groups), children):
            origin = self.groups[loop[-2]].children[loop[-1]]
            self.errors.add(origin, f"group cycle: {' -> '.join(loop)}")

    def _depths(self) -> dict[str, int]:
        """Longest parent chain above each group: deeper groups' vars win, as in Ansible."""
        depth: dict[str, int] = {}

        def walk(name: str, d: int, seen: frozenset[str]) -> None:
            if name in seen or depth.get(name, -1) >= d:
                return
            depth[name] = d
            for child in self.groups[name].children:
                walk(child, d + 1, seen | {name})

        walk("all", 0, frozenset())
        for name in self.groups:  # groups only reachable through a cycle
            if name not in depth:
                walk(name, 1, frozenset())
        return depth

    def _inherited(self, direct: tuple[str, ...], parents: dict[str, set[str]],
                   depth: dict[str, int]) -> _Inherited:
        """What a host listed in the groups ``direct`` gets from its groups.

        Lowest to highest: ``all``'s vars in the inventory files, every other
        group's (parents before children: a deeper group wins; equal depth is
        settled by ``ansible_group_priority``, then by name), ``group_vars/all``,
        ``group_vars/<group>`` in the same order. The same for every host listed
        in the same groups, so a fleet merges it once per distinct set of groups.
        """
        member: set[str] = set()
        todo = list(direct)
        while todo:
            g = todo.pop()
            if g not in member:
                member.add(g)
                todo.extend(parents.get(g, ()))
        member.discard("all")

        def priority(name: str) -> int:
            group = self.groups[name]
            value = group.dir_vars.raw.get("ansible_group_priority",
                                           group.vars.raw.get("ansible_group_priority", 1))
            return value if isinstance(value, int) and not isinstance(value, bool) else 1

        order = sorted(member, key=lambda g: (depth.get(g, 1), priority(g), g))
        levels: list[tuple[str, _Vars]] = [("group all", self.groups["all"].vars)]
        levels += [(f"group {g}", self.groups[g].vars) for g in order]
        levels.append(("group all", self.groups["all"].dir_vars))
        levels += [(f"group {g}", self.groups[g].dir_vars) for g in order]
        inherited = _Inherited(tuple(g for g in order if g != "ungrouped"))
        for scope, level in levels:
            inherited.add(scope, level)
        inherited.done()
        return inherited

    def _host(self, raw: _RawHost, inherited: _Inherited) -> Host | None:
        """The host's own variables over what its groups give it (``inherited``): the
        host's vars in the inventory files, then ``host_vars/<host>``; then the Host.

        Run once per host of a fleet: what all hosts in the same groups share is merged
        once in ``inherited``, and each host adds only what it sets itself.
        """
        own, dirs = raw.vars, raw.dir_vars
        if dirs is None:  # host_vars/ is rare
            own_settings: dict[str, Any] = own.settings
            var_own = own.raw_origins
            raw_vars = {**inherited.vars.raw, **own.raw}
        else:
            own_settings = {**own.settings, **dirs.settings}
            var_own = {**own.raw_origins, **dirs.raw_origins}
            raw_vars = {**inherited.vars.raw, **own.raw, **dirs.raw}
        values = inherited.fields.copy()
        usable = True
        for key, setting in own_settings.items():
            values[_HOST_SETTING_AT[key]] = setting.value
            if setting.problem:  # a bad value from an Ansible inventory that this host uses
                self.errors.add(setting.origin, f"{setting.problem} (used by host {raw.name!r})")
                usable = False
        for key, setting in inherited.problems.items():
            if key not in own_settings:
                self.errors.add(setting.origin, f"{setting.problem} (used by host {raw.name!r})")
                usable = False
        if values[0] is None:  # no address
            if "address" in inherited.vars.broken or "address" in own.broken or (
                    dirs is not None and "address" in dirs.broken):
                return None
            try:  # as Ansible: no ansible_host means the inventory name is the address
                values[0] = _check_address(raw.name, f"host {raw.name!r}")
            except _Bad as bad:
                self.errors.add(raw.origin, f"{bad}; the host name is its address unless "
                                "'address' (or 'ansible_host') is set")
                return None
            own_settings = {**own_settings, "address": VarSource("host name", raw.origin)}
        if not usable:
            return None
        if values[_SSH_OPTIONS_AT] is None:
            values[_SSH_OPTIONS_AT] = {}  # each host its own, as Host() would make it
        scope = f"host {raw.name}"
        return _new_host(raw.name, *values, inherited.groups, raw_vars, raw.origin,
                         _Sources(var_own, inherited.var_sources, scope),
                         _Sources(own_settings, inherited.setting_sources, scope))

    def _jobs(self) -> tuple[Job, ...]:
        jobs: list[Job] = []
        origins: list[dict[Target, Origin]] = []
        names: dict[str, Origin] = {}
        for raw in self.jobs:
            if raw.source is None or raw.source_origin is None:
                continue
            ok = raw.complete
            if raw.source.host not in self.hosts:
                self.errors.add(raw.source_origin, self._unknown_host(raw.source.host, "source"))
                ok = False
            targets: list[Target] = []
            for target, origin in raw.targets:
                if not self._check_target(raw, target, origin, targets):
                    ok = False
                    continue
                targets.append(target)
            name = raw.name if raw.name is not None else str(raw.source)
            name_origin = raw.name_origin or raw.source_origin
            if name in names:
                first = names[name]
                self.errors.add(name_origin, f"job name {name!r} is already used by the job at "
                                f"line {first.line}; give one of them a distinct 'name:'")
                ok = False
            else:
                names[name] = name_origin
            if ok:
                jobs.append(Job(name, raw.source, raw.recursive, raw.select, tuple(targets),
                                raw.origin, direct=raw.direct, send_options=raw.send_options,
                                compress=raw.compress, buffer=raw.buffer))
                origins.append(dict((t, o) for t, o in raw.targets))
        self._check_job_overlaps(jobs, origins)
        self._check_job_loops(jobs)
        return tuple(jobs)

    def _unknown_host(self, host: str, role: str) -> str:
        if host in self.groups:
            return (f"{host!r} in {role} is a group, not a host; name one host "
                    f"(hosts in {host!r}: {name_list(self._group_members(host))})")
        if host in self.s3_targets:
            fix = (f"write it as s3:{host} in targets" if role == "target"
                   else "an S3 target can only be a job's target")
            return f"{host!r} in {role} is an S3 target, not a host; {fix}"
        return (f"unknown host {host!r} in {role}{suggest(host, self.hosts)}; "
                f"known hosts: {name_list(self.hosts)}")

    def _group_members(self, group: str) -> list[str]:
        seen: set[str] = set()
        members: dict[str, None] = {}
        todo = [group]
        while todo:
            g = todo.pop()
            if g in seen or g not in self.groups:
                continue
            seen.add(g)
            members.update(dict.fromkeys(self.groups[g].hosts))
            todo.extend(self.groups[g].children)
        return list(members)

    def _check_target(self, raw: _RawJob, target: Target, origin: Origin,
                      earlier: list[Target]) -> bool:
        assert raw.source is not None
        if isinstance(target, S3Ref):
            if target.name not in self.s3_targets:
                known = (f"known: {name_list(self.s3_targets)}" if self.s3_targets
                         else "zrelay.s3_targets defines none")
                if target.name in self.hosts:
                    known = (f"{target.name} is a host: write {target.name}:POOL/DATASET "
                             f"for a dataset there; {known}")
                self.errors.add(origin, f"unknown S3 target {target.name!r}"
                                f"{suggest(target.name, self.s3_targets)}; {known}")
                return False
        else:
            if target.host not in self.hosts:
                self.errors.add(origin, self._unknown_host(target.host, "target"))
                return False
            if target == raw.source:
                self.errors.add(origin, f"target {target} is the job's own source")
                return False
            if target.contains(raw.source):
                self.errors.add(origin, f"target {target} contains the source {raw.source}; "
                                "receiving there would overwrite it")
                return False
            if raw.recursive and raw.source.contains(target):
                self.errors.add(origin, f"target {target} is inside the recursive source "
                                f"{raw.source}, so the job would replicate into itself")
                return False
            if "/" not in target.dataset:
                self.errors.add(origin, f"target {target} is the root dataset of pool "
                                f"{target.dataset!r}; replicate into a child dataset such as "
                                f"'{target.dataset}/{raw.source.host}'")
                return False
        if target in earlier:
            self.errors.add(origin, f"target {target} is listed twice in this job")
            return False
        return True

    def _check_job_overlaps(self, jobs: list[Job], origins: list[dict[Target, Origin]]) -> None:
        """Two jobs writing one dataset would fight over it (and refuse each other's snapshots).

        Indexed by dataset so a large fleet stays linear: each target looks up
        itself and its ancestors among every job's targets.
        """
        written: dict[Endpoint, list[int]] = {}
        for index, job in enumerate(jobs):
            for target in job.host_targets:
                written.setdefault(target, []).append(index)
        for j, job in enumerate(jobs):
            for target in job.host_targets:
                for above in _ancestors(target):
                    for i in written.get(above, ()):
                        if i == j:
                            continue
                        other = jobs[i]
                        line = other.origin.line if other.origin else "?"
                        if above == target and i < j:
                            msg = (f"target {target} is also written by job {other.name!r} "
                                   f"(line {line})")
                            self.errors.add(origins[j][target], msg)
                        elif above != target and other.recursive and i < j:
                            msg = (f"target {target} is inside {above}, which job "
                                   f"{other.name!r} (line {line}) writes recursively")
                            self.errors.add(origins[j][target], msg)
                        elif above != target and other.recursive and i > j:
                            line = job.origin.line if job.origin else "?"
                            msg = (f"target {above} is written recursively and contains {target}, "
                                   f"which job {job.name!r} (line {line}) also writes")
                            self.errors.add(origins[i][above], msg)

    def _check_job_loops(self, jobs: list[Job]) -> None:
        """A -> B -> A replication would send each side's snapshots back over the other."""
        sources: dict[Endpoint, list[int]] = {}
        for index, job in enumerate(jobs):
            sources.setdefault(job.source, []).append(index)
        by_host: dict[str, list[str]] = {}
        for source in sources:
            by_host.setdefault(source.host, []).append(source.dataset)
        for datasets in by_host.values():
            datasets.sort()

        def fed(i: int) -> list[int]:
            """Jobs whose source receives data from job i."""
            a = jobs[i]
            result: list[int] = []
            for t in a.host_targets:
                for above in _ancestors(t):
                    result.extend(k for k in sources.get(above, ())
                                  if above == t or jobs[k].recursive)
                if a.recursive:
                    datasets = by_host.get(t.host, [])
                    low = t.dataset + "/"
                    at = bisect.bisect_left(datasets, low)
                    while at < len(datasets) and datasets[at].startswith(low):
                        result.extend(sources[Endpoint(t.host, datasets[at])])
                        at += 1
            return [k for k in dict.fromkeys(result) if k != i]

        for loop in _cycles(range(len(jobs)), fed):
            names = " -> ".join(str(jobs[x].source) for x in loop)
            closing = jobs[loop[-2]]
            self.errors.add(closing.origin or Origin(str(self.path)), f"replication loop: {names}")


def _ancestors(endpoint: Endpoint) -> list[Endpoint]:
    """The endpoint and every ancestor dataset on the same host, deepest first."""
    parts = endpoint.dataset.split("/")
    return [Endpoint(endpoint.host, "/".join(parts[:n])) for n in range(len(parts), 0, -1)]


_K = TypeVar("_K", bound=Hashable)
_T = TypeVar("_T")


def _constructor(cls: type[_T]) -> Callable[..., _T]:
    """``cls(**fields)`` for a frozen dataclass with slots, without its generated ``__init__``.

    That sets each field through ``object.__setattr__`` (what frozen costs), half the time
    of making the 50,000 Hosts of a fleet; here each slot is set through its descriptor.
    Every field must be given: a field added to ``cls`` makes every call fail, never
    silently take a default. A ``__post_init__`` would be skipped, so none is allowed.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__}: a frozen dataclass with slots and no __post_init__")
    space: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    space.update((f"_set_{n}", getattr(cls, n).__set__) for n in names)
    exec(f"def make({', '.join(names)}):\n    o = _new(_cls)\n"  # noqa: S102 (our own text)
         + "".join(f"    _set_{n}(o, {n})\n" for n in names) + "    return o\n", space)
    make: Callable[..., _T] = space["make"]
    return make


_new_host = _constructor(Host)
#: Host's setting fields in its order (they follow ``name``), with their defaults (None for
#: ``ssh_options``, whose default, a dict, each host gets its own of).
_HOST_SETTINGS: tuple[tuple[str, Any], ...] = tuple(
    (f.name, None if f.default is MISSING else f.default)
    for f in fields(Host) if f.name in _HOST_CHECKS)
_HOST_SETTING_AT = {name: at for at, (name, _) in enumerate(_HOST_SETTINGS)}
_SSH_OPTIONS_AT = _HOST_SETTING_AT["ssh_options"]
if [f.name for f in fields(Host)][1:len(_HOST_SETTINGS) + 1] != list(_HOST_SETTING_AT) or \
        _HOST_SETTINGS[0][0] != "address" or set(_HOST_SETTING_AT) != set(_HOST_CHECKS):
    raise TypeError("Host's setting fields must follow its name, address first")
_new_origin = _constructor(Origin)


def _cycles(starts: Iterable[_K], edges: Callable[[_K], Iterable[_K]]) -> list[list[_K]]:
    """Each cycle once, as ``[a, b, ..., a]``; iterative, so deep graphs cannot overflow."""
    state: dict[_K, int] = {}  # 1: on the current path, 2: finished
    found: list[list[_K]] = []
    reported: set[frozenset[_K]] = set()
    for start in starts:
        if start in state:
            continue
        state[start] = 1
        path = [start]
        stack: list[Iterator[_K]] = [iter(edges(start))]
        while stack:
            for nxt in stack[-1]:
                if state.get(nxt) == 1:
                    loop = path[path.index(nxt):] + [nxt]
                    if frozenset(loop) not in reported:
                        reported.add(frozenset(loop))
                        found.append(loop)
                elif nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(edges(nxt)))
                    break
            else:
                stack.pop()
                state[path.pop()] = 2
    return found


# --------------------------------------------------------------------------- YAML reader


class _Tagged(str):
    """A scalar under a tag zrelay does not interpret (Ansible's !vault, !unsafe): kept as text."""

    tag: str

    def __new__(cls, value: str, tag: str) -> _Tagged:
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


class _YamlReader:
    """Walks one YAML document's node tree into a _Builder."""

    def __init__(self, file: str, base_dir: str, builder: _Builder, errors: _Errors,
                 ansible: bool = False) -> None:
        self.file = file
        self.base_dir = base_dir
        self.builder = builder
        self.errors = errors
        self.ansible = ansible  # an Ansible inventory (included), not zrelay's own
        self.checker = _VarsChecker(errors, base_dir, ansible)
        self.ctor = _Constructor()
        #: Collections built so far (by id of their value list, which aliases share):
        #: (data, values it expands to, nesting levels), or _BUILDING.
        self._built: dict[int, tuple[Any, int, int]] = {}
        self._merged: dict[int, list[tuple[Node, Node]]] = {}  # merge sources
        self._groups_read: set[tuple[str, int]] = set()  # (group, id of its body's list)

    # -- node helpers

    def at(self, node: Node) -> Origin:
        mark = node.start_mark
        return Origin(self.file, mark.line + 1, mark.column + 1)

    def fail(self, node: Node, message: str) -> None:
        self.errors.add(self.at(node), message)

    @staticmethod
    def is_null(node: Node) -> bool:
        return isinstance(node, ScalarNode) and node.tag == _NULL_TAG

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
        if node.tag == _NULL_TAG:
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
            pairs = node.value
            keys: set[str] = set()
            for k, _ in pairs:
                if k.__class__ is not ScalarNode or k.tag != _STR_TAG or k.value in keys:
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
            if key_node.tag == _MERGE_TAG:
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
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL_TAG:
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
        if tag == _STR_TAG:
            return node.value
        if tag == _INT_TAG and node.value.isdigit() and (node.value[0] != "0" or node.value == "0"):
            return int(node.value)  # the usual port or count: no sign, base prefix, _ or ':'
        if tag.startswith("!") and not tag.startswith("!!"):
            return _Tagged(node.value, tag)
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
            if isinstance(node, _AliasNode) and not self.spend(node, 1, what):
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
        if isinstance(node, _AliasNode) and not self.spend(node, built[1], what):
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
        builder = self.builder
        if builder.alias_values < 0:
            return False  # already refused: one report is enough
        builder.alias_values += size
        if builder.alias_values <= ALIAS_BUDGET:
            return True
        name = f"*{alias.anchor}" if isinstance(alias, _AliasNode) else "an alias"
        self.fail(alias, f"{what}: alias {name} expands to {size:,} values, taking this "
                  f"inventory's YAML aliases past {ALIAS_BUDGET:,} expanded values "
                  "(an alias bomb?)")
        builder.alias_values = -1
        return False

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
                text = _want_str(self.value(item, "include"), "include")
            except _Bad as bad:
                self.fail(item, str(bad))
                continue
            path = Path(_resolve_path(text, self.base_dir))
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
                _read_ansible_source(self.builder, file)

    @staticmethod
    def has_foreign_keys(node: Node) -> bool:
        """True for a mapping with keys a group cannot have: a misspelt section, not a group."""
        return isinstance(node, MappingNode) and any(
            isinstance(k, ScalarNode) and k.tag != _MERGE_TAG and k.value not in _GROUP_KEYS
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
            if isinstance(node, _AliasNode) and not self.spend(node, size, where):
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
                self.fail(k_node, _unknown_key(key, list(_GROUP_KEYS), where))

    def read_hosts(self, group: str, node: Node, where: str) -> None:
        if isinstance(node, SequenceNode):
            self.fail(node, f"hosts of {where}: expected a mapping of host names (each "
                      "followed by ':' and optional vars), got a list")
            return
        if isinstance(node, _AliasMapping) and not self.spend(node, len(node.value), where):
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
                host_vars = _Vars(broken={"?"})  # still a host, so jobs naming it do not cascade
            mark = key_node.start_mark
            at = _new_origin(file, mark.line + 1, mark.column + 1)
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

    def read_vars(self, node: Node, where: str, *, for_host: bool) -> _Vars:
        """One vars mapping, each setting checked and every alias mapped to its zrelay name."""
        result = _Vars()
        if node.__class__ is not MappingNode:  # null, an alias, or not a mapping at all
            if not self.is_null(node) and not isinstance(node, MappingNode) and self.ansible:
                self.fail(node, f"{where}: expected a mapping of variables, got "
                          f"{self.kind(node)}")
                return result
            if isinstance(node, _AliasMapping) and not self.spend(node, len(node.value), where):
                return result
        file, add, scalar, value_of = self.file, self.checker.add, self.scalar, self.value
        for key_node, value_node in self.entries(node, where) or []:
            key = key_node.value
            # A plain scalar (no alias, nothing to count or share): its value directly.
            locate = None
            if value_node.__class__ is ScalarNode:
                value, tag = value_node.value, value_node.tag
                if tag == _STR_TAG:
                    pass
                elif tag == _INT_TAG and value.isdigit() and (value[0] != "0" or value == "0"):
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

    # -- the zrelay: section

    def read_zrelay(self, node: Node) -> None:
        valid = ["include", "snapshot_name", "limits", "s3_targets", "jobs"]
        for key, key_node, value_node in self.pairs(node, "zrelay section") or []:
            if key == "include":
                continue  # read first, by read_includes
            if key == "snapshot_name":
                self.read_snapshot_name(value_node)
            elif key == "limits":
                self.read_limits(value_node)
            elif key == "s3_targets":
                for name, n_key, n_node in self.pairs(value_node, "s3_targets") or []:
                    self.read_s3_target(name, n_key, n_node)
            elif key == "jobs":
                self.read_jobs(value_node)
            else:
                self.fail(key_node, _unknown_key(key, valid, "the zrelay section"))

    def read_snapshot_name(self, node: Node) -> None:
        try:
            template = _want_str(self.value(node), "snapshot_name")
        except _Bad as bad:
            self.fail(node, str(bad))
            return
        problem = snapshot_name_problem(template)
        if problem:
            self.fail(node, problem)
        else:
            self.builder.settings["snapshot_name"] = template

    def read_limits(self, node: Node) -> None:
        valid = ["sends_per_host", "receives_per_host"]
        for key, key_node, value_node in self.pairs(node, "limits") or []:
            if key not in valid:
                self.fail(key_node, _unknown_key(key, valid, "limits"))
                continue
            try:
                self.builder.settings[key] = _check_positive(self.value(value_node), key)
            except _Bad as bad:
                self.fail(value_node, str(bad))

    def read_s3_target(self, name: str, key_node: Node, node: Node) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            self.fail(key_node, f"S3 target name {name!r} must be letters, digits, '_', '.', '-'")
            return
        where = f"S3 target {name!r}"
        items = self.pairs(node, where)
        if items is None:
            return
        fields: dict[str, Any] = {}
        ok = True
        for key, k_node, v_node in items:
            check = _S3_CHECKS.get(key)
            if check is None:
                self.fail(k_node, _unknown_key(key, list(_S3_CHECKS), where))
                ok = False
                continue
            try:
                fields[key] = check(self.value(v_node), key)
            except _Bad as bad:
                self.fail(v_node, str(bad))
                ok = False
        if "bucket" not in fields and ok:
            self.fail(node if isinstance(node, MappingNode) else key_node,
                      f"{where} has no 'bucket'")
            ok = False
        if ok:
            fields.setdefault("storage_class", DEFAULT_STORAGE_CLASS)
            self.builder.s3_targets[name] = S3Target(name=name, origin=self.at(key_node), **fields)

    def read_jobs(self, node: Node) -> None:
        if self.is_null(node):
            return
        if not isinstance(node, SequenceNode):
            self.fail(node, f"jobs: expected a list of jobs (each starting with '- source:'), "
                      f"got {self.kind(node)}")
            return
        for item in node.value:
            self.read_job(item)

    def read_job(self, node: Node) -> None:
        job = _RawJob(self.at(node))
        items = self.pairs(node, "job")
        if items is None:
            return
        valid = ["source", "name", "recursive", "snapshots", "targets", "direct", "send_options"]
        seen: set[str] = set()
        misspelt: set[str] = set()
        for key, k_node, v_node in items:
            seen.add(key)
            try:
                if key == "source":
                    job.source_origin = self.at(v_node)
                    job.source = self.endpoint(self.value(v_node), "source")
                elif key == "name":
                    job.name_origin = self.at(v_node)
                    job.name = _want_str(self.value(v_node), "name")
                    if job.name != job.name.strip():
                        raise _Bad(f"name {job.name!r} has leading or trailing whitespace")
                elif key == "recursive":
                    job.recursive = _want_bool(self.value(v_node), "recursive")
                elif key == "direct":
                    job.direct = _want_bool(self.value(v_node), "direct")
                elif key == "compress":
                    job.compress = _check_compress(self.value(v_node), "compress")
                elif key == "buffer":
                    job.buffer = _check_buffer(self.value(v_node), "buffer")
                elif key == "send_options":
                    job.send_options = _want_send_options(self.value(v_node))
                elif key == "snapshots":
                    job.select = self.snapshot_filter(v_node)
                elif key == "targets":
                    self.read_targets(job, v_node)
                else:
                    self.fail(k_node, _unknown_key(key, valid, "job"))
                    job.complete = False
                    misspelt.update(difflib.get_close_matches(key, valid, n=1, cutoff=0.6))
            except _Bad as bad:
                self.fail(v_node, str(bad))
                job.complete = False
        for required in ("source", "targets"):
            if required not in seen:
                if required not in misspelt:  # already reported as a misspelt key
                    self.fail(node, f"job has no '{required}'")
                job.complete = False
        self.builder.jobs.append(job)

    @staticmethod
    def endpoint(value: Any, what: str) -> Endpoint:
        text = _want_str(value, what)
        try:
            return Endpoint.parse(text)
        except UsageError as exc:
            raise _Bad(f"{what}: {exc}") from None

    def snapshot_filter(self, node: Node) -> SnapshotFilter:
        prefix: str | None = None
        regex: str | None = None
        valid = ["prefix", "regex"]
        for key, k_node, v_node in self.pairs(node, "snapshots") or []:
            try:
                if key == "prefix":
                    prefix = _want_str(self.value(v_node), "snapshots.prefix")
                    problem = snapshot_problem(prefix)
                    if problem:
                        raise _Bad(f"snapshots.prefix: {problem}")
                elif key == "regex":
                    regex = _want_str(self.value(v_node), "snapshots.regex")
                    try:
                        re.compile(regex)
                    except re.error as exc:
                        raise _Bad(f"snapshots.regex {regex!r} is not a valid regular "
                                   f"expression: {exc}") from None
                else:
                    self.fail(k_node, _unknown_key(key, valid, "snapshots"))
            except _Bad as bad:
                self.fail(v_node, str(bad))
        return SnapshotFilter(prefix=prefix, regex=regex)

    def read_targets(self, job: _RawJob, node: Node) -> None:
        if not isinstance(node, SequenceNode):
            raise _Bad(f"targets: expected a list such as [host:pool/dataset, s3:NAME], "
                       f"got {self.kind(node)}")
        if not node.value:
            raise _Bad("targets: the list is empty; a job needs at least one target")
        for item in node.value:
            try:
                text = _want_str(self.value(item), "target")
                if text.startswith(S3_SCHEME + ":"):
                    s3_name = text[len(S3_SCHEME) + 1:]
                    target: Target = S3Ref(s3_name)
                    if not s3_name:
                        raise _Bad(f"target {text!r}: missing S3 target name after 's3:'")
                else:
                    target = self.endpoint(text, "target")
                job.targets.append((target, self.at(item)))
            except _Bad as bad:
                self.fail(item, str(bad))
                job.complete = False


def _check_bucket(value: Any, what: str) -> str:
    text = _want_str(value, what)
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", text) or ".." in text:
        raise _Bad(f"{what}: {text!r} is not a valid bucket name (3-63 of a-z, 0-9, '.', '-', "
                   "starting and ending with a letter or digit)")
    return text


def _check_endpoint_url(value: Any, what: str) -> str:
    """As botocore will take it, by the function zrelay.s3.store asks before making a client."""
    text = _want_str(value, what)
    problem = s3_endpoint_problem(text)
    if problem:
        raise _Bad(f"{what}: {problem}")
    return text


def _check_prefix(value: Any, what: str) -> str:
    text = _want_str(value, what)
    if text.startswith("/"):
        raise _Bad(f"{what}: {text!r} must not start with '/' (S3 keys are relative)")
    return text


def _check_region(value: Any, what: str) -> str:
    text = _want_str(value, what)
    problem = s3_region_problem(text)
    if problem:
        raise _Bad(f"{what}: {problem}")
    return text


def _check_storage_class(value: Any, what: str) -> str:
    text = _want_str(value, what)
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", text):
        raise _Bad(f"{what}: {text!r} is not a storage class such as 'STANDARD' or 'GLACIER_IR'")
    return text


def _check_addressing(value: Any, what: str) -> str:
    text = _want_str(value, what)
    if text not in ("auto", "path", "virtual"):
        raise _Bad(f"{what}: expected auto, path or virtual, got {text!r}")
    return text


_SIZE = re.compile(r"\d+(\.\d+)?\s*([KMGTP]i?B?|B)?", re.IGNORECASE)


def _check_size(value: Any, what: str) -> int | str:
    if isinstance(value, bool):
        raise _Bad(f"{what}: expected a size like 512M or 2T, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise _Bad(f"{what}: {value} is out of range (expected >= 1)")
        return value
    text = _want_str(value, what).strip()
    if not _SIZE.fullmatch(text):
        raise _Bad(f"{what}: expected a size like 512M or 2T, got {text!r}")
    return text


def _one_of(*choices: str) -> Callable[[Any, str], str]:
    def check(value: Any, what: str) -> str:
        text = _want_str(value, what)
        if text not in choices:
            raise _Bad(f"{what}: expected one of {', '.join(choices)}, got {text!r}")
        return text
    return check


def _check_recipients(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _Bad(f"{what}: expected an age public key or a list of them")
    out = []
    for item in items:
        try:
            out.append(check_age_recipient(_want_str(item, what)))
        except InvalidName as exc:
            raise _Bad(f"{what}: {exc}") from None
    return tuple(out)


_S3_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "bucket": _check_bucket,
    "endpoint": _check_endpoint_url,
    "prefix": _check_prefix,
    "region": _check_region,
    "storage_class": _check_storage_class,
    "profile": lambda v, w: _want_str(v, w),
    "addressing_style": _check_addressing,
    "max_stream_size": _check_size,
    "part_size": _check_size,
    "max_object_size": _check_size,
    "concurrency": _check_positive,
    "compression": _one_of("auto", "zstd", "none"),
    "zstd_level": _check_positive,
    "age_recipients": _check_recipients,
    "age_identity": lambda v, w: _want_str(v, w),
    "part_checksum": _one_of("md5", "sha256", "none"),
    "restore_days": _check_positive,
    "restore_tier": _one_of("Expedited", "Standard", "Bulk"),
}


def snapshot_name_problem(template: str) -> str | None:
    """Why ``template`` cannot name zrelay's snapshots, or None.

    Rendered at two fixed dates: each must be a valid snapshot name, and they
    must differ, or the second ``sync --snapshot`` would collide with the first.
    """
    first = _dt.datetime(2001, 2, 3, 4, 5, 6, tzinfo=_dt.timezone.utc)
    second = _dt.datetime(2012, 11, 22, 13, 44, 55, tzinfo=_dt.timezone.utc)
    try:
        a, b = first.strftime(template), second.strftime(template)
    except ValueError as exc:
        return f"snapshot_name {template!r} is not a valid strftime template: {exc}"
    problem = snapshot_problem(a)
    if problem:
        return f"snapshot_name {template!r} renders as {a!r}: {problem}"
    if a == b:
        return (f"snapshot_name {template!r} has no date or time field (such as %Y%m%d-%H%M%S), "
                "so every snapshot would get the same name")
    return None


# --------------------------------------------------------------------------- Ansible sources


def _read_ansible_source(builder: _Builder, path: Path) -> None:
    """One Ansible inventory file (INI or YAML), read as Ansible reads it."""
    builder.sources.append(str(path))
    text = _read_text(path, builder.errors, "inventory")
    if text is None:
        return
    base_dir = os.path.dirname(os.path.abspath(path))
    if looks_like_ini(text, path):
        _read_ini(builder, text, path, base_dir)
        return
    root = _compose(text, path, builder.errors)
    if root is None:
        return  # an empty Ansible inventory is allowed
    _YamlReader(str(path), base_dir, builder, builder.errors, ansible=True).read(root)


def _read_ini(builder: _Builder, text: str, path: Path, base_dir: str) -> None:
    """An Ansible INI inventory into the builder; every problem located at line:column."""
    file = str(path)
    errors = builder.errors
    sections, problems = parse_ini(text)
    for problem in problems:
        errors.add(Origin(file, problem.line, problem.column), problem.message)
    checker = _VarsChecker(errors, base_dir, ansible=True)
    for section in sections:
        _read_ini_section(builder, checker, file, section)


def _read_ini_section(builder: _Builder, checker: _VarsChecker, file: str,
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
            host_vars = _Vars()
            if host.port is not None:
                place = (file, host.line, host.column)
                checker.add(host_vars, "ansible_port", host.port, place, place,
                            f"host {host.pattern!r}", True)
            for var in host.vars:
                checker.add(host_vars, var.key, var.value, (file, var.line, var.column),
                            (file, var.line, var.value_column), f"host {host.pattern!r}", True)
            for host_name in names:
                builder.host(host_name, at, name, host_vars.copy())


# --------------------------------------------------------------------------- entry points


def _read_text(path: Path, errors: _Errors, what: str = "inventory") -> str | None:
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


def _compose(text: str, path: Path, errors: _Errors) -> Node | None:
    """The YAML node tree of ``text`` (None if empty or broken; the problem is recorded).

    A construct left open (a quote, a ``[`` or ``{``) makes the parser fail at the end
    of the file, where nothing can be fixed: that error is reported where it was opened.
    """
    file = str(path)
    composer = _Composer(text)
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
        pending = [(_Composer(first).compose(), _Composer(second).compose())]
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
        if isinstance(a, _AliasNode):
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


_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"

# The node tree is made of the parser's own events, so composing a 50,000-host file makes
# no object beyond what the parser made: a scalar is its ScalarEvent (``tag`` resolved in
# place), a list or mapping is the event that opened it, given ``value`` (its items, or its
# (key, value) pairs). Every node has ``tag``, ``value``, ``start_mark`` and ``anchor``.
ScalarNode = yaml.ScalarEvent
SequenceNode = yaml.SequenceStartEvent
MappingNode = yaml.MappingStartEvent
#: Any node of that tree (PyYAML has no type hints to name them by).
Node = Any


class _AliasNode:
    """Mixin for a node written as ``*anchor``: it shares the anchored node's value.

    The composer makes one small node per alias (never a copy of what it names), so
    a problem can be reported at the alias itself, and readers can count what an
    alias would expand to (see ``_YamlReader.value``). ``anchor`` is the name it uses.
    """

    anchor: str
    target: Node
    value: Any


class _AliasScalar(_AliasNode, yaml.ScalarEvent):
    pass


class _AliasSequence(_AliasNode, yaml.SequenceStartEvent):
    pass


class _AliasMapping(_AliasNode, yaml.MappingStartEvent):
    pass


def _alias(target: Node, event: Any) -> Node:
    """A node at ``event`` (an alias) standing for ``target``, sharing its value."""
    node: Any
    if isinstance(target, ScalarNode):
        node = _AliasScalar(event.anchor, target.tag, target.implicit, target.value,
                            event.start_mark, event.end_mark, target.style)
    else:
        kind = _AliasSequence if isinstance(target, SequenceNode) else _AliasMapping
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


class _Composer:
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
                    tag = _STR_TAG
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
                    event.tag = _MAP_TAG if kind is mapping_start else _SEQ_TAG
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


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Reading makes millions of small objects and no garbage cycles worth collecting
    meanwhile; the cyclic collector would walk them again and again (two fifths of the
    time it took to read 50,000 hosts). Cycles made meanwhile are collected later.

    Afterwards what was made is handed to the oldest generation unexamined (freeze, then
    unfreeze): left in the youngest, the first collection would walk all of it at once.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():  # nobody else froze objects: ours to move
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _parse(text: str, path: Path, errors: _Errors) -> Inventory | None:
    """Read the inventory at ``path`` (whose text is ``text``) and everything it pulls in.

    A YAML file is a zrelay inventory (strict); an INI file is an Ansible
    inventory and is read as Ansible reads it. group_vars/ and host_vars/
    beside each inventory file are read after every inventory file.
    """
    with _collector_paused():
        return _parse_now(text, path, errors)


def _parse_now(text: str, path: Path, errors: _Errors) -> Inventory | None:
    file = str(path)
    base_dir = os.path.dirname(os.path.abspath(file))
    builder = _Builder(path, errors)
    if looks_like_ini(text, path):
        builder.add_vars_dir(base_dir, ansible=True)
        _read_ini(builder, text, path, base_dir)
    else:
        root = _compose(text, path, errors)
        if root is None:
            if not errors.items:
                errors.add(Origin(file, 1, 1),
                           "inventory is empty; expected a mapping with an 'all:' group")
            return None
        builder.strict_files.add(file)
        _YamlReader(file, base_dir, builder, errors).read(root)
        del root  # freed before the model is built: a fleet's node tree is most of the memory
        builder.add_vars_dir(base_dir, ansible=False)
    builder.load_vars_dirs()
    return builder.finish()


def validate_inventory_text(text: str, path: str | Path = "<inventory>") -> list[InventoryError]:
    """Every problem in inventory ``text`` (relative paths resolve against ``path``'s directory)."""
    errors = _Errors()
    _parse(text, Path(path), errors)
    return errors.sorted()


def inspect_inventory_text(text: str, path: str | Path) -> tuple[Inventory | None,
                                                                list[InventoryError]]:
    """The inventory as far as it could be built, and every problem (for editing a broken file)."""
    errors = _Errors()
    inventory = _parse(text, Path(path), errors)
    return inventory, errors.sorted()


def loads_inventory(text: str, path: str | Path = "<inventory>") -> Inventory:
    """Inventory from ``text``; raise its first InventoryError."""
    errors = _Errors()
    inventory = _parse(text, Path(path), errors)
    if errors.items or inventory is None:
        raise errors.sorted()[0]
    return inventory


def validate_inventory(path: str | Path) -> list[InventoryError]:
    """Every problem in the inventory file, in file order (empty: it is valid)."""
    errors = _Errors()
    path = Path(path)
    text = _read_text(path, errors)
    if text is not None:
        _parse(text, path, errors)
    return errors.sorted()


def inspect_inventory(path: str | Path) -> tuple[Inventory | None, list[InventoryError]]:
    """The inventory at ``path`` as far as it could be built, and every problem in file order.

    One reading for both: ``inventory validate`` reports the problems, or summarises
    the inventory, without reading a big fleet's files twice.
    """
    errors = _Errors()
    path = Path(path)
    text = _read_text(path, errors)
    inventory = _parse(text, path, errors) if text is not None else None
    return inventory, errors.sorted()


def load_inventory(path: str | Path) -> Inventory:
    """The inventory at ``path``; raise its first InventoryError (validate_inventory lists all)."""
    errors = _Errors()
    path = Path(path)
    text = _read_text(path, errors)
    inventory = _parse(text, path, errors) if text is not None else None
    if errors.items or inventory is None:
        raise errors.sorted()[0]
    return inventory

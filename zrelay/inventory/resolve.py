"""Variables checked, merged by precedence, and resolved into each Host.

Internal to zrelay.inventory. Every source of variables (a host entry, a group's
``vars:``, a group_vars/ or host_vars/ file) becomes a checked Vars; a host's
settings are its groups' (merged once per set of groups, lowest to highest
precedence as in Ansible) under its own. Where each value was written is kept
for ``inventory show`` and for errors that only matter when a host uses a value.
"""

from __future__ import annotations

import functools
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Iterator, Mapping, NamedTuple, TypeVar

from zrelay.inventory.model import Host, Origin, VarSource
from zrelay.inventory.problems import Errors, Place
from zrelay.inventory.values import (ANSIBLE_ALIAS_RANK, HOST_ALIASES, HOST_CHECKS, HOST_HINTS,
                                     PATH_SETTINGS, Bad, ansible_coerce, check_address,
                                     resolve_path, unknown_key)


class Setting(NamedTuple):
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


_new_setting = functools.partial(tuple.__new__, Setting)  # Setting(*fields) without its __new__


class Vars:
    """One source of variables (a host entry or a group's ``vars:``), already checked.

    A plain class with slots: a fleet makes one per host.
    """

    __slots__ = ("settings", "raw", "raw_origins", "broken")

    def __init__(self, settings: dict[str, Setting] | None = None,
                 raw: dict[str, Any] | None = None, raw_origins: dict[str, Place] | None = None,
                 broken: set[str] | None = None) -> None:
        self.settings = {} if settings is None else settings  # canonical zrelay names
        self.raw = {} if raw is None else raw                  # as written, ansible_* too
        self.raw_origins = {} if raw_origins is None else raw_origins
        #: Settings rejected here ("?" for an unknown key, maybe a misspelt one): a later
        #: "missing" error for one of them would only repeat the error already reported.
        self.broken = set() if broken is None else broken

    def update(self, other: Vars) -> None:
        self.settings.update(other.settings)
        self.raw.update(other.raw)
        self.raw_origins.update(other.raw_origins)
        if other.broken:
            self.broken |= other.broken

    def copy(self) -> Vars:
        return Vars(dict(self.settings), dict(self.raw), dict(self.raw_origins), set(self.broken))


class VarsChecker:
    """Turns one source's ``key: value`` pairs into a checked Vars.

    zrelay's own inventory is strict: every key must be a zrelay setting, one
    of Ansible's names for it, or another ``ansible_*`` variable. An Ansible
    inventory (INI, or anything listed in ``include:``) is read as Ansible
    would: only its connection variables mean something to zrelay, values are
    coerced as Ansible coerces them, and every other variable is kept unchecked.
    """

    def __init__(self, errors: Errors, base_dir: str, ansible: bool) -> None:
        self.errors = errors
        self.base_dir = base_dir
        self.ansible = ansible
        #: What each variable name is: (its zrelay setting, that setting's check), or
        #: (None, None) for a name that is not a setting.
        self._names: dict[str, tuple[str | None, Callable[[Any, str], Any] | None]] = {}

    def add(self, result: Vars, key: str, value: Any, key_origin: Place,
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
                (canonical, HOST_CHECKS[canonical]) if canonical in HOST_CHECKS else (None, None))
        canonical, check = known
        if canonical is None or check is None:
            if self.ansible or key.startswith("ansible_"):
                return  # Ansible's business; kept in raw
            if key == "vars" and for_host:
                self.errors.add(key_origin, f"{where}: host vars go directly under the host, "
                                "not under 'vars:'")
            else:
                self.errors.add(key_origin, unknown_key(key, list(HOST_CHECKS), where,
                                                        HOST_HINTS))
            result.broken.add("?")
            return
        if self.ansible:
            value = ansible_coerce(canonical, value)
        try:
            checked = check(value, key)
        except Bad as bad:
            if bad.key is not None and locate is not None:
                value_origin = locate(bad.key, bad.in_name) or value_origin
            if self.ansible:
                self._keep(result, canonical, Setting(None, value_origin, str(bad), key))
            else:
                self.errors.add(value_origin, str(bad))
                result.broken.add(canonical)
            return
        if canonical in PATH_SETTINGS:
            checked = resolve_path(checked, self.base_dir)
        setting = _new_setting((checked, value_origin, None, key))
        if canonical in result.settings:
            self._keep(result, canonical, setting, key_origin)
        else:
            result.settings[canonical] = setting

    def _keep(self, result: Vars, canonical: str, setting: Setting,
              key_origin: Place | None = None) -> None:
        previous = result.settings.get(canonical)
        if previous is not None and previous.key != setting.key:
            if self.ansible:  # Ansible's own order between its aliases decides, silently
                if ANSIBLE_ALIAS_RANK.get(previous.key, 0) > ANSIBLE_ALIAS_RANK.get(
                        setting.key, 0):
                    return
            elif previous.value != setting.value or setting.problem or previous.problem:
                self.errors.add(key_origin or setting.origin,
                                f"{setting.key!r} and {previous.key!r} both set {canonical!r} "
                                "here, to different values; keep one")
                result.broken.add(canonical)
                return
        result.settings[canonical] = setting


@dataclass
class Inherited:
    """Variables merged level by level, and which level (scope, origin) set each."""

    groups: tuple[str, ...]
    vars: Vars = field(default_factory=Vars)
    var_sources: dict[str, VarSource] = field(default_factory=dict)
    setting_sources: dict[str, VarSource] = field(default_factory=dict)
    #: Once every level is added: the settings with a problem, and the value of each of
    #: Host's setting fields (in its order), its default where no level sets it.
    problems: dict[str, Setting] = field(default_factory=dict)
    fields: list[Any] = field(default_factory=list)

    def add(self, scope: str, level: Vars) -> None:
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


class Sources(Mapping[str, VarSource]):
    """A host's ``var_sources`` or ``setting_sources``, each VarSource made when asked.

    ``own``: what the host itself sets (scope ``host NAME``), as a Place, a Setting or a
    VarSource; the other keys come from ``below``, what its groups set (one dict for every
    host in the same groups). A fleet would otherwise make for every host several
    VarSources that nobody reads. Keys are in the order the levels set them, as in ``vars``.
    """

    __slots__ = ("_own", "_below", "_scope")

    def __init__(self, own: Mapping[str, Place | Setting | VarSource],
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
        place = own.origin if isinstance(own, Setting) else own
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
class RawHost:
    name: str
    origin: Origin
    vars: Vars = field(default_factory=Vars)
    dir_vars: Vars | None = None  # host_vars/NAME*, when there are any


@dataclass
class RawGroup:
    name: str
    origin: Origin
    vars: Vars = field(default_factory=Vars)
    dir_vars: Vars = field(default_factory=Vars)  # group_vars/NAME*
    hosts: dict[str, None] = field(default_factory=dict)  # an ordered set
    children: dict[str, Origin] = field(default_factory=dict)  # child → where the edge is written


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
    for f in fields(Host) if f.name in HOST_CHECKS)
_HOST_SETTING_AT = {name: at for at, (name, _) in enumerate(_HOST_SETTINGS)}
_SSH_OPTIONS_AT = _HOST_SETTING_AT["ssh_options"]
if [f.name for f in fields(Host)][1:len(_HOST_SETTINGS) + 1] != list(_HOST_SETTING_AT) or \
        _HOST_SETTINGS[0][0] != "address" or set(_HOST_SETTING_AT) != set(HOST_CHECKS):
    raise TypeError("Host's setting fields must follow its name, address first")
new_origin = _constructor(Origin)


# --------------------------------------------------------------------------- resolution


def group_depths(groups: Mapping[str, RawGroup]) -> dict[str, int]:
    """Longest parent chain above each group: deeper groups' vars win, as in Ansible."""
    depth: dict[str, int] = {}

    def walk(name: str, d: int, seen: frozenset[str]) -> None:
        if name in seen or depth.get(name, -1) >= d:
            return
        depth[name] = d
        for child in groups[name].children:
            walk(child, d + 1, seen | {name})

    walk("all", 0, frozenset())
    for name in groups:  # groups only reachable through a cycle
        if name not in depth:
            walk(name, 1, frozenset())
    return depth


def inherit(groups: Mapping[str, RawGroup], direct: tuple[str, ...],
            parents: Mapping[str, set[str]], depth: Mapping[str, int]) -> Inherited:
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
        group = groups[name]
        value = group.dir_vars.raw.get("ansible_group_priority",
                                       group.vars.raw.get("ansible_group_priority", 1))
        return value if isinstance(value, int) and not isinstance(value, bool) else 1

    order = sorted(member, key=lambda g: (depth.get(g, 1), priority(g), g))
    levels: list[tuple[str, Vars]] = [("group all", groups["all"].vars)]
    levels += [(f"group {g}", groups[g].vars) for g in order]
    levels.append(("group all", groups["all"].dir_vars))
    levels += [(f"group {g}", groups[g].dir_vars) for g in order]
    inherited = Inherited(tuple(g for g in order if g != "ungrouped"))
    for scope, level in levels:
        inherited.add(scope, level)
    inherited.done()
    return inherited


def resolve_host(raw: RawHost, inherited: Inherited, errors: Errors) -> Host | None:
    """The host's own variables over what its groups give it (``inherited``): the
    host's vars in the inventory files, then ``host_vars/<host>``; then the Host
    (None if it cannot be made; the problems go to ``errors``).

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
            errors.add(setting.origin, f"{setting.problem} (used by host {raw.name!r})")
            usable = False
    for key, setting in inherited.problems.items():
        if key not in own_settings:
            errors.add(setting.origin, f"{setting.problem} (used by host {raw.name!r})")
            usable = False
    if values[0] is None:  # no address
        if "address" in inherited.vars.broken or "address" in own.broken or (
                dirs is not None and "address" in dirs.broken):
            return None
        try:  # as Ansible: no ansible_host means the inventory name is the address
            values[0] = check_address(raw.name, f"host {raw.name!r}")
        except Bad as bad:
            errors.add(raw.origin, f"{bad}; the host name is its address unless "
                            "'address' (or 'ansible_host') is set")
            return None
        own_settings = {**own_settings, "address": VarSource("host name", raw.origin)}
    if not usable:
        return None
    if values[_SSH_OPTIONS_AT] is None:
        values[_SSH_OPTIONS_AT] = {}  # each host its own, as Host() would make it
    scope = f"host {raw.name}"
    return _new_host(raw.name, *values, inherited.groups, raw_vars, raw.origin,
                     Sources(var_own, inherited.var_sources, scope),
                     Sources(own_settings, inherited.setting_sources, scope))

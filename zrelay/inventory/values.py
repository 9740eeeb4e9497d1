"""Checks of single values, as written in an inventory: host settings, S3 targets, job options.

Internal to zrelay.inventory. Each check takes a plain Python value (as any reader
produces it) and returns it checked (maybe normalised), or raises Bad with a
one-line message saying what was expected; the reader that found the value knows
where it was written. Where a value is later put on a command line or handed to a
library, the check is the function that does that (one rule, one place).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from typing import Any, Callable

from zrelay.errors import InvalidName
from zrelay.inventory.endpoints import s3_endpoint_problem, s3_region_problem
from zrelay.inventory.ansible import ansible_bool
from zrelay.inventory.model import suggest
from zrelay.inventory.ssh_options import SshOptionError, convert_ssh_option
from zrelay.zfs.commands import SEND_OPTIONS
from zrelay.zfs.direct_ssh import check_ssh_ciphers, check_ssh_host
from zrelay.zfs.names import check_remote_path, snapshot_problem
from zrelay.zfs.stream_filters import check_age_recipient
from zrelay.inventory.yamlread import Tagged

_SPACE = re.compile(r"\s")  # what str.isspace() calls whitespace
_CONTROL = re.compile(r"[\x00-\x1f]")


class Bad(Exception):
    """A value check failed; the caller knows where the value was written.

    ``key``: the entry of a mapping value at fault (an ``ssh_options`` option), so the
    error can point at that entry rather than at the start of the mapping.
    """

    def __init__(self, message: str, key: str | None = None, in_name: bool = False) -> None:
        super().__init__(message)
        self.key = key
        self.in_name = in_name  # the entry's name is at fault, not its value


def describe(value: Any) -> str:
    """How a wrong value reads in an error message."""
    if isinstance(value, Tagged):
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


def want_str(value: Any, what: str) -> str:
    """A non-empty one-line literal string (no Ansible templates: zrelay cannot render them)."""
    if isinstance(value, Tagged):
        raise Bad(f"{what}: YAML tag {value.tag} is not supported here")
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, (int, float, _dt.date)) else ""
        raise Bad(f"{what}: expected a string, got {describe(value)}{hint}")
    if not value.strip():
        raise Bad(f"{what}: expected a non-empty string")
    if "{{" in value or "{%" in value:
        raise Bad(f"{what}: templates ('{{{{ ... }}}}') are not supported; write the value itself")
    if _CONTROL.search(value):
        raise Bad(f"{what}: must not contain control characters or newlines")
    return value


def want_int(value: Any, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad(f"{what}: expected an integer, got {describe(value)}")
    if value < low or (high is not None and value > high):
        span = f"{low}-{high}" if high is not None else f">= {low}"
        raise Bad(f"{what}: {value} is out of range (expected {span})")
    return value


def want_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise Bad(f"{what}: expected true or false, got {describe(value)}")
    return value


#: An address every check below would pass as it is (the usual host name or IP address).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]*")


def check_address(value: Any, what: str) -> str:
    """A host name or IP address that is safe to hand to ssh."""
    if value.__class__ is str and _PLAIN_ADDRESS.fullmatch(value):
        return value  # one match instead of eight checks: a fleet has one per host
    text = want_str(value, what)
    if _SPACE.search(text):
        raise Bad(f"{what}: {text!r} contains whitespace")
    if text.startswith("-"):
        raise Bad(f"{what}: {text!r} starts with '-' and would be read as an ssh option")
    if "@" in text:
        raise Bad(f"{what}: {text!r} contains '@'; put the login name in 'user'")
    if "/" in text:
        raise Bad(f"{what}: {text!r} contains '/'; expected a host name or IP address")
    return text


def check_port(value: Any, what: str) -> int:
    return want_int(value, what, 1, 65535)


def check_user(value: Any, what: str) -> str:
    text = want_str(value, what)
    if any(c.isspace() for c in text) or text.startswith("-") or "@" in text:
        raise Bad(f"{what}: {text!r} is not a valid login name")
    return text


def check_positive(value: Any, what: str) -> int:
    return want_int(value, what, 1)


_DURATION = re.compile(r"([0-9]+)([smhdw])")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_HELP = "a duration such as 30s, 15m, 1h, 1d or 1w"


def want_duration(value: Any, what: str, minimum: int = 1) -> int:
    """Whole seconds from ``N`` and one unit (s, m, h, d, w): one way to write a duration
    (a bare number is refused, since seconds or minutes would be a guess)."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise Bad(f"{what}: expected {_DURATION_HELP}, got the integer {value} "
                  f"(add a unit: {value}s, {value}m, ...)")
    text = want_str(value, what).strip()
    match = _DURATION.fullmatch(text)
    if match is None:
        raise Bad(f"{what}: expected {_DURATION_HELP}, got {text!r}")
    seconds = int(match.group(1)) * DURATION_UNITS[match.group(2)]
    if seconds < minimum:
        raise Bad(f"{what}: {text} is too short (at least {duration_text(minimum)})")
    return seconds


def duration_text(seconds: int) -> str:
    """``seconds`` as ``want_duration`` reads it back, in the largest unit that divides it."""
    for unit, size in sorted(DURATION_UNITS.items(), key=lambda item: -item[1]):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def check_ssh_options(value: Any, what: str) -> dict[str, str | int]:
    """OpenSSH options as ``Name: value``, each converted now by the function the
    transport connects with (inventory.ssh_options), so a run never meets a value
    asyncssh cannot take. Kept as written; YAML's yes/no booleans become "yes"/"no"."""
    if not isinstance(value, dict):
        raise Bad(f"{what}: expected a mapping of ssh option names to values, "
                  f"got {describe(value)}")
    options: dict[str, str | int] = {}
    seen: dict[str, str] = {}
    for key, item in value.items():
        if isinstance(item, Tagged):
            raise Bad(f"{what}.{key}: YAML tag {item.tag} is not supported here", key)
        if isinstance(item, str) and ("{{" in item or "{%" in item):
            raise Bad(f"{what}.{key}: templates ('{{{{ ... }}}}') are not supported; "
                      "write the value itself", key)
        try:
            convert_ssh_option(key, item)
        except SshOptionError as exc:
            raise Bad(f"{what}.{exc}", key, exc.in_name) from None
        if key.lower() in seen:
            raise Bad(f"{what}.{key}: given twice (also as {seen[key.lower()]!r}); OpenSSH "
                      "option names ignore case", key, in_name=True)
        seen[key.lower()] = key
        options[key] = ("yes" if item else "no") if isinstance(item, bool) else item
    return options


#: ``compress``: wire compression of host-to-host streams (see zrelay.paths.wire).
COMPRESS_CHOICES = ("auto", "zstd", "lz4", "off")
_BUFFER_SIZE = re.compile(r"[1-9][0-9]{0,5}[kKMG]?")


def check_compress(value: Any, what: str) -> str:
    """auto | zstd | lz4 | off (YAML's bare off/on read as booleans are accepted too)."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    text = want_str(value, what).strip().lower()
    if text not in COMPRESS_CHOICES:
        raise Bad(f"{what}: {value!r} is not one of {', '.join(COMPRESS_CHOICES)}")
    return text


def check_buffer(value: Any, what: str) -> str:
    """auto | off | SIZE (mbuffer memory per end, e.g. 64M)."""
    if isinstance(value, bool):
        return "auto" if value else "off"
    if isinstance(value, int) and value > 0:
        value = str(value)
    text = want_str(value, what).strip()
    if text.lower() in ("auto", "off"):
        return text.lower()
    if not _BUFFER_SIZE.fullmatch(text):
        raise Bad(f"{what}: {value!r} must be auto, off or a size like 64M (k, M or G)")
    return text


#: ``bandwidth``: bytes per second, in the size syntax of max_stream_size (binary units), ``/s`` optional.
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?(?:/s)?", re.IGNORECASE)
_RATE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MIN_BANDWIDTH = 1 << 10


def check_bandwidth(value: Any, what: str) -> int:
    """A bandwidth limit in bytes per second: ``50M`` (= 50 MiB/s; K, M, G, T are 1024-based as in
    every size of the inventory, ``MB``, ``MiB`` and ``/s`` may be written), or a plain number of bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Bad(f"{what}: expected a rate in bytes per second like 50M or 1.5G, got {describe(value)}")
    if isinstance(value, (int, float)):
        rate = int(value)
    else:
        match = _RATE.fullmatch(value.strip())
        if match is None:
            raise Bad(f"{what}: expected a rate in bytes per second like 50M or 1.5G, got {value!r}")
        rate = int(float(match.group(1)) * _RATE_UNITS[match.group(2).lower()])
    if rate < MIN_BANDWIDTH:
        raise Bad(f"{what}: {value!r} is below the smallest limit, 1K (1024 bytes per second)")
    return rate


def check_ciphers(value: Any, what: str) -> str:
    """auto | default | an OpenSSH Ciphers list (names, comma-separated; a list may start with +, - or ^)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        value = ",".join(v.strip() for v in value)
    text = want_str(value, what).strip()
    if text.lower() in ("auto", "default"):
        return text.lower()
    try:
        return check_ssh_ciphers(text)
    except InvalidName:
        raise Bad(f"{what}: {value!r} must be auto, default or ssh cipher names separated by commas "
                  "(e.g. aes128-gcm@openssh.com,chacha20-poly1305@openssh.com)") from None


def check_remote_file(value: Any, what: str) -> str:
    """A path on the host itself, for its own ssh in direct mode: checked by the function
    that puts it on that ssh's command line (names.check_remote_path)."""
    text = want_str(value, what)
    try:
        return check_remote_path(text)
    except InvalidName as exc:
        hint = " ('~' is not expanded on the host)" if text.startswith("~") else ""
        raise Bad(f"{what}: {exc}{hint}") from None


def check_direct_address(value: Any, what: str) -> str:
    """How other hosts reach this one in direct mode: their ssh's destination argument,
    checked by the function that builds that ssh's command line (direct_ssh.check_ssh_host)."""
    text = check_address(value, what)
    try:
        return check_ssh_host(text)
    except InvalidName as exc:
        raise Bad(f"{what}: {exc}") from None


HOST_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "address": check_address,
    "port": check_port,
    "user": check_user,
    "identity_file": lambda v, w: want_str(v, w),
    "known_hosts": lambda v, w: want_str(v, w),
    "ssh_options": check_ssh_options,
    "sudo": want_bool,
    "max_sessions": check_positive,
    "sends": check_positive,
    "receives": check_positive,
    "direct_address": lambda v, w: check_direct_address(v, w),
    "direct": want_bool,
    "direct_identity_file": lambda v, w: check_remote_file(v, w),  # a path on this host
    "direct_known_hosts": lambda v, w: check_remote_file(v, w),    # a path on this host
    "direct_ciphers": check_ciphers,
    "compress": check_compress,
    "buffer": check_buffer,
    "fastpath": want_bool,
    "rpo": lambda v, w: want_duration(v, w),  # recovery point objective of its jobs
    "bandwidth": check_bandwidth,              # bytes per second of every stream from or to it
}
PATH_SETTINGS = frozenset({"identity_file", "known_hosts"})

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
    "zrelay_rpo": "rpo",  # the name an Ansible inventory can carry it under
}

#: Within one level of an Ansible inventory, the alias Ansible's ssh plugin prefers
#: (it reads the list in order, the last one set wins): no conflict error there.
ANSIBLE_ALIAS_RANK: dict[str, int] = {
    "ansible_host": 1, "ansible_ssh_host": 2, "ansible_port": 1, "ansible_ssh_port": 2,
    "ansible_user": 1, "ansible_ssh_user": 2, "ansible_private_key_file": 1,
    "ansible_ssh_private_key_file": 2, "ansible_become": 1,
}

#: Words people reach for that are not settings, and what they mean.
HOST_HINTS: dict[str, str] = {
    "host": "address", "hostname": "address", "ip": "address", "addr": "address",
    "username": "user", "login": "user", "key": "identity_file", "ssh_key": "identity_file",
    "private_key": "identity_file", "become": "sudo", "known_hosts_file": "known_hosts",
}


def resolve_path(text: str, base_dir: str) -> str:
    """``~`` expanded, relative paths taken from the directory of the file that set them."""
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    return os.path.normpath(path)


def unknown_key(key: str, valid: list[str], where: str,
                hints: dict[str, str] | None = None) -> str:
    """One line naming the bad key, the likely intended one, and every valid one."""
    if hints and key in hints:
        hint = f" (did you mean {hints[key]!r}?)"
    else:
        hint = suggest(key, valid)
    return f"unknown key {key!r} in {where}{hint}; expected one of: {', '.join(valid)}"


def ansible_coerce(canonical: str, value: Any) -> Any:
    """Ansible's own conversions: ``ansible_port="2222"`` is a port, ``ansible_become=yes`` true."""
    if canonical == "port" and isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if canonical == "sudo":
        flag = ansible_bool(value)
        return value if flag is None else flag
    return value


def want_send_options(value: Any) -> tuple[str, ...]:
    """``send_options: [large_blocks, embedded, compressed]`` (any subset; ``[]`` for none)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Bad(f"send_options must be a list of names from {', '.join(SEND_OPTIONS)}, got {value!r}")
    unknown = [v for v in value if v not in SEND_OPTIONS]
    if unknown:
        raise Bad(f"send_options: unknown option {unknown[0]!r}; expected some of {', '.join(SEND_OPTIONS)}")
    return tuple(dict.fromkeys(value))


# --------------------------------------------------------------------------- S3 targets


def _check_bucket(value: Any, what: str) -> str:
    text = want_str(value, what)
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", text) or ".." in text:
        raise Bad(f"{what}: {text!r} is not a valid bucket name (3-63 of a-z, 0-9, '.', '-', "
                  "starting and ending with a letter or digit)")
    return text


def _by_problem(problem_of: Callable[[str], str | None]) -> Callable[[Any, str], str]:
    """A check of a string by the same ``*_problem`` function its use asks (one rule, one place)."""
    def check(value: Any, what: str) -> str:
        text = want_str(value, what)
        problem = problem_of(text)
        if problem:
            raise Bad(f"{what}: {problem}")
        return text
    return check


#: As botocore will take it, by the function zrelay.s3.store asks before making a client.
_check_endpoint_url = _by_problem(s3_endpoint_problem)


def _check_prefix(value: Any, what: str) -> str:
    text = want_str(value, what)
    if text.startswith("/"):
        raise Bad(f"{what}: {text!r} must not start with '/' (S3 keys are relative)")
    return text


_check_region = _by_problem(s3_region_problem)


def _check_storage_class(value: Any, what: str) -> str:
    text = want_str(value, what)
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", text):
        raise Bad(f"{what}: {text!r} is not a storage class such as 'STANDARD' or 'GLACIER_IR'")
    return text


def _check_addressing(value: Any, what: str) -> str:
    text = want_str(value, what)
    if text not in ("auto", "path", "virtual"):
        raise Bad(f"{what}: expected auto, path or virtual, got {text!r}")
    return text


_SIZE = re.compile(r"\d+(\.\d+)?\s*([KMGTP]i?B?|B)?", re.IGNORECASE)


def _check_size(value: Any, what: str) -> int | str:
    if isinstance(value, bool):
        raise Bad(f"{what}: expected a size like 512M or 2T, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise Bad(f"{what}: {value} is out of range (expected >= 1)")
        return value
    text = want_str(value, what).strip()
    if not _SIZE.fullmatch(text):
        raise Bad(f"{what}: expected a size like 512M or 2T, got {text!r}")
    return text


def _one_of(*choices: str) -> Callable[[Any, str], str]:
    def check(value: Any, what: str) -> str:
        text = want_str(value, what)
        if text not in choices:
            raise Bad(f"{what}: expected one of {', '.join(choices)}, got {text!r}")
        return text
    return check


def _check_recipients(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise Bad(f"{what}: expected an age public key or a list of them")
    out = []
    for item in items:
        try:
            out.append(check_age_recipient(want_str(item, what)))
        except InvalidName as exc:
            raise Bad(f"{what}: {exc}") from None
    return tuple(out)


def _check_object_lock(value: Any, what: str) -> Any:
    """``{mode: GOVERNANCE|COMPLIANCE, days: N}``."""
    from zrelay.inventory.model import ObjectLock

    if not isinstance(value, dict):
        raise Bad(f"{what}: expected a mapping {{mode: GOVERNANCE|COMPLIANCE, days: N}}, got {value!r}")
    unknown = sorted(set(value) - {"mode", "days"})
    if unknown:
        raise Bad(f"{what}: unknown key {unknown[0]!r} (mode, days)")
    mode = value.get("mode")
    if not isinstance(mode, str) or mode.upper() not in ("GOVERNANCE", "COMPLIANCE"):
        raise Bad(f"{what}: mode must be GOVERNANCE or COMPLIANCE, got {mode!r}")
    if "days" not in value:
        raise Bad(f"{what}: days is missing (how long each object is locked)")
    return ObjectLock(mode.upper(), check_positive(value["days"], f"{what}: days"))


S3_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "bucket": _check_bucket,
    "endpoint": _check_endpoint_url,
    "prefix": _check_prefix,
    "region": _check_region,
    "storage_class": _check_storage_class,
    "profile": lambda v, w: want_str(v, w),
    "addressing_style": _check_addressing,
    "max_stream_size": _check_size,
    "part_size": _check_size,
    "max_object_size": _check_size,
    "concurrency": check_positive,
    "compression": _one_of("auto", "zstd", "none"),
    "zstd_level": check_positive,
    "age_recipients": _check_recipients,
    "age_identity": lambda v, w: want_str(v, w),
    "part_checksum": _one_of("md5", "sha256", "none"),
    "restore_days": check_positive,
    "restore_tier": _one_of("Expedited", "Standard", "Bulk"),
    "bandwidth": check_bandwidth,
    "object_lock": _check_object_lock,
    "prune_profile": lambda v, w: want_str(v, w),
}


def snapshot_name_problem(template: str, what: str = "snapshot_name") -> str | None:
    """Why ``template`` cannot name zrelay's snapshots, or None (``what``: the key it was
    written under, for the message).

    Rendered at two fixed dates: each must be a valid snapshot name, and they
    must differ, or the second ``sync --snapshot`` would collide with the first.
    """
    first = _dt.datetime(2001, 2, 3, 4, 5, 6, tzinfo=_dt.timezone.utc)
    second = _dt.datetime(2012, 11, 22, 13, 44, 55, tzinfo=_dt.timezone.utc)
    try:
        a, b = first.strftime(template), second.strftime(template)
    except ValueError as exc:
        return f"{what} {template!r} is not a valid strftime template: {exc}"
    problem = snapshot_problem(a)
    if problem:
        return f"{what} {template!r} renders as {a!r}: {problem}"
    if a == b:
        return (f"{what} {template!r} has no date or time field (such as %Y%m%d-%H%M%S), "
                "so every snapshot would get the same name")
    return None

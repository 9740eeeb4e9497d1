"""A host's ``ssh_options`` (OpenSSH ``Name: value`` pairs) as asyncssh.connect() keywords.

Why one pure function: the inventory loader converts every option when it reads
the file (so ``zrelay inventory validate`` refuses at file:line:column what a run
would refuse), and transport/ssh.py converts the same options with the same
function when it connects. A value either works at both or fails at both.

Values are read as OpenSSH reads them (``man ssh_config``): times in its format
(``30``, ``30s``, ``5m``, ``1h30m``), yes/no flags, algorithm lists that may start
with ``+`` (append to the default list), ``-`` (remove from it) or ``^`` (put first).

Algorithm names are checked here without importing asyncssh (the pure core may
not): against a copy of the names asyncssh registers. tests/unit/test_inventory_values.py
compares this copy with asyncssh's own lists (``get_encryption_algs()`` and the
others), so an asyncssh upgrade that adds or drops a name fails a test rather
than a connection. Names marked optional exist only when asyncssh finds an
optional library (``OPTIONAL_ALGORITHMS``); on a machine without it asyncssh
refuses them when connecting, which zrelay reports as a one-line usage error.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from dataclasses import dataclass
from typing import Callable, Mapping

#: INT_MAX, the largest time OpenSSH's convtime() accepts, in seconds.
_MAX_SECONDS = 2**31 - 1


class SshOptionError(ValueError):
    """An ssh option whose name or value zrelay cannot hand to asyncssh; names the option."""

    def __init__(self, option: str, problem: str, *, in_name: bool = False) -> None:
        self.option = option
        self.problem = problem
        self.in_name = in_name  # the name is at fault (unknown, misspelt), not the value
        super().__init__(f"{option}: {problem}")


# --------------------------------------------------------------------------- algorithm names
#
# (name, in asyncssh's default list) in asyncssh's own order, as asyncssh 2.14-2.24
# registers them when every optional library is present.

_ENCRYPTION: tuple[tuple[str, bool], ...] = (
    ("chacha20-poly1305@openssh.com", True), ("aes256-gcm@openssh.com", True),
    ("aes128-gcm@openssh.com", True), ("aes256-ctr", True), ("aes192-ctr", True),
    ("aes128-ctr", True), ("aes256-cbc", False), ("aes192-cbc", False), ("aes128-cbc", False),
    ("3des-cbc", False), ("blowfish-cbc", False), ("cast128-cbc", False),
    ("seed-cbc@ssh.com", False), ("arcfour256", False), ("arcfour128", False),
    ("arcfour", False),
)

_MAC: tuple[tuple[str, bool], ...] = (
    ("umac-64-etm@openssh.com", True), ("umac-128-etm@openssh.com", True),
    ("hmac-sha2-256-etm@openssh.com", True), ("hmac-sha2-512-etm@openssh.com", True),
    ("hmac-sha1-etm@openssh.com", True), ("hmac-md5-etm@openssh.com", False),
    ("hmac-sha2-256-96-etm@openssh.com", False), ("hmac-sha2-512-96-etm@openssh.com", False),
    ("hmac-sha1-96-etm@openssh.com", False), ("hmac-md5-96-etm@openssh.com", False),
    ("umac-64@openssh.com", True), ("umac-128@openssh.com", True), ("hmac-sha2-256", True),
    ("hmac-sha2-512", True), ("hmac-sha1", True), ("hmac-sha256-2@ssh.com", True),
    ("hmac-sha224@ssh.com", True), ("hmac-sha256@ssh.com", True), ("hmac-sha384@ssh.com", True),
    ("hmac-sha512@ssh.com", True), ("hmac-md5", False), ("hmac-sha2-256-96", False),
    ("hmac-sha2-512-96", False), ("hmac-sha1-96", False), ("hmac-md5-96", False),
)

_GSS_KEX: tuple[tuple[str, bool], ...] = (
    ("gss-curve25519-sha256", True), ("gss-curve448-sha512", True),
    ("gss-nistp521-sha512", True), ("gss-nistp384-sha384", True), ("gss-nistp256-sha256", True),
    ("gss-1.3.132.0.10-sha256", True), ("gss-gex-sha256", True), ("gss-gex-sha1", False),
    ("gss-group14-sha256", True), ("gss-group15-sha512", True), ("gss-group16-sha512", True),
    ("gss-group17-sha512", True), ("gss-group18-sha512", True), ("gss-group14-sha1", True),
    ("gss-group1-sha1", False),
)

_KEX: tuple[tuple[str, bool], ...] = _GSS_KEX + (
    ("mlkem768x25519-sha256", True), ("mlkem768nistp256-sha256", True),
    ("mlkem1024nistp384-sha384", True), ("sntrup761x25519-sha512", True),
    ("sntrup761x25519-sha512@openssh.com", True), ("curve25519-sha256", True),
    ("curve25519-sha256@libssh.org", True), ("curve448-sha512", True),
    ("ecdh-sha2-nistp521", True), ("ecdh-sha2-nistp384", True), ("ecdh-sha2-nistp256", True),
    ("ecdh-sha2-1.3.132.0.10", True), ("diffie-hellman-group-exchange-sha256", True),
    ("diffie-hellman-group-exchange-sha224@ssh.com", False),
    ("diffie-hellman-group-exchange-sha384@ssh.com", False),
    ("diffie-hellman-group-exchange-sha512@ssh.com", False),
    ("diffie-hellman-group-exchange-sha1", False), ("diffie-hellman-group14-sha256", True),
    ("diffie-hellman-group15-sha512", True), ("diffie-hellman-group16-sha512", True),
    ("diffie-hellman-group17-sha512", True), ("diffie-hellman-group18-sha512", True),
    ("diffie-hellman-group14-sha256@ssh.com", True),
    ("diffie-hellman-group14-sha224@ssh.com", False),
    ("diffie-hellman-group15-sha256@ssh.com", False),
    ("diffie-hellman-group15-sha384@ssh.com", False),
    ("diffie-hellman-group16-sha384@ssh.com", False),
    ("diffie-hellman-group16-sha512@ssh.com", False),
    ("diffie-hellman-group18-sha512@ssh.com", False), ("diffie-hellman-group14-sha1", True),
    ("diffie-hellman-group1-sha1", False), ("rsa2048-sha256", True), ("rsa1024-sha1", False),
)

#: Host key algorithms: X.509 certificates, OpenSSH certificates, plain keys (asyncssh's
#: get_x509_certificate_algs() + get_certificate_algs() + get_public_key_algs()).
_HOST_KEY: tuple[tuple[str, bool], ...] = (
    ("x509v3-ssh-ed25519", True), ("x509v3-ssh-ed448", True),
    ("x509v3-ecdsa-sha2-nistp521", True), ("x509v3-ecdsa-sha2-nistp384", True),
    ("x509v3-ecdsa-sha2-nistp256", True), ("x509v3-ecdsa-sha2-1.3.132.0.10", True),
    ("x509v3-rsa2048-sha256", True), ("x509v3-ssh-rsa", True), ("x509v3-ssh-dss", False),
    ("rsa-sha2-256-cert-v01@openssh.com", True), ("rsa-sha2-512-cert-v01@openssh.com", True),
    ("ssh-rsa-cert-v01@openssh.com", True), ("sk-ssh-ed25519-cert-v01@openssh.com", True),
    ("sk-ecdsa-sha2-nistp256-cert-v01@openssh.com", True),
    ("ssh-ed25519-cert-v01@openssh.com", True), ("ssh-ed448-cert-v01@openssh.com", True),
    ("ecdsa-sha2-nistp521-cert-v01@openssh.com", True),
    ("ecdsa-sha2-nistp384-cert-v01@openssh.com", True),
    ("ecdsa-sha2-nistp256-cert-v01@openssh.com", True),
    ("ecdsa-sha2-1.3.132.0.10-cert-v01@openssh.com", True),
    ("ssh-dss-cert-v01@openssh.com", False),
    ("rsa-sha2-256", True), ("rsa-sha2-512", True), ("ssh-rsa-sha224@ssh.com", True),
    ("ssh-rsa-sha256@ssh.com", True), ("ssh-rsa-sha384@ssh.com", True),
    ("ssh-rsa-sha512@ssh.com", True), ("ssh-rsa", True), ("sk-ssh-ed25519@openssh.com", True),
    ("sk-ecdsa-sha2-nistp256@openssh.com", True),
    ("webauthn-sk-ecdsa-sha2-nistp256@openssh.com", True), ("ssh-ed25519", True),
    ("ssh-ed448", True), ("ecdsa-sha2-nistp521", True), ("ecdsa-sha2-nistp384", True),
    ("ecdsa-sha2-nistp256", True), ("ecdsa-sha2-1.3.132.0.10", True), ("ssh-dss", False),
)

#: Names asyncssh registers only when an optional library is there, and which one.
OPTIONAL_ALGORITHMS: dict[str, str] = {
    **{name: "pyOpenSSL (X.509 certificates)" for name, _ in _HOST_KEY
       if name.startswith("x509v3-")},
    "sntrup761x25519-sha512": "liboqs", "sntrup761x25519-sha512@openssh.com": "liboqs",
    "mlkem768x25519-sha256": "cryptography >= 46 or liboqs",
    "mlkem768nistp256-sha256": "cryptography >= 46 or liboqs",
    "mlkem1024nistp384-sha384": "cryptography >= 46 or liboqs",
    **{name: "nettle (UMAC)" for name, _ in _MAC if name.startswith("umac-")},
    "chacha20-poly1305@openssh.com": "an OpenSSL with Poly1305",
    "curve448-sha512": "an OpenSSL with X448", "gss-curve448-sha512": "an OpenSSL with X448",
    "ssh-ed448": "an OpenSSL with Ed448", "ssh-ed448-cert-v01@openssh.com": "an OpenSSL with Ed448",
    "x509v3-ssh-ed448": "pyOpenSSL and an OpenSSL with Ed448",
}


@dataclass(frozen=True)
class AlgorithmKind:
    """One of the algorithm-list options: its asyncssh keyword and known names."""

    keyword: str
    what: str                      # as asyncssh words it: "encryption", "MAC", ...
    names: tuple[str, ...]
    defaults: tuple[str, ...]
    allow_empty: bool = False      # MACs: AEAD ciphers need none


def _kind(keyword: str, what: str, table: tuple[tuple[str, bool], ...],
          allow_empty: bool = False) -> AlgorithmKind:
    return AlgorithmKind(keyword, what, tuple(n for n, _ in table),
                         tuple(n for n, d in table if d), allow_empty)


#: OpenSSH's option name (lower case) → the list it sets.
ALGORITHM_OPTIONS: dict[str, AlgorithmKind] = {
    "ciphers": _kind("encryption_algs", "encryption", _ENCRYPTION),
    "macs": _kind("mac_algs", "MAC", _MAC, allow_empty=True),
    "kexalgorithms": _kind("kex_algs", "key exchange", _KEX),
    "hostkeyalgorithms": _kind("server_host_key_algs", "host key", _HOST_KEY),
}

_ALG_NAME = re.compile(r"[A-Za-z0-9@._*?-]+")


def _wildcard(pattern: str) -> Callable[[str], bool]:
    """asyncssh's WildcardPattern: '*' and '?' only, square brackets literal."""
    escaped = "".join("[[]" if c == "[" else "[]]" if c == "]" else c for c in pattern)
    return lambda name: fnmatch.fnmatchcase(name, escaped)


def check_algorithms(option: str, value: str, kind: AlgorithmKind) -> str:
    """An OpenSSH algorithm list, checked as asyncssh expands it (``_expand_algs``): each
    name or pattern must match a known algorithm and the resulting list must not be
    empty. Returned as written, so asyncssh applies the +, - or ^ itself."""
    text = value.strip()
    prefix = text[:1] if text[:1] in ("+", "-", "^") else ""
    body = text[len(prefix):]
    if not body:
        raise SshOptionError(option, "expected a comma-separated list of algorithm names")
    matched: list[str] = []
    for pattern in body.split(","):
        if not pattern:
            raise SshOptionError(option, f"{value!r} has an empty name (two commas in a row, "
                                 "or one at an end)")
        if not _ALG_NAME.fullmatch(pattern):
            raise SshOptionError(option, f"{pattern!r} is not an algorithm name (names are "
                                 "separated by commas, without spaces)")
        matches = [n for n in kind.names if _wildcard(pattern)(n)]
        if not matches:
            hint = difflib.get_close_matches(pattern, kind.names, n=1)
            close = f" (did you mean {hint[0]!r}?)" if hint else ""
            article = "an" if kind.what[0] in "aeiou" else "a"
            raise SshOptionError(option, f"{pattern!r} is not {article} {kind.what} algorithm that "
                                 f"asyncssh supports{close}")
        matched += matches
    if prefix == "-" and not kind.allow_empty and not [d for d in kind.defaults
                                                       if d not in matched]:
        raise SshOptionError(option, f"{value!r} removes every default {kind.what} algorithm, "
                             "leaving none to offer")
    return text


# --------------------------------------------------------------------------- value readers


def _text(option: str, value: object, expected: str) -> str:
    """A one-line string value (ints are taken as their digits, as OpenSSH reads them)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise SshOptionError(option, f"expected {expected}, got {_shown(value)}")
    text = str(value).strip()
    if not text or any(ord(c) < 32 for c in text):
        raise SshOptionError(option, f"expected {expected}, got {_shown(value)}")
    return text


def _shown(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"{value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


_TIME_PART = re.compile(r"(\d+)([sSmMhHdDwW]?)")
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIME_HELP = "a time in seconds, or with units such as 30s, 5m, 1h30m (s, m, h, d, w)"


def parse_time(option: str, value: object) -> float:
    """OpenSSH's time format (convtime): ``N`` seconds or a sum of ``N[smhdw]`` parts;
    ``none`` is 0 (no limit), as ``ssh -G`` shows for ConnectTimeout and ServerAliveInterval."""
    if isinstance(value, float) and not isinstance(value, bool):
        raise SshOptionError(option, f"{value} is not whole seconds; expected {_TIME_HELP}")
    text = _text(option, value, _TIME_HELP)
    if text.lower() == "none":
        return 0.0
    total, at = 0, 0
    while at < len(text):
        part = _TIME_PART.match(text, at)
        if part is None:
            raise SshOptionError(option, f"{value!r} is not {_TIME_HELP}")
        total += int(part.group(1)) * _TIME_UNITS[part.group(2).lower()]
        at = part.end()
    if total > _MAX_SECONDS:
        raise SshOptionError(option, f"{value!r} is too long (at most {_MAX_SECONDS} seconds)")
    return float(total)


def parse_flag(option: str, value: object) -> bool:
    """yes/no (true/false), as OpenSSH takes them; YAML's booleans too."""
    if isinstance(value, bool):
        return value
    text = _text(option, value, "yes or no").lower()
    if text in ("yes", "true"):
        return True
    if text in ("no", "false"):
        return False
    raise SshOptionError(option, f"expected yes or no, got {_shown(value)}")


def _count(option: str, value: object) -> int:
    text = _text(option, value, "a whole number of at least 1")
    if not text.isdigit() or int(text) < 1:
        raise SshOptionError(option, f"expected a whole number of at least 1, got {_shown(value)}")
    return int(text)


def _local_path(option: str, value: object, what: str) -> str:
    """A path on this machine: absolute or ``~/...`` (OpenSSH's own rule for these options)."""
    text = _text(option, value, what)
    if text.startswith("$") or "%" in text:
        raise SshOptionError(option, f"{text!r}: environment variables and % tokens are not "
                             "expanded here; write the path itself")
    if any(c.isspace() for c in text):
        raise SshOptionError(option, f"{text!r} contains whitespace; expected one path")
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        raise SshOptionError(option, f"{text!r} must be an absolute path or start with ~/")
    return path


#: OpenSSH's scan_scaled(): a number, a fraction only before a unit (1.5G).
_BYTES = re.compile(r"(\d+)(?:\.(\d+)(?=[kKmMgGtT]))?([kKmMgGtT]?)")
_BYTE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def _rekey_limit(option: str, value: object) -> dict[str, object]:
    """``RekeyLimit BYTES [TIME]``: data after which to rekey (``default`` keeps asyncssh's),
    then optionally a time (``none``: no time limit)."""
    help_ = "a size such as 1G (or default), optionally followed by a time such as 1h (or none)"
    parts = _text(option, value, help_).split()
    if len(parts) > 2:
        raise SshOptionError(option, f"expected {help_}, got {_shown(value)}")
    out: dict[str, object] = {}
    if parts[0].lower() != "default":
        size = _BYTES.fullmatch(parts[0])
        if size is None:
            raise SshOptionError(option, f"{parts[0]!r} is not a size; expected {help_}")
        unit = _BYTE_UNITS[size.group(3).lower()]
        count = int(size.group(1)) * unit + int(int(size.group(2) or 0) * unit
                                                // 10 ** len(size.group(2) or ""))
        if count < 16:
            raise SshOptionError(option, f"{parts[0]!r} is too small (at least 16 bytes)")
        out["rekey_bytes"] = count
    if len(parts) == 2:
        if parts[1].lower() == "none":
            out["rekey_seconds"] = None
        else:
            seconds = parse_time(option, parts[1])
            out["rekey_seconds"] = seconds or None
    return out


_HOP = re.compile(r"(?:ssh://)?(?:(?P<user>[^@:/,\s]+)@)?(?P<host>[A-Za-z0-9_.-]+)"
                  r"(?::(?P<port>[^@/,\s]*))?/?")


def _proxy_jump(option: str, value: object) -> dict[str, object]:
    """``[user@]host[:port]`` hops, comma-separated (or ssh:// URIs); ``none`` for none.
    Handed to asyncssh as its ``tunnel`` string, which it splits the same way."""
    text = _text(option, value, "[user@]host[:port] (several separated by commas) or none")
    if text.lower() == "none":
        return {}
    hops = []
    for hop in text.split(","):
        m = _HOP.fullmatch(hop)
        if m is None or m.group("host").startswith("-"):
            raise SshOptionError(option, f"{hop!r} is not a jump host written [user@]host[:port] "
                                 "(IPv6 addresses are not supported here)")
        port = m.group("port")
        if port is not None and (not port.isdigit() or not 1 <= int(port) <= 65535):
            raise SshOptionError(option, f"{hop!r}: port {port!r} is not a number from 1 to 65535")
        user = f"{m.group('user')}@" if m.group("user") else ""
        hops.append(f"{user}{m.group('host')}" + (f":{int(port)}" if port else ""))
    return {"tunnel": ",".join(hops)}


def _identity_agent(option: str, value: object) -> dict[str, object]:
    """A socket path; ``none``: use no agent; ``SSH_AUTH_SOCK``: the usual one (the default)."""
    text = _text(option, value, "a socket path, none or SSH_AUTH_SOCK")
    if text.lower() == "none":
        return {"agent_path": None}
    if text == "SSH_AUTH_SOCK":
        return {}
    return {"agent_path": _local_path(option, text, "a socket path, none or SSH_AUTH_SOCK")}


def _forward_agent(option: str, value: object) -> dict[str, object]:
    """yes/no, or the path of an agent socket to forward instead of the usual one."""
    if isinstance(value, bool) or (isinstance(value, str)
                                  and value.strip().lower() in ("yes", "no", "true", "false")):
        return {"agent_forwarding": parse_flag(option, value)}
    return {"agent_forwarding": _local_path(option, value, "yes, no or an agent socket path")}


def _compression(option: str, value: object) -> dict[str, object]:
    """yes: zlib, falling back to none for servers without it (asyncssh's own reading of
    OpenSSH's option); no: none at all."""
    if parse_flag(option, value):
        return {"compression_algs": "zlib@openssh.com,zlib,none"}
    return {"compression_algs": "none"}


def _known_hosts(option: str, value: object) -> dict[str, object]:
    """One known_hosts file on this machine (asyncssh reads one; ``none`` would not check)."""
    text = _text(option, value, "the path of a known_hosts file")
    if text.lower() == "none":
        raise SshOptionError(option, "host keys are always verified; 'none' is not accepted "
                             "(use the known_hosts setting for the file to check against)")
    return {"known_hosts": _local_path(option, text, "the path of a known_hosts file")}


def _host_key_alias(option: str, value: object) -> dict[str, object]:
    text = _text(option, value, "a host name")
    if any(c.isspace() for c in text) or text.startswith("-"):
        raise SshOptionError(option, f"{text!r} is not a host name")
    return {"host_key_alias": text}


def _algorithms(key: str) -> Callable[[str, object], dict[str, object]]:
    kind = ALGORITHM_OPTIONS[key]

    def convert(option: str, value: object) -> dict[str, object]:
        text = _text(option, value, f"a comma-separated list of {kind.what} algorithms")
        return {kind.keyword: check_algorithms(option, text, kind)}
    return convert


#: Every option zrelay passes on (lower-case name → OpenSSH's spelling, converter).
SUPPORTED: dict[str, tuple[str, Callable[[str, object], dict[str, object]]]] = {
    "connecttimeout": ("ConnectTimeout",
                       lambda o, v: {"connect_timeout": parse_time(o, v) or None}),
    "serveraliveinterval": ("ServerAliveInterval",
                            lambda o, v: {"keepalive_interval": parse_time(o, v)}),
    "serveralivecountmax": ("ServerAliveCountMax",
                            lambda o, v: {"keepalive_count_max": _count(o, v)}),
    "ciphers": ("Ciphers", _algorithms("ciphers")),
    "macs": ("MACs", _algorithms("macs")),
    "kexalgorithms": ("KexAlgorithms", _algorithms("kexalgorithms")),
    "hostkeyalgorithms": ("HostKeyAlgorithms", _algorithms("hostkeyalgorithms")),
    "compression": ("Compression", _compression),
    "tcpkeepalive": ("TCPKeepAlive", lambda o, v: {"tcp_keepalive": parse_flag(o, v)}),
    "forwardagent": ("ForwardAgent", _forward_agent),
    "identityagent": ("IdentityAgent", _identity_agent),
    "proxyjump": ("ProxyJump", _proxy_jump),
    "hostkeyalias": ("HostKeyAlias", _host_key_alias),
    "userknownhostsfile": ("UserKnownHostsFile", _known_hosts),
    "rekeylimit": ("RekeyLimit", _rekey_limit),
}

#: Options people reach for that zrelay sets another way, and what to write instead.
_INSTEAD: dict[str, str] = {
    "port": "set the host's 'port'",
    "user": "set the host's 'user'",
    "hostname": "set the host's 'address'",
    "identityfile": "set the host's 'identity_file'",
    "stricthostkeychecking": "host keys are always verified against known_hosts; set "
                             "'known_hosts' for the file to use",
    "batchmode": "zrelay never prompts",
    "proxycommand": "use ProxyJump",
}

_OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def convert_ssh_option(name: object, value: object) -> dict[str, object]:
    """One ``Name: value`` (OpenSSH's name, any case) → the asyncssh.connect() keywords it sets.

    Raises SshOptionError naming the option for an unknown name or a value asyncssh
    could not take.
    """
    if not isinstance(name, str) or not _OPTION_NAME.fullmatch(name):
        raise SshOptionError(str(name), "not an ssh option name (letters and digits, such as "
                             "ConnectTimeout)", in_name=True)
    entry = SUPPORTED.get(name.lower())
    if entry is None:
        instead = _INSTEAD.get(name.lower())
        if instead:
            raise SshOptionError(name, f"not supported here: {instead}", in_name=True)
        hint = difflib.get_close_matches(name.lower(), SUPPORTED, n=1)
        close = f" (did you mean {SUPPORTED[hint[0]][0]!r}?)" if hint else ""
        names = ", ".join(spelling for spelling, _ in SUPPORTED.values())
        raise SshOptionError(name, f"not a supported ssh option{close}; supported: {names}",
                             in_name=True)
    return entry[1](name, value)


def ssh_connect_kwargs(options: Mapping[str, object]) -> dict[str, object]:
    """Every option of a host's ``ssh_options`` as asyncssh.connect() keywords (no I/O).

    The loader calls this for each option it reads, and the transport for the host
    it connects to: one rule for both.
    """
    out: dict[str, object] = {}
    seen: dict[str, str] = {}
    for name, value in options.items():
        key = name.lower() if isinstance(name, str) else name
        if key in seen:
            raise SshOptionError(str(name), f"given twice (also as {seen[key]!r}); OpenSSH "
                                 "option names ignore case", in_name=True)
        seen[key] = str(name)
        out.update(convert_ssh_option(name, value))
    return out

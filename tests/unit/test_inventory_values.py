"""Values the loader must refuse because a run would: ssh_options asyncssh cannot take, direct-mode
key paths the source's ssh would be refused, S3 endpoints botocore would not use.

Each refusal is one line at file:line:column (exit 2 from the CLI), and comes from the same function
the run itself uses (inventory.ssh_options for the transport, names.check_remote_path for direct
mode, inventory.endpoints for zrelay.s3.store). Good values convert to the asyncssh keywords that
asyncssh's own option parser takes; the algorithm names the loader knows are compared with asyncssh's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from zrelay.errors import S3UsageError, UsageError
from zrelay.inventory import load_inventory, validate_inventory
from zrelay.inventory.endpoints import s3_endpoint_problem
from zrelay.inventory.model import Host, S3Target
from zrelay.inventory.ssh_options import (ALGORITHM_OPTIONS, OPTIONAL_ALGORITHMS, SshOptionError,
                                          parse_time, ssh_connect_kwargs)
from zrelay.s3.store import make_client
from zrelay.transport.ssh import connect_options

REPO = Path(__file__).resolve().parents[2]

with warnings.catch_warnings():  # asyncssh's DSA import warnings are not this file's business
    warnings.simplefilter("ignore")
    import asyncssh

#: A host whose vars start on line 5, column 7; each case adds its lines there.
HOST = """\
all:
  hosts:
    nas1:
      address: 192.0.2.1
{lines}
"""
#: An S3 target whose keys start on line 7, column 7.
S3 = """\
all:
  hosts: {{nas1: {{address: 192.0.2.1}}}}
zrelay:
  s3_targets:
    offsite:
      bucket: zrelay-lab
{lines}
"""

TIME = "a time in seconds, or with units such as 30s, 5m, 1h30m (s, m, h, d, w)"

# (id, template, lines added, line, column, the whole message)
BAD: list[tuple[str, str, str, int, int, str]] = [
    ("connect-timeout-words", HOST, "      ssh_options:\n        ConnectTimeout: 5 sec", 6, 25,
     f"ssh_options.ConnectTimeout: '5 sec' is not {TIME}"),
    ("connect-timeout-fraction", HOST, "      ssh_options: {ServerAliveCountMax: 2, ConnectTimeout: 1.5}",
     5, 61, f"ssh_options.ConnectTimeout: 1.5 is not whole seconds; expected {TIME}"),
    ("alive-interval-negative", HOST, "      ssh_options:\n        ServerAliveInterval: -1", 6, 30,
     f"ssh_options.ServerAliveInterval: -1 is not {TIME}"),
    ("alive-count-zero", HOST, "      ssh_options:\n        ServerAliveCountMax: 0", 6, 30,
     "ssh_options.ServerAliveCountMax: expected a whole number of at least 1, got the number 0"),
    ("compression-word", HOST, "      ssh_options:\n        Compression: zlib", 6, 22,
     "ssh_options.Compression: expected yes or no, got 'zlib'"),
    ("cipher-unknown", HOST, "      ssh_options:\n        Ciphers: aes128-gcm", 6, 18,
     "ssh_options.Ciphers: 'aes128-gcm' is not an encryption algorithm that asyncssh supports "
     "(did you mean 'aes128-ctr'?)"),
    ("cipher-spaces", HOST, "      ssh_options:\n        Ciphers: 'aes128-ctr, aes256-ctr'", 6, 18,
     "ssh_options.Ciphers: ' aes256-ctr' is not an algorithm name (names are separated by "
     "commas, without spaces)"),
    ("mac-appended-unknown", HOST, "      ssh_options:\n        MACs: +hmac-sha3-256", 6, 15,
     "ssh_options.MACs: 'hmac-sha3-256' is not a MAC algorithm that asyncssh supports "
     "(did you mean 'hmac-sha2-256'?)"),
    ("kex-removes-all", HOST, "      ssh_options:\n        KexAlgorithms: '-*'", 6, 24,
     "ssh_options.KexAlgorithms: '-*' removes every default key exchange algorithm, leaving "
     "none to offer"),
    ("host-key-unknown", HOST, "      ssh_options:\n        HostKeyAlgorithms: ^ssh-ed25519,ssh-foo",
     6, 28, "ssh_options.HostKeyAlgorithms: 'ssh-foo' is not a host key algorithm that asyncssh "
     "supports"),
    ("unsupported-option", HOST, "      ssh_options:\n        StrictHostKeyChecking: no", 6, 9,
     "ssh_options.StrictHostKeyChecking: not supported here: host keys are always verified "
     "against known_hosts; set 'known_hosts' for the file to use"),
    ("port-option", HOST, "      ssh_options: {Port: 2222}", 5, 21,
     "ssh_options.Port: not supported here: set the host's 'port'"),
    ("misspelt-option", HOST, "      ssh_options:\n        ConectTimeout: 5", 6, 9,
     "ssh_options.ConectTimeout: not a supported ssh option (did you mean 'ConnectTimeout'?); "
     "supported: ConnectTimeout, ServerAliveInterval, ServerAliveCountMax, Ciphers, MACs, "
     "KexAlgorithms, HostKeyAlgorithms, Compression, TCPKeepAlive, ForwardAgent, IdentityAgent, "
     "ProxyJump, HostKeyAlias, UserKnownHostsFile, RekeyLimit"),
    ("option-twice", HOST, "      ssh_options:\n        ConnectTimeout: 5\n        connecttimeout: 6",
     7, 9, "ssh_options.connecttimeout: given twice (also as 'ConnectTimeout'); OpenSSH option "
     "names ignore case"),
    ("proxy-jump-port", HOST, "      ssh_options:\n        ProxyJump: jump.example.net:ssh", 6, 20,
     "ssh_options.ProxyJump: 'jump.example.net:ssh': port 'ssh' is not a number from 1 to 65535"),
    ("rekey-limit-words", HOST, "      ssh_options:\n        RekeyLimit: 1G 1 hour", 6, 21,
     "ssh_options.RekeyLimit: expected a size such as 1G (or default), optionally followed by a "
     "time such as 1h (or none), got '1G 1 hour'"),
    ("known-hosts-none", HOST, "      ssh_options:\n        UserKnownHostsFile: none", 6, 29,
     "ssh_options.UserKnownHostsFile: host keys are always verified; 'none' is not accepted (use "
     "the known_hosts setting for the file to check against)"),
    ("direct-identity-tilde", HOST, "      direct_identity_file: ~/.ssh/id_replication", 5, 29,
     "direct_identity_file: path '~/.ssh/id_replication' must be absolute and use only letters, "
     "digits and _.@+/- ('~' is not expanded on the host)"),
    ("direct-identity-relative", HOST, "      direct_identity_file: keys/id_replication", 5, 29,
     "direct_identity_file: path 'keys/id_replication' must be absolute and use only letters, "
     "digits and _.@+/-"),
    ("direct-known-hosts-space", HOST, "      direct_known_hosts: '/root/my keys/known_hosts'", 5, 27,
     "direct_known_hosts: path '/root/my keys/known_hosts' must be absolute and use only letters, "
     "digits and _.@+/-"),
    ("direct-address-wildcard", HOST, "      direct_address: 'nas1*'", 5, 23,
     "direct_address: address 'nas1*' is not valid for ssh (letters, digits and _.:%-)"),
    ("s3-endpoint-port", S3, "      endpoint: http://127.0.0.1:83x3", 7, 17,
     "endpoint: 'http://127.0.0.1:83x3': port '83x3' is not a number from 0 to 65535"),
    ("s3-endpoint-port-range", S3, "      endpoint: http://127.0.0.1:99999", 7, 17,
     "endpoint: 'http://127.0.0.1:99999': port '99999' is not a number from 0 to 65535"),
    ("s3-endpoint-host", S3, "      endpoint: http://s3_store:8333", 7, 17,
     "endpoint: 'http://s3_store:8333': 's3_store' is not a host name (letters, digits and '-' in "
     "dot-separated labels) or an IP address"),
    ("s3-endpoint-query", S3, "      endpoint: https://s3.example.net/?x=1", 7, 17,
     "endpoint: 'https://s3.example.net/?x=1' has a query ('?...'); an endpoint is "
     "scheme://host[:port][/path]"),
    ("s3-endpoint-credentials", S3, "      endpoint: https://key:secret@s3.example.net", 7, 17,
     "endpoint: the URL has a user name or password in it; credentials come from the "
     "environment, ~/.aws or the target's 'profile', never from the URL"),
    ("s3-region-digits", S3, "      region: '123'", 7, 15,
     "region: '123' is not a region name such as 'us-east-1' (letters, digits and '-', not all "
     "digits, at most 63)"),
]


def _write(tmp_path: Path, template: str, lines: str) -> Path:
    path = tmp_path / "inv.yml"
    path.write_text(template.format(lines=lines))
    return path


@pytest.mark.parametrize("template,lines,line,column,message", [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_value_is_one_located_line(tmp_path: Path, template: str, lines: str, line: int,
                                       column: int, message: str) -> None:
    path = _write(tmp_path, template, lines)
    assert [e.render() for e in validate_inventory(path)] == [f"{path}:{line}:{column}: {message}"]


def test_the_cli_refuses_every_bad_value_with_exit_2(tmp_path: Path) -> None:
    """Several bad values in one file: each on its own line, in file order, then exit 2."""
    path = tmp_path / "inv.yml"
    path.write_text(textwrap.dedent("""\
        all:
          hosts:
            nas1:
              address: 192.0.2.1
              ssh_options: {ConnectTimeout: 5 sec, Compression: 'no'}
              direct_identity_file: ~/.ssh/id_replication
        zrelay:
          s3_targets:
            offsite: {bucket: zrelay-lab, endpoint: 'http://127.0.0.1:83x3'}
        """))
    proc = subprocess.run([sys.executable, "-m", "zrelay", "-i", str(path), "inventory", "validate"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith(str(path))]
    assert lines == [
        f"{path}:5:37: ssh_options.ConnectTimeout: '5 sec' is not {TIME}",
        f"{path}:6:29: direct_identity_file: path '~/.ssh/id_replication' must be absolute and use "
        "only letters, digits and _.@+/- ('~' is not expanded on the host)",
        f"{path}:9:45: endpoint: 'http://127.0.0.1:83x3': port '83x3' is not a number from 0 to 65535",
    ]


def test_shipped_example_validates() -> None:
    assert validate_inventory(REPO / "inventory" / "example.yml") == []


# --------------------------------------------------------------------------- one rule, one place

_SSH_BAD = [c for c in BAD if "ssh_options" in c[2]]


@pytest.mark.parametrize("lines,message", [(c[2], c[5]) for c in _SSH_BAD], ids=[c[0] for c in _SSH_BAD])
def test_the_transport_refuses_what_the_loader_refuses(tmp_path: Path, lines: str, message: str) -> None:
    """connect_options() converts with the loader's own function: the same message, naming the host."""
    import yaml
    options = yaml.safe_load(textwrap.dedent(lines))["ssh_options"]
    if "given twice" in message:  # two spellings of one name: a mapping keeps both
        options = {"ConnectTimeout": 5, "connecttimeout": 6}
    with pytest.raises(UsageError) as info:
        connect_options(Host(name="nas1", address="192.0.2.1", ssh_options=options))
    assert str(info.value) == f"host nas1: {message}"


def test_s3_store_refuses_what_the_loader_refuses() -> None:
    """A target made in code (not read by the loader) meets the same check before botocore."""
    target = S3Target("offsite", "zrelay-lab", endpoint="http://127.0.0.1:83x3", region="us-east-1")
    with pytest.raises(S3UsageError) as info:
        make_client(target)
    assert str(info.value) == ("s3:offsite: 'http://127.0.0.1:83x3': port '83x3' is not a number "
                               "from 0 to 65535")
    with pytest.raises(S3UsageError, match="'123' is not a region name"):
        make_client(S3Target("offsite", "zrelay-lab", region="123"))


# --------------------------------------------------------------------------- good values

GOOD: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"ConnectTimeout": "5s"}, {"connect_timeout": 5.0}),
    ({"ConnectTimeout": 5}, {"connect_timeout": 5.0}),
    ({"connecttimeout": "1m30s"}, {"connect_timeout": 90.0}),
    ({"ConnectTimeout": "none"}, {"connect_timeout": None}),       # no limit, as ssh -G shows
    ({"ServerAliveInterval": "1h5"}, {"keepalive_interval": 3605.0}),
    ({"ServerAliveInterval": 0}, {"keepalive_interval": 0.0}),     # 0: no keepalives
    ({"ServerAliveCountMax": "3"}, {"keepalive_count_max": 3}),
    ({"Compression": "no"}, {"compression_algs": "none"}),
    ({"Compression": False}, {"compression_algs": "none"}),
    ({"Compression": True}, {"compression_algs": "zlib@openssh.com,zlib,none"}),
    ({"Ciphers": "aes128-gcm@openssh.com,aes256-ctr"},
     {"encryption_algs": "aes128-gcm@openssh.com,aes256-ctr"}),
    ({"Ciphers": "+aes128-cbc"}, {"encryption_algs": "+aes128-cbc"}),   # asyncssh applies the +
    ({"MACs": "^hmac-sha2-256-etm@openssh.com"}, {"mac_algs": "^hmac-sha2-256-etm@openssh.com"}),
    ({"KexAlgorithms": "-diffie-hellman-group14-sha1,ecdh-*"},
     {"kex_algs": "-diffie-hellman-group14-sha1,ecdh-*"}),
    ({"HostKeyAlgorithms": "ssh-ed25519,rsa-sha2-512"},
     {"server_host_key_algs": "ssh-ed25519,rsa-sha2-512"}),
    ({"TCPKeepAlive": "yes"}, {"tcp_keepalive": True}),
    ({"ForwardAgent": False}, {"agent_forwarding": False}),
    ({"IdentityAgent": "none"}, {"agent_path": None}),
    ({"IdentityAgent": "SSH_AUTH_SOCK"}, {}),
    ({"IdentityAgent": "/run/agent.sock"}, {"agent_path": "/run/agent.sock"}),
    ({"ProxyJump": "ssh://admin@jump.example.net:2222,bastion"},
     {"tunnel": "admin@jump.example.net:2222,bastion"}),
    ({"ProxyJump": "none"}, {}),
    ({"HostKeyAlias": "nas1.example.net"}, {"host_key_alias": "nas1.example.net"}),
    ({"UserKnownHostsFile": "/etc/zrelay/known_hosts"}, {"known_hosts": "/etc/zrelay/known_hosts"}),
    ({"RekeyLimit": "1.5G 1h"}, {"rekey_bytes": 1610612736, "rekey_seconds": 3600.0}),
    ({"RekeyLimit": "default none"}, {"rekey_seconds": None}),
]


@pytest.mark.parametrize("options,expected", GOOD, ids=[next(iter(o)) + "=" + str(next(iter(o.values())))
                                                         for o, _ in GOOD])
def test_good_values_convert_to_asyncssh_keywords(options: dict[str, Any], expected: dict[str, Any]) -> None:
    assert ssh_connect_kwargs(options) == expected
    opts = connect_options(Host(name="h", address="192.0.2.1", ssh_options=options))
    assert {k: opts[k] for k in expected} == expected
    # asyncssh's own option parser takes them (no connection: it only checks and stores)
    kwargs = {k: v for k, v in expected.items() if k != "tunnel"}
    kwargs.setdefault("known_hosts", None)
    asyncssh.SSHClientConnectionOptions(host="h", config=[], **kwargs)


def test_connect_timeout_5s_and_compression_no_reach_asyncssh() -> None:
    """The two values that broke every connection: a traceback, and "no is not a valid compression
    algorithm". Now asyncssh gets seconds and a list it knows."""
    opts = connect_options(Host(name="h", address="192.0.2.1",
                                ssh_options={"ConnectTimeout": "5s", "Compression": "no"}))
    assert (opts["connect_timeout"], opts["compression_algs"]) == (5.0, "none")
    options = asyncssh.SSHClientConnectionOptions(**{k: v for k, v in opts.items() if k != "known_hosts"},
                                                  known_hosts=None, config=[])
    assert options.connect_timeout == 5.0
    assert list(options.compression_algs) == [b"none"]


def test_default_cipher_preference_stays_without_a_ciphers_option() -> None:
    opts = connect_options(Host(name="h", address="192.0.2.1", ssh_options={"Compression": "yes"}))
    assert opts["encryption_algs"] == "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"


def test_loaded_options_are_kept_as_written_and_converted_at_connect(tmp_path: Path) -> None:
    path = _write(tmp_path, HOST, "      ssh_options: {ConnectTimeout: 5s, Compression: no, "
                                  "Ciphers: '^aes256-gcm@openssh.com'}")
    host = load_inventory(path).hosts["nas1"]
    assert dict(host.ssh_options) == {"ConnectTimeout": "5s", "Compression": "no",
                                      "Ciphers": "^aes256-gcm@openssh.com"}
    opts = connect_options(host)
    assert (opts["connect_timeout"], opts["compression_algs"], opts["encryption_algs"]) == (
        5.0, "none", "^aes256-gcm@openssh.com")


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs OpenSSH's ssh (for ssh -G)")
@pytest.mark.parametrize("text", ["5", "5s", "90S", "1m30s", "1h5", "2d", "1w", "0", "none", "5 s", "1.5",
                                  "-1", "5x", "s", ""])
def test_times_read_as_openssh_reads_them(text: str) -> None:
    """``ssh -G`` prints the configuration it would use and connects nowhere."""
    proc = subprocess.run(["ssh", "-G", "-F", "/dev/null", "-o", f"ConnectTimeout={text}", "nohost.invalid"],
                          capture_output=True, text=True, timeout=30)
    theirs = next((ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("connecttimeout ")),
                  None) if proc.returncode == 0 else None
    try:
        ours: float | None = parse_time("ConnectTimeout", text)
    except SshOptionError:
        ours = None
    if theirs is None:
        assert ours is None, f"ssh refuses {text!r}, zrelay reads {ours}"
    else:
        assert ours == (0.0 if theirs == "none" else float(theirs)), f"ssh reads {text!r} as {theirs}"


# --------------------------------------------------------------------------- algorithm names


def _asyncssh_names() -> dict[str, tuple[set[str], set[str]]]:
    """For each list option: every name asyncssh supports here, and its default ones."""
    from asyncssh import encryption, kex, mac, public_key

    def names(algs: list[bytes]) -> set[str]:
        return {a.decode() for a in algs}

    host_keys = (public_key.get_x509_certificate_algs() + public_key.get_certificate_algs()
                 + public_key.get_public_key_algs())
    host_key_defaults = (public_key.get_default_x509_certificate_algs()
                         + public_key.get_default_certificate_algs()
                         + public_key.get_default_public_key_algs())
    return {
        "ciphers": (names(encryption.get_encryption_algs()), names(encryption.get_default_encryption_algs())),
        "macs": (names(mac.get_mac_algs()), names(mac.get_default_mac_algs())),
        "kexalgorithms": (names(kex.get_kex_algs()), names(kex.get_default_kex_algs())),
        "hostkeyalgorithms": (names(host_keys), names(host_key_defaults)),
    }


@pytest.mark.parametrize("option", sorted(ALGORITHM_OPTIONS))
def test_algorithm_names_match_asyncssh(option: str) -> None:
    """Every name asyncssh offers is accepted; a known name asyncssh lacks here needs an optional
    library (OPTIONAL_ALGORITHMS); defaults agree wherever asyncssh has the name."""
    kind = ALGORITHM_OPTIONS[option]
    theirs, their_defaults = _asyncssh_names()[option]
    ours = set(kind.names)
    assert theirs - ours == set(), "asyncssh supports names zrelay would refuse"
    assert ours - theirs <= set(OPTIONAL_ALGORITHMS), "names zrelay accepts that asyncssh does not know"
    assert {n for n in theirs if n in kind.defaults} == their_defaults


def test_an_accepted_list_is_one_asyncssh_accepts() -> None:
    """Every list check_algorithms passes, asyncssh's own option parser passes too."""
    theirs = _asyncssh_names()
    for option, kind in ALGORITHM_OPTIONS.items():
        available = sorted(theirs[option][0])
        for value in (available[0], "+" + available[-1], "^" + ",".join(available[:3]), "-" + available[0]):
            kwargs = ssh_connect_kwargs({option: value})
            asyncssh.SSHClientConnectionOptions(host="h", known_hosts=None, config=[], **kwargs)


# --------------------------------------------------------------------------- S3 endpoints, as botocore


class _Sent(Exception):
    """Raised instead of sending: botocore got as far as a request, so it took the endpoint."""


def _botocore_takes(session: Any, url: str) -> bool:
    import botocore.config
    import botocore.exceptions
    try:
        client = session.create_client("s3", endpoint_url=url, region_name="us-east-1",
                                       aws_access_key_id="k", aws_secret_access_key="s",
                                       config=botocore.config.Config(s3={"addressing_style": "path"}))
    except ValueError:  # "Invalid endpoint: ..." (and urllib's own refusals)
        return False

    def stop(request: Any, **_: Any) -> None:
        raise _Sent(request.url)

    client.meta.events.register("before-send.s3", stop)
    try:
        client.list_objects_v2(Bucket="zrelay-lab")
    except _Sent:
        return True
    except botocore.exceptions.EndpointResolutionError:
        return False
    raise AssertionError("unreachable: every request is stopped before it is sent")


#: Taken by botocore, refused by zrelay on purpose.
STRICTER = {
    "http://key:secret@127.0.0.1:8333": "credentials would show in every message naming the endpoint",
    "http://127.0.0.1:8333#x": "a fragment means nothing to S3",
    "http://127.0.0.1:8333/a b": "whitespace",
}


def test_endpoint_checks_agree_with_botocore() -> None:
    import botocore.session
    session = botocore.session.Session()
    urls = ["http://127.0.0.1:8333", "https://s3.example.net", "http://localhost:9000/",
            "https://s3.example.net/prefix", "http://[::1]:8333", "http://host.:80", "HTTPS://S3.Example.NET",
            "http://host:", "http://host/?", "http://127.0.0.1:83x3", "http://127.0.0.1:99999", "ftp://x",
            "http://", "http://:8333", "http://s3_store:80", "http://-host", "http://a..b", "http://host?x=1",
            "http://host/a?b", "http://[zz::1]:80", "http://ho%41st", *STRICTER]
    for url in urls:
        ours = s3_endpoint_problem(url) is None
        if url in STRICTER:
            assert not ours and _botocore_takes(session, url), url
        else:
            assert ours == _botocore_takes(session, url), f"{url}: zrelay says {s3_endpoint_problem(url)}"

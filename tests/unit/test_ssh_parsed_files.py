"""Key files are parsed once per connection burst, and again when they change: a long-lived process
(the daemon) sees a known_hosts edit, and a file that cannot be parsed is left to asyncssh."""

from __future__ import annotations

import os
from pathlib import Path

from zrelay.transport import ssh

asyncssh = ssh.asyncssh   # imported the quiet way (zrelay.transport.sshlib)

KEY = asyncssh.generate_private_key("ssh-ed25519")
OTHER = asyncssh.generate_private_key("ssh-ed25519")


def line(addr: str, key: asyncssh.SSHKey) -> str:
    return f"{addr} {key.export_public_key().decode().strip()}\n"


def test_known_hosts_is_read_once_and_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(line("127.0.0.2", KEY))
    first = ssh.with_parsed_files({"known_hosts": str(path)})["known_hosts"]
    assert isinstance(first, asyncssh.SSHKnownHosts)
    assert ssh.with_parsed_files({"known_hosts": str(path)})["known_hosts"] is first
    path.write_text(line("127.0.0.2", OTHER) + line("127.0.0.3", KEY))
    os.utime(path, ns=(1, 1))   # a different mtime even within the clock's resolution
    second = ssh.with_parsed_files({"known_hosts": str(path)})["known_hosts"]
    assert second is not first
    trusted = second.match("127.0.0.2", "127.0.0.2", 22)[0]   # type: ignore[union-attr]
    assert {k.export_public_key() for k in trusted} == {OTHER.export_public_key()}


def test_unparsable_or_missing_files_are_left_to_asyncssh(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    assert ssh.with_parsed_files({"known_hosts": missing})["known_hosts"] == missing
    key = tmp_path / "id"
    key.write_text("not a key\n")   # asyncssh reads it itself and names the problem
    assert ssh.with_parsed_files({"client_keys": [str(key)]})["client_keys"] == [str(key)]
    plain = tmp_path / "id2"
    plain.write_bytes(KEY.export_private_key())
    loaded = ssh.with_parsed_files({"client_keys": [str(plain)]})["client_keys"]
    assert isinstance(loaded, list) and isinstance(loaded[0], asyncssh.SSHKey)

"""The inventory's per-host switch of the asyncssh fast path: read and checked with the file,
and obeyed where zrelay connects (a real asyncssh server in this process, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import asyncssh
import pytest

from zrelay.errors import InventoryError
from zrelay.inventory import load_inventory, validate_inventory
from zrelay.inventory.model import Host
from zrelay.transport import fastpath
from zrelay.transport.ssh import Connection

from tests.unit.test_fastpath import _echo, _lab_server, _fastpath_from_scratch  # noqa: F401  (fixture)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inv.yml"
    path.write_text(textwrap.dedent(text))
    return path


def test_fastpath_is_a_host_setting_with_the_usual_precedence(tmp_path: Path) -> None:
    inv = load_inventory(_write(tmp_path, """\
        all:
          vars: {fastpath: false}
          hosts:
            nas1: {address: 192.0.2.1}
            nas2: {address: 192.0.2.2, fastpath: true}
          children:
            fast:
              vars: {fastpath: true}
              hosts: {nas3: {address: 192.0.2.3}}
        """))
    assert {name: host.fastpath for name, host in inv.hosts.items()} == {"nas1": False, "nas2": True, "nas3": True}
    assert str(inv.hosts["nas1"].setting_sources["fastpath"]).startswith("group all")


def test_fastpath_defaults_to_on(tmp_path: Path) -> None:
    inv = load_inventory(_write(tmp_path, "all:\n  hosts:\n    nas1: {address: 192.0.2.1}\n"))
    assert inv.hosts["nas1"].fastpath is True


@pytest.mark.parametrize("value, shown", [("'no'", "the string 'no'"), ("0", "the integer 0"),
                                          ("'off'", "the string 'off'")])
def test_a_fastpath_that_is_not_a_boolean_is_refused_where_it_is_written(tmp_path: Path, value: str,
                                                                         shown: str) -> None:
    path = _write(tmp_path, f"all:\n  hosts:\n    nas1:\n      address: 192.0.2.1\n      fastpath: {value}\n")
    errors = validate_inventory(path)
    assert [(e.file, e.line, e.column) for e in errors] == [(str(path), 5, 17)]
    assert errors[0].message == f"fastpath: expected true or false, got {shown}"
    with pytest.raises(InventoryError):
        load_inventory(path)


async def _connect(tmp: Path, fastpath_setting: bool) -> tuple[bool, bool]:
    """Connect as zrelay does to a host with ``fastpath: <fastpath_setting>``; is its connection
    sped up, and is a bulk channel on it?"""
    async with _lab_server(tmp, _echo) as where:
        key = tmp / "id_ed25519"
        where["client_keys"][0].write_private_key(str(key))
        host = Host("h", where["host"], port=where["port"], user="test", identity_file=str(key),
                    known_hosts=where["known_hosts"], max_sessions=1, fastpath=fastpath_setting)
        conn = Connection(host)
        try:
            ssh = await conn.connection()
            async with conn.bulk_session(asyncssh.SSHClientSession, "echo") as (chan, _):
                channel_sped_up = isinstance(chan.write, fastpath._BulkSend)
                chan.write_eof()
            return isinstance(ssh.send_packet, fastpath._FastSend), channel_sped_up
        finally:
            await conn.close()


@pytest.mark.parametrize("setting", [True, False])
def test_a_host_with_fastpath_false_gets_asyncssh_as_it_ships(tmp_path: Path, setting: bool) -> None:
    assert asyncio.run(_connect(tmp_path, setting)) == (setting, setting)


def test_the_environment_wins_over_a_host_that_says_true(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZRELAY_FASTPATH", "off")
    assert asyncio.run(_connect(tmp_path, True)) == (False, False)

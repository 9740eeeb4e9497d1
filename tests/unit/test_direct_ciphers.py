"""Direct mode's cipher order: the ``direct_ciphers`` host setting, the ssh argv it gives, and
which ssh a stream gets once both hosts have said whether their CPUs have AES instructions.

The lab's hosts all run on one machine, so they always answer the AES question alike; the mixed
cases (one end without AES, an end that cannot tell) are played here by stand-in hosts.
tests/integration/test_direct.py checks the real answer and the real stream on each lab tier.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from zrelay.engine.host_receiver import direct_ssh_argvs
from zrelay.errors import InvalidName
from zrelay.inventory import loads_inventory, validate_inventory_text
from zrelay.inventory.model import Host
from zrelay.paths.direct import LoginCheck
from zrelay.transport.host import RemoteHost
from zrelay.zfs import commands, direct_ssh, quoting

AES_FIRST = ",".join(direct_ssh.AES_FIRST_CIPHERS)

INV = """\
all:
  hosts:
    nas1: {direct_ciphers: default}
    nas2: {direct_ciphers: [aes256-gcm@openssh.com, chacha20-poly1305@openssh.com]}
    nas3: {direct_ciphers: ^aes128-gcm@openssh.com}
    vault: {}
"""


def test_inventory_setting_and_its_default() -> None:
    hosts = loads_inventory(INV).hosts
    assert hosts["nas1"].direct_ciphers == "default"
    assert hosts["nas2"].direct_ciphers == "aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
    assert hosts["nas3"].direct_ciphers == "^aes128-gcm@openssh.com"
    assert hosts["vault"].direct_ciphers == "auto"


@pytest.mark.parametrize("value", ["'aes128-gcm@openssh.com;reboot'", "'aes128 gcm'", "''", "7"])
def test_inventory_errors_are_located(value: str) -> None:
    text = INV.replace("{direct_ciphers: default}", f"{{direct_ciphers: {value}}}")
    errors = [e.render() for e in validate_inventory_text(text, "x.yml")]
    assert len(errors) == 1 and errors[0].startswith("x.yml:3:"), errors
    assert "direct_ciphers" in errors[0]


def test_ssh_argv_puts_the_cipher_list_before_the_address() -> None:
    argv = direct_ssh.ssh_argv("10.0.0.2", user="root", ciphers=direct_ssh.AES_FIRST_CIPHERS)
    assert argv[-1] == "10.0.0.2" and argv[argv.index(f"Ciphers={AES_FIRST}") - 1] == "-o"
    assert direct_ssh.ssh_argv("10.0.0.2", ciphers="chacha20-poly1305@openssh.com")[-3:] == [
        "-o", "Ciphers=chacha20-poly1305@openssh.com", "10.0.0.2"]
    assert not any(a.startswith("Ciphers=") for a in direct_ssh.ssh_argv("10.0.0.2"))
    for bad in ("aes128-ctr;reboot", "aes128-ctr,", ["aes128-ctr", "x y"]):
        with pytest.raises(InvalidName):
            direct_ssh.ssh_argv("10.0.0.2", ciphers=bad)


def _remote(name: str, **settings: Any) -> Any:
    return SimpleNamespace(name=name, host=Host(name=name, address=f"{name}.lan", **settings))


def _ciphers(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith("Ciphers=")]


@pytest.mark.parametrize("setting, first, fallback", [
    ("auto", f"Ciphers={AES_FIRST}", []),      # the fallback: ssh's own order
    ("default", None, None),
    ("aes256-ctr", "Ciphers=aes256-ctr", None),
])
def test_direct_ssh_follows_the_source_setting(setting: str, first: str | None,
                                               fallback: list[str] | None) -> None:
    source, dest = _remote("nas1", direct_ciphers=setting), _remote("vault", direct_ciphers="aes256-ctr")
    ssh, other = direct_ssh_argvs(source, dest)   # the target's own setting does not count
    assert _ciphers(ssh) == ([first] if first else []) and ssh[-1] == "vault.lan"
    assert (None if other is None else _ciphers(other)) == fallback
    if other is not None:
        assert other[-1] == "vault.lan"


class _StandIn:
    """What LoginCheck uses of a RemoteHost: its name, its connection's run (the login check
    itself, always passing here) and the answer to the AES question."""

    def __init__(self, name: str, aes: bool | None) -> None:
        self.name, self.aes, self.conn, self.ran = name, aes, self, []

    def cpu_has_aes(self) -> asyncio.Future[bool | None]:
        answer: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        answer.set_result(self.aes)
        return answer

    async def run(self, command: str, **_: object) -> Any:
        self.ran.append(command)
        return SimpleNamespace(exit_status=0, stdout="", stderr="")


@pytest.mark.parametrize("source_aes, target_aes, rides_master", [
    (True, True, True),
    (True, None, True),     # an end that cannot tell (no /proc/cpuinfo) keeps AES-GCM first
    (True, False, False),   # a target without AES: the stream connects with ssh's own order
    (False, True, False),
])
def test_stream_ssh_after_the_aes_answers(source_aes: bool | None, target_aes: bool | None,
                                         rides_master: bool) -> None:
    first = direct_ssh.ssh_argv("vault.lan", ciphers=direct_ssh.AES_FIRST_CIPHERS)
    fallback = direct_ssh.ssh_argv("vault.lan")

    async def stream() -> tuple[list[str], LoginCheck]:
        check = LoginCheck(_StandIn("nas1", source_aes), _StandIn("vault", target_aes),  # type: ignore[arg-type]
                           first, fallback)
        await check.outcome
        return await check.stream_ssh(), check

    ssh, check = asyncio.run(stream())
    if rides_master:
        assert ssh == direct_ssh.via_master(first, check.master)
    else:
        assert ssh == fallback
    # the master itself was always started with the preferred order
    assert f"Ciphers={AES_FIRST}" in check.source.ran[0]  # type: ignore[attr-defined]


def test_without_a_fallback_the_aes_question_is_not_asked() -> None:
    """An explicit direct_ciphers (or default) is used as it is, on the master: no AES question."""
    explicit = direct_ssh.ssh_argv("vault.lan", ciphers="chacha20-poly1305@openssh.com")

    async def stream() -> tuple[list[str], LoginCheck]:
        source, dest = _StandIn("nas1", None), _StandIn("vault", None)
        source.cpu_has_aes = dest.cpu_has_aes = None  # type: ignore[method-assign,assignment]  # a call fails
        check = LoginCheck(source, dest, explicit)  # type: ignore[arg-type]
        await check.outcome
        return await check.stream_ssh(), check

    ssh, check = asyncio.run(stream())
    assert ssh == direct_ssh.via_master(explicit, check.master)


class _Conn:
    """A sudo host's connection answering the capability probe like OpenZFS 2.3.2 and the AES
    question with a given exit status (grep's: 0 found, 1 not found, 2 no /proc/cpuinfo)."""

    def __init__(self, aes_status: int) -> None:
        self.host = Host(name="nas1", address="nas1.lan", sudo=True)
        self.status, self.ran = aes_status, []

    async def run(self, command: str, **_: object) -> Any:
        self.ran.append(command)
        if command.startswith("sudo -n sh -c"):
            return SimpleNamespace(exit_status=0, stdout="zfs-2.3.2-1\nzfs-kmod-2.3.2-1\n", stderr="")
        return SimpleNamespace(exit_status=self.status, stdout="", stderr="")


@pytest.mark.parametrize("status, answer", [(0, True), (1, False), (2, None)])
def test_remote_host_asks_once_and_maps_grep_status(status: int, answer: bool | None) -> None:
    async def ask() -> tuple[bool | None, bool | None, list[str]]:
        host = RemoteHost(_Conn(status))  # type: ignore[arg-type]
        first, again = await host.cpu_has_aes(), await host.cpu_has_aes()
        return first, again, host.conn.ran  # type: ignore[attr-defined]

    first, again, ran = asyncio.run(ask())
    assert first is answer and again is answer
    # the probe through sudo (zfs may need it), the AES question never (sudoers may allow only zfs)
    assert ran == ["sudo -n " + quoting.quote(commands.probe_argv()), "grep -q -w aes /proc/cpuinfo"]

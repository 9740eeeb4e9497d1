"""The source host's own ssh for direct streams: its argv, the control master, the pipeline."""

from __future__ import annotations

import shlex

import pytest

from zrelay.errors import InvalidName
from zrelay.zfs import direct_ssh


def test_login_check_command_logs_in_without_a_remote_command_and_keeps_the_master() -> None:
    ssh = direct_ssh.ssh_argv("10.0.0.9", port=2222, user="backup", identity_file="/k/id", known_hosts="/k/kh")
    text = direct_ssh.login_check_command(ssh, "/tmp/zrelay-login-0123", keep_seconds=60)
    assert shlex.split(text) == [*ssh[:-1], "-o", "ControlMaster=yes", "-o", "ControlPath=/tmp/zrelay-login-0123",
                                 "-o", "ControlPersist=60", "-f", "-N", "10.0.0.9"]
    # the streams ride it, or connect on their own where it has gone; the run ends it
    assert direct_ssh.via_master(ssh, "/tmp/zrelay-login-0123") == [
        *ssh[:-1], "-o", "ControlMaster=no", "-o", "ControlPath=/tmp/zrelay-login-0123", "10.0.0.9"]
    assert (direct_ssh.master_exit_command(ssh, "/tmp/zrelay-login-0123")
            == "ssh -o ControlPath=/tmp/zrelay-login-0123 -O exit 10.0.0.9 >/dev/null 2>&1")
    for bad in (lambda p: direct_ssh.login_check_command(ssh, p, keep_seconds=60),
                lambda p: direct_ssh.via_master(ssh, p),
                lambda p: direct_ssh.master_exit_command(ssh, p)):
        with pytest.raises(InvalidName):
            bad("/tmp/x;reboot")


def test_direct_pipeline_guards_every_stage_but_ssh() -> None:
    """zfs send, pv, zstd and mbuffer report their exit status; ssh's is the session's."""
    ssh = direct_ssh.ssh_argv("10.0.0.9")
    line = direct_ssh.wire_direct_pipeline(["zfs", "send", "p/a@s"], ssh, "zfs receive -u b/a", progress=True,
                                           sudo=True, compress="zstd", buffer="64M")
    assert line.count("zrelay-stage") == 4
    assert line.startswith('{ sudo -n zfs send p/a@s; echo "zrelay-stage 1 exit $?" >&2; } | { pv ')
    assert shlex.split(line.rsplit(" | ", 1)[1]) == [*ssh, "zfs receive -u b/a"]
    assert direct_ssh.direct_pipeline(["zfs", "send", "p/a@s"], ssh, "zfs receive -u b/a", progress=False) == (
        '{ zfs send p/a@s; echo "zrelay-stage 1 exit $?" >&2; } | '
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes 10.0.0.9 'zfs receive -u b/a'")


@pytest.mark.parametrize("address", ["-oProxyCommand=x", "a b", "host;id", ""])
def test_ssh_argv_refuses_addresses_ssh_would_misread(address: str) -> None:
    with pytest.raises(InvalidName):
        direct_ssh.ssh_argv(address)

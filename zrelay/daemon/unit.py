"""The systemd unit that runs ``zrelay daemon`` as a service (``zrelay daemon --systemd-unit``).

Why here, as text built by a function: the unit must say exactly what the
daemon expects (SIGHUP reloads, SIGTERM waits ``stop_timeout`` for running
streams, the state store in /var/lib/zrelay, the machine-wide lock directory),
so it lives beside the daemon and not only as a file to copy.
``contrib/zrelay.service`` is this text with the defaults (a test keeps them
equal).
"""

from __future__ import annotations

import os

from zrelay.errors import UsageError
from zrelay.inventory.service import DaemonSettings

#: Where the unit's ExecStart looks for zrelay unless told otherwise (pip's --prefix /usr/local).
DEFAULT_ZRELAY = "/usr/local/bin/zrelay"
#: The service's state directory (StateDirectory=zrelay) and the run history in it.
STATE_DIR = "/var/lib/zrelay"
STATE_DB = f"{STATE_DIR}/state.db"
#: The daemon's default SIGTERM grace for running streams (DaemonSettings.stop_timeout).
STOP_TIMEOUT = DaemonSettings().stop_timeout
#: systemd's own limit on stopping: the daemon's grace plus time to record the runs and exit.
TIMEOUT_STOP = STOP_TIMEOUT + 15


def systemd_arg(text: str, what: str, program: bool = False) -> str:
    """One word of a systemd command line, quoted and escaped as systemd.service(5) reads it.

    ``%`` starts a specifier, so it is doubled; in an argument (not in the
    PROGRAM, which systemd never expands variables in) ``$`` starts a variable
    and is doubled too. Words with blanks, quotes or backslashes go in double
    quotes. A control character (a newline would end the line) cannot be
    written at all.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise UsageError(f"{what} {text!r}: a control character cannot be written in a systemd unit")
    escaped = text.replace("%", "%%")
    if not program:
        escaped = escaped.replace("$", "$$")
    if escaped and not any(c in escaped for c in " \t\"'\\;"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(zrelay_path: str = DEFAULT_ZRELAY, inventory: str | None = None) -> str:
    """The unit file for running ``zrelay [-i INVENTORY] daemon`` under systemd.

    Relative paths are made absolute here (a service starts in /): the unit
    must name the same files the user meant when printing it.
    """
    if not zrelay_path:
        raise UsageError("the zrelay program for the unit's ExecStart is empty")
    program = os.path.abspath(os.path.expanduser(zrelay_path))
    argv = [systemd_arg(program, "zrelay program", program=True)]
    if inventory is not None:
        if not inventory:
            raise UsageError("the inventory for the unit's ExecStart is empty")
        argv += ["-i", systemd_arg(os.path.abspath(os.path.expanduser(inventory)), "inventory")]
    argv.append("daemon")
    where = ("the inventory named by -i" if inventory is not None else
             "~/.config/zrelay/zrelay.yml of the service's user (or Environment=ZRELAY_INVENTORY=...)")
    return f"""\
# zrelay daemon: every job's snapshot, sync, prune and s3-push on their schedules.
# Install:  zrelay daemon --systemd-unit > /etc/systemd/system/zrelay.service
#           systemctl daemon-reload && systemctl enable --now zrelay
# Reload the inventory: systemctl reload zrelay.  Logs: journalctl -u zrelay.

[Unit]
Description=zrelay ZFS replication daemon
# replication needs the network up, not merely configured
After=network-online.target
Wants=network-online.target

[Service]
# the daemon stays in the foreground: systemd follows it as the main process
Type=simple
# reads {where}
ExecStart={" ".join(argv)}
# SIGHUP: read the inventory again (a broken one is reported, the running one kept)
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM: start nothing new, give running streams up to stop_timeout ({STOP_TIMEOUT} s by default)
KillSignal=SIGTERM
# only the daemon gets SIGTERM: its ssh and hook children end under its control
KillMode=mixed
# above stop_timeout, so the daemon ends its runs and records them before any SIGKILL
TimeoutStopSec={TIMEOUT_STOP}
# a crash or a failed start is retried; a clean exit (systemctl stop) is not
Restart=on-failure
RestartSec=30
# one log line per event, to the journal as it is written
StandardOutput=journal
StandardError=journal
Environment=PYTHONUNBUFFERED=1
# the run history that zrelay status and the TUI read, in the service's state directory
Environment=ZRELAY_STATE={STATE_DB}
# creates {STATE_DIR}, owned by the service's user
StateDirectory=zrelay
# hardening: no privilege gain, /usr /boot /etc read-only, a private /tmp
NoNewPrivileges=yes
ProtectSystem=full
PrivateTmp=yes
# homes read-only: ssh keys and known_hosts are read, nothing is written there
# (a hook that writes in a home needs a drop-in with ProtectHome=no)
ProtectHome=read-only
# what it writes: the state store, and target locks shared with interactive runs (/run/lock/zrelay)
ReadWritePaths={STATE_DIR} /run/lock
# no kernel tuning, modules or cgroup changes from here (zfs runs on the hosts, over ssh)
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes

[Install]
WantedBy=multi-user.target
"""

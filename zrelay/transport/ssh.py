"""SSH connections: one per host, shared by all of its sessions.

Why one connection per host: a fleet run opens many short sessions (listings,
sends, receives) per host; reusing one authenticated connection is faster and
kinder to the remote sshd. A semaphore caps concurrent channels at the host's
``max_sessions`` (OpenSSH's MaxSessions defaults to 10), so a run never gets
"open failed" from the server.

Host keys are always verified: against the inventory's ``known_hosts`` when set,
otherwise against ~/.ssh/known_hosts and ~/.ssh/config as OpenSSH would.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, cast

import asyncssh

from zrelay.errors import (AuthFailed, HostKeyError, HostUnreachable, RemoteCommandFailed, ShellBroken,
                           UsageError)
from zrelay.inventory.model import Host
from zrelay.inventory.ssh_options import SshOptionError, ssh_connect_kwargs
from zrelay.transport import command_log, fastpath
from zrelay.zfs import quoting, shell_protocol

#: Receive window and maximum packet size for bulk channels (see bench/README.md).
#: 2 MiB, OpenSSH's own session window, covers loopback's latency × bandwidth; a
#: 16 MiB window cost the sending sshd 0.6 s more CPU per 256 MiB relayed (it
#: buffers up to a window of stream), which a relay on a busy host pays in wall time.
BULK_WINDOW = 2 * 1024 * 1024
BULK_PKTSIZE = 256 * 1024

#: Ciphers tried first, before asyncssh's own default order (which starts with
#: chacha20-poly1305). asyncssh runs AES-GCM as one OpenSSL call per packet but
#: chacha20-poly1305 as several Python-level calls, which roughly doubled the
#: orchestrator's CPU per relayed byte (see bench/README.md). Servers without
#: AES-GCM still get the rest of the default list; an inventory's ``Ciphers``
#: ssh option replaces this preference entirely.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

CONNECT_TIMEOUT = 15.0
#: sshd frees a finished session's MaxSessions slot a moment after the client has seen
#: the channel close, so a channel opened right away can be refused ("open failed").
#: Such refusals are retried this many times, with a growing pause, before giving up.
CHANNEL_OPEN_RETRIES = 8
#: Short commands go through one long-lived ``sh`` per connection (CommandShell): every new
#: SSH session makes the remote login shell start afresh (rc files included; 0.25-0.3 s on
#: the lab), a command through the running shell costs a fork. Hosts whose max_sessions is
#: below this keep one session per command (the shell holds one slot for the whole run).
COMMAND_SHELL_MIN_SESSIONS = 3
#: Command shells per connection at most (each holds a session slot for the run): concurrent
#: jobs on one host queue for a free shell (a few ms a command) instead of paying a new session.
COMMAND_SHELL_POOL = 3
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 4

@dataclass(frozen=True, slots=True)
class CommandResult:
    command: str
    exit_status: int | None
    stdout: str
    stderr: str


def connect_options(host: Host, *, forward_agent: bool = False) -> dict[str, object]:
    """asyncssh.connect() keyword arguments for ``host`` (no I/O).

    ``ssh_options`` go through the inventory's own converter (the loader refused at
    file:line:column whatever it refuses here). ``forward_agent`` only for sources of
    direct streams that authenticate to their targets with the orchestrator's agent;
    never by default.
    """
    opts: dict[str, object] = {
        "host": host.address,
        "port": host.port,
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalive_interval": KEEPALIVE_INTERVAL,
        "keepalive_count_max": KEEPALIVE_COUNT_MAX,
        # "^a,b": a and b first, then asyncssh's default list (OpenSSH's syntax)
        "encryption_algs": "^" + ",".join(PREFERRED_CIPHERS),
    }
    if host.user:
        opts["username"] = host.user
    if host.identity_file:
        opts["client_keys"] = [str(host.identity_file)]
    if host.known_hosts:
        opts["known_hosts"] = str(host.known_hosts)
    try:
        opts.update(ssh_connect_kwargs(host.ssh_options or {}))
    except SshOptionError as exc:
        raise UsageError(f"host {host.name}: ssh_options.{exc}") from None
    if forward_agent:
        opts["agent_forwarding"] = True
    return opts


#: Parsed key files by (path, mtime, size): asyncssh would read and parse a known_hosts file (a
#: line per host) and a private key again for every connection, which makes connecting to N hosts
#: cost N² lines read. A changed file is read again.
_PARSED: dict[tuple[str, str, int, int], object] = {}


def _parsed(kind: str, path: str) -> object | None:
    """``path`` read once as ``kind`` (known_hosts or a private key without passphrase), or None
    (missing, unreadable or encrypted: asyncssh then reads it itself and reports the problem)."""
    try:
        st = Path(path).expanduser().stat()
    except OSError:
        return None
    key = (kind, path, st.st_mtime_ns, st.st_size)
    if key not in _PARSED:
        try:
            full = str(Path(path).expanduser())
            _PARSED[key] = (asyncssh.read_known_hosts(full) if kind == "known_hosts"
                            else asyncssh.read_private_key(full))
        except (OSError, ValueError, asyncssh.KeyImportError):
            return None
        for stale in [k for k in _PARSED if k[:2] == (kind, path) and k != key]:
            del _PARSED[stale]
    return _PARSED[key]


def with_parsed_files(opts: dict[str, object]) -> dict[str, object]:
    """connect_options with the known_hosts file and the client keys given parsed (see _PARSED)."""
    known = opts.get("known_hosts")
    if isinstance(known, str) and (parsed := _parsed("known_hosts", known)) is not None:
        opts = {**opts, "known_hosts": parsed}
    keys = opts.get("client_keys")
    if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
        loaded = [_parsed("key", k) for k in keys]
        if all(k is not None for k in loaded):
            opts = {**opts, "client_keys": loaded}
    return opts


def _known_hosts_path(host: Host) -> str:
    """The file asyncssh checked the host key against (ssh_options' UserKnownHostsFile wins)."""
    chosen = connect_options(host).get("known_hosts")
    return str(chosen) if chosen else str(Path("~/.ssh/known_hosts").expanduser())


def _host_key_message(host: Host) -> str:
    """Tell an unknown host key from a changed one by looking at known_hosts."""
    path = _known_hosts_path(host)
    listed = False
    try:
        known = asyncssh.read_known_hosts(path)
        trusted = known.match(host.address, "", host.port)[0]
        listed = bool(trusted)
    except (OSError, ValueError, asyncssh.Error):
        pass
    where = f"{host.address}:{host.port}" if host.port != 22 else host.address
    if listed:
        return (f"host key of {where} does NOT match the one in {path} "
                "(the host was reinstalled, or someone is in the middle); refusing to connect")
    return (f"host key of {where} is not in {path}; add it after checking its fingerprint "
            f"(e.g. ssh-keyscan -p {host.port} {host.address} >> {path})")


#: Ciphers with built-in integrity (AEAD): the SSH_MSG_IGNORE packet asyncssh puts in front of
#: every packet it sends protects CBC modes only (predictable IVs); with these it is pure cost.
AEAD_CIPHERS = frozenset({"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"})
_EMPTY_IGNORE = (b"\0\0\0\0",)  # MSG_IGNORE with an empty string, as asyncssh sends it


def _skip_ignore_packets(conn: asyncssh.SSHClientConnection) -> None:
    """Leave out asyncssh's ignore packet before each packet while the cipher is AEAD.

    Every relayed packet otherwise costs two encryptions, two send() calls and two packets
    for the far sshd to decrypt (measured: -15 % orchestrator CPU per relayed byte without
    them, see bench/README.md). Checked per packet, so a rekey to a non-AEAD cipher gets
    them back; if asyncssh's internals differ from what this expects, nothing is changed.
    """
    send_packet = getattr(conn, "send_packet", None)
    ignore = getattr(asyncssh.connection, "MSG_IGNORE", None)
    if send_packet is None or ignore is None or not callable(getattr(conn, "get_extra_info", None)):
        return

    def filtered(pkttype: int, *args: bytes, **kwargs: Any) -> None:
        if (pkttype == ignore and args == _EMPTY_IGNORE
                and conn.get_extra_info("send_cipher") in AEAD_CIPHERS):
            return
        send_packet(pkttype, *args, **kwargs)

    conn.send_packet = filtered  # type: ignore[method-assign]


class _Handshake:
    """How far a connection got, for a timeout's message: a port that accepts TCP but never
    sends an SSH banner (a wrong port, a hung sshd, a firewall's tarpit) is not "cannot
    connect", and a handshake that stalls after the banner is neither."""

    def __init__(self) -> None:
        self.conn: asyncssh.SSHClientConnection | None = None

    def client(self) -> asyncssh.SSHClient:
        """asyncssh's client_factory: told when the TCP connection is made."""
        watch = self

        class _Watching(asyncssh.SSHClient):
            def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
                watch.conn = conn

        return _Watching()

    def timeout_message(self, where: str, timeout: object) -> str:
        seconds = f"{float(timeout):g}" if isinstance(timeout, (int, float, str)) else str(timeout)
        if self.conn is None:
            return f"cannot connect to {where}: no answer within {seconds} s"
        if not self.conn.get_extra_info("server_version"):
            return (f"no SSH banner from {where} within {seconds} s (the port accepts connections "
                    "but does not speak SSH)")
        return f"the SSH handshake with {where} did not finish within {seconds} s"


class _ShellSession(asyncssh.SSHClientSession[bytes]):
    """The client side of a remote ``sh`` that zrelay opened ahead of need.

    Such a shell first serves short commands (CommandShell: stdout and stderr are buffered
    here for it), or just waits (a warm session). Either way it can later be handed one
    stream command (Connection._hand_over): the login shell's start-up (rc files: 0.25-0.3 s
    a session on the lab) is then long over when the stream begins.

    The hand-over line prints a mark on stdout and on stderr before the command starts
    (shell_protocol.warm_exec_line); each of the two is ordered within its own pipe only, so each
    is waited for separately: what comes before a mark is dropped, what comes after it
    belongs to the command. Events after both marks are queued until the new owner is in
    place (release), then delivered in order.
    """

    def __init__(self) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.target: Any = None
        self.mark = b""
        self.marked = False
        self.closed = False
        self.changed = asyncio.Event()
        self._seen = [False, False]            # stdout, stderr mark
        self._bufs = [bytearray(), bytearray()]
        self._queue: list[Callable[[], Any]] | None = []   # None once released: events go straight through

    def hand_over(self, target: Any, mark: bytes) -> None:
        """From now on look for ``mark``, then pass everything to ``target``."""
        self.stdout.clear()
        self.stderr.clear()
        self.target, self.mark = target, mark

    def _deliver(self, event: Callable[[], Any]) -> None:
        if self._queue is None:
            event()
        else:
            self._queue.append(event)

    def release(self) -> None:
        """The owner is ready: deliver what was queued, then pass everything straight through."""
        queue, self._queue = self._queue or [], None
        for event in queue:
            event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        fd = 1 if datatype == asyncssh.EXTENDED_DATA_STDERR else 0
        if not self.mark:   # serving commands (or waiting): buffer for CommandShell
            (self.stderr if fd else self.stdout).extend(data)
            self.changed.set()
            return
        if self._seen[fd]:
            self._deliver(lambda: self.target.data_received(data, datatype))
            return
        buf = self._bufs[fd]
        buf += data
        at = buf.find(self.mark)
        if at < 0:
            del buf[:max(0, len(buf) - len(self.mark))]
            return
        self._seen[fd] = True
        rest = bytes(buf[at + len(self.mark):])
        buf.clear()
        if rest:
            self._deliver(lambda: self.target.data_received(rest, datatype))
        if all(self._seen):
            self.marked = True
            self.changed.set()

    # The command's end can come before its stderr mark: sshd sends the exit status when the
    # process exits, and what is still in the stderr pipe after it. From the hand-over on, the
    # end is queued like data (delivered at release, once both marks were seen); dropping it
    # lost a short stream's exit status. Where the marks never come, nothing is delivered.

    def eof_received(self) -> bool:
        if self.mark:
            self._deliver(self.target.eof_received)
        return False

    def exit_status_received(self, status: int) -> None:
        if self.mark:
            self._deliver(lambda: self.target.exit_status_received(status))

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        if self.mark:
            self._deliver(lambda: self.target.exit_signal_received(signal, core_dumped, msg, lang))

    def pause_writing(self) -> None:
        if self.marked:
            self._deliver(self.target.pause_writing)

    def resume_writing(self) -> None:
        if self.marked:
            self._deliver(self.target.resume_writing)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.changed.set()
        if self.marked:
            self._deliver(lambda: self.target.connection_lost(exc))


class CommandShell:
    """One ``sh`` on the host that runs short commands one after the other.

    Each command is sent as one request (shell_protocol.shell_request): its own ``sh -c`` with
    stdin from /dev/null, then an end marker carrying a random per-shell nonce on stdout
    (with the exit status) and on stderr. Output and status are exactly what a session of
    its own would give; only the start-up cost of a new session is saved.
    """

    def __init__(self, chan: asyncssh.SSHClientChannel[bytes], session: _ShellSession) -> None:
        self._chan = chan
        self._session = session
        self._nonce = secrets.token_hex(16)
        self.lock = asyncio.Lock()
        self.queued = 0      # commands waiting for this shell
        self.broken = False
        self.answered = False   # a command came back: the remote shell is up

    @property
    def idle(self) -> bool:
        """Up, free and nobody waiting for it: it may be handed a stream."""
        return self.answered and not self.broken and not self._session.closed and not self.lock.locked() \
            and not self.queued

    def detach(self) -> tuple[asyncssh.SSHClientChannel[bytes], _ShellSession]:
        """Stop being a command shell; the channel and its session go to a stream."""
        self.broken = True
        return self._chan, self._session

    async def run(self, command: str) -> tuple[int, str, str]:
        session, nonce = self._session, self._nonce.encode()
        out_mark, err_mark = b"\n" + nonce + b" ", b"\n" + nonce + b"\n"
        if self.broken or session.closed:
            self.broken = True
            raise ShellBroken(sent=False)
        self._chan.write(shell_protocol.shell_request(command, self._nonce).encode())
        while True:
            out_at = session.stdout.find(out_mark)
            end = session.stdout.find(b"\n", out_at + len(out_mark)) if out_at >= 0 else -1
            err_at = session.stderr.find(err_mark)
            if end >= 0 and err_at >= 0:
                break
            if session.closed:
                self.broken = True
                raise ShellBroken(sent=True)
            session.changed.clear()
            await session.changed.wait()
        status = int(session.stdout[out_at + len(out_mark):end])
        stdout = bytes(session.stdout[:out_at]).decode("utf-8", "replace")
        stderr = bytes(session.stderr[:err_at]).decode("utf-8", "replace")
        del session.stdout[:end + 1]
        del session.stderr[:err_at + len(err_mark)]
        self.answered = True
        return status, stdout, stderr

    def close(self) -> None:
        self.broken = True
        self._chan.close()


class Connection:
    """A lazily opened, shared SSH connection to one host."""

    def __init__(self, host: Host, *, forward_agent: bool = False, warm_sessions: bool = True) -> None:
        self.host = host
        self.forward_agent = forward_agent
        #: Open a shell ahead of need for the next stream (_warm_up); off where no stream follows.
        self.warm_sessions = warm_sessions
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(max(1, host.max_sessions))
        self._failure: Exception | None = None
        self._shells: list[CommandShell] = []
        self._shells_starting = 0
        self._shell_pool = max(1, min(COMMAND_SHELL_POOL, host.max_sessions // 3))
        self.use_shell = host.max_sessions >= COMMAND_SHELL_MIN_SESSIONS
        self._warm: tuple[asyncssh.SSHClientChannel[bytes], _ShellSession] | None = None
        self._warm_task: asyncio.Future[None] | None = None

    @property
    def name(self) -> str:
        return self.host.name

    def forget_failure(self) -> None:
        self._failure = None

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._failure is not None:
                raise self._failure
            if self._conn is None or self._conn.is_closed():
                try:
                    self._conn = await self._connect()
                except Exception as exc:  # remember it: every job on this host fails the same way
                    self._failure = exc
                    raise
            return self._conn

    async def _connect(self) -> asyncssh.SSHClientConnection:
        host = self.host
        opts = with_parsed_files(connect_options(host, forward_agent=self.forward_agent))
        watch = _Handshake()
        try:
            conn = await asyncssh.connect(client_factory=watch.client, **opts)
            _skip_ignore_packets(conn)
            if host.fastpath:   # the inventory's per-host off switch (ZRELAY_FASTPATH: the process's)
                fastpath.speed_up(conn)
            return conn
        except asyncssh.HostKeyNotVerifiable:
            raise HostKeyError(host.name, _host_key_message(host)) from None
        except asyncssh.PermissionDenied:
            who = f"{host.user}@" if host.user else ""
            key = f" with key {host.identity_file}" if host.identity_file else ""
            raise AuthFailed(host.name, f"authentication refused for {who}{host.address}{key}") from None
        except (asyncssh.DisconnectError, asyncssh.ChannelOpenError) as exc:
            raise HostUnreachable(host.name, f"{host.address}:{host.port}: {exc.reason}") from None
        except asyncio.TimeoutError:
            raise HostUnreachable(host.name, watch.timeout_message(
                f"{host.address}:{host.port}", opts.get("connect_timeout") or CONNECT_TIMEOUT)) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or "failed"
            raise HostUnreachable(host.name, f"cannot connect to {host.address}:{host.port}: {reason}") from None
        except (ValueError, asyncssh.KeyImportError) as exc:
            raise UsageError(f"host {host.name}: {exc}") from None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[asyncssh.SSHClientConnection]:
        """Hold one of the host's channel slots while a session is open."""
        conn = await self.connection()
        async with self._slots:
            yield conn

    async def create_session(self, conn: asyncssh.SSHClientConnection, factory: Callable[[], Any],
                             command: str, **kwargs: Any) -> tuple[Any, Any]:
        """Open a session channel on ``conn`` (the caller holds a slot), riding out the
        brief MaxSessions refusals sshd gives right after other sessions closed."""
        for attempt in range(CHANNEL_OPEN_RETRIES + 1):
            try:
                return await conn.create_session(factory, command, **kwargs)
            except asyncssh.ChannelOpenError as exc:
                if attempt == CHANNEL_OPEN_RETRIES:
                    raise HostUnreachable(self.name, f"cannot open an SSH channel: {exc.reason} "
                                          f"(the server's MaxSessions may be below max_sessions "
                                          f"{self.host.max_sessions})") from None
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def run(self, command: str, *, check: bool = True, stdin: bytes | None = None,
                  timeout: float | None = 300.0) -> CommandResult:
        """Run one remote command to completion; text output.

        Through the connection's command shell when it is free (no new session), else in
        a session of its own (commands with stdin always are).
        """
        command_log.record(self.name, command)
        if stdin is None and self.use_shell:
            result = await self._run_in_shell(command, timeout)
            if result is not None:
                if check and result.exit_status != 0:
                    raise RemoteCommandFailed(self.name, command, result.exit_status, result.stderr)
                return result
        try:
            async with self.slot() as conn:
                proc = await asyncio.wait_for(self._run_retrying(conn, command, stdin), timeout)
        except asyncio.TimeoutError:
            raise HostUnreachable(self.name, f"`{command}` did not finish within {timeout:.0f} s") from None
        except (asyncssh.DisconnectError, ConnectionError) as exc:
            self._conn = None
            raise HostUnreachable(self.name, f"connection lost: {getattr(exc, 'reason', exc)}") from None
        result = CommandResult(command, proc.exit_status, str(proc.stdout or ""), str(proc.stderr or ""))
        if check and result.exit_status != 0:
            raise RemoteCommandFailed(self.name, command, result.exit_status, result.stderr)
        return result

    async def _command_shell(self) -> CommandShell | None:
        """A command shell for the next command: a free one, else a new one while the pool
        has room and a slot is free, else the live one with the shortest queue (None: none)."""
        live = [sh for sh in self._shells if not sh.broken]
        for shell in live:
            if not shell.lock.locked():
                return shell
        if len(live) + self._shells_starting < self._shell_pool and not self._slots.locked():
            self._shells_starting += 1
            try:
                started = await self._start_shell()
            finally:
                self._shells_starting -= 1
            if started is not None:
                return started
            live = [sh for sh in self._shells if not sh.broken]
        return min(live, key=lambda sh: sh.queued) if live else None

    async def _start_shell(self) -> CommandShell | None:
        if self._warm is not None:  # the warm session's start-up is under way or over: adopt it
            (chan, session), self._warm = self._warm, None
            if not session.closed:
                shell = CommandShell(chan, session)
                self._shells.append(shell)
                return shell
            self._slots.release()
        conn = await self.connection()
        if self._slots.locked():
            return None
        await self._slots.acquire()  # held for the shell's lifetime
        try:
            # bulk window and packet size: the shell may be handed a stream later (_hand_over)
            chan, session = await self.create_session(conn, _ShellSession, quoting.quote(
                shell_protocol.COMMAND_SHELL_ARGV), encoding=None, window=BULK_WINDOW, max_pktsize=BULK_PKTSIZE)
        except Exception:
            self._slots.release()
            return None
        shell = CommandShell(chan, session)
        self._shells.append(shell)
        return shell

    def _warm_up(self) -> None:
        """Open one shell ahead of need (see _ShellSession), when a slot is free. Called once a
        command shell has answered, so that the two login shells do not start side by side."""
        if not self.warm_sessions or self._warm is not None or (self._warm_task is not None and not self._warm_task.done()):
            return
        self._warm_task = asyncio.ensure_future(self._open_warm())

    async def _open_warm(self) -> None:
        if self._slots.locked() or self._conn is None or self._conn.is_closed():
            return
        await self._slots.acquire()
        try:
            chan, session = await self._conn.create_session(
                _ShellSession, quoting.quote(shell_protocol.COMMAND_SHELL_ARGV), encoding=None,
                window=BULK_WINDOW, max_pktsize=BULK_PKTSIZE)
        except Exception:  # noqa: BLE001  (a warm session is an optimisation only)
            self._slots.release()
            return
        # asyncssh types the session as SSHClientSession whatever the factory made
        self._warm = (chan, cast(_ShellSession, session))

    async def _hand_over(self, factory: Callable[[], Any], command: str) -> tuple[Any, Any] | None:
        """Turn a shell opened ahead of need into a session running ``command`` (its slot stays
        taken): an idle command shell, which is known to be up (the warm session, whose start-up
        may still be running, then serves the next commands), else the warm session, if any."""
        shell = next((sh for sh in self._shells if sh.idle), None)
        if shell is not None:
            self._shells.remove(shell)
            chan, proxy = shell.detach()
            self._warm_up()
        else:
            if self._warm_task is not None and not self._warm_task.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._warm_task)
            warm, self._warm = self._warm, None
            if warm is None:
                return None
            chan, proxy = warm
        if proxy.closed:
            self._slots.release()
            return None
        session = factory()
        mark = secrets.token_hex(16)
        proxy.hand_over(session, (mark + "\n").encode())
        chan.write(shell_protocol.warm_exec_line(command, mark).encode())
        while not proxy.marked and not proxy.closed:
            proxy.changed.clear()
            await proxy.changed.wait()
        if not proxy.marked:
            self._slots.release()
            return None
        session.connection_made(chan)
        session.session_started()
        asyncio.get_running_loop().call_soon(proxy.release)  # once the caller has wired the session up
        return chan, session

    @contextlib.asynccontextmanager
    async def bulk_session(self, factory: Callable[[], Any], command: str) -> AsyncIterator[tuple[Any, Any]]:
        """A session for one end of a stream (bulk window and packet size), holding a slot
        until the block ends: a shell opened ahead of need when there is one, else a new one."""
        command_log.record(self.name, command)
        handed = await self._hand_over(factory, command) if self.use_shell else None
        if handed is not None:
            fastpath.speed_up_channel(handed[0])
            try:
                yield handed
            finally:
                self._slots.release()
                self._warm_up()  # for this host's next stream
            return
        async with self.slot() as conn:
            chan, session = await self.create_session(conn, factory, command, encoding=None,
                                                      window=BULK_WINDOW, max_pktsize=BULK_PKTSIZE)
            fastpath.speed_up_channel(chan)
            yield chan, session

    async def _run_in_shell(self, command: str, timeout: float | None) -> CommandResult | None:
        """``command`` through the command shell; None when the shell is busy or unavailable
        (the caller then opens a session of its own)."""
        try:
            shell = await self._command_shell()
        except (asyncssh.Error, OSError):
            return None  # connecting failed: the session path reports it properly
        if shell is None:
            return None
        shell.queued += 1
        try:
            await shell.lock.acquire()
        finally:
            shell.queued -= 1
        try:
            if shell.broken:
                return None  # died while this command waited: nothing was sent
            try:
                status, out, err = await asyncio.wait_for(shell.run(command), timeout)
            except asyncio.TimeoutError:
                shell.close()
                raise HostUnreachable(self.name, f"`{command}` did not finish within {timeout:.0f} s") from None
            except ShellBroken as exc:
                if not exc.sent:
                    return None
                shell.close()
                if self._conn is not None and self._conn.is_closed():
                    self._conn = None
                raise HostUnreachable(self.name, f"connection lost while running `{command}`") from None
        finally:
            shell.lock.release()
        self._warm_up()  # the host answers: start the shell the next stream or command will use
        return CommandResult(command, status, out, err)

    async def _run_retrying(self, conn: asyncssh.SSHClientConnection, command: str,
                            stdin: bytes | None) -> asyncssh.SSHCompletedProcess:
        for attempt in range(CHANNEL_OPEN_RETRIES + 1):
            try:
                return await conn.run(command, check=False, input=stdin.decode() if stdin else None,
                                      encoding="utf-8", errors="replace")
            except asyncssh.ChannelOpenError as exc:
                if attempt == CHANNEL_OPEN_RETRIES:
                    raise HostUnreachable(self.name, f"cannot open an SSH channel: {exc.reason}") from None
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._warm_task is not None and not self._warm_task.done():
            self._warm_task.cancel()
            with contextlib.suppress(BaseException):
                await self._warm_task
        if self._warm is not None:
            self._warm[0].close()
            self._warm = None
            self._slots.release()
        for shell in self._shells:
            shell.close()
            self._slots.release()
        self._shells.clear()
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(Exception):
                await self._conn.wait_closed()
            self._conn = None


class ConnectionPool:
    """Hands out the one Connection per host; closes them all at the end of a run."""

    def __init__(self, hosts: Mapping[str, Host], *, forward_agent: frozenset[str] = frozenset()) -> None:
        self._hosts = hosts
        self._forward_agent = forward_agent
        self._conns: dict[str, Connection] = {}
        self._warm_sessions = True

    def without_warm_sessions(self) -> None:
        """Open no shell ahead of need (Connection._warm_up) on any connection: for a run that only
        asks (``status``), where no stream follows and each would cost every host a login shell."""
        self._warm_sessions = False
        for conn in self._conns.values():
            conn.warm_sessions = False

    def forward_agent_to(self, names: set[str]) -> None:
        """Forward the local agent to these hosts (only connections opened from now on)."""
        self._forward_agent = frozenset(self._forward_agent | names)

    def get(self, name: str) -> Connection:
        conn = self._conns.get(name)
        if conn is None:
            conn = self._conns[name] = Connection(self._hosts[name], forward_agent=name in self._forward_agent,
                                                  warm_sessions=self._warm_sessions)
        return conn

    def forget_failures(self) -> None:
        """Let the next use of a host that could not be reached try again (a long-lived process's
        next run: within one run every job on such a host fails the same way without a retry)."""
        for conn in self._conns.values():
            conn.forget_failure()

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._conns.values()), return_exceptions=True)
        self._conns.clear()

    async def __aenter__(self) -> "ConnectionPool":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


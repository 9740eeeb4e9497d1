"""A remote host as ZFS sees it: run zfs commands, probe what it supports, read state.

Every command line comes from ``zrelay.zfs`` (commands, quoting) and every output goes
through ``zrelay.zfs.parse``; this module only moves text over SSH and turns
non-zero exits into typed errors.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from zrelay.errors import DatasetBusy, DatasetNotFound, ZfsError, ZrelayError
from zrelay.transport.ssh import CommandResult, Connection
from zrelay.zfs import commands, direct_ssh, parse, quoting
from zrelay.zfs.model import Capabilities, DatasetState

BUSY_RETRIES = 5


class RemoteHost:
    """One inventory host reached over its shared SSH connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.host = conn.host
        self._caps: Capabilities | None = None
        self._caps_lock = asyncio.Lock()
        self._installed: frozenset[str] = frozenset()
        self._creating = asyncio.Lock()
        self._aes: asyncio.Future[bool | None] | None = None

    @property
    def name(self) -> str:
        return self.host.name

    def command(self, argv: Sequence[str]) -> str:
        """The exact remote command line for ``argv`` on this host (sudo applied)."""
        return quoting.remote_command(list(argv), sudo=self.host.sudo)

    async def capabilities(self) -> Capabilities:
        """Probe once per run: OpenZFS 2.x and zfs-fuse speak different dialects.

        The same round trip finds the helper tools (commands.PROBED_TOOLS) installed."""
        async with self._caps_lock:
            if self._caps is None:
                result = await self.conn.run(self.command(commands.probe_argv()), check=False)
                self._caps = parse.parse_probe(result.stdout, result.stderr, result.exit_status or 0)
                self._installed = parse.parse_probed_tools(result.stdout)
            return self._caps

    async def installed_tools(self) -> frozenset[str]:
        """Which of commands.PROBED_TOOLS this host has (from the capability probe)."""
        await self.capabilities()
        return self._installed

    def cpu_has_aes(self) -> asyncio.Future[bool | None]:
        """Whether this host's CPU has AES instructions (None: it cannot tell, or the question
        failed); asked once per run, in the background from the first call on."""
        if self._aes is None:
            self._aes = asyncio.ensure_future(self._ask_aes())
        return self._aes

    async def _ask_aes(self) -> bool | None:
        try:
            await self.capabilities()   # after the probe: its command shell is free again, no new session
            # reading /proc/cpuinfo needs no privileges: never through sudo, which may allow only zfs
            result = await self.conn.run(quoting.quote(direct_ssh.cpu_aes_argv()), check=False, timeout=30)
        except (ZrelayError, OSError, asyncio.TimeoutError):
            return None   # only a cipher preference hangs on it; the connection's own errors show elsewhere
        return {0: True, 1: False}.get(result.exit_status)  # type: ignore[arg-type]

    async def zfs(self, argv: Sequence[str], *, dataset: str | None = None,
                  retry_busy: bool = False) -> CommandResult:
        """Run one zfs command; failures become the matching ZfsError."""
        return await self.zfs_line(self.command(argv), dataset=dataset, retry_busy=retry_busy)

    async def zfs_line(self, line: str, *, dataset: str | None = None,
                       retry_busy: bool = False) -> CommandResult:
        """Run one zfs command line exactly as given (an action's, see zrelay.actions)."""
        attempt = 0
        while True:
            result = await self.conn.run(line, check=False)
            if result.exit_status == 0:
                return result
            error = parse.map_error(self.name, result.stderr, result.exit_status, dataset)
            if isinstance(error, DatasetBusy) and retry_busy and attempt < BUSY_RETRIES:
                attempt += 1
                await asyncio.sleep(0.2 * attempt)  # zfs-fuse answers "busy" right after a receive
                continue
            raise error

    async def state(self, dataset: str, recursive: bool = False,
                    memo: parse.ListingMemo | None = None) -> dict[str, DatasetState]:
        """Snapshots (with GUIDs), resume token etc. of ``dataset`` (and descendants); ``memo``
        (a long-lived fleet's) parses a listing only when its text changed."""
        caps = await self.capabilities()
        outputs: list[str] = []
        for argv in commands.list_state_argvs(dataset, caps, recursive):
            try:
                outputs.append((await self.zfs(argv, dataset=dataset)).stdout)
            except DatasetNotFound:
                return {dataset: DatasetState.absent(dataset)}
        states = (memo.parse_state(outputs, caps, dataset, recursive) if memo is not None
                  else parse.parse_state(outputs, caps, dataset, recursive))
        if dataset not in states:
            states[dataset] = DatasetState.absent(dataset)
        return states

    async def changes(self, dataset: str, recursive: bool = False) -> tuple[str, dict[str, int | None]]:
        """(property, value per dataset): ``written`` where the host has it, else ``referenced``
        (see commands.changed_argv); for telling whether a target changed since its newest snapshot."""
        caps = await self.capabilities()
        prop = commands.changed_property(caps)
        result = await self.zfs(commands.changed_argv(dataset, caps, recursive), dataset=dataset)
        return prop, parse.parse_dataset_values(result.stdout, prop)

    async def exists(self, dataset: str) -> bool:
        try:
            await self.zfs(commands.exists_argv(dataset), dataset=dataset)
        except DatasetNotFound:
            return False
        return True

    async def snapshot(self, names: list[str], recursive: bool) -> None:
        await self.zfs(commands.snapshot_argv(names, recursive))

    async def missing_parent(self, dataset: str) -> str | None:
        """The parent of ``dataset`` when a full receive needs it created first (never the pool)."""
        parent = dataset.rsplit("/", 1)[0] if "/" in dataset else None
        if parent and "/" in parent and not await self.exists(parent):
            return parent
        return None

    async def create_parents(self, dataset: str) -> None:
        """Create the parent of ``dataset`` if absent, so a full receive has somewhere to land."""
        parent = await self.missing_parent(dataset)
        if parent is None:
            return
        async with self._creating:   # jobs into siblings under one new parent: create it once
            if await self.exists(parent):
                return
            try:
                await self.zfs(commands.create_argv(parent, parents=True), dataset=parent)
            except ZfsError as exc:
                # another zrelay (or tool) created it between our check and our create: fine
                if "already exists" not in str(exc) or not await self.exists(parent):
                    raise

    async def rollback(self, snapshot: str) -> None:
        await self.zfs(commands.rollback_argv(snapshot, destroy_later=True), dataset=snapshot,
                       retry_busy=True)

    async def holds(self, snapshots: Sequence[str]) -> list[tuple[str, str]]:
        """(snapshot, tag) of every user hold on ``snapshots`` (which must exist)."""
        out: list[tuple[str, str]] = []
        for chunk in _chunks(list(snapshots)):
            result = await self.zfs(commands.holds_argv(chunk, caps=await self.capabilities()))
            out += parse.parse_holds(result.stdout)
        return out

    async def held_snapshots(self, dataset: str, recursive: bool) -> list[str]:
        """Snapshots of ``dataset`` (and descendants) carrying at least one user hold."""
        result = await self.zfs(commands.userrefs_tree_argv(dataset, recursive), dataset=dataset)
        return [name for name, refs in parse.parse_userrefs(result.stdout).items() if refs > 0]

    async def hold(self, tag: str, snapshots: Sequence[str]) -> None:
        for chunk in _chunks(list(snapshots)):
            await self.zfs(commands.hold_argv(tag, chunk), dataset=chunk[0], retry_busy=True)

    async def release(self, tag: str, snapshots: Sequence[str]) -> None:
        for chunk in _chunks(list(snapshots)):
            await self.zfs(commands.release_argv(tag, chunk), dataset=chunk[0], retry_busy=True)

    async def bookmark(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Bookmark (snapshot, bookmark) pairs, one round trip per chunk."""
        caps = await self.capabilities()
        for chunk in _chunks(list(pairs)):
            await self.zfs(commands.bookmarks_argv(chunk, caps=caps), dataset=chunk[0][0])

    async def abort_receive(self, dataset: str) -> None:
        """Discard a partial receive and its resume token (``zfs receive -A``)."""
        await self.zfs(commands.abort_receive_argv(dataset, caps=await self.capabilities()),
                       dataset=dataset, retry_busy=True)


#: Names per command: keeps a command line far below any ARG_MAX or sshd limit.
CHUNK = 200


def _chunks(items: list, size: int = CHUNK) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]

"""fleet-50x20: ``zrelay status --json`` over 50 simulated hosts × 20 datasets (the control plane at scale).

The hosts are an asyncssh SSH server running inside this benchmark (one listener per host on
127.0.0.1, its own generated host key written into a known_hosts the generated inventory names, client
public-key auth with a generated key). They answer the commands zrelay sends with what the real lab
answered, recorded at bench time:

1. *record*: D datasets are created on nas1 under ``tank/PREFIX/TAG``, with a mix of states on vault
   (in sync, behind, missing). Two listeners act as proxies for nas1 and vault: every command zrelay
   sends is run on the real lab host and its stdout, stderr and exit status are recorded. Timed too:
   ``zrelay status`` of those D jobs on the real lab through the proxy (information).
2. *replay*: H hosts ``hNNN``; host k holds ``tank/PREFIX/TAG-hNNN/…`` (the recorded source datasets,
   renamed) and ``backup/PREFIX/TAG-from-hMMM/…`` (the recorded targets of host m = k-1, renamed). Every
   command is renamed back, looked up in the recording, and the answer renamed forward; snapshot GUIDs
   are XORed with a key per source host, so source and target stay consistent and no two hosts share a
   GUID. A command that was never recorded answers exit 127 and fails the benchmark.

Two layouts, each recorded and replayed: ``siblings`` (TAG ``fleet``: datasets ``dNN``, one parent, which
zrelay lists once recursively) and ``separate`` (TAG ``fleetp``: datasets ``dNN/data``, a parent each,
listed one by one).

Timed: the real CLI, ``python -m zrelay -i GENERATED --state TMP status --json``, as a subprocess;
its peak RSS comes from ``wait4``. Checked: H×D rows, and each row's state equals the state the
real lab gave that dataset. Goal: ≤ 10 s wall. Baseline (same run, same server): the same CLI on
one simulated host of D datasets; the ratio is H × t(1×D) / t(H×D) — how much faster the fleet run is
than checking the hosts one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import resource
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from zbench.common import (HOSTS, REPO, SOURCE, TARGET, BenchError, Lab, attempt, log, summary, zrelay_env)

GOAL_S = 10.0
LAYOUTS = ("siblings", "separate")
SNAPS = ("s1", "s2", "s3")
_NUMBER = re.compile(r"\b\d{6,20}\b")
_REQUEST = re.compile(r"sh -c (.+) </dev/null; printf '\\n%s %d\\n' ([0-9a-f]+) \"\$\?\"; "
                      r"printf '\\n%s\\n' \2 >&2")


@dataclass
class Answer:
    stdout: str
    stderr: str
    exit_status: int


@dataclass
class Recording:
    """Commands and answers of one real host, keyed by the exact command text."""
    answers: dict[str, Answer] = field(default_factory=dict)


class _LikeSshd(asyncssh.SSHServer):
    """A simulated host's connection sends what OpenSSH's sshd sends: asyncssh puts an SSH_MSG_IGNORE
    packet before every packet it sends (a protection CBC ciphers need), sshd does not, so a client
    of these hosts decoded and decrypted twice the packets a real host sends it. The connection
    leaves them out while its cipher is AEAD, as zrelay's own client side does."""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        from zrelay.transport.ssh import _skip_ignore_packets
        _skip_ignore_packets(conn)  # type: ignore[arg-type]


class FleetServer:
    """SSH listeners on 127.0.0.1 (one per simulated host) in an event loop on a thread of this process."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_path = workdir / "fleet_client_ed25519"
        self.client_key.write_private_key(str(self.client_key_path))
        os.chmod(self.client_key_path, 0o600)
        self.authorized = asyncssh.import_authorized_keys(self.client_key.export_public_key().decode())
        # zrelay closes its connections as soon as it has its answers; the replies still queued for them
        # make asyncio log "socket.send() raised exception." — expected here, not worth a line each
        logging.getLogger("asyncio").setLevel(logging.ERROR)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fleet-sshd", daemon=True)
        self.thread.start()
        self.servers: list[asyncssh.SSHAcceptor] = []
        self.misses: list[tuple[str, str]] = []
        self.commands = 0

    def call(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def listen(self, handlers: list[Any]) -> list[int]:
        """One listener per handler (``async handler(command) -> Answer``); returns their ports."""
        async def start() -> list[int]:
            ports = []
            for handler in handlers:
                server = await asyncssh.listen(
                    "127.0.0.1", 0, server_host_keys=[self.host_key], authorized_client_keys=self.authorized,
                    server_factory=_LikeSshd, process_factory=self._process_factory(handler), allow_scp=False,
                    sftp_factory=None,
                    agent_forwarding=False, x11_forwarding=False, line_editor=False, max_pktsize=32768)
                self.servers.append(server)
                ports.append(server.sockets[0].getsockname()[1])
            return ports
        return list(self.call(start()))

    def _process_factory(self, handler: Any) -> Any:
        async def answer(command: str) -> Answer:
            self.commands += 1
            try:
                return await handler(command)  # type: ignore[no-any-return]
            except Exception as exc:  # noqa: BLE001 - reported to the client as a failed command
                return Answer("", f"fleet server: {exc}\n", 255)

        async def process(proc: asyncssh.SSHServerProcess) -> None:
            if proc.command == "sh":  # zrelay's long-lived command shell: requests on stdin
                await self._shell(proc, answer)
                return
            a = await answer(proc.command or "")
            if a.stdout:
                proc.stdout.write(a.stdout)
            if a.stderr:
                proc.stderr.write(a.stderr)
            proc.exit(a.exit_status)
        return process

    @staticmethod
    async def _shell(proc: asyncssh.SSHServerProcess, answer: Any) -> None:
        """What ``sh`` does with zrelay's request lines (zrelay.zfs.shell_protocol.shell_request):
        ``sh -c WORD </dev/null; printf '\\n%s %d\\n' NONCE "$?"; printf '\\n%s\\n' NONCE >&2``."""
        while True:
            line = await proc.stdin.readline()
            if not line:
                break
            m = _REQUEST.fullmatch(line.rstrip("\n"))
            if m is None:
                proc.stderr.write(f"fleet server: not a command shell request: {line[:200]!r}\n")
                continue
            words = shlex.split(m.group(1))
            a = await answer(words[0] if len(words) == 1 else m.group(1))
            proc.stdout.write(f"{a.stdout}\n{m.group(2)} {a.exit_status}\n")
            proc.stderr.write(f"{a.stderr}\n{m.group(2)}\n")
        proc.exit(0)

    def close_listeners(self) -> None:
        async def stop() -> None:
            for s in self.servers:
                s.close()
            for s in self.servers:
                with contextlib.suppress(Exception):
                    await s.wait_closed()
            self.servers.clear()
        self.call(stop())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.close_listeners()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def thread_cpu(self) -> float:
        async def cpu() -> float:
            return time.thread_time()
        return float(self.call(cpu()))

    def write_known_hosts(self, path: Path, ports: list[int], one_line: bool = False) -> Path:
        """A line per host, as a real fleet's known_hosts has; ``one_line``: every host on one line
        (``[127.0.0.1]:P1,[127.0.0.1]:P2,… KEY``), to see what a client pays per line it reads."""
        key = self.host_key.export_public_key().decode().strip()
        if one_line:
            path.write_text(",".join(f"[127.0.0.1]:{p}" for p in ports) + f" {key}\n")
        else:
            path.write_text("".join(f"[127.0.0.1]:{p} {key}\n" for p in ports))
        return path


# --------------------------------------------------------------------------------------------
# recording from the real lab


class LabProxy:
    """Runs each command on a real lab host over one asyncssh connection and records the answer."""

    def __init__(self, lab: Lab, host: str, recording: Recording) -> None:
        self.lab, self.host, self.recording = lab, host, recording
        self.conn: asyncssh.SSHClientConnection | None = None
        self.lock = asyncio.Lock()

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self.lock:
            if self.conn is None:
                self.conn = await asyncssh.connect(HOSTS[self.host][0], username="root",
                                                   client_keys=[str(self.lab.key)],
                                                   known_hosts=str(self.lab.known_hosts))
            return self.conn

    async def __call__(self, command: str) -> Answer:
        conn = await self.connection()
        for attempt in range(10):
            try:
                r = await conn.run(command, check=False)
                break
            except asyncssh.ChannelOpenError:  # sshd's MaxSessions slot not freed yet
                if attempt == 9:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        answer = Answer(str(r.stdout or ""), str(r.stderr or ""), int(r.exit_status or 0))
        self.recording.answers[command] = answer
        return answer

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            with contextlib.suppress(Exception):
                await self.conn.wait_closed()


# --------------------------------------------------------------------------------------------
# replay: renamed datasets and GUIDs


class Replayer:
    """Answers for simulated host ``index`` from the nas1 and vault recordings of ``kind``
    (``status``: what ``zrelay status`` asked; ``sync``: what a no-change sync asked)."""

    def __init__(self, fleet: "Fleet", index: int, kind: str = "status") -> None:
        self.fleet, self.index, self.kind = fleet, index, kind

    async def __call__(self, command: str) -> Answer:
        f = self.fleet
        recs = f.recordings if self.kind == "status" else f.sync_recordings
        src_name = f.sim_source_root(self.index)
        m = f.target_re.search(command)
        if src_name in command:
            key, rec = self.index, recs[SOURCE]
            recorded = command.replace(src_name, f.rec_source_root)
            forward = [(f.rec_source_root, src_name)]
        elif m:
            key, rec = int(m.group(1)), recs[TARGET]
            recorded = command.replace(m.group(0), f.rec_target_root)
            forward = [(f.rec_target_root, m.group(0))]
        else:  # probes: no dataset in the command
            key, recorded, forward = self.index, command, []
            rec = recs[SOURCE] if command in recs[SOURCE].answers else recs[TARGET]
        answer = rec.answers.get(recorded)
        if answer is None:
            f.server.misses.append((f"h{self.index:03d}", command))
            return Answer("", f"fleet: command not recorded on the real lab: {command}\n", 127)
        out, err = answer.stdout, answer.stderr
        for a, b in forward:
            out, err = out.replace(a, b), err.replace(a, b)
        return Answer(f.guids(out, key), f.guids(err, key), answer.exit_status)


class Fleet:
    def __init__(self, lab: Lab, workdir: Path, datasets: int, layout: str = "siblings", name: str = "fleet") -> None:
        """``name``: the real datasets' parent (``tank/PREFIX/NAME``, ``NAMEp`` for ``separate``), one per
        benchmark, so several benchmarks of one run each record their own."""
        self.lab, self.workdir, self.datasets, self.layout = lab, workdir, datasets, layout
        self.server = FleetServer(workdir)
        p = lab.prefix
        # siblings: a host's datasets are children of one parent (dNN); separate: each has its own parent
        # (dNN/data), so no listing can be shared between them
        self.tag = name if layout == "siblings" else f"{name}p"
        self.rec_source_root = f"tank/{p}/{self.tag}"
        self.rec_target_root = f"backup/{p}/{self.tag}"
        self.target_re = re.compile(rf"backup/{re.escape(p)}/{self.tag}-from-h(\d{{3}})(?![0-9])")
        self.recordings: dict[str, Recording] = {SOURCE: Recording(), TARGET: Recording()}
        self.sync_recordings: dict[str, Recording] = {SOURCE: Recording(), TARGET: Recording()}
        self.known_guids: set[str] = set()
        self.expected: dict[str, str] = {}   # dNN -> state on the real lab

    def sim_source_root(self, k: int) -> str:
        return f"tank/{self.lab.prefix}/{self.tag}-h{k:03d}"

    def sim_target_root(self, source_index: int) -> str:
        return f"backup/{self.lab.prefix}/{self.tag}-from-h{source_index:03d}"

    def rel(self, j: int) -> str:
        return f"d{j:02d}" if self.layout == "siblings" else f"d{j:02d}/data"

    def guids(self, text: str, key: int) -> str:
        if not self.known_guids:
            return text
        mask = int.from_bytes(hashlib.sha256(f"h{key:03d}".encode()).digest()[:8], "big") or 1

        def swap(m: re.Match[str]) -> str:
            return str(int(m.group(0)) ^ mask) if m.group(0) in self.known_guids else m.group(0)
        return _NUMBER.sub(swap, text)

    # -- the real datasets -------------------------------------------------------------------

    def setup_lab(self) -> None:
        """D datasets on nas1; on vault a third in sync, a third one snapshot behind, a third missing."""
        src, dst = self.rec_source_root, self.rec_target_root
        names = [self.rel(j) for j in range(self.datasets)]
        log(f"fleet: creating {self.datasets} datasets under {SOURCE}:{src} and their copies on {TARGET}")
        self.lab.zfs(TARGET, "create", "-p", dst)
        mnt = f"/{src}"
        lines = ["set -e -o pipefail", f"zfs create -p {shlex.quote(src)}"]
        recv = shlex.join(self.lab.ssh_argv(TARGET))
        for j, n in enumerate(names):
            ds = f"{src}/{n}"
            lines.append(f"zfs create -p {shlex.quote(ds)}")
            for i, s in enumerate(SNAPS):
                lines.append(f"echo {i} >> {shlex.quote(mnt + '/' + n)}/f && zfs snapshot {shlex.quote(ds + '@' + s)}")
            kind = j % 3
            if kind == 2:
                continue  # missing on the target
            last = SNAPS[-1] if kind == 0 else SNAPS[-2]
            if "/" in n:  # the target's own parent of the dataset
                parent = f"{dst}/{n.rsplit('/', 1)[0]}"
                lines.append(f"{recv} {shlex.quote(shlex.join(['zfs', 'create', '-p', parent]))}")
            lines.append(f"zfs send {shlex.quote(ds + '@' + SNAPS[0])} | {recv} "
                         f"{shlex.quote(shlex.join(['zfs', 'receive', '-u', f'{dst}/{n}']))}")
            lines.append(f"zfs send -I @{SNAPS[0]} {shlex.quote(ds + '@' + last)} | {recv} "
                         f"{shlex.quote(shlex.join(['zfs', 'receive', '-u', f'{dst}/{n}']))}")

        def create() -> None:
            r = subprocess.run(self.lab.in_namespace(SOURCE, ["bash", "-c", "\n".join(lines)]), capture_output=True,
                               text=True, timeout=600, check=False)
            if r.returncode != 0:
                raise BenchError(f"fleet: setting up datasets on the lab failed: {r.stderr.strip()[-600:]}")

        def undo() -> None:
            self.lab.destroy(SOURCE, src)
            self.lab.destroy(TARGET, dst)
            self.lab.zfs(TARGET, "create", "-p", dst)
        # another session may stop a lab host meanwhile ("host down" tests): start again from scratch
        attempt(self.lab, "fleet setup", create, undo)
        self.read_guids()

    def read_guids(self) -> None:
        """Every GUID of the recorded datasets and snapshots on both hosts: the numbers the replay
        makes unique per simulated host."""
        for host, root in ((SOURCE, self.rec_source_root), (TARGET, self.rec_target_root)):
            out = self.lab.zfs(host, "get", "-H", "-p", "-o", "value", "-r", "guid", root)  # -r includes snapshots
            self.known_guids.update(x.strip() for x in out.split() if x.strip())

    # -- inventories ---------------------------------------------------------------------------

    def _inventory(self, path: Path, hosts: dict[str, int], jobs: list[dict[str, Any]], known_hosts: Path) -> Path:
        doc = {"all": {"vars": {"user": "root", "identity_file": str(self.server.client_key_path),
                                "known_hosts": str(known_hosts)},
                       "hosts": {h: {"address": "127.0.0.1", "port": port} for h, port in hosts.items()}},
               "zrelay": {"limits": {"sends_per_host": 2, "receives_per_host": 2}, "jobs": jobs}}
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path

    def record(self) -> dict[str, Any]:
        """zrelay status of the D real datasets through proxies to nas1 and vault; keeps every answer."""
        self.recordings = {SOURCE: Recording(), TARGET: Recording()}
        self.expected.clear()
        proxies = [LabProxy(self.lab, h, self.recordings[h]) for h in (SOURCE, TARGET)]
        ports = self.server.listen(proxies)

        async def close() -> None:
            await asyncio.gather(*(p.close() for p in proxies))
        try:
            kh = self.server.write_known_hosts(self.workdir / "fleet_record_known_hosts", ports)
            inv = self._inventory(self.workdir / "fleet-record.yml", dict(zip((SOURCE, TARGET), ports, strict=True)),
                                  self.recorded_jobs(), kh)
            self.lab.wait_up()
            run = status(inv, self.workdir / "fleet-record-state.db")
        finally:
            self.server.call(close())
            self.server.close_listeners()
        for row in run["rows"]:
            self.expected[row["job"]] = row["state"]
        bad = [r for r in run["rows"] if r["state"] not in ("in-sync", "behind", "missing")]
        if bad or len(run["rows"]) != self.datasets:
            raise BenchError(f"fleet: the real lab gave unexpected status rows: "
                             f"{[(r['job'], r['state'], r['message']) for r in bad][:5]}")
        log(f"fleet: recorded {sum(len(r.answers) for r in self.recordings.values())} distinct commands "
            f"({run['seconds']:.2f} s through the proxy; states {dict(Counter(self.expected.values()))})")
        return {k: v for k, v in run.items() if k != "rows"}

    def recorded_jobs(self) -> list[dict[str, Any]]:
        """The D jobs nas1 → vault of the real datasets (named dNN, as the replay's rows expect)."""
        return [{"name": f"d{j:02d}", "source": f"{SOURCE}:{self.rec_source_root}/{self.rel(j)}",
                 "targets": [f"{TARGET}:{self.rec_target_root}/{self.rel(j)}"]} for j in range(self.datasets)]

    def record_sync(self) -> dict[str, Any]:
        """Record what a no-change sync of the D jobs asks (listings of source and target, probes).

        Streams cannot pass the recording proxy (it keeps answers as text), so a real sync straight
        to the lab first brings every target up to date (the behind and missing ones); then the
        daemon's own cycle (cycle_worker: one long-lived fleet, a warm-up cycle that connects and
        probes, one timed cycle) runs through the proxies, and every target must come back NOOP.
        The status recording is left as it was (its answers are those of before the catch-up)."""
        catchup_inv = self.lab.write_inventory(self.workdir / f"{self.tag}-catchup.yml", self.recorded_jobs())
        caught = attempt(self.lab, "fleet catch-up sync",
                         lambda: cycles(catchup_inv, "fresh", warmup=0, count=1, expect=("ok", "noop"),
                                        workdir=self.workdir))
        self.read_guids()   # the replicas received just now
        self.sync_recordings = {SOURCE: Recording(), TARGET: Recording()}
        proxies = [LabProxy(self.lab, h, self.sync_recordings[h]) for h in (SOURCE, TARGET)]
        ports = self.server.listen(proxies)

        async def close() -> None:
            await asyncio.gather(*(p.close() for p in proxies))
        try:
            kh = self.server.write_known_hosts(self.workdir / "fleet_record_sync_known_hosts", ports)
            inv = self._inventory(self.workdir / f"{self.tag}-record-sync.yml",
                                  dict(zip((SOURCE, TARGET), ports, strict=True)), self.recorded_jobs(), kh)
            self.lab.wait_up()
            run = cycles(inv, "persistent", warmup=1, count=1, expect=("noop",), workdir=self.workdir)
        finally:
            self.server.call(close())
            self.server.close_listeners()
        log(f"fleet: recorded a no-change sync, {sum(len(r.answers) for r in self.sync_recordings.values())} "
            f"distinct commands (through the proxy: {run['warmup'][0]['seconds']:.2f} s connecting, "
            f"{run['cycles'][0]['seconds']:.2f} s warm; catch-up {caught['cycles'][0]['outcomes']})")
        return {"catch_up": caught["cycles"][0], "through_proxy": {"warmup": run["warmup"][0], "warm": run["cycles"][0]},
                "commands": {h: sorted(r.answers) for h, r in self.sync_recordings.items()}}

    def serve(self, hosts: int, kind: str = "status", one_line_known_hosts: bool = False) -> Path:
        """``hosts`` simulated hosts listening, answering from the ``kind`` recording; their inventory.
        The caller closes the listeners (``server.close_listeners``)."""
        names = [f"h{k:03d}" for k in range(hosts)]
        ports = self.server.listen([Replayer(self, k, kind) for k in range(hosts)])
        kh = self.server.write_known_hosts(self.workdir / f"fleet_{kind}_{hosts}_known_hosts", ports,
                                           one_line_known_hosts)
        jobs = [{"name": f"{names[k]}-d{j:02d}",
                 "source": f"{names[k]}:{self.sim_source_root(k)}/{self.rel(j)}",
                 "targets": [f"{names[(k + 1) % hosts]}:{self.sim_target_root(k)}/{self.rel(j)}"]}
                for k in range(hosts) for j in range(self.datasets)]
        return self._inventory(self.workdir / f"fleet-{kind}-{hosts}.yml", dict(zip(names, ports, strict=True)),
                               jobs, kh)

    def replay(self, hosts: int, reps: int, one_line_known_hosts: bool = False) -> dict[str, Any]:
        inv = self.serve(hosts, one_line_known_hosts=one_line_known_hosts)
        runs = []
        try:
            for rep in range(reps):
                self.server.misses.clear()
                commands0, cpu0 = self.server.commands, self.server.thread_cpu()
                run = status(inv, self.workdir / f"fleet-{hosts}-state.db")
                run["server_commands"] = self.server.commands - commands0
                run["server_cpu_s"] = round(self.server.thread_cpu() - cpu0, 2)
                run["unreachable_rows"], why = self.check(run["rows"], hosts)
                del run["rows"]
                runs.append({"rep": rep, **run})
                log(f"fleet {hosts}x{self.datasets} rep {rep + 1}/{reps}: {run['seconds']:.2f} s, "
                    f"peak RSS {run['peak_rss_mib']:.0f} MiB, {run['server_commands']} commands answered "
                    f"(server thread {run['server_cpu_s']:.2f} s CPU, zrelay {run['cpu_s']:.2f} s CPU)"
                    + (f"; {run['unreachable_rows']} rows unreachable: {why}" if run["unreachable_rows"] else ""))
        finally:
            self.server.close_listeners()
        return {"hosts": hosts, "datasets": self.datasets, "runs": runs, "one_line_known_hosts": one_line_known_hosts,
                "median_seconds": summary([r["seconds"] for r in runs])["median"],
                "unreachable_rows": max(r["unreachable_rows"] for r in runs),
                "max_peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}

    def check(self, rows: list[dict[str, Any]], hosts: int) -> tuple[int, str]:
        """Every row as the real lab gave it, except rows of hosts zrelay gave up on ("unreachable":
        a handshake that did not finish in time is zrelay's own result at that scale, counted and
        failing the goal, not an error of the replay). Returns (unreachable rows, first message)."""
        if self.server.misses:
            raise BenchError(f"fleet: {len(self.server.misses)} commands were never recorded on the real lab, "
                             f"e.g. {self.server.misses[0]}")
        if len(rows) != hosts * self.datasets:
            raise BenchError(f"fleet: {len(rows)} status rows, expected {hosts * self.datasets}")
        unreachable = [r for r in rows if r["state"] == "unreachable"]
        wrong = [(r["job"], r["state"], r["message"]) for r in rows
                 if r["state"] != "unreachable" and r["state"] != self.expected.get(r["job"].split("-", 1)[1])]
        if wrong:
            raise BenchError(f"fleet: {len(wrong)} rows differ from the real lab's states, e.g. {wrong[:3]}")
        for r in rows:
            if r["state"] not in ("missing", "unreachable") and not (r["source_newest"] and r["checked_at"]):
                raise BenchError(f"fleet: row {r['job']} lacks source_newest/checked_at: {r}")
        return len(unreachable), unreachable[0]["message"] if unreachable else ""


def cycles(inventory: Path, mode: str, *, warmup: int, count: int, workdir: Path, lock_dir: Path | None = None,
           expect: tuple[str, ...] = ("noop",), progress: int = 0) -> dict[str, Any]:
    """No-change sync cycles as the daemon runs them, in a child process (bench/zbench/cycle_worker.py:
    ``persistent`` = one long-lived Fleet and ``for_run()`` per cycle, ``fresh`` = a new Fleet each
    cycle). Its run locks go to ``lock_dir`` (``ZRELAY_LOCK_DIR``; default ``WORKDIR/locks``), not the
    machine's. BenchError when a timed cycle's target came back other than ``expect``."""
    argv = [sys.executable, str(Path(__file__).with_name("cycle_worker.py")), "--inventory", str(inventory),
            "--mode", mode, "--warmup", str(warmup), "--cycles", str(count), "--progress", str(progress)]
    for e in expect:
        argv += ["--expect", e]
    env = zrelay_env()
    env["ZRELAY_LOCK_DIR"] = str(lock_dir or workdir / "locks")
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE, text=True,
                       env=env, stdin=subprocess.DEVNULL, timeout=7200, check=False)
    try:
        doc: dict[str, Any] = json.loads(r.stdout)
    except ValueError:
        raise BenchError(f"sync cycles ({mode}): exit {r.returncode}, no JSON: "
                         f"{(r.stderr or '').strip()[-800:]}") from None
    if doc["unexpected"] or r.returncode != 0:
        raise BenchError(f"sync cycles ({mode}): targets not {'/'.join(expect)}: {doc['unexpected'][:3]}")
    return doc


def fs_type(path: Path) -> str:
    """The type of the filesystem ``path`` is on (/proc/mounts, longest mount point that holds it)."""
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 3:
                continue
            mnt = fields[1].replace("\\040", " ")
            inside = str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, kind = mnt, fields[2]
    return kind


def ensure_fds(hosts: int) -> dict[str, int]:
    """Enough file descriptors for ``hosts`` simulated hosts: this process holds a listener and an
    accepted socket per host, the measured zrelay (which inherits the limit) a socket per host.
    Raises the soft limit up to the hard one when needed; BenchError when even that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 3 * hosts + 256
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise BenchError(f"fleet: {hosts} hosts need about {need} file descriptors; the hard limit is {hard} "
                             f"(raise it: ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        soft = need
    return {"soft": soft, "hard": hard, "needed": need}


def status(inventory: Path, state: Path, code: Path = REPO) -> dict[str, Any]:
    """``zrelay status --json`` as a subprocess (of ``code``, a checkout; default this one): wall
    time, peak RSS (wait4), CPU, and the rows."""
    argv = [sys.executable, "-m", "zrelay", "-i", str(inventory), "--state", str(state), "status", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=zrelay_env(code), cwd=code)
    # read both pipes on threads so a large --json output cannot block the child
    out: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda k=k, s=s: out.__setitem__(k, s.read()))  # type: ignore[misc]
               for k, s in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for t in readers:
        t.start()
    _pid, wstatus, ru = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    for t in readers:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(wstatus)
    try:
        rows = json.loads(out["stdout"])
    except ValueError:
        raise BenchError(f"zrelay status: exit {proc.returncode}, no JSON: "
                         f"{out['stderr'].decode(errors='replace').strip()[-800:]}") from None
    return {"seconds": round(seconds, 3), "exit": proc.returncode, "peak_rss_mib": round(ru.ru_maxrss / 1024, 1),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2), "rows": rows}


def run(lab: Lab, *, hosts: int, datasets: int, reps: int, workdir: Path) -> dict[str, Any]:
    return {layout: run_layout(lab, hosts=hosts, datasets=datasets, reps=reps, workdir=workdir, layout=layout)
            for layout in LAYOUTS}


def run_layout(lab: Lab, *, hosts: int, datasets: int, reps: int, workdir: Path, layout: str,
               name: str = "fleet", one_line_variant: bool = False) -> dict[str, Any]:
    log(f"fleet: layout {layout}")
    fleet = Fleet(lab, workdir, datasets, layout, name)
    try:
        fleet.setup_lab()
        recorded = attempt(lab, "fleet record", fleet.record)
        single = fleet.replay(1, reps)
        many = fleet.replay(hosts, reps)
        one_line = fleet.replay(hosts, reps, one_line_known_hosts=True) if one_line_variant else None
    finally:
        fleet.server.stop()
    out = {"layout": layout, "hosts": hosts, "datasets": datasets, "reps": reps, "goal_s": GOAL_S,
           "recorded_commands": {h: len(r.answers) for h, r in fleet.recordings.items()},
           "real_lab_status_through_proxy": recorded, "expected_states": dict(Counter(fleet.expected.values())),
           "single_host": single, "fleet": many}
    if one_line is not None:
        out["fleet_one_line_known_hosts"] = one_line
    t1, tn = single["median_seconds"], many["median_seconds"]
    out["ratio_serial_vs_fleet"] = hosts * t1 / tn if tn else None
    return out


def table_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    return [row for layout in LAYOUTS if layout in doc for row in _rows(doc[layout])]


def _rows(d: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    h, n = d["hosts"], d["datasets"]
    sec = d["fleet"]["median_seconds"]
    where = "one parent" if d["layout"] == "siblings" else "a parent each"
    lost = d["fleet"].get("unreachable_rows", 0)
    return [
        (f"fleet-{h}x{n} ({where}): zrelay status --json, {h} hosts × {n} datasets vs {h} × (1 host)"
         + (f" — {lost} rows unreachable" if lost else ""),
         f"{sec:.2f} s", f"{h} × {d['single_host']['median_seconds']:.2f} s", d["ratio_serial_vs_fleet"],
         f"≤ {GOAL_S:.0f} s", sec <= GOAL_S and not lost),
        (f"fleet-{h}x{n} ({where}): peak RSS of zrelay status (1 host: {d['single_host']['max_peak_rss_mib']:.0f} MiB)",
         f"{d['fleet']['max_peak_rss_mib']:.0f} MiB", "—", None, "—", None),
    ]


# --------------------------------------------------------------------------------------------
# status-500: the same at ten times the hosts

STATUS_NAMES = ("status-500",)
STATUS_RSS_GOAL_MIB = 300.0


def run_status(lab: Lab, *, hosts: int, datasets: int, reps: int, workdir: Path,
               layouts: tuple[str, ...] = LAYOUTS) -> dict[str, Any]:
    """fleet-50x20's measurement at ``hosts`` hosts (its own recorded datasets, ``tank/PREFIX/scale``),
    with the file-descriptor limit it needs, and a goal on peak RSS as well as on wall time."""
    fds = ensure_fds(hosts)
    log(f"status-{hosts}: file descriptors: soft limit {fds['soft']}, about {fds['needed']} needed")
    out: dict[str, Any] = {"fd_limit": fds, "goal_s": GOAL_S, "rss_goal_mib": STATUS_RSS_GOAL_MIB,
                           "server": "a thread of the benchmark process; zrelay status runs as its own process"}
    for layout in layouts:
        out[layout] = run_layout(lab, hosts=hosts, datasets=datasets, reps=reps, workdir=workdir, layout=layout,
                                 name="scale", one_line_variant=True)
    return out


def status_rows(doc: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    rows: list[tuple[str, str, str, float | None, str, bool | None]] = []
    for layout in LAYOUTS:
        if layout not in doc:
            continue
        d = doc[layout]
        h, n = d["hosts"], d["datasets"]
        where = "one parent" if layout == "siblings" else "a parent each"
        sec, rss = d["fleet"]["median_seconds"], d["fleet"]["max_peak_rss_mib"]
        runs = d["fleet"]["runs"]
        cli_cpu = summary([r["cpu_s"] for r in runs])["median"]
        server_cpu = summary([r["server_cpu_s"] for r in runs])["median"]
        lost = d["fleet"].get("unreachable_rows", 0)
        rows += [
            (f"status-{h} ({where}): zrelay status --json, {h} hosts × {n} datasets vs {h} × (1 host)"
             + (f" — {lost} rows unreachable (handshake timeouts)" if lost else ""),
             f"{sec:.2f} s", f"{h} × {d['single_host']['median_seconds']:.2f} s", d["ratio_serial_vs_fleet"],
             f"≤ {GOAL_S:.0f} s", sec <= GOAL_S and not lost),
            (f"status-{h} ({where}): peak RSS of zrelay status (1 host: {d['single_host']['max_peak_rss_mib']:.0f} MiB)",
             f"{rss:.0f} MiB", "—", None, f"≤ {STATUS_RSS_GOAL_MIB:.0f} MiB", rss <= STATUS_RSS_GOAL_MIB),
            (f"status-{h} ({where}): CPU of zrelay status / of the simulated hosts' server (median)",
             f"{cli_cpu:.2f} s", f"{server_cpu:.2f} s", None, "—", None),
        ]
        one = d.get("fleet_one_line_known_hosts")
        if one:
            lost1 = one.get("unreachable_rows", 0)
            rows.append((f"status-{h} ({where}): known_hosts of one line vs a line per host"
                         + (f" — {lost1} rows unreachable" if lost1 else ""),
                         f"{one['median_seconds']:.2f} s", f"{sec:.2f} s",
                         sec / one["median_seconds"] if one["median_seconds"] else None, "—", None))
    return rows

"""transport-only: no zfs at all, just the SSH path: ``head -c N /dev/zero`` on nas1 → ``cat >/dev/null`` on vault.

zrelay: ``zrelay.paths.relay.relay`` called in this process with two RemoteHost objects
built from a generated inventory (fresh connections each time, connecting included).
OpenSSH: ``ssh nas1 head … | ssh vault cat`` from this machine, same cipher.
This is the ceiling of the relay path on this machine, without zfs-fuse in the way.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from zbench.common import (MB, MiB, SOURCE, TARGET, BenchError, HostCpu, Lab, Timed, attempt, log, pipe_timed, ratio,
                           rotations, self_cpu, summary)

METHODS = ("zrelay", "openssh-relay")
SINK = "cat >/dev/null"


def source_command(nbytes: int) -> str:
    return f"head -c {nbytes} /dev/zero"


async def zrelay_once(inventory: Path, nbytes: int) -> Timed:
    from zrelay.inventory import load_inventory
    from zrelay.paths.relay import relay
    from zrelay.transport.host import RemoteHost
    from zrelay.transport.ssh import ConnectionPool

    inv = load_inventory(inventory)
    cpu0, t0 = self_cpu(), time.perf_counter()
    async with ConnectionPool(inv.hosts) as pool:
        result = await relay(RemoteHost(pool.get(SOURCE)), source_command(nbytes),
                             RemoteHost(pool.get(TARGET)), SINK, lambda n: None)
    seconds, cpu = time.perf_counter() - t0, self_cpu() - cpu0
    if result.bytes != nbytes:
        raise BenchError(f"zrelay relay moved {result.bytes} bytes, expected {nbytes}")
    return Timed(seconds, cpu, {"relay_seconds": round(result.seconds, 3)})


def run(lab: Lab, *, size_mib: int, reps: int, ssh_opts: list[str], inventory: Path) -> dict[str, Any]:
    nbytes = size_mib * MiB

    def zrelay() -> Timed:
        try:
            return asyncio.run(zrelay_once(inventory, nbytes))
        except BenchError:
            raise
        except Exception as exc:  # zrelay's own errors (host unreachable, ...) → retry logic
            raise BenchError(f"zrelay relay: {type(exc).__name__}: {exc}") from exc

    def openssh() -> Timed:
        return pipe_timed(lab.ssh_argv(SOURCE, *ssh_opts) + [source_command(nbytes)],
                          lab.ssh_argv(TARGET, *ssh_opts) + [SINK], what="OpenSSH relay")

    runners = {"zrelay": zrelay, "openssh-relay": openssh}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for rep, order in rotations(METHODS, reps):
        for method in order:
            hosts = HostCpu(lab)
            timed = attempt(lab, f"transport {method}", runners[method])
            time.sleep(0.3)  # let each sshd reap its finished session
            host_cpu = hosts.used()
            row = {"rep": rep, "seconds": round(timed.seconds, 3), "mb_s": round(nbytes / timed.seconds / MB, 1),
                   "orchestrator_cpu_s": round(timed.cpu, 2),
                   "orchestrator_cpu_pct": round(100 * timed.cpu / timed.seconds),
                   "source_host_cpu_s": host_cpu.get(SOURCE), "target_host_cpu_s": host_cpu.get(TARGET),
                   **timed.extra}
            runs[method].append(row)
            log(f"transport rep {rep + 1}/{reps} {method:<14} {timed.seconds:6.2f} s  {row['mb_s']:6.1f} MB/s  "
                f"cpu: orchestrator {timed.cpu:.2f} s ({row['orchestrator_cpu_pct']}%), "
                f"{SOURCE} {host_cpu.get(SOURCE)} s, {TARGET} {host_cpu.get(TARGET)} s")
    med = {m: summary([r["mb_s"] for r in runs[m]])["median"] for m in METHODS}
    cpu = {m: summary([r["orchestrator_cpu_pct"] for r in runs[m]])["median"] for m in METHODS}
    gib = nbytes / (1024 * MiB)
    cpu_per_gib = {m: {k: round(summary([(r[f"{k}_cpu_s"] or 0) for r in runs[m]])["median"] / gib, 2)
                       for k in ("orchestrator", "source_host", "target_host")} for m in METHODS}
    return {"size_mib": size_mib, "bytes": nbytes, "reps": reps, "runs": runs, "median_mb_s": med,
            "median_orchestrator_cpu_pct": cpu, "median_cpu_s_per_gib": cpu_per_gib,
            "ratio_zrelay_vs_openssh_relay": ratio(med["zrelay"], med["openssh-relay"])}

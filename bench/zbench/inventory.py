"""inventory: how long ``zrelay inventory validate`` takes on a fleet, and on an alias bomb.

inventory-50k — a generated zrelay inventory of 50,000 hosts (each with its own address and
port, in one group with group vars, plus ``vault``) and 1,000 jobs, 152,000 lines, 4.5 MB:
  (a) zrelay: ``python -m zrelay -i FILE inventory validate`` as a subprocess, whole CLI timed;
  (b) baseline: ``python -c 'yaml.compose(FILE, CSafeLoader)'`` — only parsing the same file
      with PyYAML's C parser into a node tree, which any YAML reader has to do at least;
  (c) for information: ``yaml.safe_load`` of the same file (parsing and building values).
  The goal is absolute (≤ 5 s wall, the issue's figure); the ratio to (b) says how much of it
  is the YAML parse that no loader avoids, and stays meaningful on a busy machine.

inventory-bomb — the "billion laughs" (9 anchors, each a list of 9 aliases of the one before:
10^9 values if expanded) in an Ansible variable of ``all.vars``: zrelay must refuse it, exit 2,
one line naming file:line:column of an alias, in < 1 s (the baseline: ``yaml.compose`` of the
same file, which never expands aliases).

No lab is needed: nothing connects anywhere (the addresses are 10.x documentation-style
addresses that are only validated, never reached).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from zbench.common import BenchError, Timed, log, ratio, rotations, run_timed, summary, zrelay_env

NAMES = ("inventory",)
GOAL_S = 5.0
BOMB_GOAL_S = 1.0


def write_fleet(path: Path, hosts: int) -> Path:
    """``hosts`` hosts, each with address and port, and one job per 50 hosts into ``vault``."""
    lines = ["all:", "  vars:", "    user: root", "  children:", "    fleet:", "      vars:",
             "        sudo: true", "      hosts:"]
    for i in range(hosts):
        lines += [f"        h{i:05d}:", f"          address: 10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                  f"          port: {2200 + i % 100}"]
    lines += ["    vaults:", "      hosts:", "        vault:", "          address: 127.0.0.4",
              "zrelay:", "  jobs:"]
    for i in range(0, hosts, 50):
        lines += [f"    - source: h{i:05d}:tank/data", f"      targets: [vault:backup/h{i:05d}]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_bomb(path: Path) -> Path:
    lines = ["all:", "  vars:", '    ansible_lol0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        lines.append(f"    ansible_lol{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    lines += ["  hosts:", "    h1:"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _python(code: str, path: Path, what: str) -> Timed:
    timed, _ = run_timed([sys.executable, "-c", code, str(path)], what=what)
    return timed


COMPOSE = "import sys, yaml; yaml.compose(open(sys.argv[1]), Loader=yaml.CSafeLoader)"
SAFE_LOAD = "import sys, yaml; yaml.load(open(sys.argv[1]), Loader=yaml.CSafeLoader)"


def _validate(path: Path, expect: int) -> tuple[Timed, str]:
    timed, r = run_timed([sys.executable, "-m", "zrelay", "-i", str(path), "inventory", "validate"],
                         env=zrelay_env(), what="zrelay inventory validate", ok_codes=(expect,))
    if "Traceback" in r.stderr:
        raise BenchError(f"zrelay inventory validate crashed: {r.stderr.strip().splitlines()[-1]}")
    return timed, r.stdout.strip()


def run(*, hosts: int, reps: int, workdir: Path) -> dict[str, Any]:
    fleet = write_fleet(workdir / "fleet.yml", hosts)
    bomb = write_bomb(workdir / "bomb.yml")
    size = fleet.stat().st_size
    log(f"inventory: {hosts} hosts, {size / 1e6:.1f} MB, {reps} repetitions")
    times: dict[str, list[float]] = {"zrelay": [], "compose": [], "safe_load": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    output = ""
    for rep, order in rotations(list(times), reps):
        for method in order:
            if method == "zrelay":
                timed, output = _validate(fleet, 0)
            else:
                timed = _python(COMPOSE if method == "compose" else SAFE_LOAD, fleet, method)
            times[method].append(timed.seconds)
            cpu[method].append(timed.cpu)
            log(f"rep {rep + 1}: {method} {timed.seconds:.2f} s wall, {timed.cpu:.2f} s CPU")
    bomb_times: dict[str, list[float]] = {"zrelay": [], "compose": []}
    message = ""
    for rep, order in rotations(list(bomb_times), reps):
        for method in order:
            if method == "zrelay":
                timed, message = _validate(bomb, 2)
            else:
                timed = _python(COMPOSE, bomb, "compose bomb")
            bomb_times[method].append(timed.seconds)
            log(f"bomb rep {rep + 1}: {method} {timed.seconds:.2f} s")
    med = {k: summary(v)["median"] for k, v in times.items()}
    bomb_med = {k: summary(v)["median"] for k, v in bomb_times.items()}
    return {
        "hosts": hosts, "file_bytes": size, "output": output,
        "seconds": {k: summary(v) for k, v in times.items()},
        "cpu_seconds": {k: summary(v) for k, v in cpu.items()},
        "median_seconds": med,
        "ratio_zrelay_vs_compose": ratio(med["zrelay"], med["compose"]),
        "ratio_zrelay_vs_safe_load": ratio(med["zrelay"], med["safe_load"]),
        "bomb": {"seconds": {k: summary(v) for k, v in bomb_times.items()}, "median_seconds": bomb_med,
                 "message": message},
    }


def table_rows(d: dict[str, Any]) -> list[tuple[str, str, str, float | None, str, bool | None]]:
    med, bomb = d["median_seconds"], d["bomb"]["median_seconds"]
    n = f"{d['hosts'] // 1000}k" if d["hosts"] >= 1000 else str(d["hosts"])
    return [
        (f"inventory-{n}: zrelay inventory validate vs yaml.compose of the file", f"{med['zrelay']:.2f} s",
         f"{med['compose']:.2f} s", d["ratio_zrelay_vs_compose"], f"≤ {GOAL_S:.0f} s", med["zrelay"] <= GOAL_S),
        (f"inventory-{n}: zrelay inventory validate vs yaml.safe_load of the file", f"{med['zrelay']:.2f} s",
         f"{med['safe_load']:.2f} s", d["ratio_zrelay_vs_safe_load"], "—", None),
        ("inventory-bomb: billion laughs refused (exit 2, file:line:column) vs yaml.compose",
         f"{bomb['zrelay']:.2f} s", f"{bomb['compose']:.2f} s", ratio(bomb["zrelay"], bomb["compose"]),
         f"< {BOMB_GOAL_S:.0f} s", bomb["zrelay"] < BOMB_GOAL_S),
    ]

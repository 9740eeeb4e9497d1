"""The inventory loader against hostile and huge files: YAML alias bombs, structures that
refer to themselves, where syntax errors are reported, name suggestions, and that the
fast paths taken for large fleets resolve exactly what the plain rules say.

Nothing here measures time (bench/ does: the ``inventory`` benchmark); the alias-bomb
tests run the real command line in a child process with a memory ceiling and a
generous timeout, so a loader that expands the bomb fails them instead of taking the
machine down.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zrelay.errors import UsageError
from zrelay.inventory import (inspect_inventory, load_inventory, loads_inventory,
                              validate_inventory, validate_inventory_text)

REPO = Path(__file__).resolve().parents[2]

#: Far more than the loader needs (tens of MiB), far less than an expanded bomb.
MEMORY_LIMIT = 768 * 1024 * 1024
#: A hang guard for a loaded machine, not a measurement.
HANG_GUARD_S = 60


def write(tmp_path: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative name -> text) under tmp_path; return the first one's path."""
    first = None
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        first = first or path
    assert first is not None
    return first


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m zrelay ARGS`` in a child with a memory ceiling (a bomb must not get far)."""
    env = {k: v for k, v in os.environ.items() if k != "ZRELAY_INVENTORY"}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "zrelay", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S,
                          preexec_fn=_limit_memory, check=False)


def laughs(indent: str, levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": ``levels`` anchors, each a list of ``width`` aliases of the last."""
    lines = [f'{indent}ansible_lol0: &a0 [{", ".join(["lol"] * width)}]']
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"{indent}ansible_lol{level}: &a{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line of ``text`` holding ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


# --------------------------------------------------------------------------- alias bombs

BOMB_ALL_VARS = "all:\n  vars:\n" + laughs("    ") + "  hosts:\n    h1:\n"
BOMB_GROUP_VARS = ("all:\n  children:\n    g:\n      vars:\n" + laughs("        ")
                   + "      hosts:\n        h1:\n")
BOMB_HOST_VARS = "all:\n  hosts:\n    h1:\n" + laughs("      ")


@pytest.mark.parametrize("files, bad_file", [
    ({"inv.yml": BOMB_ALL_VARS}, "inv.yml"),
    ({"inv.yml": BOMB_GROUP_VARS}, "inv.yml"),
    ({"inv.yml": BOMB_HOST_VARS}, "inv.yml"),
    ({"inv.yml": "all:\n  hosts:\n    h1:\n", "host_vars/h1.yml": laughs("")},
     "host_vars/h1.yml"),
    ({"inv.yml": "all:\n  hosts:\n    h1:\n", "group_vars/all.yml": laughs("")},
     "group_vars/all.yml"),
    ({"inv.yml": "all:\n  hosts:\n    h1:\n", "host_vars/h1.json": laughs("")},
     "host_vars/h1.json"),
    ({"inv.yml": "zrelay:\n  include: ansible.yml\n", "ansible.yml": BOMB_ALL_VARS},
     "ansible.yml"),
    ({"inv.yml": "zrelay:\n  include: ansible.yml\n", "ansible.yml": BOMB_HOST_VARS},
     "ansible.yml"),
    ({"inv.yml": "zrelay:\n  include: hosts.ini\n", "hosts.ini": "h1\n",
      "host_vars/h1.yml": laughs("")}, "host_vars/h1.yml"),
], ids=["all-vars", "group-vars", "host-vars", "host_vars-file", "group_vars-file",
        "host_vars-json", "included-all-vars", "included-host-vars", "ini-host_vars"])
def test_alias_bomb_is_refused_at_the_alias(tmp_path: Path, files: dict[str, str],
                                            bad_file: str) -> None:
    write(tmp_path, files)
    result = run_cli("-i", str(tmp_path / "inv.yml"), "inventory", "validate", cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    file, line, column, message = lines[0].split(":", 3)
    assert file == str(tmp_path / bad_file)
    written = files[bad_file].splitlines()[int(line) - 1]
    assert written[int(column) - 1:].startswith("*a"), (lines[0], written)  # at an alias
    assert "alias *a" in message and "1,000,000" in message


def test_alias_bomb_in_inventory_list_json(tmp_path: Path) -> None:
    """Every command that loads the inventory refuses it; none expands it."""
    write(tmp_path, {"inv.yml": BOMB_ALL_VARS})
    result = run_cli("-i", "inv.yml", "inventory", "list", "--json", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "alias" in result.stderr and "inv.yml:" in result.stderr


def test_editing_a_file_with_an_alias_bomb(tmp_path: Path) -> None:
    """``inventory set`` compares the edited text with what it meant to write: never by
    expanding the aliases (it used to hang there). The bomb stays a problem of the file."""
    write(tmp_path, {"inv.yml": BOMB_ALL_VARS})
    result = run_cli("-i", "inv.yml", "inventory", "set", "h1", "port=2222", "--dry-run",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "+      port: 2222" in result.stdout
    assert "still has 1 problem(s)" in result.stdout + result.stderr


def test_merge_key_bomb_is_linear(tmp_path: Path) -> None:
    """``<<: [*m, *m]`` forty levels deep: 2**40 merges if each is followed again."""
    lines = ["all:", "  vars:", "    ansible_m0: &m0 {x: 1}"]
    lines += [f"    ansible_m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: {i}}}"
              for i in range(1, 41)]
    lines += ["  hosts:", "    h1:"]
    write(tmp_path, {"inv.yml": "\n".join(lines) + "\n"})
    result = run_cli("-i", "inv.yml", "inventory", "list", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    m40 = json.loads(result.stdout)["_meta"]["hostvars"]["h1"]["ansible_m40"]
    assert m40 == {"x": 1, **{f"k{i}": i for i in range(1, 41)}}


def test_group_that_contains_itself_through_an_alias(tmp_path: Path) -> None:
    """A group mapping aliased inside itself is a cycle, reported once, not a recursion crash."""
    path = write(tmp_path, {"inv.yml": """\
        all:
          children:
            g: &g
              hosts:
                h1:
              children:
                g2: *g
        """})
    result = run_cli("-i", "inv.yml", "inventory", "validate", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stdout.splitlines() == [f"{path.name}:7:9: group cycle: g2 -> g2"]


def test_group_tree_doubling_through_aliases(tmp_path: Path) -> None:
    """Each level's group lists the one below twice: read once per group, not 2**30 times."""
    lines = ["all:", "  children:", "    g0: &g0", "      hosts:", "        h1:"]
    for i in range(1, 31):
        lines += [f"    g{i}: &g{i}", "      children:",
                  f"        a{i}: *g{i - 1}", f"        b{i}: *g{i - 1}"]
    write(tmp_path, {"inv.yml": "\n".join(lines) + "\n"})
    result = run_cli("-i", "inv.yml", "inventory", "validate", cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "1 host," in result.stdout


def test_recursive_alias_is_an_error(tmp_path: Path) -> None:
    errors = validate_inventory_text(
        "all:\n  vars:\n    ansible_loop: &l [1, *l]\n  hosts:\n    h1:\n", tmp_path / "inv.yml")
    assert [(e.line, e.column) for e in errors] == [(3, 26)]  # at the alias
    assert "recursive YAML alias" in errors[0].message


def test_alias_chain_deeper_than_python_recursion(tmp_path: Path) -> None:
    """Each anchor nests the previous one: the depth is the chain's, not the text's."""
    lines = ["all:", "  hosts:", "    h1:", "      ansible_v0: &v0 [x]"]
    lines += [f"      ansible_v{i}: &v{i} [*v{i - 1}]" for i in range(1, 3000)]
    errors = validate_inventory_text("\n".join(lines) + "\n", tmp_path / "inv.yml")
    assert len(errors) == 1
    assert "nested" in errors[0].message and errors[0].line is not None


def test_shared_values_are_kept_within_the_budget(tmp_path: Path) -> None:
    """Aliases under the budget are fine and resolve to equal values (as Ansible sees them)."""
    inv = loads_inventory(textwrap.dedent("""\
        all:
          vars:
            ansible_common: &c {a: [1, 2], b: {c: d}}
            ssh_options: &o {ServerAliveInterval: 30}
          hosts:
            h1: {ansible_copy: *c, ssh_options: *o}
            h2: {ansible_copy: *c}
        """), tmp_path / "inv.yml")
    h1, h2 = inv.host("h1"), inv.host("h2")
    expected = {"a": [1, 2], "b": {"c": "d"}}
    assert h1.vars["ansible_copy"] == h2.vars["ansible_copy"] == expected
    assert h1.vars["ansible_common"] == expected
    assert h1.ssh_options == h2.ssh_options == {"ServerAliveInterval": 30}


def test_many_aliases_to_a_small_block_are_not_a_bomb(tmp_path: Path) -> None:
    """5,000 hosts each aliasing a six-value block: 30,000 values, far under the budget."""
    hosts = "".join(f"    h{i}: {{ansible_extra: *block}}\n" for i in range(5000))
    text = ("all:\n  vars:\n    ansible_block: &block {a: 1, b: 2, c: [3, 4, 5]}\n  hosts:\n"
            + hosts)
    inv = loads_inventory(text, tmp_path / "inv.yml")
    assert inv.host("h4999").vars["ansible_extra"] == {"a": 1, "b": 2, "c": [3, 4, 5]}


# --------------------------------------------------------------------------- error positions


def test_unclosed_quote_in_host_vars_points_at_the_quote(tmp_path: Path) -> None:
    write(tmp_path, {"inv.yml": "all:\n  hosts:\n    h1:\n",
                     "host_vars/h1.yml": 'user: root\naddress: "10.0.0.1\nport: 22\nsudo: true\n'})
    errors = validate_inventory(tmp_path / "inv.yml")
    assert len(errors) == 1
    error = errors[0]
    assert (error.file, error.line, error.column) == (str(tmp_path / "host_vars/h1.yml"), 2, 10)
    assert "never closed" in error.message and "quoted" in error.message


@pytest.mark.parametrize("name, text, where", [
    ("inv.yml", "all:\n  hosts:\n    h1: {address: 'x\n    h2:\n", (3, 19)),
    ("inv.yml", "all:\n  hosts:\n    h1:\n      ansible_x: [a, b\n", (4, 18)),
    ("group_vars/all.yml", "user: root\nssh_options: {A: 1\n", (2, 14)),
], ids=["single-quote", "flow-list", "flow-mapping"])
def test_unclosed_at_end_of_file_points_at_its_start(tmp_path: Path, name: str, text: str,
                                                       where: tuple[int, int]) -> None:
    files = {"inv.yml": "all:\n  hosts:\n    h1:\n"}
    files[name] = text
    write(tmp_path, files)
    errors = validate_inventory(tmp_path / "inv.yml")
    assert [(e.file, e.line, e.column) for e in errors] == [(str(tmp_path / name), *where)]
    last = len(text.splitlines())
    assert "never closed" in errors[0].message and f"line {last + 1}" in errors[0].message


def test_error_in_the_middle_keeps_its_own_position(tmp_path: Path) -> None:
    """Only a problem found at the end of the file is moved to where its construct began."""
    errors = validate_inventory_text("all:\n  hosts:\n    h1:\n  - x\n", tmp_path / "inv.yml")
    assert [(e.line, e.column) for e in errors] == [(4, 3)]


# --------------------------------------------------------------------------- suggestions


def test_sync_pattern_naming_a_target_only_host(tmp_path: Path) -> None:
    inv = loads_inventory(textwrap.dedent("""\
        all:
          hosts:
            nas1:
            vault:
        zrelay:
          jobs:
            - source: nas1:tank/data
              targets: [vault:backup/data]
        """), tmp_path / "inv.yml")
    with pytest.raises(UsageError) as caught:
        inv.jobs_matching(["vault"])
    message = str(caught.value)
    assert "did you mean 'vault'" not in message
    assert "vault is only a target" in message and "nas1:tank/data" in message


def test_non_ascii_look_alike_is_named(tmp_path: Path) -> None:
    inv = loads_inventory("all:\n  hosts:\n    nas1:\n    vault:\nzrelay:\n  jobs:\n"
                          "    - source: nas1:tank/data\n      targets: [vault:backup/d]\n",
                          tmp_path / "inv.yml")
    with pytest.raises(UsageError) as caught:
        inv.jobs_matching(["v\u0430ult"])
    assert "contains non-ASCII character U+0430 CYRILLIC SMALL LETTER A at position 2" in str(
        caught.value)


def test_non_ascii_host_in_job_target(tmp_path: Path) -> None:
    errors = validate_inventory_text(
        "all:\n  hosts:\n    nas1:\n    vault:\nzrelay:\n  jobs:\n"
        "    - source: nas1:tank/data\n      targets: [v\u0430ult:backup/d]\n",
        tmp_path / "inv.yml")
    assert len(errors) == 1
    message = errors[0].message
    assert "U+0430 CYRILLIC SMALL LETTER A at position 2" in message
    assert "did you mean 'vault'" in message


def test_suggestion_never_repeats_the_name(tmp_path: Path) -> None:
    """A host that exists but is the wrong kind of thing gets an explanation, not itself back."""
    inv = loads_inventory("all:\n  hosts:\n    nas1:\n    vault:\nzrelay:\n  jobs:\n"
                          "    - source: nas1:tank/data\n      targets: [vault:backup/d]\n",
                          tmp_path / "inv.yml")
    for pattern in ("vault", "nas1:tank/other"):
        with pytest.raises(UsageError) as caught:
            inv.jobs_matching([pattern])
        assert f"did you mean {pattern!r}" not in str(caught.value)


@pytest.mark.parametrize("job, message", [
    ("{source: 'offsite:tank/x', targets: ['nas1:tank/copy']}",
     "'offsite' in source is an S3 target, not a host; an S3 target can only be a job's target"),
    ("{source: 'nas1:tank/x', targets: ['offsite:tank/copy']}",
     "'offsite' in target is an S3 target, not a host; write it as s3:offsite in targets"),
    ("{source: 'nas1:tank/x', targets: ['s3:nas1']}",
     "unknown S3 target 'nas1'; nas1 is a host: write nas1:POOL/DATASET for a dataset there"),
], ids=["s3-as-source", "s3-as-host-target", "host-as-s3-target"])
def test_name_of_the_wrong_kind_says_what_it_is(tmp_path: Path, job: str, message: str) -> None:
    errors = validate_inventory_text(
        "all:\n  hosts:\n    nas1:\nzrelay:\n  s3_targets:\n    offsite: {bucket: b-1}\n"
        f"  jobs:\n    - {job}\n", tmp_path / "inv.yml")
    assert len(errors) == 1 and errors[0].line == 8
    assert message in errors[0].message and "did you mean" not in errors[0].message


# --------------------------------------------------------------------------- the fast paths

FLEET_GROUPS = {  # group -> (its vars, its children)
    "dc": ({"port": 2001, "user": "dc", "ansible_tag": "dc"}, ["rack1", "rack2"]),
    "rack1": ({"port": 2002, "ansible_rack": 1}, ["edge"]),
    "rack2": ({"user": "r2", "ansible_rack": 2}, []),
    "edge": ({"sudo": True}, []),
    "side": ({"max_sessions": 4, "ansible_group_priority": 5, "user": "side"}, []),
}


def fleet(tmp_path: Path, count: int) -> tuple[Path, dict[str, list[str]]]:
    """``count`` hosts spread over every combination of FLEET_GROUPS, some with own vars and
    some with host_vars files; returns the file and each host's direct groups."""
    combos = [["rack1"], ["rack2"], ["edge"], ["rack1", "side"], ["rack2", "edge"], [],
              ["side"], ["dc"]]
    members: dict[str, list[str]] = {f"n{i:05d}": combos[i % len(combos)] for i in range(count)}
    lines = ["all:", "  vars: {known_hosts: kh, ansible_everyone: yes}", "  hosts:"]
    lines += [f"    {h}: {{address: 10.9.{int(h[1:]) // 256}.{int(h[1:]) % 256}}}"
              for h, groups in members.items() if not groups]
    lines.append("  children:")
    for group, (group_vars, children) in FLEET_GROUPS.items():
        lines += [f"    {group}:", f"      vars: {json.dumps(group_vars)}", "      hosts:"]
        for host, groups in members.items():
            if group in groups:
                own = {"port": 3000 + int(host[1:]) % 7} if int(host[1:]) % 5 == 0 else {}
                lines.append(f"        {host}: {json.dumps(own) if own else ''}")
        if children:
            lines.append("      children: {" + ", ".join(f"{c}: " for c in children) + "}")
    path = tmp_path / "fleet.yml"
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "host_vars").mkdir()
    for host in list(members)[::997]:
        (tmp_path / "host_vars" / f"{host}.yml").write_text(f"user: own-{host}\n")
    return path, members


def expected_settings(host: str, groups: list[str]) -> dict[str, object]:
    """The plain precedence rules, written out for FLEET_GROUPS (deeper wins, then priority)."""
    parents = {"rack1": ["dc"], "rack2": ["dc"], "edge": ["rack1"]}
    member: set[str] = set()
    todo = list(groups)
    while todo:
        g = todo.pop()
        if g not in member:
            member.add(g)
            todo.extend(parents.get(g, []))
    depth = {"dc": 1, "side": 1, "rack1": 2, "rack2": 2, "edge": 3}
    priority = {"side": 5}
    values: dict[str, object] = {"port": 22, "user": None, "sudo": False, "max_sessions": 10}
    sources: dict[str, str] = {}
    for g in sorted(member, key=lambda g: (depth[g], priority.get(g, 1), g)):
        for key, value in FLEET_GROUPS[g][0].items():
            if not key.startswith("ansible_"):
                values[key], sources[key] = value, f"group {g}"
    number = int(host[1:])
    if groups and number % 5 == 0:
        values["port"], sources["port"] = 3000 + number % 7, f"host {host}"
    if number % 997 == 0:
        values["user"], sources["user"] = f"own-{host}", f"host {host}"
    return {"values": values, "sources": sources,
            "groups": sorted(member, key=lambda g: (depth[g], priority.get(g, 1), g))}


def test_fleet_resolves_every_host_by_the_plain_rules(tmp_path: Path) -> None:
    """Hosts in the same groups share the merging of their groups' vars: each must still get
    exactly its own result, its own dicts, and the right source for each value."""
    path, members = fleet(tmp_path, 2400)
    inventory, problems = inspect_inventory(path)
    assert problems == [] and inventory is not None
    assert list(inventory.hosts) == [h for h in members if not members[h]] + [
        h for g in FLEET_GROUPS for h in members if g in members[h] and all(
            g2 not in members[h] for g2 in list(FLEET_GROUPS)[:list(FLEET_GROUPS).index(g)])]
    for name, host in inventory.hosts.items():
        want = expected_settings(name, members[name])
        values = want["values"]
        assert (host.port, host.user, host.sudo, host.max_sessions) == (
            values["port"], values["user"], values["sudo"], values["max_sessions"]), name
        assert list(host.groups) == want["groups"], name
        assert host.known_hosts == str(tmp_path / "kh")
        for key, scope in want["sources"].items():
            assert host.setting_sources[key].scope == scope, (name, key)
        assert host.var_sources["ansible_everyone"].scope == "group all"
        assert set(host.vars) >= {"known_hosts", "ansible_everyone"}
        assert list(host.vars) == list(host.var_sources)
    one, two = inventory.host("n00001"), inventory.host("n00009")  # both only in rack2
    assert one.vars == two.vars and one.vars is not two.vars
    assert one.var_sources is not two.var_sources
    one.vars["ansible_scribble"] = 1  # type: ignore[index]  # a caller scribbling on one host
    assert "ansible_scribble" not in two.vars


def test_inspect_inventory_is_load_and_validate_in_one(tmp_path: Path) -> None:
    path, _ = fleet(tmp_path, 300)
    inventory, problems = inspect_inventory(path)
    assert problems == validate_inventory(path) == []
    assert inventory == load_inventory(path)
    bad = write(tmp_path, {"bad.yml": "all:\n  hosts:\n    h1: {port: x}\n    h1: {}\n"})
    inventory, problems = inspect_inventory(bad)
    assert [p.render() for p in problems] == [p.render() for p in validate_inventory(bad)]
    assert len(problems) == 2


def test_validate_reads_the_inventory_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from zrelay.cli.main import main
    from zrelay.inventory import load as loader

    path, _ = fleet(tmp_path, 40)
    reads: list[str] = []
    real = loader._read_text

    def counted(file: Path, *args: object, **kwargs: object) -> object:
        reads.append(str(file))
        return real(file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "_read_text", counted)
    monkeypatch.delenv("ZRELAY_INVENTORY", raising=False)
    assert main(["-i", str(path), "inventory", "validate"]) == 0
    assert "OK, 40 hosts" in capsys.readouterr().out
    assert reads.count(str(path)) == 1, reads
    reads.clear()
    assert main(["-i", str(path), "inventory", "validate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert reads.count(str(path)) == 1, reads


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_state_is_restored(tmp_path: Path, enabled: bool) -> None:
    import gc

    path, _ = fleet(tmp_path, 20)
    before = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        load_inventory(path)
        assert gc.isenabled() is enabled
        assert gc.get_freeze_count() == 0
    finally:
        (gc.enable if before else gc.disable)()


def test_host_vars_of_a_few_hosts_in_a_big_listing(tmp_path: Path) -> None:
    """host_vars/ is listed once; names that only look alike get nothing."""
    files = {"inv.yml": "all:\n  hosts:\n    web1:\n    web10:\n    web11:\n    web2:\n",
             "host_vars/web1.yml": "port: 2201\n", "host_vars/web10": "port: 2210\n",
             "host_vars/web2/a.yml": "port: 2202\n", "host_vars/web2/b.json": '{"user": "b"}\n',
             "host_vars/.web2.yml": "port: 9\n", "host_vars/web2.txt": "port: 9\n"}
    write(tmp_path, files)
    inventory = load_inventory(tmp_path / "inv.yml")
    ports = {name: host.port for name, host in inventory.hosts.items()}
    assert ports == {"web1": 2201, "web10": 2210, "web11": 22, "web2": 2202}
    assert inventory.host("web2").user == "b"

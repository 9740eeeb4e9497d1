"""``zrelay inventory``: look at the inventory as zrelay resolves it, check it, and edit it safely.

The read-only commands mirror ``ansible-inventory`` (``list``, ``graph``) so the
same questions get the same answers; ``show`` adds where each value came from.
Edits go through ``zrelay.inventory.edit``: comments and layout are kept, the
result is validated before it is written, and ``--dry-run`` shows the diff.
"""

from __future__ import annotations

import dataclasses

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from zrelay.errors import EXIT_OK, EXIT_USAGE, UsageError
from zrelay.inventory import Host, Inventory, inspect_inventory, load_inventory
from zrelay.inventory.edit import EditResult, InventoryEditor, parse_assignment
from zrelay.inventory.lifecycle_keys import lifecycle_json
from zrelay.inventory.lookup import find_inventory
from zrelay.inventory.model import name_list, suggest
from zrelay.zfs.model import ReplicaProperties

#: Host settings in the order ``show`` and ``list --json`` print them.
SETTINGS = ("address", "port", "user", "identity_file", "known_hosts", "ssh_options", "sudo",
            "max_sessions", "sends", "receives", "direct_address")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inventory", help="list, check and edit the inventory",
                       description="Show the inventory as zrelay resolves it, validate it, and "
                       "edit it without losing comments or layout.")
    cmds = p.add_subparsers(dest="inventory_command", metavar="SUBCOMMAND",
                            parser_class=type(p))
    p.set_defaults(handler=lambda args: _usage(p))

    c = cmds.add_parser("list", help="every host with its resolved settings (ansible-inventory "
                        "--list)")
    c.add_argument("--json", action="store_true", help="Ansible's --list JSON, plus zrelay's "
                   "resolved settings under _meta.zrelay")
    c.set_defaults(handler=run_list)

    c = cmds.add_parser("graph", help="the group tree (ansible-inventory --graph)",
                        description="The group tree from GROUP down: child groups first, then hosts.")
    c.add_argument("group", nargs="?", default="all", help="start here (default: all)")
    c.add_argument("--json", action="store_true",
                   help='print the tree as JSON: {"name": GROUP, "hosts": [HOST, ...], "children": '
                        '[the same for each child group], "cycle": false}; a group met again below '
                        'itself has "cycle": true and no hosts or children')
    c.set_defaults(handler=run_graph)

    c = cmds.add_parser("show", help="one host's settings and variables, and where each came "
                        "from")
    c.add_argument("host")
    c.add_argument("--json", action="store_true", help="print as JSON")
    c.set_defaults(handler=run_show)

    c = cmds.add_parser("validate", help="report every problem (file:line:column); exit 2 if "
                        "there is one",
                        description="Report every problem of the inventory, each at file:line:column; "
                                    "exit 2 if there is one, else 0.")
    c.add_argument("--json", action="store_true",
                   help='print {"inventory": PATH, "ok": BOOL, "problems": [{"file", "line", "column", '
                        '"message", "text"}], "summary": {"hosts", "groups", "jobs", "s3_targets", '
                        '"files"} or null when there are problems}; the exit code is the same')
    c.set_defaults(handler=run_validate)

    c = _edit_parser(cmds, "add-host", "add a host (to --group, created if new; else to all)")
    c.add_argument("name", help="host name (a range such as nas[04:06] adds several)")
    c.add_argument("--address", help="how zrelay reaches it (default: the host name)")
    c.add_argument("--group", help="group to list it in (default: all)")
    c.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                   help="a host setting, e.g. --var port=2222 (repeatable)")
    c.set_defaults(handler=run_add_host)

    c = _edit_parser(cmds, "set", "set variables on a host or a group's vars")
    c.add_argument("target", metavar="HOST|GROUP")
    c.add_argument("assignments", nargs="+", metavar="KEY=VALUE",
                   help="22 is a number, true/false/yes/no booleans, '22' (quoted) a string")
    c.set_defaults(handler=run_set)

    c = _edit_parser(cmds, "unset", "remove variables from a host or a group's vars")
    c.add_argument("target", metavar="HOST|GROUP")
    c.add_argument("keys", nargs="+", metavar="KEY")
    c.set_defaults(handler=run_unset)

    c = _edit_parser(cmds, "remove-host", "remove a host from every group in the inventory")
    c.add_argument("name")
    c.add_argument("--force", action="store_true",
                   help="also remove its jobs, and its targets from other jobs")
    c.set_defaults(handler=run_remove_host)

    c = _edit_parser(cmds, "add-job", "add a replication job")
    c.add_argument("source", metavar="HOST:DATASET")
    c.add_argument("--to", action="append", default=[], required=True, metavar="TARGET",
                   help="HOST:DATASET or s3:NAME (repeatable)")
    c.add_argument("--recursive", action="store_true", help="include every descendant dataset")
    c.add_argument("--prefix", help="only snapshots whose names start with this")
    c.add_argument("--name", help="job name (default: the source)")
    c.set_defaults(handler=run_add_job)

    c = _edit_parser(cmds, "add-s3-target", "add an S3 bucket jobs can replicate into")
    c.add_argument("name")
    c.add_argument("--bucket", required=True)
    c.add_argument("--endpoint", metavar="URL", help="S3-compatible endpoint (omit for AWS)")
    c.add_argument("--prefix", help="prepended to every object key")
    c.add_argument("--storage-class", help="e.g. STANDARD_IA, GLACIER_IR")
    c.add_argument("--region")
    c.set_defaults(handler=run_add_s3_target)


def _edit_parser(cmds: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = cmds.add_parser(name, help=text, description=text + ". "
                                                      "Comments and layout are kept; the result "
                                                      "is validated before it is written.")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="print the change as a unified diff; write nothing")
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _load(args: argparse.Namespace) -> Inventory:
    return load_inventory(find_inventory(args.inventory))


# --------------------------------------------------------------------------- read-only


def _plain(value: Any) -> Any:
    """JSON-safe copy of a variable (dates and tagged strings become text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)


def host_settings(inventory: Inventory, host: Host) -> dict[str, Any]:
    """A host's resolved zrelay settings, limits filled in from the fleet defaults."""
    result = {key: _plain(getattr(host, key)) for key in SETTINGS}
    result["sends"] = inventory.sends_limit(host.name)
    result["receives"] = inventory.receives_limit(host.name)
    result["groups"] = list(host.groups)
    return result


def list_json(inventory: Inventory) -> dict[str, Any]:
    """``ansible-inventory --list`` shape, with zrelay's view under ``_meta.zrelay``."""
    data: dict[str, Any] = {"_meta": {"hostvars": {
        name: _plain(dict(host.vars)) for name, host in inventory.hosts.items()}}}
    for name, group in inventory.groups.items():
        entry: dict[str, Any] = {}
        hosts = [h for h in group.hosts if h in inventory.hosts]
        if name == "all":
            hosts = []
        if hosts:
            entry["hosts"] = hosts
        children = list(group.children)
        if name == "all" and "ungrouped" in inventory.groups and "ungrouped" not in children:
            children.insert(0, "ungrouped")
        if children:
            entry["children"] = children
        data[name] = entry
    data["_meta"]["zrelay"] = {
        "inventory": str(inventory.path),
        "sources": list(inventory.sources),
        "hosts": {name: host_settings(inventory, h) for name, h in inventory.hosts.items()},
        "jobs": [{"name": j.name, "source": str(j.source), "recursive": j.recursive, "exclude": list(j.exclude),
                  "snapshots": {"prefix": j.select.prefix, "regex": j.select.regex},
                  "targets": [str(t) for t in j.targets], **lifecycle_json(j.lifecycle),
                  "rpo": j.rpo, "schedule": {kind: s.text for kind, s in j.schedule.items()},
                  "properties": properties_json(j.properties),
                  "target_properties": {t: properties_json(p) for t, p in j.target_properties.items()},
                  "allow_rollback": j.allow_rollback, "bandwidth": j.bandwidth,
                  "drill_to": str(j.drill_to) if j.drill_to is not None else None}
                 for j in inventory.jobs],
        "s3_targets": {name: {"bucket": t.bucket, "endpoint": t.endpoint, "prefix": t.prefix,
                              "region": t.region, "storage_class": t.storage_class,
                              "profile": t.profile, "addressing_style": t.addressing_style,
                              "push": t.push.text if t.push is not None else None}
                       for name, t in inventory.s3_targets.items()},
        "settings": {"snapshot_name": inventory.settings.snapshot_name,
                     "sends_per_host": inventory.settings.sends_per_host,
                     "receives_per_host": inventory.settings.receives_per_host,
                     "daemon": daemon_json(inventory)},
    }
    return data


def properties_json(props: ReplicaProperties) -> dict[str, Any]:
    """A job's (or target entry's) ``properties:`` as in force, defaults filled in."""
    return {"send": props.send, "set": dict(props.set), "exclude": list(props.exclude)}


def daemon_json(inventory: Inventory) -> dict[str, Any]:
    """The ``zrelay.daemon:`` settings as they are in force (defaults filled in); the webhook's
    secrets (password, query values) are not printed."""
    from zrelay.daemon.notify import redact_url

    daemon = inventory.settings.daemon
    data = dataclasses.asdict(daemon)
    data["group_limits"] = dict(daemon.group_limits)
    data["windows"] = [{"group": w.group, "hours": w.text, "kinds": list(w.kinds)} for w in daemon.windows]
    if daemon.notify.webhook is not None:
        data["notify"]["webhook"] = redact_url(daemon.notify.webhook)
    return data


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
            for row in rows]


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def summary_counts(inventory: Inventory) -> dict[str, int]:
    """What the inventory holds: ``validate``'s line and its ``--json`` summary."""
    return {"hosts": len(inventory.hosts),
            "groups": len([g for g in inventory.groups if g not in ("all", "ungrouped")]),
            "jobs": len(inventory.jobs), "s3_targets": len(inventory.s3_targets),
            "files": len(inventory.sources)}


def _summary(inventory: Inventory) -> str:
    n = summary_counts(inventory)
    return (f"{_count(n['hosts'], 'host')}, {_count(n['groups'], 'group')}, {_count(n['jobs'], 'job')}, "
            f"{_count(n['s3_targets'], 'S3 target')}")


def run_list(args: argparse.Namespace) -> int:
    inventory = _load(args)
    if args.json:
        json.dump(list_json(inventory), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    rows = [["HOST", "ADDRESS", "PORT", "USER", "SUDO", "SENDS", "RECEIVES", "GROUPS"]]
    for name, host in inventory.hosts.items():
        rows.append([name, host.address, str(host.port), host.user or "-",
                     "yes" if host.sudo else "no", str(inventory.sends_limit(name)),
                     str(inventory.receives_limit(name)), ",".join(host.groups) or "-"])
    if len(rows) > 1:
        print("\n".join(_table(rows)))
    print(f"{_summary(inventory)} ({inventory.path})")
    return EXIT_OK


def graph_lines(inventory: Inventory, group: str) -> list[str]:
    """``ansible-inventory --graph``: ``@group:`` lines, child groups first, then hosts."""
    lines: list[str] = []

    def walk(name: str, depth: int, seen: frozenset[str]) -> None:
        pad = "  |" * depth
        lines.append(f"{pad}--@{name}:" if depth else f"@{name}:")
        if name in seen:
            return
        children = list(inventory.groups[name].children)
        if name == "all" and "ungrouped" in inventory.groups and "ungrouped" not in children:
            children.append("ungrouped")
        for child in children:
            if child in inventory.groups:
                walk(child, depth + 1, seen | {name})
        hosts = inventory.groups[name].hosts if name != "all" else ()
        for host in hosts:
            lines.append(f"{pad}  |--{host}")

    walk(group, 0, frozenset())
    return lines


def graph_json(inventory: Inventory, group: str) -> dict[str, Any]:
    """The tree ``graph`` draws, as data: the same children, hosts and order."""

    def walk(name: str, seen: frozenset[str]) -> dict[str, Any]:
        if name in seen:
            return {"name": name, "hosts": [], "children": [], "cycle": True}
        children = list(inventory.groups[name].children)
        if name == "all" and "ungrouped" in inventory.groups and "ungrouped" not in children:
            children.append("ungrouped")
        hosts = list(inventory.groups[name].hosts) if name != "all" else []
        return {"name": name, "hosts": hosts,
                "children": [walk(c, seen | {name}) for c in children if c in inventory.groups], "cycle": False}

    return walk(group, frozenset())


def run_graph(args: argparse.Namespace) -> int:
    inventory = _load(args)
    if args.group not in inventory.groups:
        raise UsageError(f"no group {args.group!r}{suggest(args.group, inventory.groups)}; "
                         f"groups: {name_list(inventory.groups)}")
    if args.json:
        json.dump(graph_json(inventory, args.group), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    print("\n".join(graph_lines(inventory, args.group)))
    return EXIT_OK


def _relative(text: str) -> str:
    try:
        return str(Path(text).relative_to(Path.cwd()))
    except ValueError:
        return text


def show_data(inventory: Inventory, host: Host) -> dict[str, Any]:
    """One host's settings (value, level, place) and every variable as written."""
    settings: dict[str, Any] = {}
    resolved = host_settings(inventory, host)
    for key in SETTINGS:
        source = host.setting_sources.get(key)
        if source is not None:
            where = str(source.origin) if source.origin else None
            settings[key] = {"value": resolved[key], "from": source.scope, "at": where}
        elif key in ("sends", "receives"):
            settings[key] = {"value": resolved[key], "from": f"zrelay.limits.{key}_per_host",
                             "at": None}
        else:
            settings[key] = {"value": resolved[key], "from": "default", "at": None}
    variables = {}
    for key, value in host.vars.items():
        source = host.var_sources.get(key)
        variables[key] = {"value": _plain(value), "from": source.scope if source else None,
                          "at": str(source.origin) if source and source.origin else None}
    return {"host": host.name, "defined_at": str(host.origin) if host.origin else None,
            "groups": list(host.groups), "settings": settings, "vars": variables}


def run_show(args: argparse.Namespace) -> int:
    inventory = _load(args)
    host = inventory.host(args.host)
    data = show_data(inventory, host)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    at = f"  ({_relative(data['defined_at'])})" if data["defined_at"] else ""
    print(f"host {host.name}{at}")
    print(f"groups: {', '.join(host.groups) or '(none)'}")
    print()

    def shown(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        return str(value)

    rows = [["SETTING", "VALUE", "FROM", "AT"]]
    for key, item in data["settings"].items():
        rows.append([key, shown(item["value"]), item["from"],
                     _relative(item["at"]) if item["at"] else ""])
    print("\n".join(_table(rows)))
    if data["vars"]:
        print()
        rows = [["VARIABLE", "VALUE", "FROM", "AT"]]
        for key, item in data["vars"].items():
            rows.append([key, shown(item["value"]), item["from"] or "",
                         _relative(item["at"]) if item["at"] else ""])
        print("\n".join(_table(rows)))
    return EXIT_OK


def run_validate(args: argparse.Namespace) -> int:
    path = find_inventory(args.inventory)
    inventory, problems = inspect_inventory(path)  # one reading: a fleet's files are big
    if args.json:
        summary = None if problems or inventory is None else summary_counts(inventory)
        json.dump({"inventory": str(path), "ok": not problems,
                   "problems": [{"file": p.file, "line": p.line, "column": p.column, "message": p.message,
                                 "text": p.render()} for p in problems],
                   "summary": summary}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_USAGE if problems else EXIT_OK
    if problems:
        for problem in problems:
            print(problem.render())
        print(f"zrelay: {_count(len(problems), 'problem')} in {path}", file=sys.stderr)
        return EXIT_USAGE
    assert inventory is not None  # built whenever there is no problem
    files = len(inventory.sources)
    print(f"{path}: OK, {_summary(inventory)}"
          + (f" ({files} files read)" if files > 1 else ""))
    return EXIT_OK


# --------------------------------------------------------------------------- edits


def _edit(args: argparse.Namespace, change: Callable[[InventoryEditor], None]) -> int:
    """Open, change, validate, then print the diff (--dry-run) or write atomically."""
    editor = InventoryEditor(find_inventory(args.inventory))
    change(editor)
    result: EditResult = editor.result()
    if result.new == result.old:
        print(f"{result.path}: nothing to change")
        return EXIT_OK
    if args.dry_run:
        sys.stdout.write(result.diff())
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"dry run: {result.path} not changed", file=sys.stderr)
        return EXIT_OK
    result.write()
    for line in result.changes:
        print(f"{result.path}: {line}")
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


def run_add_host(args: argparse.Namespace) -> int:
    variables = [parse_assignment(v) for v in args.var]
    return _edit(args, lambda e: e.add_host(args.name, args.address, args.group, variables))


def run_set(args: argparse.Namespace) -> int:
    assignments = [parse_assignment(a) for a in args.assignments]
    return _edit(args, lambda e: e.set_vars(args.target, assignments))


def run_unset(args: argparse.Namespace) -> int:
    return _edit(args, lambda e: e.unset_vars(args.target, args.keys))


def run_remove_host(args: argparse.Namespace) -> int:
    return _edit(args, lambda e: e.remove_host(args.name, args.force))


def run_add_job(args: argparse.Namespace) -> int:
    return _edit(args, lambda e: e.add_job(args.source, args.to, args.recursive, args.prefix,
                                           args.name))


def run_add_s3_target(args: argparse.Namespace) -> int:
    return _edit(args, lambda e: e.add_s3_target(args.name, args.bucket, args.endpoint,
                                                 args.prefix, args.storage_class, args.region))

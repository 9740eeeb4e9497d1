"""``zrelay allow``: the ``zfs allow`` delegations that let zrelay log in as an ordinary user.

zrelay.allow derives from the inventory, per host and dataset, the permissions of the commands
zrelay runs there (as a job's source, or on the parent of a job's target) for the host's
``user:`` (or ``--user``). By default (``--dry-run``) the commands are printed and nothing
connects; ``--apply`` runs them over the inventory's own connection, which must be privileged
(root, or ``sudo: true``), creating a target's missing parent first as a sync would;
``--check`` reads ``zfs allow`` on each dataset and says what is missing (exit 1 then).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field, replace

from zrelay import allow
from zrelay.cli import layout, output
from zrelay.cli.layout import Line
from zrelay.engine import Fleet
from zrelay.errors import EXIT_JOB_FAILED, EXIT_OK, DatasetNotFound, InvalidName, UsageError, ZrelayError
from zrelay.inventory import Inventory, load_inventory
from zrelay.transport.host import RemoteHost
from zrelay.zfs import commands, parse, quoting
from zrelay.zfs.model import Identity

NO_DELEGATION = ("{flavor} cannot delegate permissions (`zfs allow` is missing there): zrelay must log in "
                 "as root (or with sudo: true) on this host")


def register(sub: argparse._SubParsersAction) -> None:
    text = "delegate (zfs allow) what zrelay needs per host, to run without root"
    p = sub.add_parser("allow", help=text,
                       description="Per host, the `zfs allow` permissions zrelay needs as the host's user: on "
                                   "each job's source, and on the parent of each job's target. Prints the "
                                   "commands (nothing connects), runs them (--apply, over the inventory's "
                                   "privileged connection) or checks what is delegated (--check, exit 1 "
                                   "when anything is missing).")
    p.add_argument("patterns", nargs="*", metavar="HOST", help="host or group (default: every host a job uses)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-n", "--dry-run", action="store_true",
                      help="print the commands per host; connect to nothing (the default)")
    mode.add_argument("--apply", action="store_true",
                      help="run them on each host (the inventory's user there must be root or have sudo: true)")
    mode.add_argument("--check", action="store_true",
                      help="read what is delegated on each dataset and list what is missing (exit 1 then)")
    p.add_argument("--user", metavar="NAME",
                   help="delegate to NAME instead of each host's user: (e.g. while user: is still root)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


# --- results -----------------------------------------------------------------------------------


@dataclass
class GrantResult:
    """One grant on one host: what --apply ran, or what --check found missing."""

    grant: allow.Grant
    commands: list[str] = field(default_factory=list)   # exact command lines run (--apply)
    missing: tuple[str, ...] = ()                        # --check
    error: str | None = None


@dataclass
class HostResult:
    plan: allow.HostAllow
    grants: list[GrantResult] = field(default_factory=list)
    error: str | None = None                 # the host as a whole (unreachable, no zfs allow, …)
    pools_off: list[str] = field(default_factory=list)   # pools with delegation=off (--check)

    @property
    def bad(self) -> bool:
        return bool(self.error or self.pools_off or any(g.error or g.missing for g in self.grants))


async def _apply_host(host: RemoteHost, plan: allow.HostAllow) -> HostResult:
    result = HostResult(plan)
    caps = await host.capabilities()
    if not caps.delegation:
        result.error = NO_DELEGATION.format(flavor=caps.flavor.value)
        return result
    assert plan.user is not None
    for grant in plan.grants:
        done = GrantResult(grant)
        result.grants.append(done)
        try:
            if grant.parent_of and not await host.exists(grant.dataset):
                create = commands.create_argv(grant.dataset, parents=True)
                await host.zfs(create, dataset=grant.dataset)
                done.commands.append(host.command(create))
            argv = grant.argv(plan.user)
            await host.zfs(argv, dataset=grant.dataset)
            done.commands.append(host.command(argv))
        except DatasetNotFound:
            done.error = f"{grant.dataset} does not exist on {plan.host}"
        except ZrelayError as exc:
            done.error = str(exc)
    return result


async def _identity(host: RemoteHost, user: str) -> Identity:
    """``id USER`` on the host (never through sudo: it needs no privilege)."""
    got = await host.conn.run(quoting.quote(commands.identity_argv(user)), check=False)
    if got.exit_status != 0:
        raise UsageError(f"user {user} does not exist on {host.name} "
                         f"({(got.stderr or got.stdout).strip() or f'id exit {got.exit_status}'})")
    return parse.parse_identity(got.stdout)


async def _check_host(host: RemoteHost, plan: allow.HostAllow) -> HostResult:
    result = HostResult(plan)
    caps = await host.capabilities()
    if not caps.delegation:
        result.error = NO_DELEGATION.format(flavor=caps.flavor.value)
        return result
    assert plan.user is not None
    identity = await _identity(host, plan.user)
    for pool in allow.pools(plan.grants):
        try:
            on = parse.parse_on_off((await host.zfs(commands.delegation_argv(pool), dataset=pool)).stdout,
                                    f"{pool} delegation")
        except (ZrelayError, ValueError) as exc:
            result.error = f"pool {pool}: {exc}"
            return result
        if not on:
            result.pools_off.append(pool)
    for grant in plan.grants:
        done = GrantResult(grant)
        result.grants.append(done)
        try:
            shown = await host.zfs(commands.allow_show_argv(grant.dataset), dataset=grant.dataset)
            done.missing = allow.missing(grant, parse.parse_allow(shown.stdout), identity)
        except DatasetNotFound:
            done.missing = grant.sorted_permissions
            done.error = f"{grant.dataset} does not exist" + (" (--apply creates it)" if grant.parent_of else "")
        except (ZrelayError, ValueError) as exc:
            done.error = str(exc)
    return result


async def _sent_properties(fleet: Fleet, plans: list[allow.HostAllow]
                           ) -> tuple[dict[allow.Sent, frozenset[str]], dict[allow.Sent, str]]:
    """What each source a target grant depends on sends with ``zfs send -p`` (as permissions), and
    why a source could not be read. A source that does not exist yet sends nothing yet."""
    wanted = list(dict.fromkeys(s for p in plans if not p.skipped for g in p.grants for s in g.sent_from))

    async def one(sent: allow.Sent) -> tuple[allow.Sent, frozenset[str] | None, str | None]:
        try:
            got = await fleet.host(sent.host).zfs(commands.sent_properties_argv(sent.dataset, sent.recursive),
                                                  dataset=sent.dataset)
            return sent, parse.parse_sent_properties(got.stdout), None
        except DatasetNotFound:
            return sent, frozenset(), None
        except (ZrelayError, ValueError) as exc:
            return sent, None, f"cannot read the properties {sent} sends: {exc}"

    found: dict[allow.Sent, frozenset[str]] = {}
    errors: dict[allow.Sent, str] = {}
    for sent, perms, error in await asyncio.gather(*(one(s) for s in wanted)):
        if perms is not None:
            found[sent] = perms
        if error is not None:
            errors[sent] = error
    return found, errors


async def _each_host(inventory: Inventory, plans: list[allow.HostAllow], check: bool) -> list[HostResult]:
    async def one(fleet: Fleet, plan: allow.HostAllow, errors: dict[allow.Sent, str]) -> HostResult:
        if plan.skipped:
            return HostResult(plan)
        unread = [errors[s] for g in plan.grants for s in g.sent_from if s in errors]
        if unread:   # granting less than the receive needs would only fail later, in a sync
            return HostResult(plan, error=unread[0])
        try:
            host = fleet.host(plan.host)
            return await (_check_host(host, plan) if check else _apply_host(host, plan))
        except ZrelayError as exc:
            return HostResult(plan, error=str(exc))

    async with Fleet(inventory) as fleet:
        sent, errors = await _sent_properties(fleet, plans)
        plans = [replace(p, grants=tuple(allow.with_sent(g, sent) for g in p.grants)) for p in plans]
        return list(await asyncio.gather(*(one(fleet, p, errors) for p in plans)))


# --- output ------------------------------------------------------------------------------------


def _command(inventory: Inventory, host: str, argv: list[str]) -> str:
    """The exact line --apply runs on ``host`` (sudo where the host has it)."""
    return quoting.remote_command(argv, sudo=inventory.host(host).sudo)


def _grant_json(inventory: Inventory, plan: allow.HostAllow, g: allow.Grant) -> dict[str, object]:
    return {"dataset": g.dataset, "permissions": list(g.sorted_permissions), "roles": list(g.roles),
            "targets_below": list(g.parent_of), "properties_from": [str(s) for s in g.sent_from],
            "command": _command(inventory, plan.host, g.argv(plan.user)) if plan.user and not plan.skipped else None}


def _plan_json(inventory: Inventory, plans: list[allow.HostAllow]) -> dict[str, object]:
    return {"hosts": [{"host": p.host, "user": p.user, "skipped": p.skipped,
                       "grants": [_grant_json(inventory, p, g) for g in p.grants]} for p in plans]}


def _print_plan(inventory: Inventory, plans: list[allow.HostAllow]) -> None:
    w = output.width()
    lines: list[Line] = []
    for p in plans:
        head: Line = [(p.host, "bold"), (f" (user {p.user})" if p.user else "", "")]
        if p.skipped:
            lines += layout.wrap([*head, (f": {p.skipped}", "dim")], w, 0, 4)
            continue
        lines.append(head)
        assert p.user is not None
        for g in p.grants:
            why = "; ".join(g.roles)
            if g.parent_of:
                why += " (must exist: --apply creates it)"
            if g.sent_from:
                why += (f"; plus the properties {', '.join(map(str, g.sent_from))} sends (send -p), "
                        "read from there by --apply and --check")
            lines += layout.wrap(f"# {why}", w, 4, 6, style="dim")
            lines.append(output.command_line(p.host, _command(inventory, p.host, g.argv(p.user))))
    if any(p.grants and not p.skipped for p in plans):
        lines += layout.wrap("Then log in as these users (user: in the inventory, sudo: false); "
                                    "`zrelay allow --check` verifies.", w)
    output.print_lines(lines)


def _results_json(results: list[HostResult], check: bool) -> dict[str, object]:
    hosts = []
    for r in results:
        grants = [{"dataset": g.grant.dataset, "permissions": list(g.grant.sorted_permissions),
                   "roles": list(g.grant.roles), "error": g.error,
                   **({"missing": list(g.missing)} if check else {"commands": g.commands})} for g in r.grants]
        hosts.append({"host": r.plan.host, "user": r.plan.user, "skipped": r.plan.skipped, "error": r.error,
                      **({"delegation_off": r.pools_off} if check else {}), "grants": grants})
    return {"mode": "check" if check else "apply", "ok": not any(r.bad for r in results), "hosts": hosts}


def _result_lines(results: list[HostResult], check: bool, width: int | None) -> list[Line]:
    """Per host a line (its user, or why nothing was done there), then one per dataset: ok, what is
    missing or granted, or the error; each wrapped to the width, never cutting a word."""
    bad = sum(1 for r in results if r.bad)
    lines: list[Line] = [[(f"zrelay allow --check: {len(results)} host(s), {bad} with something missing" if check
                           else f"zrelay allow --apply: {len(results)} host(s), {bad} with errors", "bold")]]
    for r in results:
        head: Line = [(r.plan.host, "bold"), (f" (user {r.plan.user})" if r.plan.user else "", "")]
        if r.plan.skipped or r.error:
            lines += layout.wrap([*head, (": ", ""), (r.plan.skipped or r.error or "", "dim" if r.plan.skipped else "red")],
                                 width, 0, 4)
            continue
        lines.append(head)
        for pool in r.pools_off:
            lines += layout.wrap([(pool, ""), (f"  delegation=off: zfs ignores every grant (zpool set delegation=on "
                                               f"{pool})", "red")], width, 2, 6)
        for g in r.grants:
            if g.error:
                verdict = (f"  {g.error}", "red")
            elif check and g.missing:
                verdict = (f"  missing {','.join(g.missing)}", "red")
            elif check:
                verdict = ("  ok", "green")
            else:
                verdict = (f"  granted {','.join(g.grant.sorted_permissions)}", "green")
            lines += layout.wrap([(g.grant.dataset, ""), verdict, (f"  ({'; '.join(g.grant.roles)})", "dim")],
                                 width, 2, 6)
    return lines


def _print_results(results: list[HostResult], check: bool) -> None:
    output.print_lines(_result_lines(results, check, output.width()))
    if not check:
        for r in results:
            for g in r.grants:
                for command in g.commands:
                    output.print_lines([output.command_line(r.plan.host, command)])


def run(args: argparse.Namespace) -> int:
    from zrelay.cli.main import find_inventory

    if args.user is not None:
        try:
            commands.check_user(args.user)
        except InvalidName as exc:
            raise UsageError(f"--user: {exc}") from None
    inventory = load_inventory(find_inventory(args.inventory))
    plans = allow.plan(inventory, allow.select_hosts(inventory, args.patterns), args.user)
    if not (args.apply or args.check):
        if args.json:
            json.dump(_plan_json(inventory, plans), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            _print_plan(inventory, plans)
        return EXIT_OK
    results = asyncio.run(_each_host(inventory, plans, args.check))
    if args.json:
        json.dump(_results_json(results, args.check), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_results(results, args.check)
    return EXIT_JOB_FAILED if any(r.bad for r in results) else EXIT_OK

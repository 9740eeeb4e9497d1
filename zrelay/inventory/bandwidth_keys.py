"""``zrelay.bandwidth_groups``: a bandwidth budget shared by the streams of a group of hosts.

Internal to zrelay.inventory. The per-stream limits (``bandwidth`` on a job, a host or group
variable, an S3 target) are single values, checked by ``values.check_bandwidth``. A budget
group is written under ``zrelay:`` rather than as a group variable because a group variable
is inherited by each host of the group: ``bandwidth`` there limits every stream of each host
on its own, while a budget is one figure that all of the group's streams running at once
divide among themselves (zrelay.paths.throttle). Whether each group exists is checked once
the inventory's groups are known (service_keys.check_groups, as for the daemon's limits).
"""

from __future__ import annotations

from zrelay.inventory.build import Builder
from zrelay.inventory.values import Bad, check_bandwidth
from zrelay.inventory.yamlread import Node, NodeReader


def read_bandwidth_groups(reader: NodeReader, builder: Builder, node: Node) -> None:
    """``{GROUP: RATE}`` into the settings; each group's name is checked at the end."""
    budgets: dict[str, int] = {}
    for group, k_node, v_node in reader.pairs(node, "bandwidth_groups") or []:
        try:
            budgets[group] = check_bandwidth(reader.value(v_node), f"bandwidth_groups.{group}")
        except Bad as bad:
            reader.fail(v_node, str(bad))
            continue
        builder.daemon_groups.append(("bandwidth_groups", group, reader.place(k_node)))
    builder.settings["bandwidth_groups"] = budgets

"""The daemon loop's pure helpers: keepalives on persistent connections, history kept across restarts."""

from __future__ import annotations

from zrelay.daemon.service import history_dict, history_from, with_keepalive, KEEPALIVE
from zrelay.inventory import loads_inventory
from zrelay.lifecycle.timetable import History

INV = """\
all:
  hosts:
    a: {address: 192.0.2.1}
    b: {address: 192.0.2.2, ssh_options: {ServerAliveInterval: 5}}
zrelay:
  jobs:
    - source: a:tank/x
      targets: [b:tank/x]
"""


def test_keepalive_is_added_only_where_the_inventory_has_none() -> None:
    inventory = with_keepalive(loads_inventory(INV, "inv.yml"))
    assert inventory.hosts["a"].ssh_options["ServerAliveInterval"] == KEEPALIVE
    assert inventory.hosts["b"].ssh_options["ServerAliveInterval"] == 5


def test_history_round_trips_and_ignores_fields_it_does_not_know() -> None:
    history = History(last_started=1.0, last_finished=2.0, last_outcome="failed", failures=3, parked=None)
    assert history_from(history_dict(history)) == history
    assert history_from({**history_dict(history), "from_a_newer_daemon": 1}) == history

"""Problems found while reading an inventory, each located at file:line:column.

Internal to zrelay.inventory: every reader and check records into one Errors, so
``inventory validate`` can list them all in file order, each once.
"""

from __future__ import annotations

from zrelay.errors import InventoryError
from zrelay.inventory.model import Origin

#: Where a value was written, as (file, line, column), both 1-based: what readers keep for
#: every key and value. A tuple costs a fraction of an Origin, and a fleet of 50,000 hosts
#: needs only few of them as Origins (an error, a source someone asks about).
Place = tuple[str, int, int]


class Errors:
    """Every problem found so far, in the order found."""

    def __init__(self) -> None:
        self.items: list[InventoryError] = []
        self._seen: set[str] = set()

    def add(self, where: Origin | Place, message: str) -> None:
        """Record one problem; a node reached twice (through a YAML alias) is reported once."""
        origin = where if isinstance(where, Origin) else Origin(*where)
        error = origin.error(message)
        if error.render() not in self._seen:
            self._seen.add(error.render())
            self.items.append(error)

    def sorted(self) -> list[InventoryError]:
        """File order, so the first error is the first one a reader of the file meets."""
        return sorted(self.items, key=lambda e: (e.file or "", e.line or 0, e.column or 0))

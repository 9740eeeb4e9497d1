"""Read an inventory file into an Inventory, locating every problem at file:line:column.

The public entry points (``load_inventory``, ``inspect_inventory``, ``validate_inventory``
and their ``*_text`` forms). Why two stages: *readers* (``sources``, ``section``, over the
YAML node tree of ``yamlread``) walk each source into a ``Builder`` of raw groups, hosts,
vars and the ``zrelay:`` section, each value checked on its own (``values``) and tagged
with where it was written; then ``Builder.finish`` merges variables by precedence
(``resolve``), resolves references and builds the model.
"""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path
from typing import Iterator

from zrelay.errors import InventoryError
from zrelay.inventory.ansible import looks_like_ini
from zrelay.inventory.build import Builder
from zrelay.inventory.model import Inventory, Origin
from zrelay.inventory.problems import Errors
from zrelay.inventory.sources import ZRELAY_SECTION, InventoryReader, read_ini, read_vars_dirs
from zrelay.inventory.sources import read_text as _read_text
from zrelay.inventory.values import HOST_ALIASES, snapshot_name_problem
from zrelay.inventory.yamlread import compose, same_yaml_data

__all__ = [
    "HOST_ALIASES", "ZRELAY_SECTION", "inspect_inventory", "inspect_inventory_text",
    "load_inventory", "loads_inventory", "same_yaml_data", "snapshot_name_problem",
    "validate_inventory", "validate_inventory_text",
]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Reading makes millions of small objects and no garbage cycles worth collecting
    meanwhile; the cyclic collector would walk them again and again (two fifths of the
    time it took to read 50,000 hosts). Cycles made meanwhile are collected later.

    Afterwards what was made is handed to the oldest generation unexamined (freeze, then
    unfreeze): left in the youngest, the first collection would walk all of it at once.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if not gc.get_freeze_count():  # nobody else froze objects: ours to move
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def _parse(text: str, path: Path, errors: Errors) -> Inventory | None:
    """Read the inventory at ``path`` (whose text is ``text``) and everything it pulls in.

    A YAML file is a zrelay inventory (strict); an INI file is an Ansible
    inventory and is read as Ansible reads it. group_vars/ and host_vars/
    beside each inventory file are read after every inventory file.
    """
    with _collector_paused():
        return _parse_now(text, path, errors)


def _parse_now(text: str, path: Path, errors: Errors) -> Inventory | None:
    file = str(path)
    base_dir = os.path.dirname(os.path.abspath(file))
    builder = Builder(path, errors)
    if looks_like_ini(text, path):
        builder.add_vars_dir(base_dir, ansible=True)
        read_ini(builder, text, path, base_dir)
    else:
        root = compose(text, path, errors)
        if root is None:
            if not errors.items:
                errors.add(Origin(file, 1, 1),
                           "inventory is empty; expected a mapping with an 'all:' group")
            return None
        builder.strict_files.add(file)
        InventoryReader(file, base_dir, builder, errors).read(root)
        del root  # freed before the model is built: a fleet's node tree is most of the memory
        builder.add_vars_dir(base_dir, ansible=False)
    read_vars_dirs(builder)
    return builder.finish()


def validate_inventory_text(text: str, path: str | Path = "<inventory>") -> list[InventoryError]:
    """Every problem in inventory ``text`` (relative paths resolve against ``path``'s directory)."""
    errors = Errors()
    _parse(text, Path(path), errors)
    return errors.sorted()


def inspect_inventory_text(text: str, path: str | Path) -> tuple[Inventory | None,
                                                                list[InventoryError]]:
    """The inventory as far as it could be built, and every problem (for editing a broken file)."""
    errors = Errors()
    inventory = _parse(text, Path(path), errors)
    return inventory, errors.sorted()


def loads_inventory(text: str, path: str | Path = "<inventory>") -> Inventory:
    """Inventory from ``text``; raise its first InventoryError."""
    errors = Errors()
    inventory = _parse(text, Path(path), errors)
    if errors.items or inventory is None:
        raise errors.sorted()[0]
    return inventory


def validate_inventory(path: str | Path) -> list[InventoryError]:
    """Every problem in the inventory file, in file order (empty: it is valid)."""
    errors = Errors()
    path = Path(path)
    text = _read_text(path, errors)
    if text is not None:
        _parse(text, path, errors)
    return errors.sorted()


def inspect_inventory(path: str | Path) -> tuple[Inventory | None, list[InventoryError]]:
    """The inventory at ``path`` as far as it could be built, and every problem in file order.

    One reading for both: ``inventory validate`` reports the problems, or summarises
    the inventory, without reading a big fleet's files twice.
    """
    errors = Errors()
    path = Path(path)
    text = _read_text(path, errors)
    inventory = _parse(text, path, errors) if text is not None else None
    return inventory, errors.sorted()


def load_inventory(path: str | Path) -> Inventory:
    """The inventory at ``path``; raise its first InventoryError (validate_inventory lists all)."""
    errors = Errors()
    path = Path(path)
    text = _read_text(path, errors)
    inventory = _parse(text, path, errors) if text is not None else None
    if errors.items or inventory is None:
        raise errors.sorted()[0]
    return inventory

"""Which inventory file a command uses when none is named on the command line.

Order: ``-i PATH``, then ``$ZRELAY_INVENTORY``, then ``./inventory/``, then
``~/.config/zrelay/`` (``$XDG_CONFIG_HOME/zrelay/`` when that is set).

A path may name a file (YAML zrelay inventory, or an Ansible INI inventory) or
a directory. In a directory zrelay reads exactly one file, ``zrelay.yml`` (or
``zrelay.yaml``; both at once is an error): never "every *.yml", because a
directory like this repository's ``inventory/`` holds several complete
inventories (``example.yml``, ``lab.yml``) that must not be merged by accident.
Other inventories are pulled in explicitly with ``zrelay: include:``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from zrelay.errors import UsageError

#: The file read from an inventory directory.
INVENTORY_FILE_NAMES = ("zrelay.yml", "zrelay.yaml")
ENV_VAR = "ZRELAY_INVENTORY"


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/zrelay`` or ``~/.config/zrelay``."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "zrelay"


def file_in(directory: Path) -> Path | None:
    """The inventory file of ``directory``, None if it has none; ambiguity is an error."""
    found = [directory / name for name in INVENTORY_FILE_NAMES if (directory / name).is_file()]
    if len(found) > 1:
        raise UsageError(f"{directory} has both {found[0].name} and {found[1].name}; keep one")
    return found[0] if found else None


def _named(text: str, how: str) -> Path:
    """A path given explicitly: a file as is, a directory through its zrelay.yml."""
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        found = file_in(path)
        if found is None:
            raise UsageError(f"{how} names the directory {path}, which has no "
                             f"{INVENTORY_FILE_NAMES[0]}{_others(path)}")
        return found
    return path  # a missing file is reported by the loader, with its name


def _others(directory: Path) -> str:
    try:
        names = sorted(p.name for p in directory.iterdir()
                       if p.suffix in (".yml", ".yaml") and p.is_file())
    except OSError:
        return ""
    if not names:
        return ""
    return f" (it has {', '.join(names)}: name one with -i {directory / names[0]})"


def find_inventory(explicit: str | None, env: Mapping[str, str] | None = None,
                   cwd: Path | None = None) -> Path:
    """The inventory to use: ``-i``, ``$ZRELAY_INVENTORY``, ``./inventory/``, the config dir."""
    env = os.environ if env is None else env
    if explicit:
        return _named(explicit, "-i")
    if env.get(ENV_VAR):
        return _named(env[ENV_VAR], f"${ENV_VAR}")
    local = (cwd or Path.cwd()) / "inventory"
    if local.is_dir():
        found = file_in(local)
        if found is not None:
            return found
    config = config_dir(env)
    if config.is_dir():
        found = file_in(config)
        if found is not None:
            return found
    hint = _others(local) if local.is_dir() else ""
    raise UsageError(f"no inventory found: use -i PATH or set ${ENV_VAR} (looked for "
                     f"./inventory/{INVENTORY_FILE_NAMES[0]} and "
                     f"{config / INVENTORY_FILE_NAMES[0]}){hint}")

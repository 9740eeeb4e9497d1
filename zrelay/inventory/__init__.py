"""The inventory: hosts, groups, replication jobs and S3 targets from one Ansible-shaped file."""

from zrelay.inventory.load import (load_inventory, loads_inventory, snapshot_name_problem,
                                   validate_inventory, validate_inventory_text)
from zrelay.inventory.model import (Endpoint, Group, Host, Inventory, Job, Origin, S3Ref, S3Target,
                                    Settings, Target)

__all__ = [
    "Endpoint", "Group", "Host", "Inventory", "Job", "Origin", "S3Ref", "S3Target", "Settings",
    "Target", "load_inventory", "loads_inventory", "snapshot_name_problem", "validate_inventory",
    "validate_inventory_text",
]

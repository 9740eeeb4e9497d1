"""The inventory: hosts, groups, replication jobs and S3 targets from Ansible-shaped files."""

from zrelay.inventory.load import (inspect_inventory, inspect_inventory_text, load_inventory,
                                   loads_inventory,
                                   snapshot_name_problem, validate_inventory,
                                   validate_inventory_text)
from zrelay.inventory.model import (Endpoint, Group, Host, Inventory, Job, Origin, S3Ref, S3Target,
                                    Settings, Target, VarSource)

__all__ = [
    "Endpoint", "Group", "Host", "Inventory", "Job", "Origin", "S3Ref", "S3Target", "Settings",
    "Target", "VarSource", "inspect_inventory", "inspect_inventory_text", "load_inventory", "loads_inventory",
    "snapshot_name_problem", "validate_inventory", "validate_inventory_text",
]

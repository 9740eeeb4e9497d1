"""Test configuration: the lab fixtures (zfs-fuse hosts, SeaweedFS S3) live in their own plugins."""

pytest_plugins = ["tests.labfixture", "tests.s3fixture", "tests.fastpathmodes"]

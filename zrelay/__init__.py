"""zrelay: replicate ZFS datasets across a fleet of hosts and S3 from one inventory."""

__version__ = "0.1.0"

"""A job's snapshot lifecycle, decided without I/O: which snapshots a keep policy keeps
(retention), when a snapshot is due (cron, schedule), and what a prune may destroy on each
side without breaking a replication chain (prune).

Everything here is a pure function of plain data (zrelay.inventory.policy, zrelay.zfs.model,
zrelay.s3.chains): the engine lists the sides, calls these, and runs what they decide.
"""

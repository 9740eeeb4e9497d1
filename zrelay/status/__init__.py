"""What is where: for every job and location, how far the target is behind, or why it can't catch up.

It plans every job exactly as ``sync`` would, but transfers nothing, so the
state it reports ("behind 3", "diverged") is exactly what ``sync`` would act on.
What the hosts cannot tell (a transfer running in another process, the last
run's result) comes from the state store (``zrelay.state``).

The same inspection feeds two frontends: ``zrelay status`` (one row per job
and target) and the TUI (its divergence matrix: one cell per dataset and
location; its dataset detail, zrelay.tui.detail, aligns the reports' listings).

- ``report``: what one inspection learnt (the row, the cells, the listings), the
  states and their order, reports of targets that could not be inspected, and
  what the state store adds to a row;
- ``hosts``: host targets, planned by the host planner as ``sync`` plans them;
- ``s3``: S3 targets, planned as ``s3-push`` plans them from the stored chains;
- ``collect``: every target of some jobs, inspected concurrently.

The package imports neither the engine (asyncssh) nor boto3 until a target is
inspected, so the TUI can paint first.
"""

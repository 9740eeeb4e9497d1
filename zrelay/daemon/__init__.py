"""``zrelay daemon``: the long-running service that runs every job's snapshot, sync, prune and
s3-push on their schedules, and says what it did: Prometheus metrics (metrics.py), hooks and a
webhook after runs (notify.py), one log line per event for journald (logs.py).

A frontend like zrelay.cli (which starts it): it may use the engine, status, the state store and
the pure core, never textual.
"""

"""One engine for every replication: plans become actions that the dry run prints and the executor runs.

``Fleet`` (connections, listings, limits, locks) is shared with ``status`` and
the TUI; ``Engine`` runs jobs through receivers (host targets for ``sync``,
S3 targets for ``s3-push``); ``Releaser`` removes a job's holds.
"""

from zrelay.engine.core import Engine, host_receivers
from zrelay.engine.fleet import Fleet, StateCache, shared_listings
from zrelay.engine.host_receiver import HostReceiver, plan_host_target
from zrelay.engine.options import SyncOptions, TaskResult
from zrelay.engine.receiver import Receiver, TargetPlan
from zrelay.engine.release import Releaser, ReleaseResult

__all__ = ["Engine", "Fleet", "HostReceiver", "Receiver", "Releaser", "ReleaseResult", "StateCache",
           "SyncOptions", "TargetPlan", "TaskResult", "host_receivers", "plan_host_target", "shared_listings"]

"""One error hierarchy for the whole tool.

Every error a user can meet is a ``ZrelayError``: it carries its own exit code
and renders as one line, so the CLI never has to show a traceback.
"""

from __future__ import annotations

from typing import Protocol

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
#: A run that skipped a target because another zrelay held it (sysexits' EX_TEMPFAIL: nothing
#: failed, try again later). A failed or refused target (1) wins over it.
EXIT_BUSY = 75


class ZrelayError(Exception):
    """Base of every expected failure; ``str()`` is the one-line message."""

    exit_code: int = EXIT_JOB_FAILED


# --- usage and input -------------------------------------------------------


class UsageError(ZrelayError):
    """Bad command line argument or option."""

    exit_code = EXIT_USAGE


class InventoryError(UsageError):
    """A problem in an inventory file, located at file:line:column."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<inventory>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


class InventoryErrors(UsageError):
    """Several inventory problems found in one pass (``inventory validate``)."""

    def __init__(self, errors: list[InventoryError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.render() for e in errors))


class InvalidName(UsageError):
    """A dataset or snapshot name that ZFS would not accept (or that is unsafe)."""


class Unsupported(UsageError, ValueError):
    """The host's zfs lacks what was asked for (raw send, bookmarks, resume…); found from its
    capabilities before anything runs, unlike ZfsUnsupported, which zfs itself reported.
    Still a ValueError, as the command builders' other refusals of an argument are."""


# --- transport ---------------------------------------------------------------


class TransportError(ZrelayError):
    """Anything that went wrong talking to a host."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        self.message = message
        super().__init__(f"{host}: {message}")


class HostUnreachable(TransportError):
    """TCP connect failed, timed out, or the connection dropped."""


class AuthFailed(TransportError):
    """The host refused every key we offered."""


class HostKeyError(TransportError):
    """The host key is unknown or does not match known_hosts."""


class HostsUnreachable(TransportError):
    """Several hosts of one job could not be reached: each is named, so fixing one does not
    just reveal the next. ``host`` is the first of them (the one a run blames)."""

    def __init__(self, errors: list[TransportError]) -> None:
        self.errors = list(errors)
        self.hosts = [e.host for e in self.errors]
        Exception.__init__(self, "; ".join(str(e) for e in self.errors))
        self.host = self.hosts[0]
        self.message = str(self)


class ShellBroken(ZrelayError):
    """A long-lived command shell on a host is gone; ``sent`` tells whether the current command
    may have run. The connection re-runs an unsent command on a session of its own and reports a
    sent one as HostUnreachable (naming the host), so this never reaches a user as itself."""

    def __init__(self, sent: bool) -> None:
        super().__init__("command shell closed")
        self.sent = sent


class RemoteCommandFailed(TransportError):
    """A remote command exited non-zero; carries its argv, exit status and stderr."""

    def __init__(self, host: str, command: str, exit_status: int | None, stderr: str) -> None:
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr
        status = "killed" if exit_status is None else f"exit {exit_status}"
        first = stderr.strip().splitlines()[0] if stderr.strip() else "(no stderr)"
        super().__init__(host, f"`{command}` failed ({status}): {first}")


# --- zfs ---------------------------------------------------------------------


class ZfsError(ZrelayError):
    """A zfs command failed in a way we recognise; ``code`` names the case."""

    code: str = "zfs-error"
    hint: str = ""

    def __init__(self, host: str, stderr: str, dataset: str | None = None,
                 exit_status: int | None = None, *, hint: str | None = None) -> None:
        self.host = host
        self.stderr = stderr
        self.dataset = dataset
        self.exit_status = exit_status
        if hint is not None:
            self.hint = hint
        first = " ".join(stderr.strip().split("\n")[:2]).strip() or f"exit {exit_status}"
        text = f"{host}: {first}"
        if self.hint:
            text += f" ({self.hint})"
        super().__init__(text)

    def with_hint(self, hint: str) -> "ZfsError":
        """The same error explained otherwise: the class's hint is a guess that a look at the
        dataset afterwards can replace (see zfs.parse.receive_failure_hint)."""
        return type(self)(self.host, self.stderr, self.dataset, self.exit_status, hint=hint)


class DatasetNotFound(ZfsError):
    code = "dataset-not-found"


class DestinationExists(ZfsError):
    code = "destination-exists"
    hint = "the target exists but shares no snapshot with the source"


class DestinationModified(ZfsError):
    code = "destination-modified"
    hint = "the target changed since its newest snapshot; re-run with --rollback to discard that change"


class MissingParent(ZfsError):
    code = "missing-parent"
    hint = "create the target's parent dataset first"


class QuotaExceeded(ZfsError):
    code = "quota-exceeded"


class BadStream(ZfsError):
    code = "bad-stream"
    hint = "the stream was truncated or corrupted in transit; the target is unchanged"


class NoResumableState(ZfsError):
    code = "no-resumable-state"


class SnapshotHeld(ZfsError):
    code = "snapshot-held"


class DatasetBusy(ZfsError):
    code = "dataset-busy"


class PermissionDenied(ZfsError):
    code = "permission-denied"


# Finer cases seen in real zfs output (OpenZFS 2.3 and zfs-fuse 0.7); each is a
# subclass of the broader case callers already handle where one fits.


class DestinationMissing(MissingParent):
    """An incremental receive into a target that does not exist (OpenZFS wording)."""

    code = "destination-missing"
    hint = "the target dataset does not exist; it needs a full send first"


class BaseMismatch(ZfsError):
    """The target does not hold the incremental stream's base snapshot."""

    code = "base-mismatch"
    hint = "the target lacks the incremental base snapshot (destroyed, or the target diverged)"


class NewerSnapshotsExist(ZfsError):
    """``zfs rollback`` without ``-r`` refused because later snapshots exist."""

    code = "newer-snapshots-exist"
    hint = "rolling back would destroy the newer snapshots listed"


class OutOfSpace(QuotaExceeded):
    """zfs-fuse reports a quota hit as plain "out of space"; so does a full pool."""

    code = "out-of-space"
    hint = "the target's quota or pool is full"


class SnapshotHeldOrBusy(SnapshotHeld, DatasetBusy):
    """zfs-fuse answers "dataset is busy" both for a held snapshot and a briefly busy one."""

    code = "snapshot-held-or-busy"
    hint = "the snapshot is held (zfs hold) or briefly busy"


class HoldExists(ZfsError):
    code = "hold-exists"


class NoSuchHold(ZfsError):
    code = "no-such-hold"


class ZfsUnsupported(ZfsError):
    """This host's zfs rejected an option, subcommand or property it does not have."""

    code = "unsupported"
    hint = "this zfs does not support that (zfs-fuse and older ZFS lack newer options)"


class ZfsUnavailable(ZfsError):
    """No usable zfs on the host: not installed, module not loaded, daemon not running."""

    code = "zfs-unavailable"


class TransferFailed(ZrelayError):
    """A send|receive pair failed; names the host to blame and carries both sides' story.

    ``sender_note`` says what went wrong on the sending side, in words, when something did
    (``zfs send on nas1 was killed (signal KILL)``): the receive may still have completed,
    and the engine then reports the stream as arrived with that note as a warning.
    """

    def __init__(self, message: str, failed_host: str, cause: ZfsError | None = None, *,
                 sender_note: str | None = None) -> None:
        self.failed_host = failed_host
        self.cause = cause
        self.sender_note = sender_note
        super().__init__(message)

    def reglossed(self, hint: str) -> "TransferFailed":
        """The same failure with its cause explained by ``hint`` (see ZfsError.with_hint)."""
        if self.cause is None:
            return self
        cause = self.cause.with_hint(hint)
        message = str(self).replace(str(self.cause), str(cause), 1)
        return TransferFailed(message, self.failed_host, cause, sender_note=self.sender_note)


class HookFailed(ZrelayError):
    """A user's hook command failed on ``host`` (non-zero exit, or killed at its timeout):
    a failed pre-snapshot hook means no snapshot was taken."""

    def __init__(self, host: str, hook: str, detail: str) -> None:
        self.host = host
        self.hook = hook
        super().__init__(f"{host}: the {hook} hook failed: {detail}")


def blame(exc: ZrelayError, default: str | None) -> str | None:
    """The host a failure is put on in results: the side a transfer failed on, the host a
    command or connection failed on, else ``default`` (usually the job's source)."""
    if isinstance(exc, TransferFailed):
        return exc.failed_host
    if isinstance(exc, (TransportError, ZfsError, HookFailed)):
        return exc.host
    if isinstance(exc, S3Error):
        return None   # the S3 target failed: no host is at fault
    return default


class SubjectFailed(ZrelayError):
    """A stream's failure its receiver keeps to the stream's subject (S3: one dataset, whose
    stored chain is its own): the engine skips that subject's other actions and runs the rest;
    the receiver's own results say what failed."""

    def __init__(self, cause: Exception) -> None:
        self.cause = cause
        super().__init__(str(cause))


# --- planning ----------------------------------------------------------------


class PlanRefused(ZrelayError):
    """The planner will not transfer because doing so would lose target data."""


class RestoreRefused(PlanRefused, ValueError):
    """No safe way to restore from S3 as asked; the message says why and what to do. Raised by the
    pure restore planner (s3.chains), which knows no target name: s3-restore re-raises it as an
    S3Error naming the target. Still a ValueError, as the planner's other refusals of an argument are."""


class NewestNotRestorable(RestoreRefused):
    """Asked for the newest stored snapshot, which a broken chain keeps from being restored.

    Restoring an older snapshot instead would look like success to whoever
    asked for the newest, so this is refused; the caller names the newest
    snapshot that can be restored (``restorable``, None when nothing can be) and how to ask for it.
    """

    def __init__(self, message: str, endpoint: str, newest: str, restorable: str | None) -> None:
        self.endpoint = endpoint        # host:dataset whose stored chains were asked for
        self.newest = newest            # the newest stored snapshot's name
        self.restorable = restorable    # the newest snapshot's name that can be restored, if any
        super().__init__(message)


# --- run locks ---------------------------------------------------------------------


class LockHolder(Protocol):
    """The holder a lock file names (zrelay.locks.Holder, which sits above this module), as
    TargetBusy and the reports of a busy target read it."""

    @property
    def pid(self) -> int | None: ...
    @property
    def started(self) -> float | None: ...
    @property
    def run_id(self) -> int | None: ...
    @property
    def command(self) -> str: ...
    @property
    def what(self) -> str: ...

    def describe(self) -> str: ...


class TargetBusy(ZrelayError):
    """Another zrelay holds the target; nothing was done to it."""

    exit_code = EXIT_BUSY

    def __init__(self, what: str, holder: LockHolder | None, waited: float = 0.0, *,
                 planning: bool = False) -> None:
        self.what = what
        self.holder = holder
        self.waited = waited
        who = holder.describe() if holder is not None else "another zrelay is replicating it"
        after = f" (still busy after waiting {waited:g} s)" if waited > 0 else ""
        hint = "" if waited > 0 else "; --wait-lock SECONDS waits for it"
        if planning:   # a dry run: what it would list is being written
            super().__init__(f"{what}: not planned, {who}{after}; a plan now would read a target being "
                             f"written{hint}")
        else:
            super().__init__(f"{what}: skipped, {who}{after}; the target is left to it{hint}")


# --- state store -------------------------------------------------------------------


class StateError(ZrelayError):
    """The state store cannot be opened or is from a newer zrelay. The store is a record, never a
    precondition: its readers and the recorder catch this and carry on without it."""


# --- S3 ------------------------------------------------------------------------


class ManifestError(ZrelayError, ValueError):
    """A stored manifest (or an S3 key) that does not have the documented shape (s3.manifest);
    names the key when one is at fault. Still a ValueError: the manifest reader turns the
    ValueErrors of its field checks into this one."""


class S3Error(ZrelayError):
    """An S3 operation failed; names the target, and the object key when one object is at fault."""

    def __init__(self, target: str, message: str, key: str | None = None) -> None:
        self.target = target
        self.key = key
        self.message = message
        super().__init__(f"s3:{target}: {message}")


class S3Unreachable(S3Error):
    """The endpoint did not answer (connection refused, timed out, reset)."""


class S3AccessDenied(S3Error):
    """No credentials, wrong credentials, or the credentials may not do this."""


class S3NotFound(S3Error):
    """The bucket or an object the manifest names does not exist."""


class S3ChecksumMismatch(S3Error):
    """Stored bytes do not hash to what the manifest recorded; ``key`` names the object."""


class S3ResumeMismatch(S3Error):
    """A part of the regenerated stream differs from the part an unfinished upload already holds
    (a send that is not reproducible, other send flags): that upload is aborted, never completed
    with parts of two streams; ``key`` names the object."""


class S3StreamTooLarge(S3Error):
    """The stream would exceed the configured maximum size (found before or while uploading)."""


class S3ObjectArchived(S3Error):
    """Objects are in an archive storage class; a restore was requested and must complete first."""


class S3ChainBroken(S3Error):
    """A send needed for the chosen snapshot is missing or damaged, so it cannot be restored."""


class S3PruneRefused(S3Error):
    """Pruning as asked would leave an incremental without its base or no complete chain."""


class S3UsageError(S3Error, UsageError):
    """An S3 option or name is wrong (unknown target, bad size, unknown snapshot)."""

    exit_code = EXIT_USAGE


# --- warnings --------------------------------------------------------------------


class ZrelayWarning(Exception):
    """Something a user should hear about in a run that did its job: the data is where the plan
    put it. A warning never fails a run (its exit code is EXIT_OK unless a class says otherwise);
    it is shown in the result's message and listed under ``warnings`` in ``--json``."""

    exit_code: int = EXIT_OK

    def __str__(self) -> str:
        return f"warning: {super().__str__()}"


class BaseNotSecured(ZrelayWarning):
    """Replicated, but bookmarking or holding the new base failed: the next run still finds its
    base unless another tool prunes it first."""

    def __init__(self, cause: ZrelayError) -> None:
        self.cause = cause
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        super().__init__(f"replicated, but securing the base failed: {lines[0] if lines else cause}")


class ArrivedDespiteFailure(ZrelayWarning):
    """A stream's sender failed after its last byte, but the target holds the snapshot it brought
    (same GUID): the transfer counts as done."""

    def __init__(self, where: str, why: str) -> None:
        self.where = where
        super().__init__(f"{where} arrived complete (the source's GUID), so the transfer counts as done, "
                         f"but {why}")

"""A job's ``exclude:`` key, read and checked: globs of descendants a recursive job leaves alone.

Internal to zrelay.inventory. Each glob is checked where it is written (file:line:column of the
list item); what needs the rest of the job (``recursive: true``, the source's own path written
by mistake) is checked by ``check_exclude`` once the job's keys are read. What the globs mean
is zrelay.selection's.
"""

from __future__ import annotations

import re

from zrelay.inventory.model import Endpoint
from zrelay.inventory.values import Bad, want_str
from zrelay.inventory.yamlread import Node, NodeReader, SequenceNode

#: Dataset name characters (zrelay.zfs.names) and the glob's own: ``* ? [ ] !``.
_GLOB = re.compile(r"[A-Za-z0-9_.: \-*?\[\]!/]+")


def glob_problem(pattern: str) -> str | None:
    """What is wrong with one exclude glob (None: nothing)."""
    if not pattern.strip():
        return "an exclude glob is empty"
    if pattern != pattern.strip():
        return f"exclude glob {pattern!r} has leading or trailing whitespace"
    if pattern.startswith("/") or pattern.endswith("/"):
        return (f"exclude glob {pattern!r} must be a path relative to the job's source, "
                f"without a leading or trailing '/' (e.g. {pattern.strip('/')!r})")
    if "//" in pattern:
        return f"exclude glob {pattern!r} has an empty path component ('//')"
    if "@" in pattern or "#" in pattern:
        return (f"exclude glob {pattern!r} names a snapshot or bookmark; exclude matches datasets "
                "(which snapshots travel is the job's 'snapshots:' filter)")
    if not _GLOB.fullmatch(pattern):
        bad = sorted({c for c in pattern if not _GLOB.fullmatch(c)})
        return (f"exclude glob {pattern!r} has characters no dataset name has: "
                f"{' '.join(repr(c) for c in bad)}")
    return None


def read_exclude(reader: NodeReader, node: Node) -> tuple[str, ...] | None:
    """The globs of ``exclude: [GLOB, …]``; each problem is reported at its item (None: some were bad)."""
    if not isinstance(node, SequenceNode):
        reader.fail(node, f"exclude: expected a list of globs such as [tmp, '*/cache'], "
                          f"got {reader.kind(node)}")
        return None
    out: list[str] = []
    ok = True
    for item in node.value:
        try:
            pattern = want_str(reader.value(item), "exclude glob")
            problem = glob_problem(pattern)
            if problem is None and pattern in out:
                problem = f"exclude glob {pattern!r} is listed twice"
            if problem is not None:
                raise Bad(problem)
            out.append(pattern)
        except Bad as bad:
            reader.fail(item, str(bad))
            ok = False
    return tuple(out) if ok else None


def check_exclude(globs: tuple[str, ...], recursive: bool, source: Endpoint | None) -> str | None:
    """What is wrong with a job's globs given the rest of the job (None: nothing)."""
    if globs and not recursive:
        return ("exclude: only a recursive job has descendants to leave out; add 'recursive: true' "
                "or remove 'exclude' (a single dataset opts out with `zfs set zrelay:sync=false`)")
    if source is not None:
        for pattern in globs:
            if pattern == source.dataset or pattern.startswith(source.dataset + "/"):
                rest = pattern[len(source.dataset):].lstrip("/") or "*"
                return (f"exclude glob {pattern!r} is relative to the job's source "
                        f"{source.dataset}: write {rest!r}")
    return None

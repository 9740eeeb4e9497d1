"""What a target holds: list the keys under zrelay's prefix, read the manifests, build chains.

Why list then read: the listing alone shows which objects exist and their
sizes (enough to find missing objects and unfinished pushes); manifests are
read in parallel, a few at a time, since a bucket may hold thousands.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from zrelay.errors import ManifestError, S3Error
from zrelay.s3 import chains, manifest as mf
from zrelay.s3.chains import DatasetView, Listed, SendRecord
from zrelay.s3.store import Store

MANIFEST_READERS = 8


def scan_prefix(store: Store, host: str | None, dataset: str | None) -> str:
    """The narrowest key prefix covering ``host``/``dataset`` (and its children)."""
    base = mf.root(store.target.prefix)
    if host is None:
        return base
    if dataset is None:
        return f"{base}{mf.check_host(host)}/"
    return mf.tree_prefix(store.target.prefix, host, dataset)


async def load_views(store: Store, *, host: str | None = None, dataset: str | None = None,
                     recursive: bool = True) -> dict[tuple[str, str], DatasetView]:
    """Every stored dataset under the scope, keyed (host, dataset), with chains built."""
    prefix = scan_prefix(store, host, dataset)
    listing = await asyncio.to_thread(store.list_objects, prefix)
    parsed: list[tuple[mf.KeyInfo, Listed]] = []
    for item in listing:
        info = mf.parse_key(store.target.prefix, item.key)
        if info is None:
            continue
        if dataset is not None and host is not None:
            if info.host != host:
                continue
            if info.dataset != dataset and not (recursive and info.dataset.startswith(dataset + "/")):
                continue
        parsed.append((info, item))
    grouped = chains.group_sends(parsed)
    await _read_manifests(store, [s for sends in grouped.values() for s in sends.values()])
    views = {key: chains.build_view(key[0], key[1], list(sends.values())) for key, sends in grouped.items()}
    return dict(sorted(views.items(), key=lambda kv: (kv[0][0], kv[0][1].split("/"))))


async def _read_manifests(store: Store, sends: list[SendRecord]) -> None:
    todo = [s for s in sends if s.manifest_listed]
    if not todo:
        return
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=MANIFEST_READERS, thread_name_prefix="s3-manifest") as pool:
        futures = [loop.run_in_executor(pool, _read_one, store, s) for s in todo]
        await asyncio.gather(*futures)


def _read_one(store: Store, send: SendRecord) -> None:
    key = mf.manifest_key(send.directory)
    try:
        data = store.get_bytes(key, mf.MAX_MANIFEST_BYTES)
        m = mf.parse_manifest(data, key)
    except ManifestError as exc:
        send.manifest_error = f"unreadable manifest: {exc}"
        return
    except S3Error as exc:
        send.manifest_error = f"manifest could not be read: {exc.message}"
        return
    if (m.host, m.dataset, m.ref) != (send.host, send.dataset, send.ref):
        send.manifest_error = (f"manifest {key} describes {m.host}:{m.dataset}{m.ref}, "
                               "not the send its key names")
        return
    send.manifest = m

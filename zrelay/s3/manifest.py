"""The bucket layout and the manifest: what one stored ``zfs send`` looks like in S3.

Layout (docs/s3-layout.md has the full story and an example listing)::

    PREFIX zrelay/v1/HOST/DATASET/@SNAPSHOT/SENDID/manifest.json
    PREFIX zrelay/v1/HOST/DATASET/@SNAPSHOT/SENDID/stream.000.zfs[.zst][.age]

Why this shape: a dataset name never contains ``@``, so the first ``/@`` in a
key separates the dataset from the send, and listing ``…/DATASET/@`` returns
exactly that dataset's sends (not its children's). SENDID is
``TOGUID-full`` or ``TOGUID-FROMGUID`` (16 hex digits each), so a full and an
incremental of the same snapshot never share a key, and a key says what it
holds without reading the manifest. The manifest is written only after every
stream object is complete: a send without a manifest is an unfinished push.

GUIDs are written as decimal strings in JSON: they are 64-bit and would lose
precision in tools that read JSON numbers as doubles.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from zrelay.errors import ManifestError
from zrelay.zfs.names import dataset_problem, snapshot_problem

FORMAT = "zrelay-s3-send"
VERSION = 1
ROOT = "zrelay/v1/"
MANIFEST_NAME = "manifest.json"
STREAM_STEM = "stream"
MAX_MANIFEST_BYTES = 1 << 20

_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SEND_ID = re.compile(r"([0-9a-f]{16})-(full|[0-9a-f]{16})")
_STREAM_FILE = re.compile(r"stream\.(\d{3,})\.zfs((?:\.[a-z0-9]+)*)")
_SHA256 = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- keys


def root(prefix: str) -> str:
    """Everything zrelay writes to a target lives under this key prefix."""
    return f"{prefix}{ROOT}"


def check_host(host: str) -> str:
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise ManifestError(f"host name {host!r} cannot be part of an S3 key")
    return host


def dataset_prefix(prefix: str, host: str, dataset: str) -> str:
    """Key prefix of exactly this dataset's sends (children excluded)."""
    problem = dataset_problem(dataset)
    if problem:
        raise ManifestError(problem)
    return f"{root(prefix)}{check_host(host)}/{dataset}/@"


def tree_prefix(prefix: str, host: str, dataset: str) -> str:
    """Key prefix of this dataset's and its descendants' sends."""
    problem = dataset_problem(dataset)
    if problem:
        raise ManifestError(problem)
    return f"{root(prefix)}{check_host(host)}/{dataset}/"


def make_send_id(to_guid: int, from_guid: int | None) -> str:
    return f"{to_guid & (2**64 - 1):016x}-" + ("full" if from_guid is None else f"{from_guid & (2**64 - 1):016x}")


def send_ref(snapshot: str, send_id: str) -> str:
    """A send's name inside its dataset: ``@SNAPSHOT/SENDID``."""
    return f"@{snapshot}/{send_id}"


def send_prefix(prefix: str, host: str, dataset: str, snapshot: str, send_id: str) -> str:
    problem = snapshot_problem(snapshot)
    if problem:
        raise ManifestError(problem)
    if not _SEND_ID.fullmatch(send_id):
        raise ManifestError(f"send id {send_id!r} is not TOGUID-full or TOGUID-FROMGUID")
    return f"{dataset_prefix(prefix, host, dataset)}{snapshot}/{send_id}/"


def manifest_key(send_dir: str) -> str:
    return f"{send_dir}{MANIFEST_NAME}"


def stream_name(index: int, extension: str = "") -> str:
    """File name of object ``index`` of one logical stream; ``extension`` names the filters (``.zst.age``)."""
    return f"{STREAM_STEM}.{index:03d}.zfs{extension}"


def stream_key(send_dir: str, index: int, extension: str = "") -> str:
    return f"{send_dir}{stream_name(index, extension)}"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What a key under ``zrelay/v1/`` says about itself."""

    host: str
    dataset: str
    snapshot: str
    send_id: str
    name: str          # file name within the send: manifest.json or stream.NNN.zfs…

    @property
    def ref(self) -> str:
        return send_ref(self.snapshot, self.send_id)

    @property
    def is_manifest(self) -> bool:
        return self.name == MANIFEST_NAME

    @property
    def stream_index(self) -> int | None:
        m = _STREAM_FILE.fullmatch(self.name)
        return int(m.group(1)) if m else None


def parse_key(prefix: str, key: str) -> KeyInfo | None:
    """KeyInfo for a key zrelay could have written, None for anything else."""
    base = root(prefix)
    if not key.startswith(base):
        return None
    rest = key[len(base):]
    head, sep, tail = rest.partition("/@")
    if not sep or "/" not in head:
        return None
    host, _, dataset = head.partition("/")
    parts = tail.split("/")
    if len(parts) != 3:
        return None
    snapshot, send_id, name = parts
    if (not _HOST.fullmatch(host) or dataset_problem(dataset) or snapshot_problem(snapshot)
            or not _SEND_ID.fullmatch(send_id) or not name):
        return None
    return KeyInfo(host, dataset, snapshot, send_id, name)


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True, slots=True)
class SnapRef:
    """A snapshot as the source saw it when it was sent."""

    name: str
    guid: int
    createtxg: int = 0
    creation: int = 0   # unix seconds

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "guid": str(self.guid), "createtxg": self.createtxg,
                "creation": self.creation}


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One S3 object of a logical stream; ``name`` is relative to the send's directory."""

    name: str
    size: int
    sha256: str
    parts: int = 0
    part_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "parts": self.parts,
                "part_size": self.part_size}


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything needed to trust, order and restore one stored send (schema in docs/s3-layout.md)."""

    host: str
    dataset: str
    snapshot: SnapRef
    parent: SnapRef | None            # None: a full stream
    parent_send: str | None           # ``@snap/sendid`` of the send this one follows
    chain: str                        # ``@snap/sendid`` of the chain's full
    send_flags: tuple[str, ...]       # e.g. ("-i",), ("-w",), ()
    send_command: str                 # the exact command run on the source
    raw: bool
    compression: str | None           # "zstd" or None
    encryption: dict[str, Any] | None  # {"type": "age", "recipients": [...]} or None
    size: int                         # bytes stored (after filters)
    sha256: str                       # of the whole stream as stored
    objects: tuple[StoredObject, ...]
    storage_class: str = "STANDARD"
    part_checksum: str = "md5"
    estimate: int | None = None       # source's estimate of the unfiltered stream, when it had one
    zrelay_version: str = ""
    started: str = ""                 # ISO 8601 UTC
    finished: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # unknown fields, kept for round trips

    @property
    def full(self) -> bool:
        return self.parent is None

    @property
    def kind(self) -> str:
        return "full" if self.full else "incremental"

    @property
    def send_id(self) -> str:
        return make_send_id(self.snapshot.guid, None if self.parent is None else self.parent.guid)

    @property
    def ref(self) -> str:
        return send_ref(self.snapshot.name, self.send_id)

    @property
    def extension(self) -> str:
        return filter_extension(self.compression, self.encryption is not None)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "host": self.host,
            "dataset": self.dataset,
            "kind": self.kind,
            "snapshot": self.snapshot.to_dict(),
            "parent": None if self.parent is None else self.parent.to_dict(),
            "parent_send": self.parent_send,
            "chain": self.chain,
            "send": {"flags": list(self.send_flags), "command": self.send_command, "raw": self.raw},
            "compression": self.compression,
            "encryption": self.encryption,
            "size": self.size,
            "sha256": self.sha256,
            "objects": [o.to_dict() for o in self.objects],
            "storage_class": self.storage_class,
            "part_checksum": self.part_checksum,
            "estimate": self.estimate,
            "zrelay_version": self.zrelay_version,
            "started": self.started,
            "finished": self.finished,
        }
        for key, value in self.extra.items():
            data.setdefault(key, value)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def filter_extension(compression: str | None, encrypted: bool) -> str:
    """``.zst``, ``.age`` or ``.zst.age``: the filters in the order they were applied."""
    return (".zst" if compression == "zstd" else "") + (".age" if encrypted else "")


_KNOWN = {"format", "version", "host", "dataset", "kind", "snapshot", "parent", "parent_send", "chain",
          "send", "compression", "encryption", "size", "sha256", "objects", "storage_class",
          "part_checksum", "estimate", "zrelay_version", "started", "finished"}


def parse_manifest(text: str | bytes, where: str = "manifest") -> Manifest:
    """Read and check a manifest; ManifestError says what is wrong and where."""
    if isinstance(text, bytes):
        if len(text) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{where}: larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"{where}: not UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    if data.get("format") != FORMAT:
        raise ManifestError(f"{where}: format is {data.get('format')!r}, expected {FORMAT!r}")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise ManifestError(f"{where}: bad version {version!r}")
    if version > VERSION:
        raise ManifestError(f"{where}: manifest version {version} is newer than this zrelay understands "
                            f"({VERSION}); upgrade zrelay")
    try:
        snapshot = _snap(data["snapshot"], "snapshot")
        parent = None if data.get("parent") is None else _snap(data["parent"], "parent")
        send = data.get("send") or {}
        objects = tuple(_object(o, i) for i, o in enumerate(data["objects"]))
        manifest = Manifest(
            host=_str(data, "host"),
            dataset=_str(data, "dataset"),
            snapshot=snapshot,
            parent=parent,
            parent_send=_opt_str(data, "parent_send"),
            chain=_str(data, "chain"),
            send_flags=tuple(str(f) for f in send.get("flags", [])),
            send_command=str(send.get("command", "")),
            raw=bool(send.get("raw", False)),
            compression=_opt_str(data, "compression"),
            encryption=data.get("encryption") if isinstance(data.get("encryption"), dict) else None,
            size=_int(data, "size"),
            sha256=_sha(data.get("sha256"), "sha256"),
            objects=objects,
            storage_class=str(data.get("storage_class") or "STANDARD"),
            part_checksum=str(data.get("part_checksum") or "md5"),
            estimate=data.get("estimate") if isinstance(data.get("estimate"), int) else None,
            zrelay_version=str(data.get("zrelay_version", "")),
            started=str(data.get("started", "")),
            finished=str(data.get("finished", "")),
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ManifestError):
            raise ManifestError(f"{where}: {exc}") from None
        raise ManifestError(f"{where}: missing or malformed field {exc}") from None
    problems = manifest_problems(manifest)
    if problems:
        raise ManifestError(f"{where}: {problems[0]}")
    return manifest


def manifest_problems(m: Manifest) -> list[str]:
    """Consistency rules a manifest must satisfy beyond its field types."""
    out: list[str] = []
    if dataset_problem(m.dataset):
        out.append(str(dataset_problem(m.dataset)))
    if not _HOST.fullmatch(m.host):
        out.append(f"host {m.host!r} is not a valid host name")
    if not m.objects:
        out.append("no stream objects")
    if sum(o.size for o in m.objects) != m.size:
        out.append(f"object sizes add up to {sum(o.size for o in m.objects)}, not size {m.size}")
    if m.full and m.parent_send is not None:
        out.append("a full stream has no parent_send")
    if not m.full and not m.parent_send:
        out.append("an incremental needs parent_send")
    if m.full and m.chain != m.ref:
        out.append(f"a full stream starts its own chain ({m.ref}), not {m.chain}")
    names = [o.name for o in m.objects]
    if names != [stream_name(i, m.extension) for i in range(len(names))]:
        out.append(f"objects must be {stream_name(0, m.extension)}, {stream_name(1, m.extension)}, … in order")
    if len(m.objects) == 1 and m.objects[0].sha256 != m.sha256:
        out.append("a single-object stream's object sha256 must equal the stream sha256")
    return out


def _snap(value: Any, what: str) -> SnapRef:
    if not isinstance(value, dict):
        raise ManifestError(f"{what}: expected an object")
    name = value.get("name")
    if not isinstance(name, str) or snapshot_problem(name):
        raise ManifestError(f"{what}.name {name!r} is not a snapshot name")
    guid = value.get("guid")
    if isinstance(guid, str) and guid.isdigit():
        guid = int(guid)
    if not isinstance(guid, int) or isinstance(guid, bool) or guid < 0:
        raise ManifestError(f"{what}.guid {value.get('guid')!r} is not a GUID")
    return SnapRef(name, guid, int(value.get("createtxg") or 0), int(value.get("creation") or 0))


def _object(value: Any, index: int) -> StoredObject:
    if not isinstance(value, dict):
        raise ManifestError(f"objects[{index}]: expected an object")
    name = value.get("name")
    if not isinstance(name, str) or not _STREAM_FILE.fullmatch(name):
        raise ManifestError(f"objects[{index}].name {name!r} is not stream.NNN.zfs[.ext]")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"objects[{index}].size {size!r} is not a byte count")
    return StoredObject(name, size, _sha(value.get("sha256"), f"objects[{index}].sha256"),
                        int(value.get("parts") or 0), int(value.get("part_size") or 0))


def _sha(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ManifestError(f"{what} {value!r} is not a lowercase hex sha256")
    return value


def _str(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{key} {value!r} is not a non-empty string")
    return value


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestError(f"{key} {value!r} is not a string")
    return value


def _int(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError(f"{key} {value!r} is not a non-negative integer")
    return value

"""Manifest schema and bucket key layout: round trips, strict reading, unambiguous keys."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_s3_chains import PREFIX, manifest, snap
from zrelay.errors import ManifestError
from zrelay.s3 import manifest as mf


def test_round_trip_and_guid_as_decimal_string() -> None:
    big = 2**64 - 5
    m = manifest(snap("b", big, 20), snap("a", 7, 10), parent_send="@a/0000000000000007-full",
                 chain="@a/0000000000000007-full", compression="zstd")
    data = json.loads(m.to_json())
    assert data["format"] == "zrelay-s3-send" and data["version"] == 1
    assert data["snapshot"]["guid"] == str(big) and data["parent"]["guid"] == "7"
    assert data["kind"] == "incremental" and data["objects"][0]["name"] == "stream.000.zfs.zst"
    back = mf.parse_manifest(m.to_json(), "k")
    assert back == m
    assert back.send_id == f"{big:016x}-0000000000000007"


def test_unknown_fields_survive_a_round_trip() -> None:
    data = json.loads(manifest(snap("a", 1, 1)).to_json())
    data["future_field"] = {"x": 1}
    back = mf.parse_manifest(json.dumps(data))
    assert back.extra == {"future_field": {"x": 1}}
    assert json.loads(back.to_json())["future_field"] == {"x": 1}


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d.update(version=99), "newer than this zrelay"),
    (lambda d: d.update(sha256="XYZ"), "sha256"),
    (lambda d: d.update(size=5), "add up to"),
    (lambda d: d["snapshot"].update(guid="-3"), "GUID"),
    (lambda d: d["snapshot"].update(name="bad/name"), "snapshot name"),
    (lambda d: d.update(objects=[]), "no stream objects"),
    (lambda d: d["objects"][0].update(name="../x"), "stream.NNN"),
    (lambda d: d.update(parent_send="@x/0000000000000001-full"), "no parent_send"),
    (lambda d: d.update(chain="@other/0000000000000001-full"), "starts its own chain"),
    (lambda d: d.pop("host"), "host"),
])
def test_strict_reading(change, message: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(manifest(snap("a", 1, 1)).to_json())
    change(data)
    with pytest.raises(ManifestError, match=message):
        mf.parse_manifest(json.dumps(data), "key")


def test_not_json_and_too_large() -> None:
    with pytest.raises(ManifestError, match="not JSON"):
        mf.parse_manifest(b"{nope", "k")
    with pytest.raises(ManifestError, match="larger than"):
        mf.parse_manifest(b" " * (mf.MAX_MANIFEST_BYTES + 1), "k")


def test_incremental_needs_parent_send() -> None:
    m = manifest(snap("b", 2, 2), snap("a", 1, 1), parent_send=None, chain="@a/0000000000000001-full")
    assert "an incremental needs parent_send" in mf.manifest_problems(m)


def test_key_layout() -> None:
    d = mf.send_prefix(PREFIX, "nas1", "tank/photos", "zrelay_2026-01-01T00:00:00Z", "00000000000000ff-full")
    assert d == "p/zrelay/v1/nas1/tank/photos/@zrelay_2026-01-01T00:00:00Z/00000000000000ff-full/"
    assert mf.manifest_key(d).endswith("/manifest.json")
    assert mf.stream_key(d, 1, ".zst.age").endswith("/stream.001.zfs.zst.age")
    assert mf.dataset_prefix(PREFIX, "nas1", "tank/photos") == "p/zrelay/v1/nas1/tank/photos/@"
    info = mf.parse_key(PREFIX, mf.stream_key(d, 0, ".zst"))
    assert info is not None and (info.host, info.dataset, info.snapshot) == ("nas1", "tank/photos",
                                                                             "zrelay_2026-01-01T00:00:00Z")
    assert info.stream_index == 0 and not info.is_manifest and info.ref == "@zrelay_2026-01-01T00:00:00Z/00000000000000ff-full"


@pytest.mark.parametrize("key", [
    "other/zrelay/v1/nas1/tank/x/@s/00000000000000ff-full/manifest.json",
    "p/zrelay/v1/nas1/tank/x/s/00000000000000ff-full/manifest.json",
    "p/zrelay/v1/nas1/tank/x/@s/nothex-full/manifest.json",
    "p/zrelay/v1/nas1/@s/00000000000000ff-full/manifest.json",
    "p/zrelay/v1/nas1/tank/x/@s/00000000000000ff-full/sub/manifest.json",
])
def test_parse_key_ignores_foreign_keys(key: str) -> None:
    assert mf.parse_key(PREFIX, key) is None


def test_bad_names_never_make_keys() -> None:
    with pytest.raises(ManifestError):
        mf.send_prefix(PREFIX, "nas/1", "tank/x", "s", "00000000000000ff-full")
    with pytest.raises(ManifestError):
        mf.send_prefix(PREFIX, "nas1", "tank/x@y", "s", "00000000000000ff-full")
    with pytest.raises(ManifestError):
        mf.send_prefix(PREFIX, "nas1", "tank/x", "s/t", "00000000000000ff-full")


_component = st.from_regex(r"[A-Za-z0-9_.:-]([A-Za-z0-9_.: -]{0,10}[A-Za-z0-9_.:-])?", fullmatch=True).filter(
    lambda c: c not in (".", ".."))


@given(st.lists(_component, min_size=1, max_size=4), _component, st.integers(0, 2**64 - 1),
       st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_keys_parse_back(parts: list[str], snapshot: str, to_guid: int, from_guid: int | None) -> None:
    """Any valid dataset and snapshot name gives a key that parses back to the same send."""
    dataset = "tank/" + "/".join(parts)
    send_id = mf.make_send_id(to_guid, from_guid)
    d = mf.send_prefix(PREFIX, "h1", dataset, snapshot, send_id)
    info = mf.parse_key(PREFIX, mf.manifest_key(d))
    assert info is not None
    assert (info.host, info.dataset, info.snapshot, info.send_id) == ("h1", dataset, snapshot, send_id)
    assert mf.manifest_key(d).startswith(mf.dataset_prefix(PREFIX, "h1", dataset))

"""Archived objects (GLACIER, DEEP_ARCHIVE) and S3 error mapping, with botocore's Stubber.

The Stubber is a stand-in for what the lab cannot produce: SeaweedFS accepts
the GLACIER storage class as a label but keeps such objects readable, so it
never answers InvalidObjectState, never needs a RestoreObject and never
reports a restore in progress. The responses below are the ones AWS S3
documents for those cases.
"""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.stub import ANY, Stubber

from zrelay.errors import S3AccessDenied, S3NotFound, S3ObjectArchived, S3Unreachable
from zrelay.inventory.model import S3Target
from zrelay.paths.s3restore import RESTORE_TIMES, archived_heads, ensure_readable
from zrelay.s3.options import S3Options
from zrelay.s3.store import Head, Store, client_config, s3_errors

TARGET = S3Target("vaulted", "archive-bucket", region="us-east-1", storage_class="GLACIER")
KEY = "zrelay/v1/nas1/tank/x/@a/00000000000000aa-full/stream.000.zfs"


def _store() -> tuple[Store, Stubber]:
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s",
                          config=client_config(TARGET))
    return Store(TARGET, client), Stubber(client)


def _head(storage_class: str, restore: str | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {"ContentLength": 10, "StorageClass": storage_class, "Metadata": {}}
    if restore is not None:
        resp["Restore"] = restore
    return resp


HEAD_PARAMS = {"Bucket": "archive-bucket", "Key": KEY}
GET_PARAMS = {"Bucket": "archive-bucket", "Key": KEY, "Range": "bytes=0-0"}


def test_archived_object_gets_a_restore_request_and_a_clear_wait() -> None:
    store, stub = _store()
    stub.add_response("head_object", _head("GLACIER"), HEAD_PARAMS)
    stub.add_client_error("get_object", "InvalidObjectState", "The operation is not valid for the object's "
                          "storage class", 403, expected_params=GET_PARAMS)
    stub.add_response("restore_object", {}, {"Bucket": "archive-bucket", "Key": KEY,
                                             "RestoreRequest": {"Days": 7,
                                                                "GlacierJobParameters": {"Tier": "Standard"}}})
    with stub:
        with pytest.raises(S3ObjectArchived) as info:
            asyncio.run(ensure_readable(store, [KEY], S3Options.for_target(TARGET), wait=False))
    text = str(info.value)
    assert "restore requested" in text and "3–5 hours" in text and "--wait" in text
    assert info.value.key == KEY
    stub.assert_no_pending_responses()


def test_wait_polls_until_restored() -> None:
    store, stub = _store()
    stub.add_response("head_object", _head("DEEP_ARCHIVE"), HEAD_PARAMS)
    stub.add_client_error("get_object", "InvalidObjectState", "archived", 403, expected_params=GET_PARAMS)
    stub.add_response("restore_object", {}, {"Bucket": "archive-bucket", "Key": KEY, "RestoreRequest": ANY})
    stub.add_response("head_object", _head("DEEP_ARCHIVE", 'ongoing-request="true"'), HEAD_PARAMS)
    stub.add_response("head_object", _head("DEEP_ARCHIVE", 'ongoing-request="false", expiry-date="x"'),
                      HEAD_PARAMS)
    slept: list[float] = []
    said: list[str] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    with stub:
        asyncio.run(ensure_readable(store, [KEY], S3Options.for_target(TARGET), wait=True, poll_seconds=30,
                                    sleep=fake_sleep, say=said.append))
    assert slept == [30, 30]
    assert "up to 12 hours" in said[0] and "still being restored" in said[1]
    stub.assert_no_pending_responses()


def test_restore_already_in_progress_is_not_requested_again() -> None:
    store, stub = _store()
    stub.add_response("head_object", _head("GLACIER", 'ongoing-request="true"'), HEAD_PARAMS)
    stub.add_client_error("get_object", "InvalidObjectState", "archived", 403, expected_params=GET_PARAMS)
    with stub:
        with pytest.raises(S3ObjectArchived, match="restore requested"):
            asyncio.run(ensure_readable(store, [KEY], S3Options.for_target(TARGET), wait=False))
    stub.assert_no_pending_responses()


def test_glacier_label_on_a_readable_object_needs_nothing() -> None:
    """Servers such as SeaweedFS label objects GLACIER but serve them: no restore request."""
    store, stub = _store()
    stub.add_response("head_object", _head("GLACIER"), HEAD_PARAMS)
    stub.add_response("get_object", {"Body": _Body(b"x"), "ContentLength": 1}, GET_PARAMS)
    with stub:
        asyncio.run(ensure_readable(store, [KEY], S3Options.for_target(TARGET), wait=False))
    stub.assert_no_pending_responses()


def test_restored_and_standard_objects_are_readable() -> None:
    heads = [Head("a", 1, "STANDARD", None, {}), Head("b", 1, "GLACIER", 'ongoing-request="false"', {}),
             Head("c", 1, "GLACIER_IR", None, {}), Head("d", 1, "DEEP_ARCHIVE", None, {})]
    assert [h.key for h in archived_heads(heads)] == ["d"]
    assert ("GLACIER", "Bulk") in RESTORE_TIMES


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, n: int = -1) -> bytes:
        return self.data


@pytest.mark.parametrize("code, cls", [("NoSuchBucket", S3NotFound), ("NoSuchKey", S3NotFound),
                                       ("AccessDenied", S3AccessDenied), ("InvalidAccessKeyId", S3AccessDenied),
                                       ("SignatureDoesNotMatch", S3AccessDenied)])
def test_client_errors_become_one_line(code: str, cls: type) -> None:
    store, stub = _store()
    stub.add_client_error("list_objects_v2", code, "explained", 404)
    with stub, pytest.raises(cls) as info:
        store.list_objects("zrelay/v1/")
    text = str(info.value)
    assert text.startswith("s3:vaulted: listing s3://archive-bucket/zrelay/v1/") and code in text
    assert "\n" not in text


def test_transport_errors() -> None:
    with pytest.raises(S3Unreachable, match="cannot reach http://127.0.0.1:1"):
        with s3_errors("t", "k", "reading"):
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    with pytest.raises(S3AccessDenied, match="no S3 credentials"):
        with s3_errors("t"):
            raise botocore.exceptions.NoCredentialsError()


def test_client_settings_avoid_checksum_trailers() -> None:
    cfg = client_config(TARGET)
    assert cfg.request_checksum_calculation == "when_required"
    assert cfg.response_checksum_validation == "when_required"

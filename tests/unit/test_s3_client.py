"""The S3 client zrelay makes: botocore's session with a data loader that only looks at S3's models.

No server is needed: making a client reads botocore's bundled models and talks to nobody.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import botocore.exceptions
import botocore.loaders
import pytest

from zrelay.inventory.model import S3Target
from zrelay.s3.store import make_client, s3_only_loader

TARGET = S3Target("lab", "zrelay-lab", endpoint="http://127.0.0.1:9", region="us-east-1",
                  addressing_style="path")


def test_the_loader_finds_s3_models_without_listing_every_service() -> None:
    loader = s3_only_loader(None)
    assert loader.list_available_services("service-2") == ["s3"]
    assert loader.list_available_services("endpoint-rule-set-1") == ["s3"]
    assert loader.list_available_services("no-such-model-type-1") == []


def test_the_loader_gives_the_same_s3_model_as_botocores_own() -> None:
    ours = s3_only_loader(None).load_service_model("s3", "service-2")
    theirs = botocore.loaders.create_loader().load_service_model("s3", "service-2")
    assert ours == theirs
    with pytest.raises(botocore.exceptions.UnknownServiceError):
        s3_only_loader(None).load_service_model("ec2", "service-2")


def test_the_loader_keeps_aws_data_path(tmp_path: Path) -> None:
    """AWS_DATA_PATH (botocore's data_path) still comes first, as with botocore's own loader."""
    model = botocore.loaders.create_loader().load_service_model("s3", "service-2")
    model["metadata"]["serviceFullName"] = "S3 from AWS_DATA_PATH"
    version = tmp_path / "s3" / "2099-01-01"
    version.mkdir(parents=True)
    (version / "service-2.json").write_text(json.dumps(model))
    loader = s3_only_loader(f"{tmp_path}{os.pathsep}/nonexistent")
    assert loader.search_paths == botocore.loaders.create_loader(f"{tmp_path}{os.pathsep}/nonexistent").search_paths
    assert loader.load_service_model("s3", "service-2")["metadata"]["serviceFullName"] == "S3 from AWS_DATA_PATH"


def test_a_client_is_made_with_the_targets_settings() -> None:
    client = make_client(TARGET, pool=12)
    assert client.meta.service_model.service_name == "s3"
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "us-east-1"
    assert client.meta.config.max_pool_connections == 12
    assert client.meta.config.s3 == {"addressing_style": "path"}
    # an operation's model and its paginator load through the same loader
    assert client.meta.service_model.operation_model("UploadPart").name == "UploadPart"
    assert client.can_paginate("list_objects_v2")
    client.get_paginator("list_objects_v2")

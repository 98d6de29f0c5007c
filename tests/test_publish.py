"""`maas models publish` against a moto S3 bucket."""

from __future__ import annotations

import json
import shutil

import boto3
import pytest
from finmaas.cli import main
from finmaas.publish import PublishError, publish
from moto import mock_aws

from tests.conftest import MODEL_STORE

BUCKET = "finmaas-models"


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def keys(s3):
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def new_version(tmp_path, version="2"):
    src = tmp_path / "credit-risk-v2"
    shutil.copytree(MODEL_STORE / "credit-risk" / "1", src)
    card = json.loads((src / "card.json").read_text())
    card["version"] = version
    (src / "card.json").write_text(json.dumps(card))
    return src


def test_publish_uploads_artifact_and_card_and_flips_the_alias(s3, tmp_path):
    store = f"s3://{BUCKET}/models"
    publish(MODEL_STORE / "credit-risk" / "1", store, "credit-risk", "1", alias="production",
            s3_client=s3)
    result = publish(new_version(tmp_path), store, "credit-risk", "2", alias="production",
                     s3_client=s3)
    assert result.uploaded and result.aliases == {"production": "2"}
    assert keys(s3) == ["models/credit-risk/1/card.json", "models/credit-risk/1/explainer.json",
                        "models/credit-risk/1/model.onnx",
                        "models/credit-risk/2/card.json", "models/credit-risk/2/explainer.json",
                        "models/credit-risk/2/model.onnx", "models/credit-risk/aliases.json"]
    # the registry over this bucket now serves v2 as production
    from finmaas.modelstore import open_store
    from finmaas.registry import ModelRegistry

    reg = ModelRegistry(open_store(store, cache_dir=str(tmp_path / "c"), s3_client=s3))
    assert reg.resolve("credit-risk") == "2"


def test_republishing_identical_bytes_is_a_no_op(s3):
    store = f"s3://{BUCKET}/models"
    publish(MODEL_STORE / "loan-default" / "1", store, "loan-default", "1", s3_client=s3)
    again = publish(MODEL_STORE / "loan-default" / "1", store, "loan-default", "1",
                    alias="staging", s3_client=s3)
    assert not again.uploaded and again.aliases == {"staging": "1"}


def test_versions_are_immutable(s3, tmp_path):
    store = f"s3://{BUCKET}/models"
    publish(MODEL_STORE / "credit-risk" / "1", store, "credit-risk", "1", s3_client=s3)
    other = tmp_path / "other"
    shutil.copytree(MODEL_STORE / "loan-default" / "1", other)
    card = json.loads((other / "card.json").read_text())
    card.update(name="credit-risk")
    (other / "card.json").write_text(json.dumps(card))
    with pytest.raises(PublishError, match="immutable"):
        publish(other, store, "credit-risk", "1", s3_client=s3)


@pytest.mark.parametrize("damage", ["bytes", "name", "inputs"])
def test_a_bad_model_is_refused_and_nothing_is_uploaded(s3, tmp_path, damage):
    src = new_version(tmp_path)
    card = json.loads((src / "card.json").read_text())
    if damage == "bytes":
        (src / "model.onnx").write_bytes((src / "model.onnx").read_bytes()[:-1] + b"\0")
    elif damage == "name":
        card["name"] = "loan-default"
    else:
        card["inputs"] = card["inputs"][:-1]
    (src / "card.json").write_text(json.dumps(card))
    with pytest.raises(PublishError):
        publish(src, f"s3://{BUCKET}/models", "credit-risk", "2", s3_client=s3)
    assert keys(s3) == []


def test_cli_publish_to_a_directory_store(tmp_path, capsys):
    store = tmp_path / "store"
    code = main(["models", "publish", "mortgage-approval", "--version", "1",
                 "--alias", "production", "--store", str(store)])
    assert code == 0 and "uploaded" in capsys.readouterr().out
    assert main(["models", "verify", "--store", str(store)]) == 0
    code = main(["models", "publish", "mortgage-approval", "--version", "1",
                 "--alias", "Bad Alias", "--store", str(store)])
    assert code == 1

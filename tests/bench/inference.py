"""Inference benchmark: ratios measured in one run on this machine (not a test).

    make bench        # or: .venv/bin/python -m tests.bench.inference

P1  warm 1-record credit-risk predict through handler(event, context), metering on
    (SQLite) and off, divided by an empty GET route of a bare FastAPI+Mangum app.
P2  1,000-record predict through the handler divided by onnxruntime alone on the same rows.
P3  cold start: a fresh process imports the handler and answers its first predict.
P4  explanations: a warm 1-record credit-risk explain through the handler divided by a
    1-record predict through the handler (metering on for both), and the same for 1,000
    records; with the TreeSHAP engine alone on one row and on 1,000 rows.
P5  Open Inference Protocol V2: a 1,000-row credit-risk infer through the handler with
    binary tensors (the body base64 as API Gateway passes binary media), and with JSON
    tensors, divided by onnxruntime alone on the same rows.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from finmaas.api import v2  # noqa: E402
from finmaas.service import fingerprint  # noqa: E402
from finmaas.telemetry import NullTelemetry  # noqa: E402

from tests.conftest import LambdaContext, load_event  # noqa: E402


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def fresh(event: dict[str, Any]) -> dict[str, Any]:
    """A new request id (so metering sees a new request), without copying the body."""
    return {**event, "requestContext": {**event["requestContext"],
                                        "requestId": str(uuid.uuid4())}}


def empty_app_handler() -> Any:
    from fastapi import FastAPI
    from mangum import Mangum

    app = FastAPI()

    @app.get("/empty")
    async def empty() -> dict:
        return {}

    return Mangum(app, lifespan="off")


@contextlib.contextmanager
def swapped(obj: Any, **attrs: Any) -> Iterator[None]:
    """Set instance attributes for the duration (also shadowing a method), then restore."""
    missing = object()
    saved = {k: vars(obj).get(k, missing) for k in attrs}
    for k, v in attrs.items():
        setattr(obj, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is missing:
                delattr(obj, k)
            else:
                setattr(obj, k, v)


class StubPredict:
    """The prediction service replaced by its own earlier answer: what is left is the
    HTTP path (Mangum, routing, body, identity, JSON) and the Powertools wrappers."""

    def __init__(self, services: Any, event: dict[str, Any]) -> None:
        from finmaas.service import Caller

        caller = Caller("demo", "standard", "evtdemokey", "bench-stub")
        body = event["body"].encode()
        self.result = services.predictions.predict(caller, "credit-risk", None,
                                                   json.loads(body)["instances"], body)

    def __call__(self, *_args: Any, **_kwargs: Any) -> Any:
        return self.result


class NoMeter:
    """Metering off: accepts every record without storing it (for the P1 comparison)."""

    def record(self, rec: Any) -> Any:
        return rec


def build(home: Path) -> Any:
    from finmaas.config import Settings
    from finmaas.keys import ensure_events_identity
    from finmaas.lambda_handler import build_handler
    from finmaas.tenants import open_tenant_store

    settings = Settings.from_env(env={}, home=home, cache_dir=home / "cache")
    ensure_events_identity(open_tenant_store(settings))
    return build_handler(settings)


def interleaved(fns: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def p1_p2(home: Path) -> dict[str, Any]:
    handler = build(home)
    ctx = LambdaContext()
    empty = empty_app_handler()
    empty_event = load_event("health.json")
    empty_event = {**empty_event, "path": "/empty", "resource": "/empty"}
    one = load_event("predict-credit-risk.json")
    services = handler.services
    card = services.registry.card("credit-risk", "1")
    rng = random.Random(7)
    base = card.raw["example"]
    rows = [{**base, "age": rng.randint(20, 65), "amount": rng.randint(300, 4000),
             "income": rng.randint(50, 400)} for _ in range(1000)]
    big = {**one, "body": json.dumps({"instances": rows})}

    def call(**swaps: Any) -> Any:
        """A predict through the handler, with parts of the prediction service swapped."""
        def run() -> Any:
            with swapped(services.predictions, **swaps):
                return handler(fresh(one), ctx)
        return run

    assert handler(fresh(one), ctx)["statusCode"] == 200
    single = [card.raw["example"]]
    model1 = services.registry.model("credit-risk", "1")
    feeds1 = model1.feeds(single)
    variants = {
        "empty": lambda: empty(fresh(empty_event), ctx),
        "metered": call(),
        "unmetered": call(metering=NoMeter()),
        # for the breakdown, measured inside the handler (caches shared with HTTP stack)
        "no_telemetry": call(telemetry=NullTelemetry()),
        "bare": call(metering=NoMeter(), telemetry=NullTelemetry()),
        "stubbed": call(serve=StubPredict(services, one)),
        # and two parts timed alone, for comparison
        "ort_1_row_alone": lambda: model1.session.run([card.graph_output], feeds1),
        "validate_1_row_alone": lambda: model1.feeds(single),
    }
    with contextlib.redirect_stdout(io.StringIO()) as sink:
        for _ in range(50):  # warm: model loaded, caches filled
            for fn in variants.values():
                fn()
            sink.seek(0), sink.truncate()
        t1 = interleaved(variants, 400)
        sink.seek(0), sink.truncate()
        assert handler(fresh(big), ctx)["statusCode"] == 200
        model = services.registry.model("credit-risk", "1")
        feeds = model.feeds(rows)
        session = model.session
        t2 = interleaved({"handler": lambda: handler(fresh(big), ctx),
                          "ort": lambda: session.run([card.graph_output], feeds),
                          "validate": lambda: model.feeds(rows),
                          "parse": lambda: orjson.loads(big["body"])}, 40)
    e, m, u = (median_us(t1[k]) for k in ("empty", "metered", "unmetered"))
    nt, bare, stub = (median_us(t1[k]) for k in ("no_telemetry", "bare", "stubbed"))
    h2, o2 = median_us(t2["handler"]), median_us(t2["ort"])
    return {
        "P1_empty_route_us": round(e), "P1_predict_metered_us": round(m),
        "P1_predict_unmetered_us": round(u),
        "P1_ratio_metered": round(m / e, 2), "P1_ratio_unmetered": round(u / e, 2),
        "P1_breakdown_us": {
            "http_path_with_stubbed_service": round(stub),
            "prediction": round(bare - stub),
            "usage_record_sqlite": round(nt - bare),
            "emf_metric": round(m - nt),
            "onnxruntime_1_row_alone": round(median_us(t1["ort_1_row_alone"])),
            "validation_1_row_alone": round(median_us(t1["validate_1_row_alone"])),
        },
        "P2_handler_1000_us": round(h2), "P2_ort_1000_us": round(o2),
        "P2_ratio": round(h2 / o2, 1),
        "P2_breakdown_us": {"json_parse": round(median_us(t2["parse"])),
                            "validate_and_columns": round(median_us(t2["validate"])),
                            "onnxruntime": round(o2)},
    }


COLD = r"""
import json, sys, time
t0 = time.perf_counter()
import importlib.util
spec = importlib.util.spec_from_file_location("handler", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
t1 = time.perf_counter()
class Ctx:
    function_name = "inference"; memory_limit_in_mb = 1024; aws_request_id = "cold"
    invoked_function_arn = "arn:aws:lambda:local:0:function:inference"
r = mod.handler(json.load(open(sys.argv[2])), Ctx())
t2 = time.perf_counter()
assert r["statusCode"] == 200, r
print(json.dumps({"import_ms": (t1 - t0) * 1000, "first_predict_ms": (t2 - t1) * 1000}),
      file=sys.stderr)
"""


def p3(home: Path, runs: int = 7) -> dict[str, Any]:
    build(home)  # the events' tenant exists; the SQLite file is created
    env = {**os.environ, "MAAS_HOME": str(home), "MAAS_CACHE_DIR": str(home / "cache"),
           "POWERTOOLS_METRICS_NAMESPACE": "FinMaaS"}
    handler = str(REPO / "functions/inference/handler.py")
    event = str(REPO / "events/predict-credit-risk.json")
    totals, imports, firsts = [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD, handler, event], env=env,
                             capture_output=True, text=True, check=True)
        totals.append((time.perf_counter() - t) * 1000)
        inner = json.loads(out.stderr.strip().splitlines()[-1])
        imports.append(inner["import_ms"])
        firsts.append(inner["first_predict_ms"])
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", COLD, handler, event],
                         env=env, capture_output=True, text=True, check=True)
    breakdown: dict[str, float] = {}
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (p.strip() for p in line[len("import time:"):].split("|"))
        top = name.strip()
        if top in ("fastapi", "mangum", "aws_lambda_powertools", "numpy", "onnxruntime",
                   "pydantic", "starlette", "finmaas.api", "finmaas.cards", "boto3", "pandas",
                   "sklearn"):
            breakdown[top] = max(breakdown.get(top, 0), int(cumulative) / 1000)
    return {"P3_process_total_ms": round(statistics.median(totals)),
            "P3_import_ms": round(statistics.median(imports)),
            "P3_first_predict_ms": round(statistics.median(firsts)),
            "P3_import_breakdown_ms": {k: round(v) for k, v in sorted(
                breakdown.items(), key=lambda kv: -kv[1])}}


def p4(home: Path) -> dict[str, Any]:
    handler = build(home)
    ctx = LambdaContext()
    predict_one = load_event("predict-credit-risk.json")
    explain_one = load_event("explain-credit-risk.json")
    services = handler.services
    card = services.registry.card("credit-risk", "1")
    rng = random.Random(11)
    rows = [{**card.raw["example"], "age": rng.randint(20, 65), "income": rng.randint(50, 400),
             "amount": rng.randint(300, 4000)} for _ in range(1000)]
    predict_big = {**predict_one, "body": json.dumps({"instances": rows})}
    explain_big = {**explain_one, "body": json.dumps({"instances": rows})}
    for event in (predict_one, explain_one, predict_big, explain_big):
        assert handler(fresh(event), ctx)["statusCode"] == 200
    model = services.registry.model("credit-risk", "1")
    assert model.explainer is not None
    feeds_one = model.feeds([card.raw["example"]])
    feeds_big = model.feeds(rows)
    features_one = model.session.run(["features"], feeds_one)[0]
    features_big = model.session.run(["features"], feeds_big)[0]
    engine = model.explainer.engine
    with contextlib.redirect_stdout(io.StringIO()) as sink:
        for _ in range(30):
            handler(fresh(predict_one), ctx), handler(fresh(explain_one), ctx)
        sink.seek(0), sink.truncate()
        one = interleaved({"predict": lambda: handler(fresh(predict_one), ctx),
                           "explain": lambda: handler(fresh(explain_one), ctx),
                           "treeshap": lambda: engine.shap_values(features_one)}, 300)
        sink.seek(0), sink.truncate()
        big = interleaved({"predict": lambda: handler(fresh(predict_big), ctx),
                           "explain": lambda: handler(fresh(explain_big), ctx),
                           "treeshap": lambda: engine.shap_values(features_big)}, 10)
    p1, e1, t1 = (median_us(one[k]) for k in ("predict", "explain", "treeshap"))
    pb, eb, tb = (median_us(big[k]) for k in ("predict", "explain", "treeshap"))
    return {"P4_predict_1_us": round(p1), "P4_explain_1_us": round(e1),
            "P4_treeshap_1_us": round(t1), "P4_ratio_1": round(e1 / p1, 2),
            "P4_predict_1000_ms": round(pb / 1000, 1), "P4_explain_1000_ms": round(eb / 1000, 1),
            "P4_treeshap_1000_ms": round(tb / 1000, 1), "P4_ratio_1000": round(eb / pb, 2)}


def v2_bodies(card: Any, rows: list[dict[str, Any]], graph_types: dict[str, str]
              ) -> tuple[bytes, bytes, int]:
    """The same rows as V2 JSON tensors, and as binary tensors (header length)."""
    import struct

    import numpy as np

    numeric = {"tensor(float)": ("FP32", np.float32), "tensor(double)": ("FP64", np.float64)}
    json_inputs, binary_inputs, blobs = [], [], []
    for spec in card.inputs:
        values = [r[spec.name] for r in rows]
        if graph_types[spec.name] == "tensor(string)":
            datatype = "BYTES"
            blob = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        else:
            datatype, dtype = numeric[graph_types[spec.name]]
            blob = np.asarray(values, dtype=dtype).tobytes()
        json_inputs.append({"name": spec.name, "datatype": datatype, "shape": [len(rows)],
                            "data": values})
        binary_inputs.append({"name": spec.name, "datatype": datatype, "shape": [len(rows)],
                              "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    header = json.dumps({"inputs": binary_inputs,
                         "outputs": [{"name": "probability",
                                      "parameters": {"binary_data": True}}]}).encode()
    return (json.dumps({"inputs": json_inputs}).encode(), header + b"".join(blobs),
            len(header))


def p5(home: Path) -> dict[str, Any]:
    import base64

    handler = build(home)
    ctx = LambdaContext()
    services = handler.services
    card = services.registry.card("credit-risk", "1")
    model = services.registry.model("credit-risk", "1")
    rng = random.Random(7)
    rows = [{**card.raw["example"], "age": rng.randint(20, 65), "amount": rng.randint(300, 4000),
             "income": rng.randint(50, 400)} for _ in range(1000)]
    types = {i.name: i.type for i in model.session.get_inputs()}
    json_body, binary_body, header_length = v2_bodies(card, rows, types)
    base = load_event("v2-infer-credit-risk.json")
    as_json = {**base, "body": json_body.decode()}
    as_binary = {**base, "body": base64.b64encode(binary_body).decode(),
                 "isBase64Encoded": True,
                 "headers": {**base["headers"], "Content-Type": "application/octet-stream",
                             "Inference-Header-Content-Length": str(header_length)},
                 "multiValueHeaders": {**base["multiValueHeaders"],
                                       "Content-Type": ["application/octet-stream"],
                                       "Inference-Header-Content-Length": [str(header_length)]}}
    for event in (as_json, as_binary):
        response = handler(fresh(event), ctx)
        assert response["statusCode"] == 200, response["body"][:300]
    feeds = model.feeds(rows)
    # the binary request's parts, each timed alone with the code the handler runs
    doc = orjson.loads(binary_body[:header_length])
    tensors = binary_body[header_length:]
    instances = v2.request_instances(*v2.decode_inputs(doc, tensors), card)[0]
    parts = {
        "base64_decode": lambda: base64.b64decode(as_binary["body"], validate=True),
        "decode_tensors": lambda: v2.decode_inputs(doc, tensors),
        "validate_columns": lambda: model.feeds(instances),
        "body_fingerprint": lambda: fingerprint("credit-risk", None, binary_body),
    }
    with contextlib.redirect_stdout(io.StringIO()):
        t = interleaved({"binary": lambda: handler(fresh(as_binary), ctx),
                         "json": lambda: handler(fresh(as_json), ctx),
                         "ort": lambda: model.session.run([card.graph_output], feeds),
                         **parts}, 40)
    b, j, o = (median_us(t[k]) for k in ("binary", "json", "ort"))
    breakdown = {k: round(median_us(t[k])) for k in parts}
    breakdown["rest_of_the_handler"] = round(b - o - sum(breakdown.values()))
    return {"P5_v2_binary_1000_ms": round(b / 1000, 2), "P5_v2_json_1000_ms": round(j / 1000, 2),
            "P5_ort_1000_ms": round(o / 1000, 2), "P5_ratio_binary": round(b / o, 2),
            "P5_ratio_json": round(j / o, 2), "P5_binary_breakdown_us": breakdown}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {**p1_p2(Path(tmp) / "warm"), **p3(Path(tmp) / "cold"),
                   **p4(Path(tmp) / "explain"), **p5(Path(tmp) / "v2")}
    print(json.dumps(results, indent=2))
    print(f"\nP1 (target <= 2.0x): {results['P1_ratio_metered']}x with SQLite metering, "
          f"{results['P1_ratio_unmetered']}x without; inside the handler (us): "
          + ", ".join(f"{k} {v}" for k, v in results["P1_breakdown_us"].items()))
    print(f"P2: {results['P2_ratio']}x onnxruntime alone on 1,000 rows")
    print(f"P3 (target <= 400 ms): {results['P3_process_total_ms']} ms process total "
          f"(import {results['P3_import_ms']} ms + first predict "
          f"{results['P3_first_predict_ms']} ms)")
    print(f"P4 (target <= 3x): explain / predict through the handler {results['P4_ratio_1']}x "
          f"on 1 record ({results['P4_explain_1_us']} vs {results['P4_predict_1_us']} us; "
          f"TreeSHAP alone {results['P4_treeshap_1_us']} us), {results['P4_ratio_1000']}x on "
          f"1,000 records ({results['P4_explain_1000_ms']} vs {results['P4_predict_1000_ms']} "
          f"ms; TreeSHAP alone {results['P4_treeshap_1000_ms']} ms)")
    print(f"P5 (target <= 1.3x with binary tensors): V2 infer of 1,000 rows through the "
          f"handler {results['P5_ratio_binary']}x onnxruntime alone with binary tensors "
          f"({results['P5_v2_binary_1000_ms']} vs {results['P5_ort_1000_ms']} ms), "
          f"{results['P5_ratio_json']}x with JSON tensors; beside onnxruntime (us): "
          + ", ".join(f"{k} {v}" for k, v in results["P5_binary_breakdown_us"].items()))


if __name__ == "__main__":
    main()

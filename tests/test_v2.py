"""Open Inference Protocol V2: Triton's own HTTP client, unchanged, against a running
`maas serve`, with the API key as a header. Its answers equal /v1's on the same rows, each
request is billed once, and a bad V2 body is a 4xx in V2's error shape, never billed."""

from __future__ import annotations

import json
import struct

import httpx
import numpy as np
import pytest

from tests.conftest import MODEL_NAMES, TEXT_MODEL, example
from tests.server import Server

pytestmark = pytest.mark.slow
NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
         "BYTES": object}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.conftest import new_key

    home = tmp_path_factory.mktemp("v2-home")
    server = Server(home).start()
    server.key = new_key(home, "acme", "standard")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def triton(server):
    import tritonclient.http as th

    return th.InferenceServerClient(url=server.url.removeprefix("http://"))


def headers(server, **extra) -> dict[str, str]:
    return {"x-api-key": server.key, **extra}


def billed(server) -> dict:
    return httpx.get(f"{server.url}/v1/usage", headers=headers(server)).json()["totals"]


def v1(server, model, instances, route="predict", **body) -> dict:
    r = httpx.post(f"{server.url}/v1/models/{model}/{route}", headers=headers(server),
                   json={"instances": instances, **body}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def tensors(triton, server, model, rows, binary):
    """One InferInput per field of the model's metadata, as a client builds it."""
    import tritonclient.http as th

    meta = triton.get_model_metadata(model, headers=headers(server))
    out = []
    for spec in meta["inputs"]:
        if spec["name"] not in rows[0]:
            continue
        values = np.array([r[spec["name"]] for r in rows], dtype=NUMPY[spec["datatype"]])
        tensor = th.InferInput(spec["name"], [len(rows)], spec["datatype"])
        tensor.set_data_from_numpy(values, binary_data=binary)
        out.append(tensor)
    return out


def test_the_server_is_ready_and_describes_each_model_as_typed_tensors(triton, server):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("credit-risk", headers=headers(server))
    meta = triton.get_model_metadata("credit-risk", headers=headers(server))
    by_name = {i["name"]: i for i in meta["inputs"]}
    assert by_name["home"]["datatype"] == "BYTES" and by_name["age"]["datatype"] == "FP32"
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert {o["name"] for o in meta["outputs"]} == {"probability", "raw_score",
                                                    "contributions", "base_value"}
    text = triton.get_model_metadata(TEXT_MODEL, headers=headers(server))
    assert text["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": [-1]}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_triton_client_infers_what_v1_predicts_and_each_request_bills_once(
        triton, server, model, binary):
    import tritonclient.http as th

    rows = [example(model), {**example(model)}]
    before = billed(server)
    key = "value" if model == "market-volatility" else "probability"
    result = triton.infer(model, tensors(triton, server, model, rows, binary),
                          outputs=[th.InferRequestedOutput(key, binary_data=binary)],
                          headers=headers(server))
    expected = [p[key] for p in v1(server, model, rows)["predictions"]]
    assert result.as_numpy(key).tolist() == expected
    params = result.get_response()["parameters"]
    assert (params["usage_kind"], params["usage_units"]) == ("prediction", 2)
    after = billed(server)
    assert after["requests"] == before["requests"] + 2  # the V2 call and the /v1 one
    assert after["units"]["row"] == before["units"].get("row", 0) + 4


def test_explanations_are_a_parameter_and_come_back_as_tensors(triton, server):
    rows = [example("credit-risk")]
    result = triton.infer("credit-risk", tensors(triton, server, "credit-risk", rows, True),
                          parameters={"explain": True}, headers=headers(server))
    expected = v1(server, "credit-risk", rows, route="explain")["predictions"][0]
    fields = result.get_output("contributions")["parameters"]["fields"].split(",")
    got = dict(zip(fields, result.as_numpy("contributions")[0].tolist(), strict=True))
    assert got == expected["contributions"]
    assert result.as_numpy("raw_score").tolist() == [expected["raw_score"]]
    assert result.get_response()["parameters"]["usage_kind"] == "explanation"


def test_a_text_model_takes_bytes_and_routes_into_label_tensors(triton, server):
    import tritonclient.http as th

    texts = np.array(["I lost my debit card on the bus"], dtype=object)
    text = th.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(texts, binary_data=True)
    result = triton.infer(TEXT_MODEL, [text], headers=headers(server))
    expected = v1(server, TEXT_MODEL, [{"text": texts[0]}])["predictions"][0]
    assert np.max(np.abs(result.as_numpy("embedding")[0] - expected["embedding"])) < 1e-6
    labels = th.InferInput("labels", [2], "BYTES")
    labels.set_data_from_numpy(np.array(["card_lost", "balance"], dtype=object))
    descriptions = th.InferInput("label_descriptions", [2], "BYTES")
    descriptions.set_data_from_numpy(np.array(["a lost or stolen card",
                                               "asks for the balance"], dtype=object))
    routed = triton.infer(TEXT_MODEL, [text, labels, descriptions], headers=headers(server))
    assert routed.as_numpy("label").tolist() == [b"card_lost"]
    assert routed.get_response()["parameters"]["usage_kind"] == "token"


def test_an_idempotent_retry_is_answered_once_and_billed_once(triton, server):
    rows = [example("loan-default")]
    before = billed(server)
    idem = headers(server, **{"Idempotency-Key": "v2-retry-1"})
    first = triton.infer("loan-default", tensors(triton, server, "loan-default", rows, False),
                         headers=idem)
    again = triton.infer("loan-default", tensors(triton, server, "loan-default", rows, True),
                         headers=idem)  # the same tensors, sent binary this time
    assert again.get_response()["parameters"]["request_id"] == \
        first.get_response()["parameters"]["request_id"]
    assert billed(server)["requests"] == before["requests"] + 1


@pytest.mark.parametrize("encoding", ["json", "binary"])
@pytest.mark.parametrize("model", ["credit-risk", "market-volatility"])
def test_kserves_rest_client_infers_what_v1_predicts(server, model, encoding):
    import subprocess

    from tests.conftest import REPO

    python = REPO / ".maas" / "kserve-client" / "bin" / "python"
    assert python.exists(), "KServe's client venv is missing: `make test` builds it"
    rows = [example(model)] * 3
    before = billed(server)
    done = subprocess.run([str(python), str(REPO / "tests" / "kserve_client.py"), server.url,
                           server.key, model, json.dumps(rows), encoding],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    assert got["live"] and got["ready"] and got["model_ready"]
    key = "value" if model == "market-volatility" else "probability"
    assert got["outputs"][key] == [p[key] for p in v1(server, model, rows)["predictions"]]
    assert (got["parameters"]["usage_kind"], got["parameters"]["usage_units"]) == (
        "prediction", 3)
    assert billed(server)["requests"] == before["requests"] + 2  # its call and /v1's


def infer_raw(server, model, body: dict | bytes, **extra) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{server.url}/v2/models/{model}/infer", content=content,
                      headers=headers(server, **extra), timeout=30)


def age(data, datatype="FP32", shape=None) -> dict:
    return {"name": "age", "datatype": datatype, "shape": shape or [len(data)], "data": data}


BAD = {
    "shape and data disagree": ({"inputs": [age([30, 40], shape=[3])]}, 400,
                                "shape_mismatch"),
    "not a V2 datatype": ({"inputs": [age([30], datatype="FLOAT")]}, 400, "invalid_datatype"),
    "strings in a number tensor": ({"inputs": [age(["thirty"])]}, 422, "invalid_datatype"),
    "BYTES for a number field": ({"inputs": [age(["30"], datatype="BYTES")]}, 422,
                                 "validation_error"),
    "an unknown input": ({"inputs": [{"name": "agee", "datatype": "FP32", "shape": [1],
                                      "data": [30]}]}, 422, "validation_error"),
    "a matrix, not a column": ({"inputs": [age([30, 40], shape=[1, 2])]}, 400,
                               "invalid_tensor"),
    "rows that disagree": ({"inputs": [age([30]), {"name": "income", "datatype": "FP32",
                                                   "shape": [2], "data": [1, 2]}]}, 400,
                           "batch_mismatch"),
    "the same input twice": ({"inputs": [age([30]), age([31])]}, 400, "invalid_tensor"),
    "no inputs": ({"inputs": []}, 400, "invalid_body"),
    "not JSON": (b"{inputs", 400, "malformed_json"),
    "no rows": ({"inputs": [age([], shape=[0])]}, 422, "invalid_body"),
    "data deeper than the shape": ({"inputs": [age([[[30]]], shape=[1])]}, 400,
                                   "shape_mismatch"),
    "a bare scalar": ({"inputs": [{**age([30]), "data": 30}]}, 400, "shape_mismatch"),
    # what a request asks back is checked before anything is billed
    "an unknown output": ({"inputs": [age([30])], "outputs": [{"name": "nope"}]}, 400,
                          "unknown_output"),
    "an explanation output without explain": (
        {"inputs": [age([30])], "outputs": [{"name": "raw_score"}]}, 400, "unknown_output"),
    "binary_data_output not a flag": ({"inputs": [age([30])],
                                       "parameters": {"binary_data_output": "false"}}, 400,
                                      "invalid_body"),
    "parameters not an object": ({"inputs": [age([30])], "parameters": [1]}, 400,
                                 "invalid_body"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_v2_bodies_are_4xx_in_v2s_error_shape_and_never_billed(server, case):
    body, status, code = BAD[case]
    before = billed(server)
    r = infer_raw(server, "credit-risk", body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)
    assert r.headers["x-finmaas-error-code"] == code
    assert billed(server) == before


def test_binary_data_that_does_not_add_up_is_refused(server):
    header = json.dumps({"inputs": [{"name": "age", "datatype": "FP32", "shape": [2],
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    data = struct.pack("<2f", 30, 40)
    before = billed(server)
    # the header says it is longer than the whole body
    r = infer_raw(server, "credit-risk", header + data,
                  **{"Inference-Header-Content-Length": str(len(header) + 100)})
    assert r.status_code == 400 and r.headers["x-finmaas-error-code"] == \
        "invalid_header_length"
    # the tensor says 8 bytes, the body has 4
    r = infer_raw(server, "credit-risk", header + data[:4],
                  **{"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400
    # bytes that belong to no tensor
    r = infer_raw(server, "credit-risk", header + data + b"\0\0\0\0",
                  **{"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400
    assert billed(server) == before


@pytest.mark.parametrize("length", [b"\xb2", b"1" * 5000, b"-5", b"1e3"])
def test_a_header_length_that_is_not_a_number_is_a_400(server, length):
    before = billed(server)
    r = infer_raw(server, "credit-risk", b"{}", **{"Inference-Header-Content-Length": length})
    assert r.status_code == 400 and r.headers["x-finmaas-error-code"] == \
        "invalid_header_length"
    assert billed(server) == before


def test_a_retry_sent_as_binary_instead_of_json_is_the_same_request(server):
    """FP32 data is FP32 whichever way it travels: 19.48 in JSON is the float32 that the
    binary form carries, so a client switching encodings on retry is not refused."""
    row = {**example("loan-default"), "int_rate": 19.48}
    header = {"inputs": [{"name": "int_rate", "datatype": "FP32", "shape": [1],
                          "parameters": {"binary_data_size": 4}}]}
    others = [{"name": k, "datatype": "BYTES" if isinstance(v, str) else "FP32",
               "shape": [1], "data": [v]} for k, v in row.items() if k != "int_rate"]
    as_json = {"inputs": [*others, {"name": "int_rate", "datatype": "FP32", "shape": [1],
                                    "data": [19.48]}]}
    head = json.dumps({"inputs": [*others, *header["inputs"]]}).encode()
    key = {"Idempotency-Key": "fp32-retry"}
    first = infer_raw(server, "loan-default", as_json, **key)
    again = infer_raw(server, "loan-default", head + struct.pack("<f", 19.48),
                      **{**key, "Inference-Header-Content-Length": str(len(head))})
    assert first.status_code == again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"


def test_the_frameworks_own_errors_on_v2_paths_are_in_v2s_shape(server):
    for method, path in (("GET", "/v2/models/credit-risk/infer"), ("POST", "/v2"),
                         ("GET", "/v2/nothing-here")):
        r = httpx.request(method, f"{server.url}{path}", headers=headers(server))
        assert r.status_code in (404, 405) and set(r.json()) == {"error"}, (path, r.text)
        assert r.headers["x-finmaas-error-code"] in ("route_not_found", "method_not_allowed")


def test_the_gateway_answers_v2_paths_in_v2s_shape(server):
    r = httpx.post(f"{server.url}/v2/models/credit-risk/infer", json={"inputs": []})
    assert r.status_code == 401 and set(r.json()) == {"error"}
    assert r.headers["x-finmaas-error-code"] == "missing_api_key"
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # open
    r = httpx.get(f"{server.url}/v2/models/no-such-model", headers=headers(server))
    assert r.status_code == 404 and r.headers["x-finmaas-error-code"] == "model_not_found"


@pytest.mark.parametrize(("blob", "why"), [
    (struct.pack("<I", 9) + b"rent", "runs past"),
    (struct.pack("<I", 4) + b"\xff\xfe\xfd\xfc", "not UTF-8"),
    (b"\x01\x00", "ends inside"),
    # after a whole element, on the ASCII path and on the UTF-8 one
    (struct.pack("<I", 4) + b"rent" + b"\x01", "ends inside"),
    (struct.pack("<I", 2) + "é".encode() + b"\x01", "ends inside"),
    (struct.pack("<I", 2) + "é".encode() + struct.pack("<I", 9) + b"own", "runs past"),
])
def test_malformed_binary_bytes_are_refused(server, blob, why):
    header = json.dumps({"inputs": [{"name": "home", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(blob)}}]}).encode()
    before = billed(server)
    r = infer_raw(server, "credit-risk", header + blob,
                  **{"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and why in r.json()["error"]
    assert billed(server) == before


def varied_rows(model: str, n: int) -> list[dict]:
    """``n`` records around the card's example, every number field moved a little."""
    rows = []
    for i in range(n):
        row = dict(example(model))
        for name, value in row.items():
            if type(value) in (int, float) and not isinstance(value, bool):
                row[name] = type(value)(value + i % 7) if value >= 0 else value
        rows.append(row)
    return rows


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("model", ["credit-risk", "loan-default"])
def test_a_batch_of_tensors_is_validated_as_columns_and_answers_what_v1_does(
        triton, server, model, binary):
    import tritonclient.http as th

    rows = varied_rows(model, 64)  # past the vectorised validation's threshold
    key = "probability"
    result = triton.infer(model, tensors(triton, server, model, rows, binary),
                          outputs=[th.InferRequestedOutput(key, binary_data=binary)],
                          headers=headers(server))
    assert result.as_numpy(key).tolist() == [
        p[key] for p in v1(server, model, rows)["predictions"]]


def v2_body(triton, server, model, rows, binary) -> tuple[bytes, dict]:
    """A V2 request for ``rows`` as tritonclient would send it: JSON data, or binary."""
    body = {"inputs": [], "outputs": [{"name": "probability"}]}
    blobs = b""
    for t in tensors(triton, server, model, rows, binary):
        spec = {"name": t.name(), "datatype": t.datatype(), "shape": t.shape()}
        if binary:
            raw = t._get_binary_data()
            spec["parameters"] = {"binary_data_size": len(raw)}
            blobs += raw
        else:
            spec["data"] = t._get_tensor()["data"]
        body["inputs"].append(spec)
    header = json.dumps(body).encode()
    extra = {"Inference-Header-Content-Length": str(len(header))} if binary else {}
    return header + blobs, extra


def test_bad_values_in_tensors_are_named_as_v1_names_them_binary_or_json(triton, server):
    """The columnar checks refuse what /v1's record checks refuse, with the same problems
    named by row and field, whether the tensors came as JSON or binary."""
    rows = varied_rows("credit-risk", 40)
    rows[3]["age"] = 150  # beyond the card's maximum
    rows[9]["age"] = 5  # below its minimum
    rows[20]["expenses"] = -1.0
    before = billed(server)
    refused = httpx.post(f"{server.url}/v1/models/credit-risk/predict",
                         headers=headers(server), json={"instances": rows}, timeout=30)
    assert refused.status_code == 422
    details = refused.json()["error"]["details"]
    assert len(details) == 3
    answers = []
    for binary in (False, True):
        content, extra = v2_body(triton, server, "credit-risk", rows, binary)
        r = infer_raw(server, "credit-risk", content, **extra)
        assert r.status_code == 422, r.text
        assert r.headers["x-finmaas-error-code"] == "validation_error"
        answers.append(r.json()["error"])
    assert answers[0] == answers[1]
    for d in details:
        assert f"[{d['instance']}] {d['field']}: {d['message']}" in answers[1], answers[1]
    assert billed(server) == before


def test_non_finite_binary_values_are_refused_by_row_and_field(triton, server):
    rows = varied_rows("credit-risk", 40)
    content, extra = v2_body(triton, server, "credit-risk", rows, True)
    header_length = int(extra["Inference-Header-Content-Length"])
    header = json.loads(content[:header_length])
    names = [t["name"] for t in header["inputs"]]
    at = header_length
    for t in header["inputs"]:  # the age tensor's bytes: make its 6th value NaN
        if t["name"] == "age":
            break
        at += t["parameters"]["binary_data_size"]
    assert "age" in names and header["inputs"][names.index("age")]["datatype"] == "FP32"
    content = content[:at + 5 * 4] + struct.pack("<f", float("nan")) + content[at + 6 * 4:]
    before = billed(server)
    r = infer_raw(server, "credit-risk", content, **extra)
    assert r.status_code == 422, r.text
    assert "[5] age: age must be a finite number" in r.json()["error"]
    assert billed(server) == before


@pytest.mark.parametrize("values", [
    ["rent", "own", "", "mortgage"],  # ASCII throughout: decoded once, sliced as text
    ["rent", "propriétaire", "自有", ""],  # UTF-8 beyond ASCII: element by element
    ["x" * 200, "own"],  # a length byte past 127 makes the data non-ASCII
])
def test_binary_bytes_decode_to_the_strings_sent(values):
    from finmaas.api.v2 import decode_inputs

    blob = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
    doc = {"inputs": [{"name": "home", "datatype": "BYTES", "shape": [len(values)],
                       "parameters": {"binary_data_size": len(blob)}}]}
    columns, rows = decode_inputs(doc, blob)
    assert rows == len(values) and columns["home"] == values
    assert all(type(v) is str for v in columns["home"])

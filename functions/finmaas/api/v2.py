"""The Open Inference Protocol (V2, as KServe, Triton and MLServer speak it) beside /v1.

One data plane: an infer request becomes the records /v1 takes, and runs through the same
``PredictionService.serve`` (the card's validation on columns, one usage record per
request, the same Idempotency-Key semantics); only the envelope differs. Named tensors
come as JSON or with the binary tensor data extension (``Inference-Header-Content-Length``);
outputs go back as JSON or binary (``binary_data_output``, or per output).

Errors carry V2's ``{"error": "..."}`` body that clients parse, the status /v1 would give,
and FinMaaS's error code in the ``x-finmaas-error-code`` header.

Mapping (also in the README): a card field is an input named as the field, shape ``[-1]``
or ``[-1, 1]``; categories and texts are BYTES, numbers FP32/FP64 and integers
INT64/INT32 as the graph takes them (any numeric datatype is accepted and checked against
the card like a JSON number). Outputs: ``probability`` (classifiers) or ``value``
(regressions), FP64 ``[-1]``; with the request parameter ``explain: true`` also
``raw_score``, ``contributions`` ``[-1, k]`` (their names in the output's parameters) and
``base_value``, billed as explanations. A text model takes ``text`` BYTES ``[-1]`` and
answers ``embedding`` FP32 ``[-1, d]`` and ``tokens``; with the BYTES inputs ``labels``
(and ``label_descriptions``, the same length) it answers ``label``, ``score`` and
``scores`` ``[-1, labels]``.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..errors import (
    V2_ERROR_CODE_HEADER,
    ApiError,
    BadRequest,
    PayloadTooLarge,
    Unprocessable,
    v2_error_body,
)
from ..metering import record_id_for
from ..serving import Columns
from . import body as bodies
from .identity import resolve_caller

ERROR_CODE_HEADER = V2_ERROR_CODE_HEADER
HEADER_LENGTH = "inference-header-content-length"
GRAPH_DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64",
                   "tensor(int64)": "INT64", "tensor(int32)": "INT32",
                   "tensor(string)": "BYTES"}
NUMERIC = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "INT8": np.int8,
           "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
           "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64}
DATATYPES = {*NUMERIC, "BOOL", "BYTES"}
LABEL_INPUTS = ("labels", "label_descriptions")


# -- errors ---------------------------------------------------------------------------
def error_response(exc: ApiError, request_id: str | None = None) -> Response:
    """V2's error body, with the problems /v1 would list folded into its one string."""
    text = exc.message
    if exc.details:
        parts = []
        for d in exc.details[:10]:
            if d.get("message") == exc.message:
                continue
            where = ".".join(str(d[k]) for k in ("instance", "label") if k in d)
            field = d.get("field")
            parts.append(f"{'[' + where + '] ' if where else ''}{field + ': ' if field else ''}"
                         f"{d.get('message') or d.get('code')}")
        text += ": " + "; ".join(parts) if parts else ""
    headers = {**exc.headers, ERROR_CODE_HEADER: exc.code}
    if request_id:
        headers["x-request-id"] = request_id
    return Response(orjson.dumps(v2_error_body(text)), status_code=exc.status,
                    media_type="application/json", headers=headers)


def _fail(message: str, code: str = "invalid_tensor") -> BadRequest:
    return BadRequest(message, code=code)


# -- reading a request ----------------------------------------------------------------
async def read_request(request: Request, max_bytes: int) -> tuple[dict[str, Any], bytes, bytes]:
    """The JSON header, the binary tensor data after it, and the raw body."""
    raw = await bodies.read_body(request, max_bytes)
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        header, binary = raw, b""
    else:
        if not (length.isascii() and length.isdigit() and len(length) <= 12
                and int(length) <= len(raw)):
            raise _fail(f"{HEADER_LENGTH} {length!r} is not a length within the body's "
                        f"{len(raw)} bytes", "invalid_header_length")
        header, binary = raw[:int(length)], raw[int(length):]
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the inference header is not valid JSON: {exc}",
                         code="malformed_json") from None
    if not isinstance(doc, dict):
        raise _fail('the inference request must be an object with "inputs"', "invalid_body")
    return doc, binary, raw


def _flatten(data: Any) -> list[Any]:
    """Row-major values of a tensor's (possibly nested) data; a flat list as it is."""
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data  # a flat column: a nested value in it fails the card's type check
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _column(data: Any, shape: list[int], name: str) -> list[Any]:
    """An input's JSON data as a column: flat, or (shape [n, 1]) one value per row list."""
    if not isinstance(data, list):
        raise _fail(f"{name}: data must be a list of the shape's values", "shape_mismatch")
    if len(shape) == 2 and data and isinstance(data[0], list):
        if not all(isinstance(row, list) and len(row) == 1 for row in data):
            raise _fail(f"{name}: data for shape {shape} is a list of one-value lists",
                        "shape_mismatch")
        data = [row[0] for row in data]
    if any(isinstance(v, list | dict) for v in data):
        raise _fail(f"{name}: data nests deeper than the shape {shape}", "shape_mismatch")
    return data


def _binary_values(datatype: str, blob: bytes, count: int, name: str) -> list[Any]:
    if datatype == "BYTES":
        # each element: a 4-byte little-endian length, then its bytes. ASCII data (the
        # usual categories, and the lengths below 128) is decoded once and sliced as text
        all_ascii = blob.isascii()
        source: bytes | str = blob.decode("ascii") if all_ascii else blob
        pieces, at, end, length = [], 0, len(blob), struct.Struct("<I").unpack_from
        append = pieces.append
        while at < end:
            if at + 4 > end:
                raise _fail(f"{name}: BYTES data ends inside an element's length")
            start = at + 4
            at = start + length(blob, at)[0]
            append(source[start:at])
        if at > end:
            raise _fail(f"{name}: a BYTES element runs past its data")
        try:
            values = pieces if all_ascii else [p.decode("utf-8") for p in pieces]
        except UnicodeDecodeError:
            raise _fail(f"{name}: a BYTES element is not UTF-8 text") from None
    elif datatype == "BOOL":
        values = np.frombuffer(blob, dtype=np.bool_).tolist()
    else:
        dtype = np.dtype(NUMERIC[datatype]).newbyteorder("<")
        if len(blob) % dtype.itemsize:
            raise _fail(f"{name}: {len(blob)} bytes is not a whole number of {datatype}")
        values = np.frombuffer(blob, dtype=dtype)  # checked as a column, not value by value
    if len(values) != count:
        raise _fail(f"{name}: the shape holds {count} value(s), the data {len(values)}",
                    "shape_mismatch")
    return values


def decode_inputs(doc: dict[str, Any], binary: bytes) -> tuple[dict[str, Any], int]:
    """Every input tensor as a flat column (a list of Python values, or a numpy array of
    a numeric tensor's binary data or FP32 data), and the batch size."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _fail('"inputs" must be a non-empty list of tensors', "invalid_body")
    columns: dict[str, list[Any]] = {}
    batch: int | None = None
    at = 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise _fail("each input is an object with name, shape, datatype and data")
        name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if not isinstance(name, str) or not name:
            raise _fail("an input has no name")
        if name in columns:
            raise _fail(f"input {name!r} is given twice")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
                or not all(type(d) is int and d >= 0 for d in shape)
                or (len(shape) == 2 and shape[1] != 1)):
            raise _fail(f"{name}: shape must be [n] or [n, 1] (a column of the batch), "
                        f"got {shape!r}")
        if datatype not in DATATYPES:
            raise _fail(f"{name}: datatype {datatype!r} is not a V2 datatype "
                        f"({', '.join(sorted(DATATYPES))})", "invalid_datatype")
        count = shape[0]
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise _fail(f"{name}: parameters must be an object", "invalid_body")
        size = params.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0 or at + size > len(binary):
                raise _fail(f"{name}: binary_data_size {size!r} runs past the body's binary "
                            "data", "invalid_header_length")
            values = _binary_values(datatype, binary[at:at + size], count, name)
            at += size
        else:
            if "data" not in tensor:
                raise _fail(f"{name}: no data (nor binary_data_size)")
            values = _column(tensor["data"], shape, name)
            if len(values) != count:
                raise _fail(f"{name}: the shape holds {count} value(s), the data "
                            f"{len(values)}", "shape_mismatch")
            if datatype == "BYTES" and not all(type(v) is str or v is None for v in values):
                raise Unprocessable(f"{name}: BYTES data must be strings",
                                    code="invalid_datatype")
            if datatype in NUMERIC and any(type(v) is str for v in values):
                raise Unprocessable(f"{name}: {datatype} data must be numbers",
                                    code="invalid_datatype")
            if datatype in ("FP32", "FP16") and all(type(v) in (int, float) for v in values):
                # the precision the tensor says: the same request as its binary form
                with np.errstate(over="ignore"):
                    values = np.asarray(values, dtype=NUMERIC[datatype])
        if datatype == "BOOL":
            raise Unprocessable(f"{name}: BOOL is not a card field's type",
                                code="invalid_datatype")
        if name not in LABEL_INPUTS:
            if batch is not None and count != batch:
                raise _fail(f"{name}: {count} row(s) where other inputs have {batch}",
                            "batch_mismatch")
            batch = count
        columns[name] = values
    if at != len(binary):
        raise _fail(f"{len(binary) - at} byte(s) of binary data belong to no input",
                    "invalid_header_length")
    if batch is None:
        raise _fail("no input but labels: send the texts or fields to infer on")
    if batch == 0:
        raise Unprocessable("the tensors hold no rows: send at least one",
                            code="invalid_body")
    return columns, batch


def _as_list(values: Any) -> Any:
    return values.tolist() if isinstance(values, np.ndarray) else values


def request_instances(columns: dict[str, Any], batch: int, card: Any
                      ) -> tuple[list[Any], Any]:
    """What /v1 would receive for these tensors: a tabular model's rows as the columns
    they came in (validated and fed as they are), a text model's as records; and the
    zero-shot labels."""
    if not card.is_text and not any(name in columns for name in LABEL_INPUTS):
        return Columns(columns, batch), None
    labels = None
    if "labels" in columns:
        names = _as_list(columns.pop("labels"))
        descriptions = _as_list(columns.pop("label_descriptions", None))
        if descriptions is not None and len(descriptions) != len(names):
            raise _fail("label_descriptions must be as long as labels", "shape_mismatch")
        labels = [{"name": n, **({"description": d} if descriptions and d else {})}
                  for n, d in zip(names, descriptions or [None] * len(names), strict=True)]
    elif "label_descriptions" in columns:
        raise _fail("label_descriptions without labels")
    return Columns(columns, batch).records(), labels


# -- writing an answer -----------------------------------------------------------------
def _tensor(name: str, datatype: str, values: Any, shape: list[int],
            parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"name": name, "datatype": datatype, "shape": shape, "data": values}
    if parameters:
        out["parameters"] = parameters
    return out


def output_tensors(answer: dict[str, Any]) -> list[dict[str, Any]]:
    preds = answer["predictions"]
    n = len(preds)
    if not n:
        return []
    first = preds[0]
    if "embedding" in first:
        matrix = np.stack([p["embedding"] for p in preds]).astype(np.float32)
        return [_tensor("embedding", "FP32", matrix, list(matrix.shape)),
                _tensor("tokens", "INT64", [p["tokens"] for p in preds], [n])]
    if "label" in first:
        order = list(first["scores"])
        return [_tensor("label", "BYTES", [p["label"] for p in preds], [n]),
                _tensor("score", "FP64", [p["score"] for p in preds], [n]),
                _tensor("scores", "FP64", [[p["scores"][k] for k in order] for p in preds],
                        [n, len(order)], {"labels": ",".join(order)}),
                _tensor("tokens", "INT64", [p["tokens"] for p in preds], [n])]
    key = "probability" if "probability" in first else "value"
    out = [_tensor(key, "FP64", [p[key] for p in preds], [n])]
    if "contributions" in first:
        fields = list(first["contributions"])
        out += [_tensor("raw_score", "FP64", [p["raw_score"] for p in preds], [n]),
                _tensor("contributions", "FP64",
                        [[p["contributions"][f] for f in fields] for p in preds],
                        [n, len(fields)], {"fields": ",".join(fields)}),
                _tensor("base_value", "FP64", [answer["explanation"]["base_value"]], [1])]
    return out


def _encode(tensor: dict[str, Any]) -> bytes:
    values = tensor["data"]
    if tensor["datatype"] == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b
                        for b in (str(v).encode("utf-8") for v in _flatten(values)))
    array = np.asarray(values, dtype=NUMERIC[tensor["datatype"]])
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _flag(params: dict[str, Any], name: str, where: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise _fail(f'{where}: "{name}" is true or false', "invalid_body")
    return value


def request_parameters(doc: dict[str, Any]) -> dict[str, Any]:
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise _fail('"parameters" must be an object', "invalid_body")
    return params


def output_names(card: Any, explain: bool, labels: bool) -> set[str]:
    """The outputs a request of this kind produces (checked before anything is billed)."""
    if card.is_text:
        return {"label", "score", "scores", "tokens"} if labels else {"embedding", "tokens"}
    names = {"value" if card.task == "regression" else "probability"}
    return names | {"raw_score", "contributions", "base_value"} if explain else names


def requested_outputs(doc: dict[str, Any], known: set[str]) -> dict[str, bool] | None:
    """Output name -> binary, for the outputs asked for (None: all of them, as JSON or as
    ``binary_data_output`` says). Refuses what cannot be answered, before serving."""
    all_binary = _flag(request_parameters(doc), "binary_data_output", "parameters")
    wanted = doc.get("outputs")
    if wanted is None:
        return {name: all_binary for name in known} if all_binary else None
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and
                                               isinstance(o.get("name"), str)
                                               for o in wanted):
        raise _fail('"outputs" must be a list of {"name": ...}', "invalid_body")
    unknown = sorted({o["name"] for o in wanted} - known)
    if unknown:
        raise _fail(f"no output named {', '.join(unknown)}; this request's outputs: "
                    f"{', '.join(sorted(known))}", "unknown_output")
    binary_of = {}
    for o in wanted:
        params = o.get("parameters", {})
        if not isinstance(params, dict):
            raise _fail(f"output {o['name']}: parameters must be an object", "invalid_body")
        binary_of[o["name"]] = params.get("binary_data", all_binary)
        if not isinstance(binary_of[o["name"]], bool):
            raise _fail(f'output {o["name"]}: "binary_data" is true or false', "invalid_body")
    return binary_of


def infer_response(doc: dict[str, Any], answer: dict[str, Any], replayed: bool,
                   binary_of: dict[str, bool] | None) -> Response:
    tensors = output_tensors(answer)
    if binary_of is not None:
        tensors = [t for t in tensors if t["name"] in binary_of]
    binary_of = binary_of or {}
    blobs = []
    for t in tensors:
        if binary_of.get(t["name"], False):
            blob = _encode(t)
            del t["data"]
            t.setdefault("parameters", {})["binary_data_size"] = len(blob)
            blobs.append(blob)
        elif isinstance(t["data"], np.ndarray):
            t["data"] = t["data"].reshape(-1)
        else:
            t["data"] = _flatten(t["data"])
    usage = answer["usage"]
    header = orjson.dumps({
        "model_name": answer["model"], "model_version": answer["version"],
        "id": doc["id"] if isinstance(doc.get("id"), str) else answer["request_id"],
        "parameters": {"request_id": answer["request_id"], "usage_kind": usage["kind"],
                       "usage_units": usage["units"],
                       "usage_unit_price_usd": usage["unit_price_usd"],
                       "usage_amount_usd": usage["amount_usd"]},
        "outputs": tensors}, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = {"x-request-id": answer["request_id"],
               "Idempotent-Replayed": "true" if replayed else "false"}
    if not blobs:
        return Response(header, media_type="application/json", headers=headers)
    headers["Inference-Header-Content-Length"] = str(len(header))
    return Response(header + b"".join(blobs), media_type="application/octet-stream",
                    headers=headers)


# -- metadata --------------------------------------------------------------------------
def model_metadata(model: Any, versions: list[str]) -> dict[str, Any]:
    card = model.card
    if card.is_text:
        inputs = [{"name": card.inputs[0].name, "datatype": "BYTES", "shape": [-1]},
                  {"name": "labels", "datatype": "BYTES", "shape": [-1],
                   "parameters": {"optional": True}},
                  {"name": "label_descriptions", "datatype": "BYTES", "shape": [-1],
                   "parameters": {"optional": True}}]
        outputs = [{"name": "embedding", "datatype": "FP32",
                    "shape": [-1, card.outputs[0].dimension]},
                   {"name": "tokens", "datatype": "INT64", "shape": [-1]},
                   {"name": "label", "datatype": "BYTES", "shape": [-1]},
                   {"name": "score", "datatype": "FP64", "shape": [-1]},
                   {"name": "scores", "datatype": "FP64", "shape": [-1, -1]}]
    else:
        types = {i.name: i.type for i in model.session.get_inputs()}
        inputs = [{"name": spec.name, "datatype": GRAPH_DATATYPES[types[spec.name]],
                   "shape": [-1], "parameters": {"required": spec.required}}
                  for spec in card.inputs]
        key = "value" if card.task == "regression" else "probability"
        outputs = [{"name": key, "datatype": "FP64", "shape": [-1]}]
        if model.explainer is not None:
            outputs += [{"name": "raw_score", "datatype": "FP64", "shape": [-1]},
                        {"name": "contributions", "datatype": "FP64", "shape": [-1, -1]},
                        {"name": "base_value", "datatype": "FP64", "shape": [1]}]
    return {"name": card.name, "versions": versions, "platform": "onnxruntime_onnx",
            "inputs": inputs, "outputs": outputs}


# -- routes ------------------------------------------------------------------------------
def _services(request: Request) -> Any:
    return request.app.state.services


def _request_id(request: Request) -> str | None:
    from .identity import request_context

    rid = request_context(request.scope).get("requestId")
    return rid if isinstance(rid, str) else None


async def server_metadata(request: Request) -> Response:
    return Response(orjson.dumps({"name": "finmaas", "version": __version__,
                                  "extensions": ["binary_tensor_data"]}),
                    media_type="application/json")


async def live(request: Request) -> Response:
    return Response(orjson.dumps({"live": True}), media_type="application/json")


async def ready(request: Request) -> Response:
    s = _services(request)
    try:
        await s.run(s.registry.names)
    except Exception:
        return error_response(ApiError("the model store is unavailable", status=503,
                                       code="model_store_unavailable"), _request_id(request))
    return Response(orjson.dumps({"ready": True}), media_type="application/json")


def _model(request: Request) -> tuple[Any, str, str | None]:
    s = _services(request)
    resolve_caller(request.scope, s.directory)
    name, ref = request.path_params["name"], request.path_params.get("version")
    version = s.registry.resolve(name, ref)
    return s.registry.model_of_alias(name, ref, version), name, ref


async def _about_model(request: Request, answer: Any) -> Response:
    """``answer(model, name)`` for the caller's model version, or V2's error."""
    s = _services(request)

    def work() -> dict[str, Any]:
        model, name, _ = _model(request)
        return answer(model, name)

    try:
        return Response(orjson.dumps(await s.run(work)), media_type="application/json")
    except ApiError as exc:
        s.telemetry.error(exc.code, exc.status)
        return error_response(exc, _request_id(request))


async def metadata(request: Request) -> Response:
    registry = _services(request).registry
    return await _about_model(request, lambda model, name: model_metadata(
        model, registry.versions(name)))


async def model_ready(request: Request) -> Response:
    return await _about_model(request, lambda model, _name: {
        "name": model.card.name, "version": model.card.version, "ready": True})


async def infer(request: Request) -> Response:
    s = _services(request)
    try:
        name, ref = request.path_params["name"], request.path_params.get("version")
        caller = await s.caller(request.scope)
        idem = bodies.idempotency_key(request)
        doc, binary, raw = await read_request(request, s.settings.max_body_bytes)
        explain = _flag(request_parameters(doc), "explain", "parameters")
        columns, batch = decode_inputs(doc, binary)
        if batch > s.settings.max_instances:
            raise PayloadTooLarge(f"at most {s.settings.max_instances} rows per request "
                                  f"(got {batch})", code="too_many_instances")
        # the version serve() will pick (a canary assigns by the record id)
        assign = record_id_for(caller.tenant, caller.request_id, idem)
        card = await s.run(lambda: s.registry.card_of_alias(
            name, ref, s.registry.resolve(name, ref, assign=assign)))
        instances, labels = request_instances(columns, batch, card)
        binary_of = requested_outputs(doc, output_names(card, explain, labels is not None))
        meaning = None if idem is None else {  # what a retry with the key must repeat
            "instances": instances.records() if isinstance(instances, Columns) else instances,
            "labels": labels}
        result = await s.serve("explanation" if explain else "prediction", caller, name,
                               ref, instances, bodies.fingerprint_source(meaning, raw, idem),
                               idem, labels)
        return infer_response(doc, result.body, result.replayed, binary_of)
    except ApiError as exc:
        s.telemetry.error(exc.code, exc.status)
        return error_response(exc, _request_id(request))


def _both(path: str, endpoint: Any, methods: list[str]) -> list[Route]:
    return [Route(f"/v2/models/{{name}}{path}", endpoint, methods=methods,
                  include_in_schema=False),
            Route(f"/v2/models/{{name}}/versions/{{version}}{path}", endpoint,
                  methods=methods, include_in_schema=False)]


ROUTES = [
    Route("/v2", server_metadata, methods=["GET"], include_in_schema=False),
    Route("/v2/health/live", live, methods=["GET"], include_in_schema=False),
    Route("/v2/health/ready", ready, methods=["GET"], include_in_schema=False),
    *_both("", metadata, ["GET"]),
    *_both("/ready", model_ready, ["GET"]),
    *_both("/infer", infer, ["POST"]),
]
OPEN_PATHS = ("/v2", "/v2/health/live", "/v2/health/ready")


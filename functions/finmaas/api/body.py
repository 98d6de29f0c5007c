"""Reading a predict request body: content type, size, JSON, shape. Each failure is a
clear 4xx; nothing here touches a model or the meter."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from starlette.requests import Request

from ..errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType

IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


def _reject_constant(name: str) -> Any:
    raise Unprocessable(f"{name} is not a number this API accepts: send finite numbers",
                        code="not_finite")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body's bytes, read no further than ``max_bytes`` (a chunked upload without a
    Content-Length is cut off at the limit, not buffered whole)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"body is larger than {max_bytes} bytes", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"body is larger than {max_bytes} bytes",
                                  code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_bytes: int) -> tuple[Any, bytes]:
    """The body as JSON and its bytes (``read_body``), sent as application/json."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"send the body as application/json (got {ctype or 'no content type'})",
            code="unsupported_media_type")
    raw = await read_body(request, max_bytes)
    try:
        return orjson.loads(raw), raw
    except orjson.JSONDecodeError:
        pass  # let the standard parser say precisely what is wrong (NaN, 1e400, syntax)
    try:
        doc = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, Unprocessable):
            raise
        raise BadRequest(f"body is not valid JSON: {exc}", code="malformed_json") from None
    try:
        orjson.dumps(doc)  # what orjson refused and json took: lone surrogates ("\ud800")
    except TypeError as exc:
        if "surrogate" in str(exc):
            raise BadRequest("body is not valid JSON: a string holds a lone UTF-16 "
                             "surrogate, which is not a Unicode character",
                             code="malformed_json") from None
        # else an integer beyond 64 bits: valid JSON, refused by the card's validation
    return doc, raw


def fingerprint_source(doc: Any, raw: bytes, idempotency_key: str | None) -> bytes:
    """What a retry must repeat. With an Idempotency-Key, the request's meaning, not its
    bytes: a client library that re-serialises the body on retry (other key order or
    spacing, ``null`` for a field it left out) is the same request (Powertools hashes
    ``json.dumps(sort_keys=True)`` too). The version is left out: the path or body's
    version is hashed beside it, as the one the request names. Without a key, a replay is
    the same API Gateway event, so its bytes suffice."""
    if idempotency_key is None:
        return raw
    if isinstance(doc, dict):
        doc = {k: v for k, v in doc.items() if k != "version"}
    return orjson.dumps(_same_meaning(doc), option=orjson.OPT_SORT_KEYS)


def _same_meaning(value: Any) -> Any:
    """60 and 60.0 are one JSON number, and a field set to null is a field left out (the
    server reads both as absent): a client that re-serialises one as the other is sending
    the same request."""
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if type(value) is int and not -(2**63) <= value < 2**64:
        return f"{value}"  # beyond what orjson writes: its digits stand for it
    if type(value) is dict:
        return {k: _same_meaning(v) for k, v in value.items() if v is not None}
    if type(value) is list:
        return [_same_meaning(v) for v in value]
    return value


def parse_predict(doc: Any, max_instances: int) -> tuple[list[Any], str | None, Any]:
    """``instances``, ``version`` and ``labels`` (zero-shot labels, for text models; the
    model checks them)."""
    if not isinstance(doc, dict):
        raise Unprocessable('the body must be an object: {"instances": [...]}',
                            code="invalid_body")
    unknown = sorted(set(doc) - {"instances", "version", "labels"})
    if unknown:
        raise Unprocessable(f"unknown body field(s): {', '.join(unknown)}",
                            code="invalid_body",
                            details=[{"field": f, "code": "unknown_field"} for f in unknown])
    instances = doc.get("instances")
    if not isinstance(instances, list) or not instances:
        raise Unprocessable('"instances" must be a non-empty list of records',
                            code="invalid_body")
    if len(instances) > max_instances:
        raise PayloadTooLarge(f"at most {max_instances} instances per request "
                              f"(got {len(instances)})", code="too_many_instances")
    version = doc.get("version")
    if version is not None and (not isinstance(version, str) or not version):
        raise Unprocessable('"version" must be a version or alias string', code="invalid_body")
    return instances, version, doc.get("labels")


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_RE.match(key):
        raise BadRequest("Idempotency-Key must be 1-255 visible ASCII characters",
                         code="invalid_idempotency_key")
    return key

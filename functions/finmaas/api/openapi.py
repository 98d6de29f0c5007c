"""The OpenAPI document: every body a route sends or takes is a named component schema,
every status it can answer is listed, and each model's instance schema is built from its
card, so a generated client is typed end to end and ``/docs`` shows what every model takes.

The document is built once per catalogue state (which models are served, at which
production version) and served as ready bytes: ``/openapi.json`` is public and building
it costs milliseconds. A model that appears in the store shows up once the registry's
alias TTL has passed. ``servers`` follows the request's ``root_path``, so behind API
Gateway's stage prefix a client generated from ``/prod/openapi.json`` calls ``/prod/v1``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any, get_args

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..billing import MONTH_RE
from ..cards import NAME_RE, VERSION_RE, CardDocument, InputSpec, ModelCard, card_json_schema
from ..metering import KINDS, UNITS
from ..registry import ModelRegistry
from ..runtime import FLOAT32_MAX

PREDICT_PATHS = ("/v1/models/{name}/predict", "/v1/models/{name}/versions/{version}/predict")
EXPLAIN_PATHS = ("/v1/models/{name}/explain", "/v1/models/{name}/versions/{version}/explain")
DEFAULT_MAX_INSTANCES = 1000
MONTH_PATTERN = MONTH_RE.pattern
# format_usd: an exact decimal with no exponent and no trailing zeros ("0.0005", "12", "0").
USD_PATTERN = r"^[0-9]+(\.[0-9]*[1-9])?$"
CENTS_PATTERN = r"^[0-9]+\.[0-9]{2}$"
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]+)?$"


ZERO_SHOT_EXAMPLE = [
    {"name": "card_lost_or_stolen", "description": "The customer's card is lost or stolen "
                                                   "and must be blocked"},
    {"name": "dispute_charge", "description": "The customer disputes a charge from a shop"},
    {"name": "balance_inquiry", "description": "The customer asks for their balance"},
]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def schema_name(model: str) -> str:
    return "".join(p.capitalize() for p in model.split("-")) + "Instance"


def field_schema(spec: InputSpec) -> dict[str, Any]:
    """A card field's schema; numbers also get the float32 range, the widest a graph
    computing in float32 accepts (the server answers 422 ``out_of_range`` beyond it)."""
    schema = spec.json_schema()
    if spec.type in ("number", "integer"):
        lo = -FLOAT32_MAX if spec.minimum is None else max(spec.minimum, -FLOAT32_MAX)
        hi = FLOAT32_MAX if spec.maximum is None else min(spec.maximum, FLOAT32_MAX)
        schema["minimum"], schema["maximum"] = lo, hi
    return schema


def instance_schema(card: ModelCard) -> dict[str, Any]:
    """Closed (``additionalProperties: false``): a typo such as ``incomee`` is an error in
    a generated client and a 422 ``unknown_field`` from the server, never a dropped value."""
    schema: dict[str, Any] = {
        "title": schema_name(card.name),
        "description": f"{card.name} v{card.version}: {card.description}",
        "type": "object",
        "additionalProperties": False,
        "properties": {spec.name: field_schema(spec) for spec in card.inputs},
    }
    required = [i.name for i in card.inputs if i.required]
    if required:
        schema["required"] = required
    return schema


def example_instance(card: ModelCard) -> dict[str, Any]:
    example = card.raw.get("example")
    if isinstance(example, dict):
        return example
    out: dict[str, Any] = {}
    for i in card.inputs:
        if i.type == "category":
            out[i.name] = i.categories[0]
        else:
            out[i.name] = i.minimum if i.minimum is not None else 0
    return out


# -- component schemas: the exact bodies app.py, billing.py and service.py produce ------
def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any
         ) -> dict[str, Any]:
    """An object schema; every listed property is required unless ``required`` says."""
    return {"type": "object", "required": list(properties) if required is None else required,
            "properties": properties, **extra}


TASKS = get_args(CardDocument.model_fields["task"].annotation)
STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
COUNT = {"type": "integer", "minimum": 0}
USD = {"type": "string", "pattern": USD_PATTERN,
       "description": "exact decimal US dollars, no exponent (e.g. \"0.0005\")"}
DATE = {"type": "string", "format": "date"}
MODEL_NAME = {"type": "string", "pattern": NAME_RE.pattern}
KIND = {"type": "string", "enum": list(KINDS),
        "description": "what the units count: predicted rows, explained rows, or the tokens "
                       "a text model read"}
UNIT = {"type": "string", "enum": sorted(set(UNITS.values())),
        "description": "the unit of the units: row (tabular models) or token (text models)"}
VERSION = {"type": "string", "pattern": VERSION_RE.pattern}

SCHEMAS: dict[str, dict[str, Any]] = {
    "ErrorResponse": _obj({"error": ref("Error")}, description=(
        "Every error on /v1, from the app or the gateway in front of it")),
    "Error": _obj({
        "code": {**STRING, "description": "stable, machine-readable (e.g. model_not_found)"},
        "message": {**STRING, "description": "for people; may change"},
        "details": {"type": "array", "items": ref("ErrorDetail"),
                    "description": "one entry per problem; empty when there is one"},
    }),
    "ErrorDetail": _obj({
        "instance": {**COUNT, "description": "index of the instance in the batch"},
        "label": {**COUNT, "description": "index of the zero-shot label (text models)"},
        "field": {**NULLABLE_STRING, "description": "the field (or body/query parameter)"},
        "code": {**STRING, "description": "e.g. missing, unknown_field, out_of_range"},
        "message": STRING,
    }, required=["code"]),
    "Health": _obj({"status": {"type": "string", "enum": ["ok"]}, "version": STRING}),
    "Aliases": {"type": "object",
                "additionalProperties": {"anyOf": [VERSION, ref("AliasRoute")]},
                "description": "alias (production, staging, ...) -> a version, or a route "
                               "splitting traffic between versions"},
    "AliasRoute": _obj({
        "versions": {"type": "object", "additionalProperties": {
            "type": "number", "exclusiveMinimum": 0, "maximum": 100},
            "description": "version -> percent of the alias's traffic (sums to 100)"},
        "shadow": {**VERSION, "description": "runs on a copy of the traffic; never "
                                             "returned nor billed"},
    }, required=["versions"]),
    "ShadowAgreement": _obj({
        "shadow": VERSION, "served": VERSION, "requests": COUNT, "rows": COUNT,
        "failures": COUNT,
        "mean_abs_diff": {"type": ["number", "null"],
                          "description": "mean |difference| of the scores (embeddings: "
                                         "mean 1 - cosine of the vectors)"},
        "flip_rate": {"type": ["number", "null"],
                      "description": "share of rows on the other side of the card's "
                                     "decision threshold (classifiers), or with another "
                                     "best label (zero-shot); null where there is no "
                                     "decision"},
    }),
    "CatalogueEntry": _obj({
        "name": MODEL_NAME,
        "task": {"type": "string", "enum": list(TASKS)},
        "description": STRING,
        "versions": {"type": "array", "items": VERSION},
        "aliases": ref("Aliases"),
        "default_version": {**VERSION, "description": "the version production points at"},
        "pricing": ref("CataloguePricing"),
    }),
    "CataloguePricing": _obj({
        "usd_per_1k_predictions": {**STRING, "description": "exact decimal (tabular models)"},
        "usd_per_1k_explanations": {**STRING, "description": "exact decimal, where the "
                                                             "model explains"},
        "usd_per_1k_tokens": {**STRING, "description": "exact decimal (text models)"},
        "currency": {"type": "string", "enum": ["USD"]},
    }, required=["currency"]),
    "Catalogue": _obj({"models": {"type": "array", "items": ref("CatalogueEntry")}}),
    "PredictResponse": _obj({
        "model": MODEL_NAME,
        "version": VERSION,
        "request_id": {**STRING, "description": "also the x-request-id header"},
        "predictions": {"type": "array", "items": {"anyOf": [
            ref("ClassifierPrediction"), ref("RegressionPrediction"),
            ref("EmbeddingPrediction"), ref("ZeroShotPrediction")]},
            "description": "one per instance, in order"},
        "output": ref("PredictionOutput"),
        "usage": ref("PredictionUsage"),
    }),
    "EmbeddingPrediction": _obj({
        "embedding": {"type": "array", "items": {"type": "number"},
                      "description": "unit vector (the card's outputs[0].dimension): cosine "
                                     "similarity is the dot product"},
        "tokens": {**COUNT, "description": "tokens of this text, billed"},
    }),
    "ZeroShotPrediction": _obj({
        "label": {**STRING, "description": "the most probable of the request's labels"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "scores": {"type": "object", "additionalProperties": {
            "type": "number", "minimum": 0, "maximum": 1},
            "description": "every label's probability (they sum to 1)"},
        "tokens": {**COUNT, "description": "tokens of this text, billed (label texts are "
                                           "billed once per request, in usage)"},
    }),
    "ZeroShotLabel": _obj({
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
        "description": {"type": ["string", "null"], "minLength": 1,
                        "description": "what is embedded for the label (better than the "
                                       "name alone); at most the card's "
                                       "text.zero_shot.max_label_chars; null or absent: "
                                       "the name, with _ and - read as spaces"},
    }, required=["name"], additionalProperties=False),
    "ExplainResponse": _obj({
        "model": MODEL_NAME,
        "version": VERSION,
        "request_id": {**STRING, "description": "also the x-request-id header"},
        "explanation": ref("ExplanationMethod"),
        "predictions": {"type": "array", "items": {"anyOf": [
            ref("ExplainedClassifierPrediction"), ref("ExplainedRegressionPrediction")]},
            "description": "one per instance, in order"},
        "output": ref("PredictionOutput"),
        "usage": ref("PredictionUsage"),
    }),
    "ExplanationMethod": _obj({
        "method": {"type": "string", "enum": ["tree_path_dependent", "linear"],
                   "description": "exact TreeSHAP (path-dependent) or linear SHAP against "
                                  "the training means"},
        "exact": {"type": "boolean"},
        "output_space": {**STRING, "description": "where contributions add up: log-odds "
                                                  "for classifiers, the value for "
                                                  "regressions"},
        "link": {"type": "string", "enum": ["logistic", "identity"],
                 "description": "link(raw_score) is the served score"},
        "attribution": {"type": "string", "enum": ["fields", "components"],
                        "description": "contributions per card input field, or per derived "
                                       "component the model is linear in"},
        "base_value": {"type": "number", "description": "the average raw score over the "
                                                        "training data the attribution "
                                                        "starts from"},
    }),
    "ExplainedClassifierPrediction": _obj({
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "event": NULLABLE_STRING,
        "raw_score": {"type": "number", "description": "base_value + sum of contributions"},
        "contributions": {"type": "object", "additionalProperties": {"type": "number"}},
        "reasons": {"type": "array", "items": ref("Reason"), "maxItems": 4},
    }),
    "ExplainedRegressionPrediction": _obj({
        "value": {"type": "number"},
        "unit": NULLABLE_STRING,
        "raw_score": {"type": "number", "description": "base_value + sum of contributions"},
        "contributions": {"type": "object", "additionalProperties": {"type": "number"}},
        "reasons": {"type": "array", "items": ref("Reason"), "maxItems": 4},
    }),
    "Reason": _obj({
        "field": {**STRING, "description": "the field (or component) that pushed toward the "
                                           "outcome"},
        "value": {"description": "the caller's value (a component's computed value)"},
        "contribution": {"type": "number", "exclusiveMinimum": 0},
        "text": {**STRING, "description": "the card's reason text, for the applicant"},
    }),
    "ClassifierPrediction": _obj({
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "event": {**NULLABLE_STRING, "description": "what the probability is of (default, "
                                                    "denial, ...)"},
    }),
    "RegressionPrediction": _obj({
        "value": {"type": "number"},
        "unit": NULLABLE_STRING,
    }),
    "PredictionOutput": _obj({
        "name": {"type": "string", "enum": ["probability", "value", "embedding", "label"]},
        "description": STRING,
        "unit": NULLABLE_STRING,
    }),
    "PredictionUsage": _obj({
        "units": {**COUNT, "description": "rows predicted (or explained), or tokens read"},
        "kind": KIND,
        "unit_price_usd": USD,
        "amount_usd": USD,
    }),
    "UsageReport": _obj({
        "tenant": STRING,
        "start": DATE,
        "end": DATE,
        "currency": {"type": "string", "enum": ["USD"]},
        "days": {"type": "array", "items": ref("UsageDay")},
        "totals": ref("UsageTotals"),
    }),
    "UsageDay": _obj({
        "date": DATE, "model": MODEL_NAME, "version": VERSION, "kind": KIND, "unit": UNIT,
        "requests": COUNT, "units": COUNT, "amount_usd": USD,
    }),
    "UsageTotals": _obj({"requests": COUNT, "units": {
        "type": "object", "additionalProperties": COUNT,
        "description": "units per unit (rows and tokens are not added together)"},
        "amount_usd": USD}),
    "Invoice": _obj({
        "tenant": STRING,
        "month": {"type": "string", "pattern": MONTH_PATTERN},
        "plan": STRING,
        "currency": {"type": "string", "enum": ["USD"]},
        "status": {"type": "string", "enum": ["open", "final"],
                   "description": "open until the month is over"},
        "lines": {"type": "array", "items": ref("InvoiceLine")},
        "subtotal_usd": USD,
        "included_units": ref("IncludedUnits"),
        "discount": ref("Discount"),
        "total_usd": {"type": "string", "pattern": CENTS_PATTERN,
                      "description": "rounded half-up to cents, once"},
    }),
    "InvoiceLine": _obj({
        "model": MODEL_NAME, "version": VERSION, "kind": KIND, "unit": UNIT,
        "requests": COUNT, "units": COUNT, "unit_price_usd": USD, "amount_usd": USD,
    }),
    "IncludedUnits": _obj({"allowance": COUNT, "used": COUNT, "credit_usd": USD}),
    "Account": _obj({
        "tenant": STRING,
        "plan": ref("Plan"),
        "month": {"type": "string", "pattern": MONTH_PATTERN},
        "billed_requests_this_month": {
            **COUNT, "description": "billed requests so far this month (UTC), from the "
                                    "rollups; the plan's quota counts every admitted call, "
                                    "reads included, so it is used at least this much"},
    }),
    "Plan": _obj({
        "name": STRING, "description": STRING,
        "rate_limit_rps": {"type": "number"}, "burst": COUNT,
        "monthly_request_quota": {"type": ["integer", "null"], "minimum": 0},
        "included_units": {**COUNT, "description": "predicted rows a month at no charge"},
        "discount_percent": {"type": "string", "pattern": DECIMAL_PATTERN},
    }),
    "Discount": _obj({"percent": {"type": "string", "pattern": DECIMAL_PATTERN},
                      "amount_usd": USD}),
}


def _card_schemas() -> dict[str, dict[str, Any]]:
    """The card's published schema (``cards.CardDocument``) and its parts; the card route
    answers it plus the model's aliases (``ModelCard``)."""
    doc = card_json_schema(ref_template="#/components/schemas/{model}")
    parts = doc.pop("$defs", {})
    answer = copy.deepcopy(doc)
    answer["title"] = "ModelCard"
    answer["description"] = ("The model card of one version (CardDocument, the schema "
                             "every card.json validates against), plus the model's aliases.")
    answer["properties"]["aliases"] = ref("Aliases")
    answer["properties"]["shadow_agreement"] = {
        "type": "array", "items": ref("ShadowAgreement"),
        "description": "while a shadow runs: its agreement with what was served, in this "
                       "process"}
    answer["required"] = [*answer["required"], "aliases"]
    return {**parts, "CardDocument": doc, "ModelCard": answer}


SCHEMAS.update(_card_schemas())

RETRY_AFTER = {"description": "seconds to wait before retrying",
               "schema": {"type": "integer", "minimum": 1}}
ERROR_TEXT = {
    400: "malformed JSON or Idempotency-Key (malformed_json, invalid_idempotency_key)",
    401: "missing or invalid API key (missing_api_key, invalid_api_key)",
    403: "the key's tenant is suspended (tenant_suspended)",
    404: "unknown model or version (model_not_found, version_not_found)",
    409: "Idempotency-Key reused for another body (idempotency_key_reused)",
    413: "body too large, too many instances, or too many tokens for a text model "
         "(body_too_large, too_many_instances, request_too_many_tokens)",
    415: "not application/json (unsupported_media_type)",
    422: "a field fails the model card; details name instance and field (validation_error, "
         "invalid_body, invalid_labels, version_conflict, not_finite)",
    429: "rate limit or monthly quota of the key's plan (rate_limited, quota_exceeded)",
    503: "a store is unavailable; retry after Retry-After (tenants_unavailable, "
         "model_store_unavailable, model_unavailable, metering_unavailable, "
         "usage_unavailable)",
}
KEYED = (401, 403, 429, 503)  # any route behind the key: gateway, tenant directory

# /v1/batch-jobs: plain routes (their bodies are read by hand, like predict's), documented
# here with their own schemas.
LOCATION = {"type": "string", "pattern": r"^(s3://[^/]+/|file:///).+",
            "description": "an s3:// URL (in AWS) or a file:// URL (the local server), "
                           "under the tenant's own area of an allowed root"}
JOB_ID = {"type": "string", "pattern": r"^bj-[0-9a-f]{20}$"}
TIMESTAMP = {"type": "string", "format": "date-time"}
BATCH_SCHEMAS: dict[str, dict[str, Any]] = {
    "BatchJobRequest": _obj({
        "model": {**MODEL_NAME, "description": "a tabular model (text models are refused)"},
        "version": {**STRING, "description": "a version or alias (default production); "
                                             "the job pins the version it resolves to"},
        "input": {**LOCATION, "description": "a .csv (header row, cells typed by the card) "
                                             "or .jsonl (one record per line) object; an "
                                             "optional row_id column or field is echoed"},
        "output": {**LOCATION, "pattern": r"^(s3://[^/]+/|file:///).*/$",
                   "description": "a prefix ending in '/': the job writes below "
                                  "<output><job_id>/"},
        "explain": {"type": "boolean", "default": False,
                    "description": "explain every row (billed as batch_explanation)"},
    }, required=["model", "input", "output"], additionalProperties=False),
    "BatchJob": _obj({
        "job_id": JOB_ID,
        "tenant": STRING,
        "model": MODEL_NAME,
        "version": {**VERSION, "description": "the version the job scores with, pinned "
                                              "when it was submitted"},
        "kind": {"type": "string", "enum": ["prediction", "explanation"]},
        "explain": {"type": "boolean"},
        "input": LOCATION,
        "output": LOCATION,
        "results": {**LOCATION, "description": "where the output lines are: one file "
                                               "locally, a prefix of rows/chunk-*.jsonl "
                                               "objects in AWS"},
        "format": {"type": "string", "enum": ["csv", "jsonl"]},
        "chunk_rows": {"type": "integer", "minimum": 1},
        "status": {"type": "string", "enum": ["running", "succeeded", "failed"]},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "chunks": {**COUNT, "description": "chunks scored so far, each counted once"},
        "rows_done": {**COUNT, "description": "rows scored, and billed"},
        "rows_failed": {**COUNT, "description": "rows the card refused, not billed"},
        "cost_usd": {**USD, "description": "billed so far: rows_done at the card's price"},
        "currency": {"type": "string", "enum": ["USD"]},
        "error": {**NULLABLE_STRING, "description": "why a failed job failed"},
    }),
    "BatchJobList": _obj({"jobs": {"type": "array", "items": ref("BatchJob"),
                                   "description": "the tenant's jobs, newest first "
                                                  "(at most 100)"}}),
}
SCHEMAS.update(BATCH_SCHEMAS)
BATCH_SUBMIT_ERRORS = {
    **{s: ERROR_TEXT[s] for s in (400, 401, 409, 415, 429, 503)},
    403: "the key's tenant is suspended (tenant_suspended), or input or output is outside "
         "the tenant's area (location_not_allowed)",
    404: "unknown model or version, no input object, or a model that does not explain "
         "(model_not_found, version_not_found, input_not_found, explanations_not_available)",
    413: "body too large (body_too_large)",
    422: "a field is missing, unknown or wrong (invalid_body, invalid_location; details name "
         "it), or a text model (batch_not_supported)",
}


def _batch_operations() -> dict[str, dict[str, Any]]:
    job = {"description": "the job", "content": _json(ref("BatchJob"))}
    keyed = {s: ERROR_TEXT[s] for s in KEYED}
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": JOB_ID}
    idem = {"name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
            "description": "a retried submit with the same key answers the job it started "
                           "(200) and starts no second job"}
    return {
        "/v1/batch-jobs": {
            "post": {
                "tags": ["batch"], "operationId": "submit_batch_job",
                "summary": "Score a whole CSV or JSON Lines object, billed per good row",
                "parameters": [idem],
                "requestBody": {"required": True, "content": _json(ref("BatchJobRequest"))},
                "responses": {
                    "202": {**job, "description": "started; follow it at Location",
                            "headers": {"Location": {"schema": STRING}}},
                    "200": {**job, "description": "a repeated Idempotency-Key: the job it "
                                                  "started"},
                    **error_responses(BATCH_SUBMIT_ERRORS)}},
            "get": {
                "tags": ["batch"], "operationId": "list_batch_jobs",
                "summary": "The caller's tenant's batch jobs",
                "responses": {"200": {"description": "OK",
                                      "content": _json(ref("BatchJobList"))},
                              **error_responses(keyed)}},
        },
        "/v1/batch-jobs/{job_id}": {
            "get": {
                "tags": ["batch"], "operationId": "get_batch_job",
                "summary": "A batch job's status, rows done and failed, and cost so far",
                "parameters": [job_id],
                "responses": {"200": job, **error_responses(
                    {**keyed, 404: "no such job for this tenant (job_not_found)"})}},
        },
    }

# FastAPI-generated operations: (method, path) -> operationId, 200 body, error statuses
# with route-specific wording, and parameter schemas tighter than the signatures say.
GET_ROUTES: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/health"): {"id": "health", "body": "Health", "errors": {}, "open": True},
    ("get", "/v1/models"): {"id": "list_models", "body": "Catalogue", "errors": {}},
    ("get", "/v1/models/{name}"): {
        "id": "get_model_card", "body": "ModelCard", "errors": {404: ERROR_TEXT[404]},
        "params": {"name": MODEL_NAME, "version": {
            **VERSION, "description": "a version or alias (default production)"}}},
    ("get", "/v1/usage"): {
        "id": "get_usage", "body": "UsageReport",
        "errors": {422: "start or end is not YYYY-MM-DD, start is after end, or the range "
                        "is over 366 days (invalid_date, invalid_range)"},
        "params": {"start": {**DATE, "description": "first day (default: the 1st of this "
                                                    "month, UTC)"},
                   "end": {**DATE, "description": "last day, inclusive (default: today)"}}},
    ("get", "/v1/account"): {"id": "get_account", "body": "Account", "errors": {}},
    ("get", "/v1/invoices/{month}"): {
        "id": "get_invoice", "body": "Invoice",
        "errors": {404: "the month has not started (invoice_not_found)",
                   422: "month is not YYYY-MM (invalid_month)"},
        "params": {"month": {"type": "string", "pattern": MONTH_PATTERN,
                             "description": "YYYY-MM"}}},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error_responses(errors: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status in sorted(errors):
        response: dict[str, Any] = {"description": errors[status],
                                    "content": _json(ref("ErrorResponse"))}
        if status in (429, 503):
            response["headers"] = {"Retry-After": {**RETRY_AFTER, "required": True}}
        out[str(status)] = response
    return out


def _document_get_routes(doc: dict[str, Any], names: list[str]) -> None:
    for (method, path), spec in GET_ROUTES.items():
        op = doc["paths"].get(path, {}).get(method)
        if op is None:
            continue
        op["operationId"] = spec["id"]
        errors = {} if spec.get("open") else {s: ERROR_TEXT[s] for s in KEYED}
        errors.update(spec["errors"])
        op["responses"] = {"200": {"description": "OK", "content": _json(ref(spec["body"]))},
                           **error_responses(errors)}
        if spec.get("open"):
            op["security"] = []
        for param in op.get("parameters", []):
            schema = spec.get("params", {}).get(param["name"])
            if schema is not None:
                param["schema"] = dict(schema)
            if param["name"] == "name" and names:
                param["schema"]["examples"] = names


def predict_operation(path: str, body: dict[str, Any], names: list[str] | None = None
                      ) -> dict[str, Any]:
    name = {**MODEL_NAME, "examples": names} if names else MODEL_NAME
    params: list[dict[str, Any]] = [
        {"name": "name", "in": "path", "required": True, "schema": name,
         "description": "model name, e.g. credit-risk"}]
    if "{version}" in path:
        params.append({"name": "version", "in": "path", "required": True, "schema": VERSION,
                       "description": "a version or alias"})
    params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                   "description": "a retry with the same key returns the same answer and is "
                                  "billed once"})
    explains = "/explain" in path
    ok = {"description": "predictions and their usage" + (" with exact attributions"
                                                           if explains else ""),
          "content": _json(ref("ExplainResponse" if explains else "PredictResponse")),
          "headers": {
              "x-request-id": {"description": "the request id (also in the body)",
                               "schema": STRING},
              "Idempotent-Replayed": {
                  "description": "with Idempotency-Key: whether this answer is a replay",
                  "schema": {"type": "string", "enum": ["true", "false"]}}}}
    errors = {s: ERROR_TEXT[s] for s in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)}
    return {
        "tags": ["models"],
        "summary": ("Explain" if explains else "Predict") + (
            " with a given version" if "{version}" in path
            else " with the production version (or body 'version')"),
        "operationId": ("explain" if explains else "predict") + (
            "_version" if "{version}" in path else ""),
        "parameters": params,
        "requestBody": body,
        "responses": {"200": ok, **error_responses(errors)},
    }


def predict_request(cards: list[ModelCard], max_instances: int) -> dict[str, Any]:
    items = {"anyOf": [ref(schema_name(c.name)) for c in cards]} if cards else {
        "type": "object"}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["instances"],
        "properties": {
            "instances": {"type": "array", "minItems": 1, "maxItems": max_instances,
                          "items": items,
                          "description": "records of the model's fields (its XxxInstance)"},
            "version": {**VERSION, "description": "a version or alias (default production)"},
            "labels": {"type": ["array", "null"], "minItems": 2,
                       "maxItems": max((c.text.max_labels for c in cards if c.text), default=2),
                       "items": ref("ZeroShotLabel"),
                       "description": "text models: classify each text into these labels "
                                      "(zero-shot) instead of returning its embedding; at "
                                      "most the card's text.zero_shot.max_labels"},
        },
    }


def build_document(app: FastAPI, cards: list[ModelCard], max_instances: int
                   ) -> dict[str, Any]:
    """The whole document for these production cards: FastAPI's paths and parameters for
    the GET routes, everything else from this module."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    names = [c.name for c in cards]
    _document_get_routes(doc, names)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, replaced
        schemas.pop(unused, None)
    schemas.update(copy.deepcopy(SCHEMAS))  # the document is handed out; keep these intact
    for card in cards:
        schemas[schema_name(card.name)] = instance_schema(card)
    schemas["PredictRequest"] = predict_request(cards, max_instances)
    body = {
        "required": True,
        "content": {"application/json": {
            "schema": ref("PredictRequest"),
            "examples": {**{c.name: {"summary": f"{c.name}: {c.description[:80]}",
                                     "value": {"instances": [example_instance(c)]}}
                            for c in cards},
                         **{f"{c.name}-zero-shot": {
                             "summary": f"{c.name}: zero-shot routing into your labels",
                             "value": {"instances": [example_instance(c)],
                                       "labels": ZERO_SHOT_EXAMPLE}}
                            for c in cards if c.text is not None}},
        }},
    }
    for path in (*PREDICT_PATHS, *EXPLAIN_PATHS):
        doc["paths"][path] = {"post": predict_operation(path, body, names)}
    doc["paths"].update(_batch_operations())
    doc["components"]["securitySchemes"] = {"ApiKey": {
        "type": "apiKey", "in": "header", "name": "x-api-key"}}
    doc["security"] = [{"ApiKey": []}]
    doc["servers"] = [{"url": "/"}]
    return doc


class OpenApiCache:
    """The document for the registry's current catalogue, rebuilt only when that changes.

    The catalogue call is cheap (the registry caches names and aliases for its TTL), so
    checking it on every request is what lets a new model appear without a restart.
    """

    def __init__(self, registry: ModelRegistry,
                 build: Callable[[list[ModelCard]], dict[str, Any]]) -> None:
        self.registry = registry
        self.build = build
        self._lock = threading.Lock()
        self._state: tuple[tuple[str, str], ...] | None = None
        self._doc: dict[str, Any] = {}
        self._bytes: dict[str, bytes] = {}

    def _current(self) -> tuple[tuple[str, str], ...]:
        try:
            entries = self.registry.catalogue()
        except Exception:  # the docs still render if the store is down
            entries = []
        return tuple((e["name"], e["default_version"]) for e in entries)

    def document(self) -> dict[str, Any]:
        state = self._current()
        with self._lock:
            if state != self._state:
                cards = []
                for name, version in state:
                    try:
                        cards.append(self.registry.card(name, version))
                    except Exception:  # listed a moment ago; document the rest
                        continue
                self._doc, self._bytes, self._state = self.build(cards), {}, state
            return self._doc

    def served(self, root_path: str) -> bytes:
        """The document as bytes, its one server being where the client reached it."""
        doc = self.document()
        with self._lock:
            out = self._bytes.get(root_path)
            if out is None:
                out = orjson.dumps({**doc, "servers": [{"url": root_path or "/"}]})
                if len(self._bytes) < 16:
                    self._bytes[root_path] = out
            return out


def install(app: FastAPI, registry: ModelRegistry) -> OpenApiCache:
    """Replace FastAPI's document and its /openapi.json route with the cached ones."""
    services = getattr(app.state, "services", None)
    max_instances = getattr(getattr(services, "settings", None), "max_instances",
                            DEFAULT_MAX_INSTANCES)
    cache = OpenApiCache(registry, lambda cards: build_document(app, cards, max_instances))
    app.openapi = cache.document  # type: ignore[method-assign]
    if app.openapi_url is None:
        return cache

    async def openapi_json(request: Request) -> Response:
        root_path = request.scope.get("root_path", "").rstrip("/")
        return Response(cache.served(root_path), media_type="application/json")

    path = app.openapi_url
    app.router.routes[:] = [r for r in app.router.routes
                            if not (isinstance(r, Route) and r.path == path)]
    app.add_route(path, openapi_json, include_in_schema=False)
    return cache

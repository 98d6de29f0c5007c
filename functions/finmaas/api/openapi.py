"""The OpenAPI document, with each model's request schema built from its card so
``/docs`` shows what every model takes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..cards import ModelCard
from ..registry import ModelRegistry

PREDICT_PATHS = ("/v1/models/{name}/predict", "/v1/models/{name}/versions/{version}/predict")


def schema_name(model: str) -> str:
    return "".join(p.capitalize() for p in model.split("-")) + "Instance"


def instance_schema(card: ModelCard) -> dict[str, Any]:
    return {
        "title": schema_name(card.name),
        "description": f"{card.name} v{card.version}: {card.description}",
        "type": "object",
        "additionalProperties": False,
        "required": [i.name for i in card.inputs if i.required],
        "properties": {i.name: i.json_schema() for i in card.inputs},
    }


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


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}}}}},
}
PREDICTION_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"}, "version": {"type": "string"},
        "request_id": {"type": "string"},
        "predictions": {"type": "array", "items": {"type": "object", "description":
                        "{probability, event} for classifiers, {value, unit} for regression"}},
        "output": {"type": "object"},
        "usage": {"type": "object", "properties": {
            "units": {"type": "integer"}, "unit_price_usd": {"type": "string"},
            "amount_usd": {"type": "string", "description": "exact decimal"}}},
    },
}
ERRORS = {
    "400": "malformed JSON or Idempotency-Key", "401": "missing or invalid API key",
    "404": "unknown model or version", "409": "Idempotency-Key reused for another body",
    "413": "body too large or more than 1,000 instances", "415": "not application/json",
    "422": "a field fails the model card (details name instance and field)",
    "429": "rate limit or quota", "503": "model store or metering unavailable (retry)",
}


def predict_operation(path: str, body: dict[str, Any]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
         "description": "model name, e.g. credit-risk"}]
    if "{version}" in path:
        params.append({"name": "version", "in": "path", "required": True,
                       "schema": {"type": "string"}, "description": "a version or alias"})
    params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                   "schema": {"type": "string", "maxLength": 255},
                   "description": "a retry with the same key returns the same answer and is "
                                  "billed once"})
    responses: dict[str, Any] = {"200": {"description": "predictions and their usage",
                                         "content": {"application/json": {
                                             "schema": PREDICTION_SCHEMA}}}}
    for status, text in ERRORS.items():
        responses[status] = {"description": text,
                             "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    return {
        "tags": ["models"],
        "summary": "Predict with a given version" if "{version}" in path
        else "Predict with the production version (or body 'version')",
        "operationId": "predict_version" if "{version}" in path else "predict",
        "parameters": params,
        "requestBody": body,
        "responses": responses,
    }


def install(app: FastAPI, registry: ModelRegistry) -> None:
    def openapi() -> dict[str, Any]:
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        refs, examples = [], {}
        try:
            entries = registry.catalogue()
        except Exception:  # the docs still render if the store is down
            entries = []
        for entry in entries:
            card = registry.card(entry["name"], entry["default_version"])
            schemas[schema_name(card.name)] = instance_schema(card)
            refs.append({"$ref": f"#/components/schemas/{schema_name(card.name)}"})
            examples[card.name] = {"summary": f"{card.name}: {card.description[:80]}",
                                   "value": {"instances": [example_instance(card)]}}
        body = {
            "required": True,
            "content": {"application/json": {
                "schema": {
                    "type": "object", "required": ["instances"],
                    "properties": {
                        "instances": {"type": "array", "minItems": 1, "maxItems": 1000,
                                      "items": {"oneOf": refs} if refs else {"type": "object"}},
                        "version": {"type": "string",
                                    "description": "a version or alias (default production)"},
                    },
                },
                "examples": examples,
            }},
        }
        for path in PREDICT_PATHS:
            doc["paths"][path] = {"post": predict_operation(path, body)}
        doc["components"].setdefault("securitySchemes", {})["ApiKey"] = {
            "type": "apiKey", "in": "header", "name": "x-api-key"}
        doc["security"] = [{"ApiKey": []}]
        return doc

    app.openapi = openapi  # type: ignore[method-assign]

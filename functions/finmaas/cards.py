"""The model card: the contract between a model's publisher, the server and the buyer.

A card is a JSON document (``<name>/<version>/card.json``). ``ModelCard.parse`` checks
every key the server relies on and raises ``CardError`` with all problems at once, so a
publisher sees everything wrong with a card in one go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,62}[a-z0-9]$")
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
TASKS = ("binary_classification", "regression")
INPUT_TYPES = ("number", "integer", "category")
REQUIRED_KEYS = (
    "name",
    "version",
    "task",
    "description",
    "inputs",
    "outputs",
    "metrics",
    "training_data",
    "artifact",
    "pricing",
    "serving",
)
# A unit price is usd_per_1k / 1000; nine decimals per unit keeps sums exact in nano-USD.
MAX_PRICE_EXPONENT = -6


class CardError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: Literal["number", "integer", "category"]
    required: bool
    description: str
    categories: tuple[str, ...] = ()
    unknown_category: Literal["reject", "ignore"] = "reject"
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this field, for the OpenAPI document."""
        schema: dict[str, Any] = {"description": self.description}
        if self.type == "category":
            schema["type"] = "string"
            if self.unknown_category == "reject":
                schema["enum"] = list(self.categories)
            else:
                schema["examples"] = list(self.categories[:5])
        else:
            schema["type"] = "integer" if self.type == "integer" else "number"
            if self.minimum is not None:
                schema["minimum"] = self.minimum
            if self.maximum is not None:
                schema["maximum"] = self.maximum
        if self.unit:
            schema["description"] += f" ({self.unit})"
        return schema


@dataclass(frozen=True)
class OutputSpec:
    name: str
    type: str
    description: str
    unit: str | None = None
    event: str | None = None


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    task: Literal["binary_classification", "regression"]
    description: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    graph_output: str
    graph_column: int | None
    sha256: str
    artifact_file: str
    artifact_bytes: int
    usd_per_1k: Decimal
    raw: dict[str, Any]

    @property
    def unit_price(self) -> Decimal:
        """Price of one predicted row, exact."""
        return self.usd_per_1k / 1000

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @classmethod
    def parse(cls, doc: Any) -> ModelCard:
        problems: list[str] = []
        if not isinstance(doc, dict):
            raise CardError(["card must be a JSON object"])
        for key in REQUIRED_KEYS:
            if key not in doc:
                problems.append(f"missing key {key!r}")
        if problems:
            raise CardError(problems)
        name, version = doc["name"], doc["version"]
        if not isinstance(name, str) or not NAME_RE.match(name):
            problems.append(f"name {name!r} must be lowercase letters, digits and dashes")
        if not isinstance(version, str) or not VERSION_RE.match(version):
            problems.append(f"version {version!r} must be a short string such as '1'")
        if doc["task"] not in TASKS:
            problems.append(f"task must be one of {TASKS}")
        inputs = _parse_inputs(doc["inputs"], problems)
        outputs = _parse_outputs(doc["outputs"], problems)
        serving = doc["serving"] if isinstance(doc["serving"], dict) else {}
        graph_output = serving.get("output")
        graph_column = serving.get("column")
        if not isinstance(graph_output, str):
            problems.append("serving.output must name the ONNX output to read")
        if graph_column is not None and not isinstance(graph_column, int):
            problems.append("serving.column must be an integer or absent")
        artifact = doc["artifact"] if isinstance(doc["artifact"], dict) else {}
        sha = artifact.get("sha256")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            problems.append("artifact.sha256 must be 64 lowercase hex digits")
        if not isinstance(artifact.get("bytes"), int) or artifact.get("bytes", 0) <= 0:
            problems.append("artifact.bytes must be a positive integer")
        file = artifact.get("file", "model.onnx")
        if not isinstance(file, str) or "/" in file or file.startswith("."):
            problems.append("artifact.file must be a plain file name")
        price = _parse_price(doc["pricing"], problems)
        metrics = doc["metrics"]
        if not isinstance(metrics, dict) or "holdout" not in metrics:
            problems.append("metrics must be an object with a 'holdout' description")
        if problems:
            raise CardError(problems)
        return cls(
            name=name,
            version=version,
            task=doc["task"],
            description=str(doc["description"]),
            inputs=inputs,
            outputs=outputs,
            graph_output=graph_output,  # type: ignore[arg-type]
            graph_column=graph_column,
            sha256=sha,  # type: ignore[arg-type]
            artifact_file=file,
            artifact_bytes=artifact["bytes"],
            usd_per_1k=price,
            raw=doc,
        )


def _parse_inputs(items: Any, problems: list[str]) -> tuple[InputSpec, ...]:
    if not isinstance(items, list) or not items:
        problems.append("inputs must be a non-empty list")
        return ()
    specs: list[InputSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"inputs[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object")
            continue
        name, typ = item.get("name"), item.get("type")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.name is required")
            continue
        if name in seen:
            problems.append(f"{where}: duplicate input {name!r}")
        seen.add(name)
        if typ not in INPUT_TYPES:
            problems.append(f"{where} ({name}): type must be one of {INPUT_TYPES}")
            continue
        cats = item.get("categories") or []
        if typ == "category" and (
            not isinstance(cats, list) or not cats or not all(isinstance(c, str) for c in cats)
        ):
            problems.append(f"{where} ({name}): a category input needs a list of categories")
            continue
        if not isinstance(item.get("required"), bool):
            problems.append(f"{where} ({name}): required must be true or false")
            continue
        unknown = item.get("unknown_category", "reject")
        if unknown not in ("reject", "ignore"):
            problems.append(f"{where} ({name}): unknown_category must be 'reject' or 'ignore'")
            continue
        specs.append(
            InputSpec(
                name=name,
                type=typ,
                required=item["required"],
                description=str(item.get("description", "")),
                categories=tuple(cats),
                unknown_category=unknown,
                unit=item.get("unit"),
                minimum=item.get("minimum"),
                maximum=item.get("maximum"),
            )
        )
    return tuple(specs)


def _parse_outputs(items: Any, problems: list[str]) -> tuple[OutputSpec, ...]:
    if not isinstance(items, list) or not items:
        problems.append("outputs must be a non-empty list")
        return ()
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"outputs[{i}] must be an object with a name")
            continue
        out.append(
            OutputSpec(
                name=item["name"],
                type=str(item.get("type", "number")),
                description=str(item.get("description", "")),
                unit=item.get("unit"),
                event=item.get("event"),
            )
        )
    return tuple(out)


def _parse_price(pricing: Any, problems: list[str]) -> Decimal:
    raw = pricing.get("usd_per_1k_predictions") if isinstance(pricing, dict) else None
    if not isinstance(raw, str):
        problems.append("pricing.usd_per_1k_predictions must be a decimal string, e.g. '0.50'")
        return Decimal(0)
    try:
        price = Decimal(raw)
    except InvalidOperation:
        problems.append(f"pricing.usd_per_1k_predictions {raw!r} is not a decimal")
        return Decimal(0)
    if not price.is_finite() or price < 0:
        problems.append("pricing.usd_per_1k_predictions must be a finite, non-negative decimal")
    elif price.as_tuple().exponent < MAX_PRICE_EXPONENT:  # type: ignore[operator]
        problems.append("pricing.usd_per_1k_predictions has more than 6 decimals")
    return price

"""The model card: the contract between a model's publisher, the server and the buyer.

A card is a JSON document (``<name>/<version>/card.json``) with a published schema
(``CardDocument``, a pydantic model; ``card_json_schema()`` is its JSON Schema).
``ModelCard.parse`` validates against it and raises ``CardError`` with all problems at
once, so a publisher sees everything wrong with a card in one go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{1,62}[a-z0-9]$")
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


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
class VersionFile:
    """A file of the version besides its graph (explainer data, a tokenizer)."""

    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ExplanationSpec:
    method: str
    file: str
    output_space: str
    attribution: Literal["fields", "components"]
    # name -> (text toward the outcome, text away from it), "{value}" for the caller's value
    reasons: dict[str, tuple[str, str]]


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
    files: tuple[VersionFile, ...] = ()
    explanation: ExplanationSpec | None = None
    usd_per_1k_explanations: Decimal | None = None

    @property
    def unit_price(self) -> Decimal:
        """Price of one predicted row, exact."""
        return self.usd_per_1k / 1000

    def price_of(self, kind: str) -> Decimal:
        """Price of one row of a usage kind (a prediction, or an explanation), exact."""
        if kind == "explanation":
            if self.usd_per_1k_explanations is None:
                raise ValueError(f"{self.name} v{self.version} has no explanation price")
            return self.usd_per_1k_explanations / 1000
        return self.unit_price

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @classmethod
    def parse(cls, doc: Any) -> ModelCard:
        """Validate ``doc`` against the card schema (``CardDocument``) and build the
        server's view of it; every problem is reported at once in ``CardError``."""
        try:
            card = CardDocument.model_validate(doc)
        except ValidationError as exc:
            raise CardError([_problem(e) for e in exc.errors()]) from None
        outputs = tuple(OutputSpec(name=o.name, type=o.type, description=o.description,
                                   unit=o.unit, event=o.event) for o in card.outputs)
        inputs = tuple(
            InputSpec(name=i.name, type=i.type, required=i.required, description=i.description,
                      categories=tuple(i.categories or ()),
                      unknown_category=i.unknown_category, unit=i.unit, minimum=i.minimum,
                      maximum=i.maximum)
            for i in card.inputs)
        explanation = None
        if card.explanation is not None:
            explanation = ExplanationSpec(
                method=card.explanation.method, file=card.explanation.file,
                output_space=card.explanation.output_space,
                attribution=card.explanation.attribution,
                reasons={n: (r.toward, r.away) for n, r in (card.reasons or {}).items()})
        extra_price = card.pricing.usd_per_1k_explanations
        return cls(
            files=tuple(VersionFile(f.file, f.sha256, f.bytes) for f in card.files),
            explanation=explanation,
            usd_per_1k_explanations=Decimal(extra_price) if extra_price else None,
            name=card.name,
            version=card.version,
            task=card.task,
            description=card.description,
            inputs=inputs,
            outputs=outputs,
            graph_output=card.serving.output,
            graph_column=card.serving.column,
            sha256=card.artifact.sha256,
            artifact_file=card.artifact.file,
            artifact_bytes=card.artifact.bytes,
            usd_per_1k=Decimal(card.pricing.usd_per_1k_predictions),
            raw=doc,
        )


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "card"
    return f"{where}: {error['msg']}"


# -- the card schema ----------------------------------------------------------------------
# Strict: a number must be a JSON number ("0" is not), a flag a JSON boolean. Open: keys
# beyond these are welcome (model, fairness, calibration, intended_use, ...).
class _Section(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True)


class CardInput(_Section):
    """One input field in business terms (not a tensor position)."""

    name: str = Field(min_length=1, max_length=64)
    type: Literal["number", "integer", "category"]
    required: bool
    description: str = ""
    categories: list[str] | None = Field(default=None, min_length=1)
    unknown_category: Literal["reject", "ignore"] = "reject"
    unit: str | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CardInput:
        if self.type == "category" and not self.categories:
            raise ValueError("a category input needs a list of categories")
        if self.type != "category" and self.categories is not None:
            raise ValueError("only a category input has categories")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is above maximum {self.maximum}")
        return self


class CardOutput(_Section):
    name: str = Field(min_length=1)
    type: str = "number"
    description: str = ""
    unit: str | None = None
    event: str | None = None


class CardServing(_Section):
    """Which graph output holds the score, and its column when the output is a matrix."""

    output: str = Field(min_length=1)
    column: int | None = Field(default=None, ge=0)


class CardArtifact(_Section):
    file: str = Field(default="model.onnx", pattern=r"^[^/.][^/]*$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(gt=0)


PRICE_PATTERN = r"^[0-9]+(\.[0-9]{1,6})?$"


class CardPricing(_Section):
    usd_per_1k_predictions: str = Field(
        pattern=PRICE_PATTERN,
        description="decimal string, at most 6 decimals (a unit price stays exact in "
                    "nano-dollars), e.g. '0.50'")
    usd_per_1k_explanations: str | None = Field(
        default=None, pattern=PRICE_PATTERN,
        description="price of explained rows; required when the card has an explanation")


class CardFile(_Section):
    """A file of the version besides the graph, covered by its sha256 like the graph."""

    file: str = Field(pattern=r"^[^/.][^/]*$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(gt=0)


class CardExplanation(_Section):
    """How the model explains: an exact method over the file of explainer data."""

    method: Literal["tree_path_dependent", "linear"]
    file: str = Field(pattern=r"^[^/.][^/]*$")
    output_space: str = Field(description="where contributions add up, e.g. 'log-odds of "
                                          "default' or the regression's value")
    attribution: Literal["fields", "components"] = Field(
        default="fields", description="contributions per card input field, or per derived "
                                      "component the model is linear in")


class CardReason(_Section):
    """Texts for an applicant: when a field pushed toward the outcome, and away from it.
    ``{value}`` stands for the caller's value."""

    toward: str = Field(min_length=1)
    away: str = Field(min_length=1)


class CardMetrics(_Section):
    holdout: Any = Field(description="how the holdout was drawn, and its row count")


class CardDocument(_Section):
    """The model card (``<name>/<version>/card.json``): the contract between a model's
    publisher, the server and the buyer. ``maas models verify``, ``maas models publish``
    and the server's loader all validate against it."""

    name: str = Field(pattern=NAME_RE.pattern)
    version: str = Field(pattern=VERSION_RE.pattern)
    task: Literal["binary_classification", "regression"]
    description: str
    inputs: list[CardInput] = Field(min_length=1)
    outputs: list[CardOutput] = Field(min_length=1)
    metrics: CardMetrics
    training_data: dict[str, Any]
    artifact: CardArtifact
    pricing: CardPricing
    serving: CardServing
    example: dict[str, Any] | None = Field(
        default=None, description="one valid instance; verify, publish and load predict it")
    files: list[CardFile] = Field(default_factory=list)
    explanation: CardExplanation | None = None
    reasons: dict[str, CardReason] | None = None
    global_importance: dict[str, float] | None = Field(
        default=None, description="mean |contribution| per field on the holdout")

    @model_validator(mode="after")
    def _explainable(self) -> CardDocument:
        if self.explanation is None:
            return self
        if self.pricing.usd_per_1k_explanations is None:
            raise ValueError("a card with an explanation needs pricing.usd_per_1k_explanations")
        if self.explanation.file not in {f.file for f in self.files}:
            raise ValueError(f"explanation.file {self.explanation.file!r} is not in files")
        if not self.reasons:
            raise ValueError("a card with an explanation needs reasons (texts per field)")
        if self.explanation.attribution == "fields":
            unknown = sorted(set(self.reasons) - {i.name for i in self.inputs})
            if unknown:
                raise ValueError(f"reasons name fields that are not inputs: {unknown}")
        return self

    @field_validator("inputs")
    @classmethod
    def _unique(cls, inputs: list[CardInput]) -> list[CardInput]:
        names = [i.name for i in inputs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate input(s): {', '.join(dupes)}")
        return inputs


def card_json_schema(ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The published JSON Schema of ``card.json`` (the OpenAPI document's ``ModelCard``
    is this schema plus the model's aliases)."""
    return CardDocument.model_json_schema(ref_template=ref_template)

"""The model card: the contract between a model's publisher, the server and the buyer.

A card is a JSON document (``<name>/<version>/card.json``) with a published schema
(``CardDocument``, a pydantic model; ``card_json_schema()`` is its JSON Schema).
``ModelCard.parse`` validates against it and raises ``CardError`` with all problems at
once, so a publisher sees everything wrong with a card in one go.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
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


TEXT_TASKS = ("text_embedding",)


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: Literal["number", "integer", "category", "text"]
    required: bool
    description: str
    categories: tuple[str, ...] = ()
    unknown_category: Literal["reject", "ignore"] = "reject"
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_chars: int | None = None
    max_tokens: int | None = None
    overflow: Literal["refuse", "truncate"] = "refuse"

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of this field, for the OpenAPI document."""
        schema: dict[str, Any] = {"description": self.description}
        if self.type == "text":
            schema.update(type="string", minLength=1, maxLength=self.max_chars)
            schema["description"] += (f" (at most {self.max_chars} characters and "
                                      f"{self.max_tokens} tokens; longer texts are "
                                      f"{'refused' if self.overflow == 'refuse' else 'truncated'})")
            return schema
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
    dimension: int | None = None


@dataclass(frozen=True)
class TextSpec:
    """How a text model reads and bills its texts (the card's ``text`` section)."""

    tokenizer: str  # a file of the version: the HF ``tokenizers`` JSON
    max_texts: int  # texts per request
    max_request_tokens: int  # tokens per request, label texts included
    temperature: float  # zero-shot: softmax over cosine similarities / temperature
    max_labels: int
    max_label_chars: int


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
    task: Literal["binary_classification", "regression", "text_embedding"]
    description: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    graph_output: str
    graph_column: int | None
    sha256: str
    artifact_file: str
    artifact_bytes: int
    # usage kind -> USD per 1,000 units: predicted rows, explained rows, or tokens
    prices: Mapping[str, Decimal]
    raw: dict[str, Any]
    files: tuple[VersionFile, ...] = ()
    explanation: ExplanationSpec | None = None
    text: TextSpec | None = None

    def price_of(self, kind: str) -> Decimal:
        """Price of one unit of a usage kind (a predicted row, an explained row, a token),
        exact. A batch job's rows cost what the same rows cost one request at a time
        (``batch_prediction`` is priced as ``prediction``)."""
        kind = kind.removeprefix("batch_")
        if kind not in self.prices:
            raise ValueError(f"{self.name} v{self.version} has no {kind} price")
        return self.prices[kind] / 1000

    @property
    def is_text(self) -> bool:
        """A text model: one text input, billed per token (the schema holds the rest)."""
        return self.task in TEXT_TASKS

    @property
    def pricing(self) -> dict[str, str]:
        """The card's prices as the catalogue shows them (``usd_per_1k_<unit>``)."""
        return {PRICE_KEYS[kind]: str(price) for kind, price in self.prices.items()}

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
                                   unit=o.unit, event=o.event, dimension=o.dimension)
                        for o in card.outputs)
        inputs = tuple(
            InputSpec(name=i.name, type=i.type, required=i.required, description=i.description,
                      categories=tuple(i.categories or ()),
                      unknown_category=i.unknown_category, unit=i.unit, minimum=i.minimum,
                      maximum=i.maximum, max_chars=i.max_chars, max_tokens=i.max_tokens,
                      overflow=i.overflow)
            for i in card.inputs)
        text = None
        if card.text is not None:
            zs = card.text.zero_shot
            text = TextSpec(tokenizer=card.text.tokenizer, max_texts=card.text.max_texts,
                            max_request_tokens=card.text.max_request_tokens,
                            temperature=zs.temperature, max_labels=zs.max_labels,
                            max_label_chars=zs.max_label_chars)
        explanation = None
        if card.explanation is not None:
            explanation = ExplanationSpec(
                method=card.explanation.method, file=card.explanation.file,
                output_space=card.explanation.output_space,
                attribution=card.explanation.attribution,
                reasons={n: (r.toward, r.away) for n, r in (card.reasons or {}).items()})
        prices = {kind: Decimal(price) for kind, key in PRICE_KEYS.items()
                  if (price := getattr(card.pricing, key)) is not None}
        return cls(
            files=tuple(VersionFile(f.file, f.sha256, f.bytes) for f in card.files),
            explanation=explanation,
            text=text,
            prices=prices,
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
    type: Literal["number", "integer", "category", "text"]
    required: bool
    description: str = ""
    categories: list[str] | None = Field(default=None, min_length=1)
    unknown_category: Literal["reject", "ignore"] = "reject"
    unit: str | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    max_chars: int | None = Field(default=None, ge=1, le=100_000,
                                  description="text: longest text accepted, in characters")
    max_tokens: int | None = Field(default=None, ge=3, le=8192,
                                   description="text: most tokens the model reads, special "
                                               "tokens included")
    overflow: Literal["refuse", "truncate"] = Field(
        default="refuse", description="text: a text beyond max_tokens is refused (422) or "
                                      "cut to max_tokens (and billed as cut)")

    @model_validator(mode="after")
    def _consistent(self) -> CardInput:
        text_only = {"max_chars": self.max_chars, "max_tokens": self.max_tokens}
        if self.type == "text":
            missing = [k for k, v in text_only.items() if v is None]
            if missing:
                raise ValueError(f"a text input needs {' and '.join(missing)}")
        elif any(v is not None for v in text_only.values()):
            raise ValueError("only a text input has max_chars and max_tokens")
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
    dimension: int | None = Field(default=None, ge=1, description="a vector's length")


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
    usd_per_1k_predictions: str | None = Field(
        default=None, pattern=PRICE_PATTERN,
        description="price of predicted rows (tabular models): decimal string, at most 6 "
                    "decimals (a unit price stays exact in nano-dollars), e.g. '0.50'")
    usd_per_1k_explanations: str | None = Field(
        default=None, pattern=PRICE_PATTERN,
        description="price of explained rows; required when the card has an explanation")
    usd_per_1k_tokens: str | None = Field(
        default=None, pattern=PRICE_PATTERN,
        description="price of tokens (text models): every token the model reads, label "
                    "texts included")


# usage kind (what a usage record's units count) -> the card's price of 1,000 of them
PRICE_KEYS = {"prediction": "usd_per_1k_predictions",
              "explanation": "usd_per_1k_explanations",
              "token": "usd_per_1k_tokens"}


class CardZeroShot(_Section):
    """Zero-shot classification with the caller's labels: softmax over the cosine
    similarities of a text to each label's text, divided by ``temperature``."""

    temperature: float = Field(gt=0, le=10)
    max_labels: int = Field(default=32, ge=2, le=256)
    max_label_chars: int = Field(default=300, ge=1, le=10_000)


class CardText(_Section):
    """How a text model tokenizes, bounds and bills its texts."""

    tokenizer: str = Field(pattern=r"^[^/.][^/]*$",
                           description="a file of the version: HF tokenizers JSON")
    max_texts: int = Field(ge=1, le=10_000, description="texts per request")
    max_request_tokens: int = Field(ge=3, le=1_000_000,
                                    description="tokens per request, label texts included")
    zero_shot: CardZeroShot


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


# What ``_priced_by_its_unit`` checks, in the published JSON Schema too: a text model has
# a text section and a token price, a tabular model a prediction price.
_BY_TASK = {"allOf": [{
    "if": {"properties": {"task": {"enum": list(TEXT_TASKS)}}, "required": ["task"]},
    "then": {"required": ["text"], "properties": {"pricing": {
        "required": ["usd_per_1k_tokens"], "not": {"required": ["usd_per_1k_predictions"]}}}},
    "else": {"properties": {"pricing": {"required": ["usd_per_1k_predictions"],
                                        "not": {"required": ["usd_per_1k_tokens"]}}}},
}]}


class CardDocument(_Section):
    """The model card (``<name>/<version>/card.json``): the contract between a model's
    publisher, the server and the buyer. ``maas models verify``, ``maas models publish``
    and the server's loader all validate against it."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True,
                              json_schema_extra=_BY_TASK)

    name: str = Field(pattern=NAME_RE.pattern)
    version: str = Field(pattern=VERSION_RE.pattern)
    task: Literal["binary_classification", "regression", "text_embedding"]
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
    text: CardText | None = Field(default=None, description="text models: tokenizer, "
                                                           "limits, zero-shot")

    @model_validator(mode="after")
    def _priced_by_its_unit(self) -> CardDocument:
        """A tabular model bills rows and reads numbers and categories; a text model bills
        tokens and reads one text field."""
        texts = [i for i in self.inputs if i.type == "text"]
        if self.task in TEXT_TASKS:
            if self.pricing.usd_per_1k_tokens is None:
                raise ValueError("a text model needs pricing.usd_per_1k_tokens")
            if self.pricing.usd_per_1k_predictions is not None:
                raise ValueError("a text model is priced per token, not per prediction")
            if len(texts) != 1 or len(self.inputs) != 1:
                raise ValueError("a text model has exactly one input, of type text")
            if self.text is None:
                raise ValueError("a text model needs a text section (tokenizer, limits)")
            if self.text.tokenizer not in {f.file for f in self.files}:
                raise ValueError(f"text.tokenizer {self.text.tokenizer!r} is not in files")
            if self.explanation is not None:
                raise ValueError("text models do not explain")
        else:
            if self.pricing.usd_per_1k_predictions is None:
                raise ValueError("a tabular model needs pricing.usd_per_1k_predictions")
            if self.pricing.usd_per_1k_tokens is not None:
                raise ValueError("only a text model is priced per token")
            if texts:
                raise ValueError(f"a {self.task} model has no text inputs")
            if self.text is not None:
                raise ValueError("only a text model has a text section")
        return self

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

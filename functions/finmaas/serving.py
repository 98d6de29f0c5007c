"""What every loaded model offers the data plane, whatever its kind (tabular or text), and
the one way they collect a request's problems. Below ``runtime`` and ``text``: both import
it, it imports neither."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

from .cards import ModelCard
from .errors import NotFound, Unprocessable

MAX_DETAILS = 50


@dataclass(frozen=True)
class Served:
    """What a call produced and what it costs: the predictions, their units and the usage
    kind the units count (predicted or explained rows; tokens for text models).

    A text model's vectors are float32 numpy arrays: the API writes them as their
    shortest round-trip decimals (``orjson.OPT_SERIALIZE_NUMPY``)."""

    predictions: list[dict[str, Any]]
    units: int
    kind: str
    output: dict[str, Any]  # the answer's "output": what each prediction holds


class Columns(Sequence[dict[str, Any]]):
    """A batch of records held as its columns (the Open Inference Protocol's tensors):
    a tabular model validates and feeds them as they are, without building the records.
    A column is a list of values (``None`` for a missing one) or a numpy array of
    numbers; a field with no column is missing in every row. Indexing gives the record
    ``/v1`` would have received (what row-wise code, such as explanations' reasons, reads).
    """

    def __init__(self, columns: dict[str, Any], rows: int) -> None:
        self.columns = columns
        self.rows = rows

    def __len__(self) -> int:
        return self.rows

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.rows))]
        if not -self.rows <= index < self.rows:
            raise IndexError(index)
        out = {}
        for name, values in self.columns.items():
            value = values[index]
            if value is not None:
                out[name] = value.item() if hasattr(value, "item") else value
        return out

    def records(self) -> list[dict[str, Any]]:
        lists = {n: v.tolist() if hasattr(v, "tolist") else v for n, v in self.columns.items()}
        names = list(lists)
        if not names:
            return [{} for _ in range(self.rows)]
        return [{n: v for n, v in zip(names, row, strict=True) if v is not None}
                for row in zip(*(lists[n] for n in names), strict=True)]


class ServableModel(Protocol):
    """A loaded version as the service, the registry and the CLI use it."""

    card: ModelCard
    explainer: Any

    def serve(self, kind: str, instances: list[Any], labels: Any = None) -> Served: ...

    def predict(self, instances: list[Any]) -> list[dict[str, Any]]: ...

    def compare(self, mine: list[dict[str, Any]], theirs: list[dict[str, Any]]
                ) -> tuple[float, int | None]:
        """How far another version's answers are from these: a sum over rows, and how
        many rows changed their decision (None where there is no decision)."""
        ...


class Problems:
    """Every problem of a request, up to ``MAX_DETAILS``, named by its position and field,
    raised at once so a caller fixes a batch in one round trip."""

    def __init__(self, where: str = "instance") -> None:
        self.where = where  # the detail's position key: "instance" or "label"
        self.details: list[dict[str, Any]] = []
        self.count = 0

    def add(self, index: int, field: str | None, code: str, message: str) -> None:
        self.count += 1
        if len(self.details) < MAX_DETAILS:
            self.details.append({self.where: index, "field": field, "code": code,
                                 "message": message})

    def __bool__(self) -> bool:
        return self.count > 0

    def raise_if_any(self, what: str, *, code: str | None = None) -> None:
        """``what``: the plural noun, e.g. "invalid field(s) in instances"."""
        if not self:
            return
        extra = {"code": code} if code else {}
        raise Unprocessable(f"{self.count} {what}; nothing was predicted or billed",
                            details=self.details, **extra)


def no_explanations(card: ModelCard) -> NotFound:
    return NotFound(f"{card.name} v{card.version} does not explain its predictions",
                    code="explanations_not_available")


def output_problem(card: ModelCard, outputs: dict[str, Any]) -> str | None:
    """Why the card's ``serving.output`` is not among the graph's outputs, if it is not."""
    if card.graph_output in outputs:
        return None
    return f"serving.output {card.graph_output!r} is not a graph output {sorted(outputs)}"

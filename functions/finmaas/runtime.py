"""One loaded model: its card, its onnxruntime session, and the mapping from JSON records
of business fields to the graph's named inputs.

Validation is columnar and collects every problem (up to a cap) so a caller fixes a batch
in one round trip. It never imitates training-time transforms: the graph has them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from .cards import InputSpec, ModelCard
from .errors import ApiError, ServiceUnavailable, Unprocessable
from .explain.attribution import FEATURES_OUTPUT, ExplainerMismatch, ModelExplainer
from .serving import (
    MAX_DETAILS,
    Columns,
    Problems,
    ServableModel,
    Served,
    no_explanations,
    output_problem,
)
from .text import TextGraphMismatch, TextModel

__all__ = ["LoadedModel", "ServableModel", "Served", "TextModel", "VersionRejected",
           "open_version"]
VECTORISE_FROM = 32
NUMBER_TYPES = frozenset({int, float})
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(string)": object,
}


class GraphMismatch(ValueError):
    """The ONNX graph's inputs do not match the card's fields."""


class VersionRejected(ValueError):
    """A model version that must not be served: every reason, for logs and ``verify``."""

    def __init__(self, problems: list[str], *, integrity: bool = False) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.integrity = integrity  # the bytes are not the ones the card names


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


FLOAT32_MAX = float(np.finfo(np.float32).max)
MAGNITUDE_LIMITS: dict[Any, float] = {np.float32: FLOAT32_MAX, np.int64: float(2**62),
                                      np.int32: float(2**31 - 1)}


@dataclass(frozen=True)
class _Column:
    spec: InputSpec
    dtype: Any
    allowed: frozenset[str]

    @property
    def magnitude_limit(self) -> float | None:
        """The largest magnitude the graph's input type holds: a float32 graph would turn
        larger finite numbers into infinity, an integer graph would wrap them around."""
        return MAGNITUDE_LIMITS.get(self.dtype)


def graph_mismatches(card: ModelCard, session: Any) -> list[str]:
    """Differences between the card's inputs/outputs and the graph's (empty when they agree)."""
    problems = []
    graph_inputs = {i.name: i.type for i in session.get_inputs()}
    for spec in card.inputs:
        typ = graph_inputs.get(spec.name)
        if typ is None:
            problems.append(f"card input {spec.name!r} is not a graph input")
        elif spec.type == "category" and typ != "tensor(string)":
            problems.append(f"{spec.name}: category input but graph wants {typ}")
        elif spec.type != "category" and typ not in ("tensor(float)", "tensor(double)",
                                                     "tensor(int64)", "tensor(int32)"):
            problems.append(f"{spec.name}: numeric input but graph wants {typ}")
        elif spec.type == "number" and typ in ("tensor(int64)", "tensor(int32)"):
            problems.append(f"{spec.name}: a number input (fractions allowed) but the graph "
                            f"wants {typ}: declare it integer")
    for name in sorted(set(graph_inputs) - set(card.input_names)):
        problems.append(f"graph input {name!r} is not in the card")
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if (missing := output_problem(card, outputs)) is not None:
        problems.append(missing)
    elif card.graph_column is not None:
        shape = outputs[card.graph_output]
        width = shape[1] if len(shape) == 2 else 1
        if isinstance(width, int) and card.graph_column >= width:
            problems.append(f"serving.column {card.graph_column} is beyond the "
                            f"{width} column(s) of {card.graph_output!r}")
    return problems


def _read(source: Path | bytes) -> bytes:
    return source if isinstance(source, bytes) else source.read_bytes()


def _check_bytes(what: str, source: Path | bytes, sha256: str, size: int) -> None:
    actual = (len(source) if isinstance(source, bytes) else source.stat().st_size)
    digest = (hashlib.sha256(source).hexdigest() if isinstance(source, bytes)
              else sha256_file(source))
    if digest != sha256:
        raise VersionRejected([f"{what}: sha256 does not match the card"], integrity=True)
    if actual != size:
        raise VersionRejected([f"{what}: size {actual} != card's {size}"], integrity=True)


def open_version(card: ModelCard, artifact: Path | bytes, *,
                 files: Mapping[str, Path | bytes] | None = None,
                 threads: int = 1, serving: bool = False) -> ServableModel:
    """The one door through which a model version is opened, for the registry, ``verify``
    and ``publish`` alike: the graph and every file the card lists must be the card's
    bytes (sha256, size), the graph must load and agree with the card, the explainer data
    must describe the graph (a text model: the tokenizer must load, and the graph take
    ``input_ids``/``attention_mask`` and give vectors of the card's dimension), and the
    card's example must predict finite values (and explain, when the model explains).
    Raises ``VersionRejected`` with every reason.

    ``serving`` (the registry) defers what a first request can pay for instead of the
    cold start: the explainer's engine (every explanation still proves it reproduces the
    served score) and a text model's run at its longest text (``max_tokens``; a graph
    failing it at serving time is a 503, never a 500). Verify and publish check it all
    now."""
    import onnxruntime as ort

    files = files or {}
    _check_bytes(card.artifact_file, artifact, card.sha256, card.artifact_bytes)
    for listed in card.files:
        if listed.file not in files:
            raise VersionRejected([f"{listed.file} (listed in the card) is missing"])
        _check_bytes(listed.file, files[listed.file], listed.sha256, listed.bytes)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    data = artifact if isinstance(artifact, bytes) else None
    try:
        session = ort.InferenceSession(data if data is not None else str(artifact),
                                       sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise VersionRejected([f"graph does not load: {exc}"]) from exc
    explainer = None
    if card.explanation is not None:
        try:
            explainer = ModelExplainer.from_bytes(card, _read(files[card.explanation.file]),
                                                  lazy=serving)
        except ExplainerMismatch as exc:
            raise VersionRejected([f"explainer: {exc}"]) from exc
    model: LoadedModel | TextModel
    try:
        if card.is_text:
            model = TextModel(card, session, _read(files[card.text.tokenizer]),
                              probe_longest=not serving)
        else:
            model = LoadedModel(card, session, explainer)
    except (GraphMismatch, TextGraphMismatch) as exc:
        raise VersionRejected(str(exc).split("; ")) from exc
    example = card.raw.get("example")
    if example is not None:
        try:
            model.predict([example])
            if explainer is not None and not serving:
                model.explain([example])
        except Exception as exc:
            why = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in exc.details) \
                if isinstance(exc, ApiError) and exc.details else str(exc.__cause__ or exc)
            raise VersionRejected([f"the card's example does not predict: {why}"]) from exc
    return model


class LoadedModel:
    def __init__(self, card: ModelCard, session: Any,
                 explainer: ModelExplainer | None = None) -> None:
        problems = graph_mismatches(card, session)
        if explainer is not None and FEATURES_OUTPUT not in {
                o.name for o in session.get_outputs()}:
            problems.append(f"the card explains, but the graph has no {FEATURES_OUTPUT!r} "
                            "output")
        if problems:
            raise GraphMismatch("; ".join(problems))
        self.card = card
        self.session = session
        self.explainer = explainer
        types = {i.name: i.type for i in session.get_inputs()}
        self._columns = [
            _Column(spec, _ORT_DTYPES[types[spec.name]], frozenset(spec.categories))
            for spec in card.inputs
        ]
        self._names = frozenset(card.input_names)
        self._getter = itemgetter(*card.input_names)
        out = card.outputs[0]
        self._output_name = out.name if card.task == "regression" else "probability"
        self._extra = {"unit": out.unit} if card.task == "regression" else {"event": out.event}

    def feeds(self, instances: list[Any]) -> dict[str, np.ndarray]:
        """Validate records and build one column array per graph input, or raise 422.

        Each column first takes a vectorised fast path (all values present and of the
        right type, checked with numpy); only a column that fails it is walked cell by
        cell, which is what names the instance and field of every problem.
        """
        if isinstance(instances, Columns):
            return self._column_feeds(instances)
        problems = Problems()
        fail = problems.add
        names = self._names
        # numpy's per-call cost only pays off past a few rows
        vectorise = len(instances) >= VECTORISE_FROM
        # the usual batch, proved in C (map, set) without looking at a key: records of as
        # many fields as the card has, every one of them present, hold no other field
        tried = (vectorise and set(map(type, instances)) == {dict}
                 and set(map(len, instances)) == {len(names)})
        by_column = self._transposed(instances) if tried else None
        if by_column is not None:
            records = instances
        elif set(map(type, instances)) != {dict} or not all(map(names.issuperset, instances)):
            for i, record in enumerate(instances):
                if type(record) is not dict:
                    fail(i, None, "not_an_object",
                         "each instance must be a JSON object of fields")
                elif not record.keys() <= names:
                    for extra in sorted(record.keys() - names):
                        fail(i, extra, "unknown_field", f"{extra!r} is not an input of "
                                                        f"{self.card.name} v{self.card.version}")
            records = [r if type(r) is dict else {} for r in instances]
        else:
            records = instances
        if by_column is None and vectorise and not tried:  # the same dicts fail the same way
            by_column = self._transposed(records)
        columns: dict[str, np.ndarray] = {}
        for i, col in enumerate(self._columns):
            values = (by_column[i] if by_column is not None
                      else list(map(dict.get, records, repeat(col.spec.name))))
            array = self._fast_column(col, values) if vectorise else None
            if array is None:
                array = self._checked_column(col, values, fail)
            columns[col.spec.name] = array
        problems.raise_if_any("invalid field(s) in instances")
        return columns

    def _column_feeds(self, batch: Columns) -> dict[str, np.ndarray]:
        """``feeds`` for a batch given as columns: the same checks, the same problems
        (each named by row and field), the same arrays, without a record in between. A
        numpy column of numbers is checked as it is; anything it fails is checked value by
        value as Python numbers, as a JSON body's would be."""
        problems = Problems()
        fail = problems.add
        for extra in sorted(batch.columns.keys() - self._names):
            for i in range(batch.rows):
                fail(i, extra, "unknown_field",
                     f"{extra!r} is not an input of {self.card.name} v{self.card.version}")
        columns: dict[str, np.ndarray] = {}
        for col in self._columns:
            values = batch.columns.get(col.spec.name)
            if values is None:
                values = [None] * batch.rows
            array = None
            if isinstance(values, np.ndarray):
                array = self._array_column(col, values)
                if array is None:
                    values = values.tolist()
            elif batch.rows >= VECTORISE_FROM:
                array = self._fast_column(col, values)
            if array is None:
                array = self._checked_column(col, values, fail)
            columns[col.spec.name] = array
        problems.raise_if_any("invalid field(s) in instances")
        return columns

    @staticmethod
    def _array_column(col: _Column, values: np.ndarray) -> np.ndarray | None:
        """A numeric numpy column that passes every check of a number field, as the
        graph's array; None when a value needs the slow path to name its problem."""
        if col.spec.type not in ("number", "integer") or values.dtype.kind not in "iuf" or (
                values.ndim != 1 or not len(values)):
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            return LoadedModel._checked_numbers(col, values.astype(np.float64))

    @staticmethod
    def _checked_numbers(col: _Column, arr: np.ndarray) -> np.ndarray | None:
        """``arr`` (float64) as the graph's column if every value passes the field's
        checks (finite, within the graph's range, whole for integers, the card's bounds),
        else None: the slow path then names each problem."""
        spec = col.spec
        if not np.isfinite(arr).all():
            return None
        if np.dtype(col.dtype).kind in "iu" and np.abs(arr).max() >= 2**53:
            return None  # past float64's whole numbers: an integer graph gets them exactly
        limit = col.magnitude_limit
        if limit is not None and np.abs(arr).max() > limit:
            return None
        if spec.type == "integer" and not (arr == np.floor(arr)).all():
            return None
        if spec.minimum is not None and arr.min() < spec.minimum:
            return None
        if spec.maximum is not None and arr.max() > spec.maximum:
            return None
        return arr.astype(col.dtype).reshape(-1, 1)

    def _transposed(self, records: list[dict[str, Any]]) -> list[Any] | None:
        """The records as columns, in one C-level pass, when every record has every
        field (the usual batch); None when some field is missing somewhere."""
        try:
            rows = list(map(self._getter, records))
        except KeyError:
            return None
        return [rows] if len(self._columns) == 1 else list(zip(*rows, strict=True))

    @staticmethod
    def _fast_column(col: _Column, values: list[Any]) -> np.ndarray | None:
        spec = col.spec
        kinds = set(map(type, values))
        if spec.type == "category":
            if kinds != {str}:
                return None
            if spec.unknown_category == "reject" and not col.allowed.issuperset(values):
                return None
            return np.array(values, dtype=object).reshape(-1, 1)
        if not kinds <= NUMBER_TYPES:  # bool is not a number here, nor a numeric string
            return None
        try:
            arr = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float range: let the slow path say so
            return None
        return LoadedModel._checked_numbers(col, arr)

    @staticmethod
    def _checked_column(col: _Column, values: list[Any], fail: Any) -> np.ndarray:
        spec = col.spec
        out: list[Any] = []
        append = out.append
        for i, v in enumerate(values):
            if v is None:
                if spec.required:
                    fail(i, spec.name, "missing", f"{spec.name} is required")
                append("" if spec.type == "category" else math.nan)
                continue
            if spec.type == "category":
                if type(v) is not str:
                    fail(i, spec.name, "wrong_type", f"{spec.name} must be a string")
                    v = ""
                elif v not in col.allowed and spec.unknown_category == "reject":
                    shown = ", ".join(spec.categories[:12])
                    more = " ..." if len(spec.categories) > 12 else ""
                    fail(i, spec.name, "unknown_category", f"{v!r} is not one of {shown}{more}")
                append(v)
                continue
            if type(v) is not int and type(v) is not float:
                fail(i, spec.name, "wrong_type", f"{spec.name} must be a number")
                append(math.nan)
                continue
            try:
                finite = math.isfinite(v)
            except OverflowError:
                finite = False
            limit = col.magnitude_limit
            if not finite:
                fail(i, spec.name, "not_finite", f"{spec.name} must be a finite number")
                v = math.nan
            elif limit is not None and abs(v) > limit:
                fail(i, spec.name, "out_of_range",
                     f"{spec.name} is beyond the model's numeric range (about {limit:.2g})")
                v = math.nan
            elif spec.type == "integer" and v != int(v):
                fail(i, spec.name, "not_integer", f"{spec.name} must be a whole number")
            elif spec.minimum is not None and v < spec.minimum:
                fail(i, spec.name, "out_of_range", f"{spec.name} must be >= {spec.minimum}")
            elif spec.maximum is not None and v > spec.maximum:
                fail(i, spec.name, "out_of_range", f"{spec.name} must be <= {spec.maximum}")
            append(v)
        try:
            return np.array(out, dtype=col.dtype).reshape(-1, 1)
        except (OverflowError, ValueError):  # a problem was recorded; the batch is refused
            filler = "" if col.dtype is object else (
                math.nan if np.issubdtype(col.dtype, np.floating) else 0)
            return np.full((len(out), 1), filler, dtype=col.dtype)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Scores, all finite: a NaN or infinity is never returned, so never billed."""
        return self._scores(self.session.run([self.card.graph_output], feeds)[0])

    def _scores(self, out: np.ndarray) -> np.ndarray:
        if self.card.graph_column is not None and out.ndim == 2:
            out = out[:, self.card.graph_column]
        values = np.asarray(out, dtype=np.float64).reshape(-1)
        if not np.isfinite(values).all():
            bad = np.flatnonzero(~np.isfinite(values))
            raise Unprocessable(
                f"{self.card.name} v{self.card.version} cannot score {len(bad)} instance(s): "
                "the values are beyond what the model can compute; nothing was predicted or "
                "billed",
                code="prediction_not_finite",
                details=[{"instance": int(i), "field": None, "code": "prediction_not_finite",
                          "message": "the model's output for this instance is not a number"}
                         for i in bad[:MAX_DETAILS]],
            )
        return values

    def format(self, values: np.ndarray) -> list[dict[str, Any]]:
        key = self._output_name
        extra_key, extra_value = next(iter(self._extra.items()))
        return [{key: v, extra_key: extra_value} for v in values.tolist()]

    def predict(self, instances: list[Any]) -> list[dict[str, Any]]:
        return self.format(self.run(self.feeds(instances)))

    def serve(self, kind: str, instances: list[Any], labels: Any = None) -> Served:
        """A prediction or an explanation of ``instances``, billed per row."""
        if labels is not None:
            message = (f"{self.card.name} is not a text model: labels are for zero-shot "
                       "text classification")
            raise Unprocessable(message, code="invalid_body", details=[
                {"field": "labels", "code": "unknown_field", "message": message}])
        rows = self.explain(instances) if kind == "explanation" else self.predict(instances)
        out = self.card.outputs[0]
        return Served(rows, len(rows), kind, {
            "name": self._output_name, "description": out.description, "unit": out.unit})

    def compare(self, mine: list[dict[str, Any]], theirs: list[dict[str, Any]]
                ) -> tuple[float, int | None]:
        """Sum of absolute differences between two versions' scores, and (classifiers)
        how many rows fall on the other side of the card's decision threshold."""
        key = self._output_name
        a = [p[key] for p in mine]
        b = [p[key] for p in theirs]
        diff = sum(abs(x - y) for x, y in zip(a, b, strict=True))
        if self.card.task == "regression":
            return diff, None
        threshold = float(self.card.raw.get("decision_threshold", 0.5))
        return diff, sum((x >= threshold) != (y >= threshold) for x, y in zip(a, b, strict=True))

    def explain(self, instances: list[Any]) -> list[dict[str, Any]]:
        """Each record's prediction (as ``predict`` answers it) with its exact attribution:
        raw score, contributions per field or component, and reasons. Computed from the
        same run of the same graph that produced the score."""
        if self.explainer is None:
            raise no_explanations(self.card)
        feeds = self.feeds(instances)
        out, features = self.session.run([self.card.graph_output, FEATURES_OUTPUT], feeds)
        values = self._scores(out)
        try:
            contributions, raw = self.explainer.attributions(features, values)
        except ExplainerMismatch as exc:
            raise ServiceUnavailable(
                f"{self.card.name} v{self.card.version} cannot explain this score; nothing "
                "was billed", code="explainer_mismatch", retry_after=60) from exc
        predictions = self.format(values)
        for pred, extra in zip(predictions, self.explainer.records(
                instances, features, contributions, raw), strict=True):
            pred.update(extra)
        return predictions

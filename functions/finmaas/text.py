"""A text model: a tokenizer and a transformer encoder whose graph pools and normalises,
billed per token.

- Validation runs before anything is embedded, in three steps that each name every
  problem they find (instance or label, field, code): the texts' shape (a string, not
  empty, within the card's characters), the labels, then the tokens (within the card's
  ``max_tokens``, refused or cut as ``overflow`` says; not only words the vocabulary lacks;
  within the request's token budget).
- Tokens are counted by the model's own tokenizer, special tokens included: what the
  encoder reads is what is billed. Label texts of a zero-shot request count once per
  request, whether or not their vectors were cached.
- Length-bucketed batching: texts run in groups of one token length, so no row is padded
  and a text's vector does not depend on what else is in the request (to float rounding).
- Zero-shot: softmax over cosine similarities to the caller's labels / the card's
  temperature. Label vectors are cached per loaded version (LRU), keyed by label text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cards import ModelCard
from .errors import PayloadTooLarge, ServiceUnavailable, Unprocessable
from .serving import Problems, Served, no_explanations, output_problem

# tokens per onnxruntime run: bounds the activations of one run whatever the request, and
# small runs keep them in cache (256 a run was 10-15% faster than 4,096 on one core, on
# long and short texts alike)
TOKENS_PER_RUN = 256
LABEL_CACHE_SIZE = 4096
GRAPH_INPUTS = {"input_ids": "tensor(int64)", "attention_mask": "tensor(int64)"}


class TextGraphMismatch(ValueError):
    """The graph or the tokenizer does not fit the card."""


@dataclass(frozen=True)
class Label:
    name: str
    text: str  # what is embedded: the description, else the name in words


def label_text(name: str, description: str | None) -> str:
    return description if description else name.replace("_", " ").replace("-", " ")


class TextModel:
    """One text model version: ``serve`` validates, tokenizes, embeds and (with labels)
    classifies; it returns predictions and the tokens they cost."""

    explainer = None  # text models do not explain

    def __init__(self, card: ModelCard, session: Any, tokenizer_json: bytes, *,
                 probe_longest: bool = True) -> None:
        from tokenizers import Tokenizer

        assert card.text is not None  # the card schema requires it of a text task
        self.card = card
        self.session = session
        self.spec = card.inputs[0]
        self.limits = card.text
        problems = []
        graph_inputs = {i.name: i.type for i in session.get_inputs()}
        if graph_inputs != GRAPH_INPUTS:
            problems.append(f"a text graph takes {GRAPH_INPUTS}, this one {graph_inputs}")
        outputs = {o.name: o.shape for o in session.get_outputs()}
        shape = outputs.get(card.graph_output)
        dimension = card.outputs[0].dimension
        if (missing := output_problem(card, outputs)) is not None:
            problems.append(missing)
        elif len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != dimension):
            problems.append(f"{card.graph_output!r} has shape {shape}; the card says "
                            f"[batch, {dimension}]")
        try:
            tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        except Exception as exc:  # the library raises bare Exception on bad JSON
            problems.append(f"{self.limits.tokenizer} is not a tokenizers JSON file: {exc}")
            tokenizer = None
        if problems:
            raise TextGraphMismatch("; ".join(problems))
        tokenizer.no_padding()
        if self.spec.overflow == "truncate":
            tokenizer.enable_truncation(self.spec.max_tokens)
        else:
            tokenizer.no_truncation()
        self.tokenizer = tokenizer
        self.dimension = dimension
        self._unknown = {tokenizer.token_to_id(t) for t in ("[UNK]", "<unk>")} - {None}
        self._labels: OrderedDict[str, np.ndarray] = OrderedDict()
        self._labels_lock = threading.Lock()
        if probe_longest:
            self._probe(self.spec.max_tokens)

    def _probe(self, length: int) -> None:
        """The graph must read the card's longest text (a BERT reads as many tokens as it
        has position embeddings: a card promising more would fail on a caller's text)."""
        ids = np.full((1, length), self.tokenizer.token_to_id("[PAD]") or 0, dtype=np.int64)
        try:
            self.session.run([self.card.graph_output], {"input_ids": ids,
                                                        "attention_mask": np.ones_like(ids)})
        except Exception as exc:
            raise TextGraphMismatch(f"the graph cannot read max_tokens={length} tokens: "
                                    f"{str(exc)[:200]}") from exc

    # -- the data plane ---------------------------------------------------------------
    def serve(self, kind: str, instances: list[Any], labels: Any = None) -> Served:
        if kind != "prediction":
            raise no_explanations(self.card)
        texts = self._texts(instances)
        wanted = None if labels is None else self._labels_of(labels)
        encodings = self._encode(texts, "instance")
        label_encodings = [] if wanted is None else self._encode(
            [lb.text for lb in wanted], "label")
        text_tokens = [len(e) for e in encodings]
        units = sum(text_tokens) + sum(len(e) for e in label_encodings)
        if units > self.limits.max_request_tokens:
            raise PayloadTooLarge(
                f"{units} tokens in this request (texts and label texts); at most "
                f"{self.limits.max_request_tokens} per request: split it",
                code="request_too_many_tokens")
        vectors = self.embed_ids(encodings)
        if wanted is None:
            predictions = [{"embedding": v, "tokens": n}
                           for v, n in zip(vectors, text_tokens, strict=True)]
            output = {"name": "embedding", "description": self.card.outputs[0].description,
                      "unit": None}
        else:
            predictions = self._classify(vectors, text_tokens, wanted, label_encodings)
            output = {"name": "label", "description": "the best of the caller's labels, and "
                      "every label's probability: softmax over cosine similarity / "
                      f"{self.limits.temperature}", "unit": None}
        return Served(predictions, units, "token", output)

    def predict(self, instances: list[Any]) -> list[dict[str, Any]]:
        return self.serve("prediction", instances).predictions

    # -- validation -------------------------------------------------------------------
    def _texts(self, instances: list[Any]) -> list[str]:
        if len(instances) > self.limits.max_texts:
            raise PayloadTooLarge(f"at most {self.limits.max_texts} texts per request "
                                  f"(got {len(instances)})", code="too_many_instances")
        name, spec = self.spec.name, self.spec
        problems = Problems()
        texts = []
        for i, record in enumerate(instances):
            text = record.get(name) if type(record) is dict else None
            if type(record) is not dict:
                code, msg = "not_an_object", f'each instance must be {{"{name}": "..."}}'
            elif extra := sorted(record.keys() - {name}):
                code, msg = "unknown_field", (f"{extra[0]!r} is not an input of "
                                              f"{self.card.name} v{self.card.version}")
            elif text is None:
                code, msg = "missing", f"{name} is required"
            elif type(text) is not str:
                code, msg = "wrong_type", f"{name} must be a string"
            elif not text.strip():
                code, msg = "empty_text", f"{name} is empty"
            elif len(text) > spec.max_chars:
                code, msg = "text_too_long", (f"{name} has {len(text)} characters; at most "
                                              f"{spec.max_chars}")
            else:
                texts.append(text)
                continue
            problems.add(i, name if code != "not_an_object" else None, code, msg)
        problems.raise_if_any("invalid text(s)")
        return texts

    def _labels_of(self, labels: Any) -> list[Label]:
        zs = self.limits
        if type(labels) is not list or not 2 <= len(labels) <= zs.max_labels:
            raise Unprocessable(f'"labels" must be a list of 2 to {zs.max_labels} labels, '
                                'each {"name": "...", "description": "..."}',
                                code="invalid_labels")
        problems = Problems("label")
        out: list[Label] = []
        names: set[str] = set()
        texts: dict[str, str] = {}
        for i, label in enumerate(labels):
            name = label.get("name") if type(label) is dict else None
            description = label.get("description") if type(label) is dict else None
            if type(label) is not dict:
                code, msg = "not_an_object", 'a label is {"name": ..., "description": ...}'
            elif extra := sorted(label.keys() - {"name", "description"}):
                code, msg = "unknown_field", f"{extra[0]!r} is not a label field"
            elif type(name) is not str or not name.strip() or len(name) > 64:
                code, msg = "invalid_name", "a label's name is a string of 1 to 64 characters"
            elif name in names:
                code, msg = "duplicate_label", f"label {name!r} is given twice"
            elif (text := label_text(name, description)) in texts:
                code, msg = "duplicate_label", (f"label {name!r} reads the same as "
                                                f"{texts[text]!r}: give one a description")
            elif description is not None and (type(description) is not str
                                              or not description.strip()):
                code, msg = "invalid_description", "a description is a non-empty string"
            elif description is not None and len(description) > zs.max_label_chars:
                code, msg = "text_too_long", (f"the description has {len(description)} "
                                              f"characters; at most {zs.max_label_chars}")
            else:
                names.add(name)
                texts[text] = name
                out.append(Label(name, text))
                continue
            problems.add(i, f"labels[{i}]", code, msg)
        problems.raise_if_any("invalid label(s)", code="invalid_labels")
        return out

    def _encode(self, texts: Sequence[str], what: str) -> list[list[int]]:
        """Token ids of each text, special tokens included: the tokens billed. A text
        beyond the card's max_tokens is refused unless the card truncates."""
        encodings = self.tokenizer.encode_batch(list(texts))
        limit = self.spec.max_tokens
        problems = Problems(what)
        for i, enc in enumerate(encodings):
            field = self.spec.name if what == "instance" else f"labels[{i}]"
            n = len(enc.ids)
            if n > limit:  # only when the card refuses: truncation keeps n <= limit
                problems.add(i, field, "too_many_tokens",
                             f"{n} tokens; at most {limit} (special tokens included)")
            elif n == sum(enc.special_tokens_mask) + sum(t in self._unknown for t in enc.ids):
                problems.add(i, field, "empty_text",
                             "no word the model's vocabulary knows (only emoji, control or "
                             "unknown characters)")
        if what == "instance":
            problems.raise_if_any("text(s) the model cannot read")
        else:
            problems.raise_if_any("label text(s) the model cannot read", code="invalid_labels")
        return [enc.ids for enc in encodings]

    # -- running ----------------------------------------------------------------------
    def embed_ids(self, encodings: Sequence[Sequence[int]]) -> np.ndarray:
        """Unit vectors, one per token id list, in order. Rows of one length run together
        (so none is padded), at most ``TOKENS_PER_RUN`` tokens per run."""
        out = np.empty((len(encodings), self.dimension), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(encodings):
            by_length.setdefault(len(ids), []).append(i)
        for length, rows in by_length.items():
            step = max(1, TOKENS_PER_RUN // length)
            for start in range(0, len(rows), step):
                chunk = rows[start:start + step]
                ids = np.array([encodings[i] for i in chunk], dtype=np.int64)
                out[chunk] = self.run(ids, np.ones_like(ids))
        return out

    def run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        try:
            vectors = self.session.run([self.card.graph_output],
                                       {"input_ids": ids, "attention_mask": mask})[0]
        except Exception as exc:  # onnxruntime's own errors: the version, not the caller
            raise ServiceUnavailable(
                f"{self.card.name} v{self.card.version} failed to run; nothing was billed",
                code="model_failed", retry_after=60) from exc
        if not np.isfinite(vectors).all():
            raise Unprocessable(f"{self.card.name} v{self.card.version} produced a vector that "
                                "is not finite; nothing was billed",
                                code="prediction_not_finite")
        return vectors

    def _label_vectors(self, labels: list[Label], encodings: list[list[int]]) -> np.ndarray:
        with self._labels_lock:
            cached = {lb.text: self._labels.get(lb.text) for lb in labels}
            for text, vector in cached.items():
                if vector is not None:
                    self._labels.move_to_end(text)
        missing = [i for i, lb in enumerate(labels) if cached[lb.text] is None]
        if missing:
            fresh = self.embed_ids([encodings[i] for i in missing])
            with self._labels_lock:
                for i, vector in zip(missing, fresh, strict=True):
                    cached[labels[i].text] = vector
                    self._labels[labels[i].text] = vector
                while len(self._labels) > LABEL_CACHE_SIZE:
                    self._labels.popitem(last=False)
        return np.stack([cached[lb.text] for lb in labels])

    def _classify(self, vectors: np.ndarray, tokens: list[int], labels: list[Label],
                  encodings: list[list[int]]) -> list[dict[str, Any]]:
        sims = vectors.astype(np.float64) @ self._label_vectors(labels, encodings).T.astype(
            np.float64)
        logits = sims / self.limits.temperature
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        names = [lb.name for lb in labels]
        best = probs.argmax(axis=1)
        return [{"label": names[b], "score": float(p[b]),
                 "scores": dict(zip(names, p.tolist(), strict=True)), "tokens": n}
                for b, p, n in zip(best.tolist(), probs, tokens, strict=True)]

    # -- comparing versions (shadow traffic) -----------------------------------------
    @staticmethod
    def compare(mine: list[dict[str, Any]], theirs: list[dict[str, Any]]
                ) -> tuple[float, int | None]:
        """Sum over rows of (1 - cosine) between two versions' vectors (embeddings), or of
        the absolute difference in the served label's probability (zero-shot); and, with
        labels, how many rows changed their best label."""
        if "embedding" in mine[0]:
            diff = sum(1.0 - float(np.dot(a["embedding"], b["embedding"]))
                       for a, b in zip(mine, theirs, strict=True))
            return diff, None
        diff = sum(abs(a["score"] - b["scores"][a["label"]])
                   for a, b in zip(mine, theirs, strict=True))
        return diff, sum(a["label"] != b["label"] for a, b in zip(mine, theirs, strict=True))

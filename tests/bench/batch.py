"""Batch benchmark: figures measured in one run on this machine (not a test).

    make bench-batch   # or: .venv/bin/python -m tests.bench.batch

B1  one 1,000-row CSV chunk, as the state machine's ItemBatcher hands it to the chunk
    function (rows of strings), through ``ChunkFunction`` with SQLite metering and job
    store and a file:// results location, against onnxruntime alone on the same rows:
    the chunk function's CPU time per chunk, which the README's "Scale, on paper" uses.
    Explained chunks too (exact TreeSHAP on every row).
B2  ``maas batch run``'s engine (``run_file``) over 100,000 generated rows, one and two
    workers: rows per second end to end (read, type, score, bill, write, assemble).
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.inference import interleaved, median_us  # noqa: E402
from tests.conftest import MODEL_STORE, load_event  # noqa: E402

MODEL = "credit-risk"


def generate(path: Path, rows: int) -> None:
    from tests.test_batch_resume import ROWS
    from tests.test_batch_resume import generate as write_rows

    assert rows == ROWS, "the resume test's generator writes its own row count"
    card = json.loads((MODEL_STORE / MODEL / "1" / "card.json").read_text())
    write_rows(path, card)


def stores(home: Path) -> tuple[Any, Any, Any]:
    from finmaas.batch.sqlite import SQLiteJobStore
    from finmaas.config import Settings
    from finmaas.metering import open_metering_store
    from finmaas.registry import open_registry
    from finmaas.service import PredictionService
    from finmaas.tenants.sqlite import SQLiteTenantStore

    settings = Settings.from_env(env={}, home=home, model_store=str(MODEL_STORE),
                                 cache_dir=home / "cache", ort_threads=1)
    SQLiteTenantStore(settings.sqlite_path).create_tenant("demo", "standard")
    service = PredictionService(open_registry(settings), open_metering_store(settings))
    return settings, service, SQLiteJobStore(settings.sqlite_path)


def b1(home: Path, source: Path) -> dict[str, Any]:
    from finmaas.batch.aws import ChunkFunction
    from finmaas.batch.jobs import BatchJob

    _settings, service, jobs = stores(home)
    with source.open(newline="") as f:
        rows = [row for _, row in zip(range(1000), csv.DictReader(f), strict=False)]
    base = load_event("batch-chunk-credit-risk.json")
    fn = ChunkFunction(service, jobs)
    model = service.registry.model(MODEL, "1")
    card = model.card
    from finmaas.batch.rows import typed

    records = [typed(card, {k: v for k, v in r.items() if k != "row_id"}) for r in rows]
    good = [r for r in records if r.get("home") != "castle"]
    feeds = model.feeds(good)
    counter = iter(range(10**9))

    def chunk(kind: str) -> Any:
        def run() -> Any:
            job_id = f"bj-bench{next(counter):015d}"
            jobs.create(BatchJob(job_id=job_id, tenant="demo", key_id="k", model=MODEL,
                                 version="1", kind=kind, input="file:///in.csv",
                                 output=(home / "out").as_uri() + "/",
                                 results=(home / "out" / job_id).as_uri() + "/",
                                 format="csv", chunk_rows=1000))
            event = {"BatchInput": {"job": {
                **base["BatchInput"]["job"], "job_id": job_id, "kind": kind,
                "results": (home / "out" / job_id).as_uri() + "/"}},
                "Items": [{"index": i, "row": r} for i, r in enumerate(rows)]}
            out = fn(event)
            assert out["rows"] == 1000, out
            return out
        return run

    first = chunk("prediction")()
    t = interleaved({"chunk": chunk("prediction"),
                     "ort": lambda: model.session.run([card.graph_output], feeds)}, 30)
    explained = [time.perf_counter()]
    chunk("explanation")()
    explained.append(time.perf_counter())
    explained_ms = [(explained[1] - explained[0]) * 1000]
    for _ in range(4):
        start = time.perf_counter()
        chunk("explanation")()
        explained_ms.append((time.perf_counter() - start) * 1000)
    c, o = median_us(t["chunk"]), median_us(t["ort"])
    return {"B1_rows_good_failed": [first["rows_done"], first["rows_failed"]],
            "B1_chunk_1000_rows_ms": round(c / 1000, 1),
            "B1_ort_alone_ms": round(o / 1000, 2),
            "B1_ratio": round(c / o, 1),
            "B1_explained_chunk_1000_rows_ms": round(statistics.median(explained_ms), 1)}


def b2(home: Path, source: Path) -> dict[str, Any]:
    from finmaas.batch.jobs import BatchJob
    from finmaas.batch.local import run_file
    from finmaas.service import Caller

    out: dict[str, Any] = {}
    for workers in (1, 2):
        run_home = home / f"run{workers}"
        _, service, jobs = stores(run_home)
        results = run_home / "scores.jsonl"
        job = BatchJob(job_id=f"bj-run{workers}", tenant="demo", key_id="k", model=MODEL,
                       version="1", kind="prediction", input=source.as_uri(),
                       output=run_home.as_uri() + "/", results=results.as_uri(),
                       format="csv", chunk_rows=1000)
        jobs.create(job)
        start = time.perf_counter()
        run_file(service, jobs, job, Caller("demo", "batch", "k", job.job_id), source,
                 results, workers=workers)
        seconds = time.perf_counter() - start
        lines = sum(1 for _ in results.open())
        assert lines == 100_000, lines
        out[f"B2_rows_per_s_{workers}_worker{'s' if workers > 1 else ''}"] = round(
            lines / seconds)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="finmaas-bench-batch-") as tmp:
        root = Path(tmp)
        source = root / "book.csv"
        generate(source, 100_000)
        figures = {**b1(root / "b1", source), **b2(root / "b2", source)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

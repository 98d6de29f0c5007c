"""Run a batch job over a local file: chunks scored by the same ``score_chunk`` as in AWS,
in worker threads, each chunk's output written whole beside the results file
(``<results>.parts/chunk-<n>.jsonl``) and the results assembled in input order at the
end.

An interrupted run (Ctrl-C, SIGKILL, a full disk) resumes where it stopped: the parts
folder names the job, a chunk whose part exists is not scored again, and a chunk scored
but not yet written is scored again and billed nothing more (its usage record's id is
the job's and the chunk's). The order per chunk is bill, count, write: whichever step a
kill interrupts, the next run repeats only steps that are idempotent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..service import Caller, PredictionService
from .jobs import BatchJob, JobStore
from .rows import chunk_rows, output_line, read_items
from .sqlite import SQLiteJobStore

MANIFEST = "job.json"


@dataclass
class Progress:
    """What a run has done so far, for a progress bar."""

    total_rows: int | None
    rows_seen: int = 0  # rows whose chunk is finished (scored now or before)
    rows_done: int = 0
    rows_failed: int = 0
    resumed_rows: int = 0  # finished by an earlier run
    started: float = 0.0


def parts_dir(results: Path) -> Path:
    return results.with_name(results.name + ".parts")


def _input_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"input": str(path.resolve()), "input_bytes": st.st_size,
            "input_mtime_ns": st.st_mtime_ns}


def resumable_job_id(results: Path, input_path: Path, model: str, chunk_rows: int
                     ) -> str | None:
    """The job an interrupted run over the same input left in ``results``' parts folder,
    if any. The same parts folder with another input or chunk size is refused."""
    manifest = parts_dir(results) / MANIFEST
    if not manifest.exists():
        return None
    doc = json.loads(manifest.read_text())
    expected = {**_input_identity(input_path), "model": model, "chunk_rows": chunk_rows}
    changed = [k for k, v in expected.items() if doc.get(k) != v]
    if changed:
        raise ValueError(
            f"{parts_dir(results)} holds an interrupted run with another "
            f"{', '.join(changed)}: rerun it as it was, or delete that folder to start over")
    return str(doc["job_id"])


def count_rows(path: Path, fmt: str) -> int:
    return sum(1 for _ in read_items(path, fmt))


def _chunks(path: Path, fmt: str, size: int) -> Iterator[tuple[int, list[tuple[int, Any]]]]:
    batch: list[tuple[int, Any]] = []
    index = 0
    for item in read_items(path, fmt):
        batch.append(item)
        if len(batch) == size:
            yield index, batch
            index += 1
            batch = []
    if batch:
        yield index, batch


def write_whole(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_file(service: PredictionService, jobs: JobStore, job: BatchJob, caller: Caller,
             input_path: Path, results: Path, *, workers: int = 1,
             on_progress: Callable[[Progress], None] | None = None,
             progress: Progress | None = None) -> BatchJob:
    """Score every row of ``input_path`` into ``results`` (JSON Lines, one line per input
    row, in input order). Returns the job as finished; raises what stopped it, with the
    job marked failed (and resumable)."""
    progress = progress or Progress(total_rows=None)
    progress.started = time.monotonic()
    card = service.registry.card(job.model, job.version)
    parts = parts_dir(results)
    parts.mkdir(parents=True, exist_ok=True)
    manifest = parts / MANIFEST
    if not manifest.exists():
        write_whole(manifest, json.dumps({
            "job_id": job.job_id, **_input_identity(input_path), "model": job.model,
            "version": job.version, "chunk_rows": job.chunk_rows}).encode())
    done = {p.name for p in parts.glob("chunk-*.jsonl")}
    lock = threading.Lock()

    def score(chunk_id: str, items: list[tuple[int, Any]]) -> None:
        rows = chunk_rows(card, job.format, items)
        result = service.score_chunk(caller, job.job_id, chunk_id, job.model, job.version,
                                     job.kind, rows)
        jobs.add_chunk(job.job_id, chunk_id, result.good, result.failed, result.amount)
        write_whole(parts / f"chunk-{chunk_id}.jsonl",
                     b"".join(map(output_line, result.lines)))
        with lock:
            progress.rows_seen += len(rows)
            progress.rows_done += result.good
            progress.rows_failed += result.failed
            if on_progress is not None:
                on_progress(progress)

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers),
                                thread_name_prefix="batch") as pool:
            in_flight: deque[Future[None]] = deque()
            for index, items in _chunks(input_path, job.format, job.chunk_rows):
                chunk_id = f"{index:09d}"
                if f"chunk-{chunk_id}.jsonl" in done:
                    with lock:
                        progress.rows_seen += len(items)
                        progress.resumed_rows += len(items)
                    continue
                in_flight.append(pool.submit(score, chunk_id, items))
                while len(in_flight) > 2 * workers:  # read ahead a little, not the file
                    in_flight.popleft().result()
            while in_flight:
                in_flight.popleft().result()
        _assemble(parts, results)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            jobs.finish(job.job_id, "failed", f"{type(exc).__name__}: {exc}"[:500])
        raise
    jobs.finish(job.job_id, "succeeded")
    finished = jobs.get(job.job_id)
    assert finished is not None
    return finished


def _assemble(parts: Path, results: Path) -> None:
    """The parts in chunk order, into the results file whole; then the parts go."""
    tmp = results.with_name(f".{results.name}.tmp")
    with tmp.open("wb") as out:
        for part in sorted(parts.glob("chunk-*.jsonl")):
            with part.open("rb") as f:
                shutil.copyfileobj(f, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, results)
    shutil.rmtree(parts)


class LocalJobRunner:
    """Runs jobs submitted to the local server in a thread each, on ``file://``
    locations."""

    def __init__(self, service: PredictionService, jobs: SQLiteJobStore) -> None:
        self.service = service
        self.jobs = jobs
        self.threads: dict[str, threading.Thread] = {}

    def resume(self) -> list[str]:
        """Start again every job a previous server left running (it stopped or was killed
        mid-job): each goes on from the chunks it finished, which are not billed again.
        Returns their ids."""
        resumed = []
        for job in self.jobs.running():
            if job.job_id not in self.threads:
                self.start(job)
                resumed.append(job.job_id)
        return resumed

    def start(self, job: BatchJob) -> None:
        from .locations import parse_location

        running = self.threads.get(job.job_id)
        if running is not None and running.is_alive():
            return  # started already (a repeated submit)

        caller = Caller(job.tenant, "batch", job.key_id, job.job_id)
        source = parse_location(job.input, "input").path
        results = parse_location(job.results, "results").path
        results.parent.mkdir(parents=True, exist_ok=True)

        def run() -> None:
            with contextlib.suppress(Exception):  # the job records why it failed
                run_file(self.service, self.jobs, job, caller, source, results)

        thread = threading.Thread(target=run, name=f"batch-{job.job_id}", daemon=True)
        self.threads[job.job_id] = thread
        thread.start()

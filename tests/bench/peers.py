"""FinMaaS's local server beside KServe and MLServer, serving the same graph (not a test).

    make bench-peers   # builds the peers' venvs under .maas/peers/, then runs this

Every server runs as one process on 127.0.0.1 with the same onnxruntime settings
(``PEER_ORT_THREADS``, default: what ``maas serve`` uses here) and is driven by one load
generator, wrk, in interleaved rounds: each round starts each server afresh (timing
process start to its first answer), warms it, then measures a one-row predict one at a
time (p50, p99), one-row throughput at 16 concurrent connections, and a 1,000-row
predict one at a time (p50). FinMaaS runs with its gateway's key check, the plan's rate
limiter and SQLite metering on (``peer_servers/finmaas_server.py``); the peers with
neither. The table gives each figure's median over the rounds and FinMaaS's ratio to
each peer. Also prints JSON (``--json``).

The peers: KServe's Python model server (V1 protocol, ``kserve.Model``), MLServer with a
custom runtime (V2 protocol, JSON tensors) and a bare FastAPI route under uvicorn, the
floor. Each does the least its protocol needs to feed the graph (``peer_servers/``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SERVERS = Path(__file__).with_name("peer_servers")
MODEL = "credit-risk"
VERSION_DIR = REPO / "model_store" / MODEL / "1"
PEERS = REPO / ".maas" / "peers"

WRK_SCRIPT = r"""
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("API_KEY")
if key and key ~= "" then wrk.headers["x-api-key"] = key end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"p50_us": %d, "p99_us": %d, "requests": %d, "duration_us": %d, '
    .. '"errors": %d, "bad_status": %d}\n',
    latency:percentile(50), latency:percentile(99), summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_threads() -> int:
    return min(os.cpu_count() or 1, 4)  # finmaas.config's default


def records(n: int) -> list[dict[str, Any]]:
    card = json.loads((VERSION_DIR / "card.json").read_text())
    rng = random.Random(7)
    return [{**card["example"], "age": rng.randint(20, 65), "amount": rng.randint(300, 4000),
             "income": rng.randint(50, 400)} for _ in range(n)]


def v2_tensors(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The V2 JSON body a client builds from the graph's inputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(VERSION_DIR / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    types = {"tensor(string)": "BYTES", "tensor(float)": "FP32", "tensor(double)": "FP64",
             "tensor(int64)": "INT64"}
    return {"inputs": [{"name": i.name, "shape": [len(rows), 1],
                        "datatype": types[i.type], "data": [r[i.name] for r in rows]}
                       for i in session.get_inputs()]}


@dataclass
class Server:
    name: str
    command: list[str]
    path: str
    body: Any  # rows -> the request body
    env: dict[str, str] = field(default_factory=dict)
    key_file: bool = False
    cwd: Path = REPO

    def available(self) -> bool:
        return Path(self.command[0]).exists()


def servers(home: Path) -> list[Server]:
    python = sys.executable
    return [
        Server("FinMaaS maas serve", [python, str(SERVERS / "finmaas_server.py")],
               f"/v1/models/{MODEL}/predict", lambda rows: {"instances": rows},
               {"MAAS_HOME": str(home / "finmaas"), "MAAS_CACHE_DIR": str(home / "cache")},
               key_file=True),
        Server("KServe V1", [str(PEERS / "kserve" / "bin" / "python"),
                             str(SERVERS / "kserve_server.py")],
               f"/v1/models/{MODEL}:predict", lambda rows: {"instances": rows},
               {"PEER_MODEL_NAME": MODEL}),
        Server("MLServer V2", [str(PEERS / "mlserver" / "bin" / "mlserver"), "start",
                               str(home / "mlserver")],
               f"/v2/models/{MODEL}/infer", v2_tensors),
        Server("bare FastAPI route", [python, str(SERVERS / "fastapi_server.py")],
               "/predict", lambda rows: {"instances": rows}),
    ]


def mlserver_settings(home: Path, port: int, threads: int) -> None:
    """One process, no metrics server, no parallel workers: as the other servers run."""
    root = home / "mlserver"
    (root / MODEL).mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": free_port(), "host": "127.0.0.1",
        "parallel_workers": 0, "metrics_endpoint": None, "debug": False}))
    (root / MODEL / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "mlserver_runtime.OnnxRuntime",
        "parameters": {"version": "1"}}))


def post(url: str, body: bytes, key: str | None, timeout: float = 2.0) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/json", **({"x-api-key": key} if key else {})})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()
        return answer.status


class Running:
    """A server process from start to its first answer, then until stopped."""

    def __init__(self, server: Server, home: Path, threads: int, one_row: bytes) -> None:
        self.server = server
        self.port = free_port()
        if server.name.startswith("MLServer"):
            mlserver_settings(home, self.port, threads)
        key_path = home / "key"
        env = {**os.environ, **server.env, "PEER_PORT": str(self.port),
               "PEER_MODEL_DIR": str(VERSION_DIR), "PEER_ORT_THREADS": str(threads),
               "MAAS_ORT_THREADS": str(threads), "PEER_KEY_FILE": str(key_path),
               "PYTHONPATH": str(SERVERS)}
        self.url = f"http://127.0.0.1:{self.port}{server.path}"
        started = time.perf_counter()
        self.log = home / "server.log"  # its logs (a pipe nobody reads would stall it)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(server.command, env=env, cwd=server.cwd,
                                            stdout=log, stderr=subprocess.STDOUT)
        self.key = None
        deadline = started + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            if server.key_file and self.key is None and key_path.exists():
                self.key = key_path.read_text().strip() or None
            try:
                if (not server.key_file or self.key) and post(self.url, one_row,
                                                              self.key) == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() > deadline:
                self.stop()
                raise RuntimeError(f"{server.name} did not answer within 120 s")
            time.sleep(0.005)
        self.start_to_first_answer = time.perf_counter() - started
        if server.key_file:
            key_path.unlink()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wrk(url: str, body_file: Path, key: str | None, connections: int, seconds: int,
        script: Path) -> dict[str, Any]:
    threads = min(connections, 2)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(script), url],
        env={**os.environ, "BODY_FILE": str(body_file), "API_KEY": key or ""},
        capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["errors"] or result["bad_status"] or not result["requests"]:
        raise RuntimeError(f"{url}: {result['errors']} socket errors, "
                           f"{result['bad_status']} non-2xx answers under load")
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def run(rounds: int, seconds: int, threads: int, only: list[str] | None = None
        ) -> dict[str, dict[str, list[float]]]:
    figures: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="finmaas-peers-") as tmp:
        home = Path(tmp)
        script = home / "post.lua"
        script.write_text(WRK_SCRIPT)
        one, thousand = records(1), records(1000)
        chosen = [s for s in servers(home) if s.available()
                  and (not only or any(o.lower() in s.name.lower() for o in only))]
        missing = [s.name for s in servers(home) if not s.available()]
        if missing:
            print(f"not built, left out: {', '.join(missing)} (run make bench-peers)",
                  file=sys.stderr)
        bodies: dict[str, tuple[Path, Path]] = {}
        for s in chosen:
            small, big = home / f"{len(bodies)}-1.json", home / f"{len(bodies)}-1000.json"
            small.write_bytes(json.dumps(s.body(one)).encode())
            big.write_bytes(json.dumps(s.body(thousand)).encode())
            bodies[s.name] = (small, big)
        for r in range(rounds):
            order = chosen if r % 2 == 0 else chosen[::-1]  # no server always first
            for s in order:
                small, big = bodies[s.name]
                running = Running(s, home, threads, small.read_bytes())
                try:
                    wrk(running.url, small, running.key, 1, 1, script)  # warm
                    one_at_a_time = wrk(running.url, small, running.key, 1, seconds, script)
                    concurrent = wrk(running.url, small, running.key, 16, seconds, script)
                    batch = wrk(running.url, big, running.key, 1, seconds, script)
                finally:
                    running.stop()
                f = figures.setdefault(s.name, {})
                for k, v in (("p50_ms", one_at_a_time["p50_us"] / 1000),
                             ("p99_ms", one_at_a_time["p99_us"] / 1000),
                             ("rps_16", concurrent["rps"]),
                             ("p50_1000_ms", batch["p50_us"] / 1000),
                             ("start_s", running.start_to_first_answer)):
                    f.setdefault(k, []).append(v)
                print(f"round {r + 1}/{rounds}: {s.name} done", file=sys.stderr)
    return figures


ROWS = [("1-row p50, one at a time", "p50_ms", "ms"), ("1-row p99", "p99_ms", "ms"),
        ("req/s at 16 concurrent", "rps_16", ""), ("1,000-row p50", "p50_1000_ms", "ms"),
        ("process start → first answer", "start_s", "s")]


def table(figures: dict[str, dict[str, list[float]]]) -> str:
    names = list(figures)
    ours = names[0]
    med = {n: {k: statistics.median(v) for k, v in figures[n].items()} for n in names}
    head = "| | " + " | ".join(names) + " |"
    lines = [head, "|" + " --- |" * (len(names) + 1)]
    for label, key, unit in ROWS:
        cells = []
        for n in names:
            value = med[n][key]
            text = f"{value:,.0f}" if key == "rps_16" else f"{value:.2f}"
            if n != ours:
                ratio = med[ours][key] / value
                text += f" ({ratio:.2f}x)"
            cells.append(text + (f" {unit}" if unit and n == ours else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (
        f"\n\nMedians of {len(next(iter(figures.values()))['p50_ms'])} interleaved rounds; "
        f"(n x) is {ours} / that peer (for req/s, above 1 is better; for the rest, below).")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seconds", type=int, default=3, help="per measurement")
    p.add_argument("--threads", type=int, default=default_threads(),
                   help="onnxruntime intra-op threads, for every server")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only the servers whose name contains this (repeatable)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    figures = run(args.rounds, args.seconds, args.threads, args.only)
    if args.json:
        print(json.dumps(figures, indent=2))
    print(table(figures))


if __name__ == "__main__":
    main()

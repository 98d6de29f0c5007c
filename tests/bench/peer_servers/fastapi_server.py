"""The floor: a bare FastAPI route under uvicorn that runs the graph on ``{"instances":
[records]}``, with nothing else (no validation, no keys, no metering)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import uvicorn
from fastapi import FastAPI, Request
from graph import from_env

app = FastAPI()
graph = from_env()


@app.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    body = await request.json()
    return {"predictions": graph.run_records(body["instances"])}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PEER_PORT"]), log_level="error")

"""The graph every peer serves, opened as FinMaaS opens it (the same session options),
and the least a server must do to feed it: one column array per graph input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(string)": object}


class Graph:
    def __init__(self, version_dir: str | Path, threads: int) -> None:
        version_dir = Path(version_dir)
        card = json.loads((version_dir / "card.json").read_text())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(version_dir / "model.onnx"),
                                            sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.output = card["serving"]["output"]
        self.column = card["serving"].get("column")
        self.inputs = {i.name: DTYPES[i.type] for i in self.session.get_inputs()}

    def run(self, columns: dict[str, Any]) -> list[float]:
        feeds = {name: np.asarray(columns[name], dtype=dtype).reshape(-1, 1)
                 for name, dtype in self.inputs.items()}
        out = self.session.run([self.output], feeds)[0]
        if self.column is not None and out.ndim == 2:
            out = out[:, self.column]
        return np.asarray(out, dtype=np.float64).reshape(-1).tolist()

    def run_records(self, records: list[dict[str, Any]]) -> list[float]:
        return self.run({name: [r.get(name) for r in records] for name in self.inputs})


def from_env() -> Graph:
    return Graph(os.environ["PEER_MODEL_DIR"], int(os.environ.get("PEER_ORT_THREADS", "1")))

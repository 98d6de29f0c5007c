"""KServe's Python model server (V1 protocol: ``POST /v1/models/<name>:predict`` with
``{"instances": [records]}``) serving the graph; run with the KServe venv's Python."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import kserve
from graph import from_env


class OnnxModel(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.graph = None
        self.load()

    def load(self) -> bool:
        self.graph = from_env()
        self.ready = True
        return self.ready

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None
                ) -> dict[str, Any]:
        return {"predictions": self.graph.run_records(payload["instances"])}


if __name__ == "__main__":
    model = OnnxModel(os.environ.get("PEER_MODEL_NAME", "credit-risk"))
    kserve.ModelServer(http_port=int(os.environ["PEER_PORT"]), workers=1,
                       enable_grpc=False, enable_docs_url=False).start([model])

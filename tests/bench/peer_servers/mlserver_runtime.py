"""An MLServer runtime (V2 protocol: ``POST /v2/models/<name>/infer``) serving the graph;
``mlserver start`` loads it from the settings ``tests/bench/peers.py`` writes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from graph import from_env
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        self.graph = from_env()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        columns = {}
        for tensor in payload.inputs:
            codec = StringCodec if tensor.datatype == "BYTES" else NumpyCodec
            columns[tensor.name] = codec.decode_input(tensor)
        scores = self.graph.run(columns)
        return InferenceResponse(model_name=self.name, outputs=[ResponseOutput(
            name="probability", shape=[len(scores)], datatype="FP64", data=scores)])

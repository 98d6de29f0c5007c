"""Values reach a graph only if its input type holds them: no silent wrap-around, no
truncated fractions. (The bundled graphs take float, double and strings; a published
model may take integers.)"""

from __future__ import annotations

import hashlib

import pytest
from finmaas.cards import ModelCard
from finmaas.errors import Unprocessable
from finmaas.runtime import VersionRejected, open_version


def integer_graph() -> bytes:
    """score = count / 10, from an int64 input."""
    from onnx import TensorProto, helper, numpy_helper

    ten = numpy_helper.from_array(__import__("numpy").array([10.0], dtype="float32"), "ten")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["count"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Div", ["f", "ten"], ["score"])],
        "counts", [helper.make_tensor_value_info("count", TensorProto.INT64, [None, 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        initializer=[ten])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def card(graph: bytes, field_type: str = "integer") -> ModelCard:
    return ModelCard.parse({
        "name": "count-model", "version": "1", "task": "regression", "description": "x",
        "inputs": [{"name": "count", "type": field_type, "required": True}],
        "outputs": [{"name": "value"}], "metrics": {"holdout": "none"},
        "training_data": {}, "pricing": {"usd_per_1k_predictions": "1"},
        "serving": {"output": "score", "column": 0},
        "artifact": {"sha256": hashlib.sha256(graph).hexdigest(), "bytes": len(graph)},
        "example": {"count": 3}})


@pytest.mark.parametrize("rows", [1, 40])  # the per-cell and the vectorised path
def test_an_integer_beyond_the_graphs_int64_is_refused_not_wrapped(rows):
    graph = integer_graph()
    model = open_version(card(graph), graph)
    assert model.predict([{"count": 3}] * rows)[0]["value"] == pytest.approx(0.3)
    with pytest.raises(Unprocessable) as caught:
        model.predict([{"count": 2**70}] * rows)
    assert caught.value.details[0]["code"] == "out_of_range"


def test_a_number_field_on_an_integer_graph_input_is_a_mismatch():
    graph = integer_graph()
    with pytest.raises(VersionRejected, match="declare it integer"):
        open_version(card(graph, field_type="number"), graph)

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


def feeds_or_problems(model, batch):
    try:
        return {k: v.tolist() for k, v in model.feeds(batch).items()}
    except Unprocessable as exc:
        return exc.details


def _columns() -> list:
    """Values for one column, as a list and as each numpy dtype that holds them."""
    import numpy as np

    out = []
    for values in ([3, 4, 5], [3.0, 4.0, 1e3], [3, 2.5, 4], [3, float("nan"), 1],
                   [3, 2**70, 1], [3, None, 1], [3, "4", 1], [-(2**63), 2**63 - 1, 0],
                   [2**53 + 1, 3, -(2**53) - 1]):
        out.append(pytest.param(values, None, id=f"{values}-list"))
        for dtype in ("int64", "uint64", "float32", "float64"):
            try:
                with np.errstate(all="ignore"):
                    np.array(values, dtype=dtype)
            except (TypeError, ValueError, OverflowError):
                continue  # no binary tensor of this type carries these values
            out.append(pytest.param(values, dtype, id=f"{values}-{dtype}"))
    return out


@pytest.mark.parametrize("rows", [1, 40])
@pytest.mark.parametrize(("values", "dtype"), _columns())
def test_columns_are_checked_and_fed_as_the_same_records_would_be(rows, values, dtype):
    """A V2 tensor's column (a list, or a numpy array of its binary data) reaches the
    graph exactly as the records it stands for would, or is refused with the same
    problems, each named by row and field."""
    import numpy as np
    from finmaas.serving import Columns

    graph = integer_graph()
    model = open_version(card(graph), graph)
    column = (values * rows)[: 3 * rows]
    if dtype is not None:
        with np.errstate(all="ignore"):
            column = np.array(column, dtype=dtype)
    batch = Columns({"count": column}, len(column))
    assert feeds_or_problems(model, batch) == feeds_or_problems(model, batch.records())
    assert batch[0] == batch.records()[0] and batch[-1] == batch.records()[-1]


def test_a_column_the_card_does_not_know_or_a_missing_one_is_named_like_a_records_field():
    from finmaas.serving import Columns

    graph = integer_graph()
    model = open_version(card(graph), graph)
    for columns in ({"count": [1, 2], "colour": ["red", "blue"]}, {}):
        batch = Columns(columns, 2)
        assert feeds_or_problems(model, batch) == feeds_or_problems(model, batch.records())


@pytest.mark.parametrize("rows", [1, 40])
def test_integers_past_float64s_whole_numbers_reach_an_integer_graph_exactly(rows):
    import numpy as np
    from finmaas.serving import Columns

    graph = integer_graph()
    model = open_version(card(graph), graph)
    exact = 2**53 + 1
    for batch in ([{"count": exact}] * rows,
                  Columns({"count": np.array([exact] * rows, dtype="int64")}, rows)):
        assert model.feeds(batch)["count"][:, 0].tolist() == [exact] * rows

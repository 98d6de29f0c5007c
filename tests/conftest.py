from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL_STORE = REPO / "model_store"
EVENTS = REPO / "events"
MODEL_NAMES = ["credit-risk", "loan-default", "mortgage-approval", "market-volatility"]


def load_event(name: str) -> dict:
    """A canned Lambda event from events/, as `sam local invoke -e` would send it."""
    return json.loads((EVENTS / name).read_text())


@dataclass
class LambdaContext:
    """The bits of the Lambda context object the handlers read."""

    aws_request_id: str = "test-request-0001"
    function_name: str = "finmaas-inference"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:finmaas-inference"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture(scope="session")
def built_models():
    """Every recipe rebuilt once per test session (about 10 s), keyed by model name."""
    from finmaas_recipes import RECIPES

    return {name: RECIPES[name].build() for name in MODEL_NAMES}


@pytest.fixture
def store_copy(tmp_path: Path) -> Path:
    """A private copy of the bundled store that a test may damage."""
    import shutil

    dest = tmp_path / "store"
    shutil.copytree(MODEL_STORE, dest, ignore=shutil.ignore_patterns("recipes", "__pycache__"))
    return dest

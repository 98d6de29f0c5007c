"""``maas invoke``: run a function's Lambda handler on an event in-process, as
``sam local invoke`` would (logs to stderr, the response to stdout)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import REPO_ROOT, Settings
from .common import err, open_tenants


@dataclass
class LocalLambdaContext:
    function_name: str
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:finmaas"
    log_group_name: str = "/aws/lambda/finmaas"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_function(name: str) -> Any:
    path = REPO_ROOT / "functions" / name / "handler.py"
    if not path.is_file():
        known = sorted(p.parent.name for p in (REPO_ROOT / "functions").glob("*/handler.py"))
        raise ValueError(f"no function {name!r}; functions: {', '.join(known)}")
    spec = importlib.util.spec_from_file_location(f"finmaas_function_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def cmd_invoke(args: argparse.Namespace) -> int:
    from ..keys import ensure_events_identity

    try:
        event = json.loads(Path(args.event).read_text())
    except (OSError, ValueError) as exc:
        err(f"cannot read event {args.event}: {exc}")
        return 2
    settings = Settings.from_env()
    if not settings.tenants_table:
        ensure_events_identity(open_tenants(settings))
    captured = io.StringIO()
    # Logs and EMF metrics go to stderr, the Lambda response to stdout (as sam does).
    with contextlib.redirect_stdout(captured):
        handler = load_function(args.function)
        response = handler(event, LocalLambdaContext(function_name=args.function))
    sys.stderr.write(captured.getvalue())
    print(json.dumps(response, indent=2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("invoke", help="run a function's handler on a Lambda event, in-process")
    p.add_argument("function", help="function name under functions/, e.g. inference")
    p.add_argument("event", help="a JSON event file, e.g. events/predict-credit-risk.json")
    p.set_defaults(func=cmd_invoke)

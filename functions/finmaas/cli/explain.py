"""``maas explain MODEL --input record.json``: one record's exact explanation as a
waterfall in the terminal, from the base value to the score, with the reasons an
applicant would read. Runs the model in-process (nothing is billed); the API's
``/explain`` answers the same numbers."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..config import Settings
from .common import err

BAR_WIDTH = 24


def waterfall(model: str, version: str, answer: dict[str, Any], described: dict[str, Any],
              task: str, favourable: list[str] | None = None) -> str:
    """The explanation as text: one line per field, largest effect first, each with a
    signed value and a bar (+ toward the outcome, - away from it: readable without
    colour)."""
    contributions = answer["contributions"]
    rows = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))
    largest = max((abs(v) for v in contributions.values()), default=0.0) or 1.0
    width = max([len(n) for n in contributions] + [len("base value")])
    base = described["base_value"]
    if task == "regression":
        headline = f"forecast {answer['value']:.4g} {answer.get('unit') or ''}".rstrip()
    else:
        headline = f"probability of {answer['event']} {answer['probability']:.4f}"
    lines = [f"{model} v{version}: {headline}",
             f"contributions in {described['output_space']} ({described['method']}, exact)",
             "", f"  {'base value'.ljust(width)}  {base:+.4f}"]
    for name, value in rows:
        bar = ("+" if value > 0 else "-") * max(1 if value else 0,
                                                round(abs(value) / largest * BAR_WIDTH))
        lines.append(f"  {name.ljust(width)}  {value:+.4f}  {bar}")
    raw = answer["raw_score"]
    tail = "" if task == "regression" else f"  -> sigmoid = {1 / (1 + math.exp(-raw)):.4f}"
    lines += [f"  {'= score'.ljust(width)}  {raw:+.4f}{tail}", ""]
    if answer["reasons"]:
        lines.append("Reasons, in order of effect:")
        lines += [f"  {i}. {r['text']}" for i, r in enumerate(answer["reasons"], 1)]
    else:
        lines.append("No field pushed toward the outcome.")
    if favourable:
        lines.append("In the other direction, in order of effect:")
        lines += [f"  - {text}" for text in favourable]
    return "\n".join(lines)


def favourable_texts(explainer: Any, record: dict[str, Any], answer: dict[str, Any],
                     top: int = 4) -> list[str]:
    """The card's "away" texts for the fields that pushed away from the outcome (what
    the applicant has in their favour), largest first."""
    pulls = sorted((v, n) for n, v in answer["contributions"].items() if v < 0)[:top]
    texts = []
    for _value, name in pulls:
        shown = record.get(name)
        value = "none declared" if shown is None else (
            f"{shown:g}" if isinstance(shown, float) else str(shown))
        texts.append(explainer.spec.reasons[name][1].replace("{value}", value))
    return texts


def cmd_explain(args: argparse.Namespace) -> int:
    from ..errors import ApiError
    from ..modelstore import open_store
    from ..registry import ModelRegistry

    try:
        record = json.loads(Path(args.input).read_text())
    except (OSError, ValueError) as exc:
        err(f"cannot read {args.input}: {exc}")
        return 2
    if isinstance(record, dict) and isinstance(record.get("instances"), list):
        record = record["instances"][0] if record["instances"] else None
    if not isinstance(record, dict):
        err(f"{args.input} must hold one record (a JSON object of fields) or a predict body")
        return 2
    registry = ModelRegistry(open_store(Settings.from_env().model_store))
    try:
        version = registry.resolve(args.model, args.version)
        model = registry.model(args.model, version)
        answer = model.explain([record])[0]
    except ApiError as exc:
        details = "".join(f"\n  {d.get('field')}: {d.get('message')}" for d in exc.details)
        err(f"{exc.message}{details}")
        return 1
    assert model.explainer is not None  # explain() refuses a model without one
    if args.json:
        print(json.dumps({"explanation": model.explainer.describe(), **answer}, indent=2))
        return 0
    favourable = (favourable_texts(model.explainer, record, answer)
                  if model.explainer.spec.attribution == "fields" else [])
    print(waterfall(args.model, version, answer, model.explainer.describe(), model.card.task,
                    favourable))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("explain", help="explain one record's prediction as a waterfall")
    p.add_argument("model", help="model name, e.g. credit-risk")
    p.add_argument("--input", required=True,
                   help="a JSON file with one record, or a predict body (first instance)")
    p.add_argument("--version", help="a version or alias (default: production)")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(func=cmd_explain)

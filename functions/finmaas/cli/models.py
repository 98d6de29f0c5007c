"""``maas models``: build, package (``new``), verify, list and publish model versions."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..config import BUNDLED_MODEL_STORE, Settings
from . import rollout
from .common import err


def cmd_models_build(args: argparse.Namespace) -> int:
    try:
        from finmaas_recipes import RecipeDataError, build_into
    except ImportError as exc:
        err(f"training libraries missing ({exc.name}); install with: pip install -e '.[train]'")
        return 2
    store = Path(args.store)
    started = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"{time.perf_counter() - started:6.1f}s  {msg}", file=sys.stderr, flush=True)

    try:
        built = build_into(store, args.names or None, progress=progress)
    except KeyError as exc:
        err(str(exc.args[0]))
        return 2
    except RecipeDataError as exc:
        err(f"bad training data: {exc}")
        return 1
    for m in built:
        metrics = m.card["metrics"]
        if "roc_auc" in metrics:
            headline = f"holdout ROC AUC {metrics['roc_auc']}, Brier {metrics['brier']}"
        elif "r2" in metrics:
            headline = (f"out-of-time R2 {metrics['r2']} (HAR baseline "
                        f"{metrics['baseline_har_linear']['r2']})")
        else:
            from ..verify import headline as text_headline

            headline = text_headline(metrics)
        print(f"{m.name} v{m.version}: {headline}; ONNX parity {m.parity_max_abs_diff:.1e}")
    return 0


def cmd_models_new(args: argparse.Namespace) -> int:
    """Package a publisher's model: convert, check parity, infer the card, write."""
    try:
        from finmaas_recipes import packaging
    except ImportError as exc:
        err(f"training libraries missing ({exc.name}); install with: pip install -e '.[train]'")
        return 2
    out = Path(args.out) if args.out else Path(args.name) / args.version
    try:
        overrides = packaging.load_overrides(args.card) if args.card else None
        built = packaging.package(
            args.name, packaging.load_source(args.source), packaging.load_sample(args.sample),
            target=args.target, event=args.event, price=args.price, version=args.version,
            explain_price=args.explain_price, overrides=overrides)
        written = packaging.write_version(built, out)
    except packaging.PackagingError as exc:
        err(f"not packaged: {exc}")
        return 1
    card = built.card
    metrics = card["metrics"]
    print(f"{card['name']} v{card['version']}: {card['task']}, {len(card['inputs'])} inputs "
          f"({', '.join(i['name'] + ':' + i['type'] for i in card['inputs'])})")
    print(f"ONNX parity on {card['parity']['rows']} sample rows: max |diff| "
          f"{built.parity_max_abs_diff:.1e}"
          + (f" ({card['parity']['note']})" if "note" in card["parity"] else ""))
    if "roc_auc" in metrics:
        print(f"sample metrics: ROC AUC {metrics['roc_auc']} (95% CI "
              f"{metrics['roc_auc_ci95'][0]}-{metrics['roc_auc_ci95'][1]}), "
              f"Brier {metrics['brier']}")
    elif "r2" in metrics:
        print(f"sample metrics: R2 {metrics['r2']}, RMSE {metrics['rmse']}")
    else:
        print("no metrics (no --target)")
    print(f"explains: {'yes' if 'explanation' in card else 'no'}")
    print(f"written to {written}")
    return 0


def cmd_models_verify(args: argparse.Namespace) -> int:
    from ..modelstore import open_store
    from ..verify import format_table, verify_store

    store = open_store(args.store or Settings.from_env().model_store)
    reports = verify_store(store)
    print(format_table(reports))
    if not reports:
        err(f"no models found in {store.uri}")
        return 1
    failed = [r for r in reports if not r.ok]
    ok = len(reports) - len(failed)
    print(f"\n{ok} of {len(reports)} model versions verified in {store.uri}")
    return 1 if failed else 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from ..modelstore import open_store
    from ..registry import ModelRegistry

    registry = ModelRegistry(open_store(Settings.from_env().model_store))
    print(json.dumps(registry.catalogue(), indent=2))
    return 0


def cmd_models_publish(args: argparse.Namespace) -> int:
    from ..publish import PublishError, publish

    store = args.store or Settings.from_env().model_store
    source = Path(args.source) if args.source else BUNDLED_MODEL_STORE / args.name / args.version
    try:
        result = publish(source, store, args.name, args.version, alias=args.alias)
    except PublishError as exc:
        err(f"not published: {exc}")
        return 1
    what = "uploaded" if result.uploaded else "already present (identical), not re-uploaded"
    print(f"{result.name} v{result.version} {what} in {store}")
    print(f"aliases: {json.dumps(result.aliases, sort_keys=True)}")
    return 0


def register(sub: Any) -> None:
    models = sub.add_parser("models", help="build, package (new), verify, list and publish "
                                           "models")
    msub = models.add_subparsers(dest="models_command", required=True)
    p = msub.add_parser("build", help="train the bundled models from public data")
    p.add_argument("names", nargs="*", help="models to build (default: all)")
    p.add_argument("--store", default=str(BUNDLED_MODEL_STORE), help="output store directory")
    p.set_defaults(func=cmd_models_build)
    p = msub.add_parser("new", help="package your own model (sklearn pipeline, LightGBM "
                                     "model file or .onnx) as a version directory")
    p.add_argument("name", help="model name, e.g. card-default")
    p.add_argument("--from", dest="source", required=True,
                   help="a joblib/pickle scikit-learn Pipeline, a LightGBM model file "
                        "(.txt) or an .onnx file")
    p.add_argument("--sample", required=True,
                   help=".csv or .parquet with the model's input columns (at least 50 rows)")
    p.add_argument("--target", help="target column in the sample: holdout metrics")
    p.add_argument("--event", help="what the positive class means, e.g. default")
    p.add_argument("--price", default="0.50", help="USD per 1,000 predictions (default 0.50)")
    p.add_argument("--explain-price", help="USD per 1,000 explanations (default 3x --price)")
    p.add_argument("--version", default="1", help="version (default 1)")
    p.add_argument("--card", help="JSON file of card overrides: description, intended_use, "
                                  "limitations, training_data, fields: {NAME: {description, "
                                  "unit, ...}}")
    p.add_argument("--out", help="output directory (default ./NAME/VERSION)")
    p.set_defaults(func=cmd_models_new)
    p = msub.add_parser("verify", help="check sha256, graph and card of every model")
    p.add_argument("--store", help="directory or s3://bucket/prefix (default: MAAS_MODEL_STORE)")
    p.set_defaults(func=cmd_models_verify)
    p = msub.add_parser("publish", help="upload a verified model version; optionally move "
                                          "an alias to it")
    p.add_argument("name")
    p.add_argument("--version", required=True)
    p.add_argument("--from", dest="source",
                   help="directory with model.onnx and card.json (default: model_store/NAME/V)")
    p.add_argument("--alias", help="alias to point at this version, e.g. production")
    p.add_argument("--store", help="s3://bucket/prefix or a directory (default: "
                                   "MAAS_MODEL_STORE)")
    p.set_defaults(func=cmd_models_publish)
    p = msub.add_parser("list", help="print the catalogue")
    p.set_defaults(func=cmd_models_list)
    rollout.register(msub)

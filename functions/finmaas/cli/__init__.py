"""``maas``: the operator's and developer's command line.

Commands touch AWS only when the environment points at it (``MAAS_MODEL_STORE=s3://``,
``MAAS_*_TABLE``); with nothing set they work on the embedded local stores. One module
per noun: ``models``, ``serve``, ``invoke``, ``tenants``, ``keys``, ``billing`` (usage
and invoices); ``common`` holds what they share.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import billing, invoke, keys, models, serve, tenants
from .common import err

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maas", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for noun in (models, serve, invoke, tenants, keys, billing):
        noun.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:  # configuration and argument errors
        err(str(exc))
        return 2
    except KeyError as exc:  # an unknown tenant, key or model named on the command line
        err(str(exc.args[0]) if exc.args else "not found")
        return 1

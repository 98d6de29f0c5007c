"""``maas``: the operator's and developer's command line.

Commands touch AWS only when the environment points at it (``MAAS_MODEL_STORE=s3://``,
``MAAS_*_TABLE``); with nothing set they work on the embedded local stores. One module
per noun: ``models``, ``explain``, ``batch``, ``serve``, ``invoke``, ``tenants``, ``keys``,
``billing`` (usage and invoices); ``common`` holds what they share.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import StoreError
from . import batch, billing, explain, invoke, keys, models, serve, tenants
from .common import err

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maas", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"maas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for noun in (models, explain, batch, serve, invoke, tenants, keys, billing):
        noun.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
        return code
    except BrokenPipeError:
        # The reader left early (`maas tenants list | head -1`). As the Python docs advise
        # for SIGPIPE: point stdout at devnull so the exit flush cannot fail again, and
        # exit as a process killed by SIGPIPE would (128 + 13), quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:  # configuration and argument errors
        err(str(exc))
        return 2
    except KeyError as exc:  # an unknown tenant, key or model named on the command line
        err(str(exc.args[0]) if exc.args else "not found")
        return 1
    except StoreError as exc:  # a model store that cannot be read
        err(str(exc))
        return 1
    except Exception as exc:
        if type(exc).__module__.split(".")[0] in ("botocore", "boto3"):  # credentials, ...
            err(f"AWS: {exc}")
            return 1
        raise

"""``maas models rollout | promote | rollback | shadow``: move an alias's traffic between
versions by weight, or point a shadow at a version, by rewriting ``aliases.json`` in the
store (a directory, or S3 in AWS). Servers pick the change up within
``MAAS_ALIAS_TTL_SECONDS``; nothing is redeployed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from ..config import Settings
from ..rollout import (
    AliasRoute,
    RouteError,
    promoted,
    rolled_back,
    with_canary,
    with_shadow,
)
from .common import err


def change_route(store: str, name: str, alias: str,
                 change: Callable[[AliasRoute], AliasRoute], *, s3_client: Any = None
                 ) -> AliasRoute:
    """Read the alias, change it, check every version it names exists, write it back."""
    from ..publish import open_target

    target = open_target(store, s3_client)
    raw = target.get(f"{name}/aliases.json")
    if raw is None:
        raise KeyError(f"no model {name!r} in {store}")
    try:
        aliases = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RouteError(f"{name}/aliases.json is not valid JSON; fix it by hand") from exc
    if not isinstance(aliases, dict):
        raise RouteError(f"{name}/aliases.json must be an object of aliases; fix it by hand")
    if alias not in aliases:
        raise KeyError(f"{name} has no alias {alias!r}")
    route = change(AliasRoute.parse(aliases[alias]))
    named = [v for v, _ in route.weights] + ([route.shadow] if route.shadow else [])
    missing = [v for v in named if not _published(target, name, v)]
    if missing:
        raise KeyError(f"{name} has no published version {', '.join(missing)} in {store}: "
                       "publish it first")
    aliases[alias] = route.to_json()
    target.put(f"{name}/aliases.json",
               (json.dumps(aliases, indent=2, sort_keys=True) + "\n").encode(),
               "application/json")
    return route


def _published(target: Any, name: str, version: str) -> bool:
    """The version's card is there and is a card (publish checked the rest)."""
    from ..cards import CardError, ModelCard

    raw = target.get(f"{name}/{version}/card.json")
    if raw is None:
        return False
    try:
        card = ModelCard.parse(json.loads(raw))
    except (ValueError, RecursionError, CardError):
        return False
    return (card.name, card.version) == (name, version)


def _run(args: argparse.Namespace, change: Callable[[AliasRoute], AliasRoute]) -> int:
    store = args.store or Settings.from_env().model_store
    route = change_route(store, args.name, args.alias, change)
    print(f"{args.name} {args.alias}: {json.dumps(route.to_json())} in {store}")
    print(f"servers follow within MAAS_ALIAS_TTL_SECONDS (default "
          f"{Settings().alias_ttl_seconds:g} s)")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    return _run(args, lambda route: with_canary(route, args.version, args.percent))


def cmd_promote(args: argparse.Namespace) -> int:
    return _run(args, lambda route: promoted(route, args.version))


def cmd_rollback(args: argparse.Namespace) -> int:
    return _run(args, rolled_back)


def cmd_shadow(args: argparse.Namespace) -> int:
    if bool(args.version) == bool(args.off):
        err("name a --version to shadow, or --off")
        return 2
    return _run(args, lambda route: with_shadow(route, None if args.off else args.version))


def register(msub: Any) -> None:
    """Subcommands of ``maas models``."""
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("name")
        p.add_argument("--alias", default="production")
        p.add_argument("--store", help="s3://bucket/prefix or a directory (default: "
                                       "MAAS_MODEL_STORE)")

    p = msub.add_parser("rollout", help="send a percentage of an alias's traffic to a "
                                         "version (a canary)")
    common(p)
    p.add_argument("--version", required=True)
    p.add_argument("--percent", type=float, required=True)
    p.set_defaults(func=cmd_rollout)
    p = msub.add_parser("promote", help="send all of an alias's traffic to its canary")
    common(p)
    p.add_argument("--version", help="the version to promote (default: the canary)")
    p.set_defaults(func=cmd_promote)
    p = msub.add_parser("rollback", help="send all of an alias's traffic back to its "
                                          "primary version")
    common(p)
    p.set_defaults(func=cmd_rollback)
    p = msub.add_parser("shadow", help="run a version on a copy of an alias's traffic, "
                                        "never returned nor billed")
    common(p)
    p.add_argument("--version")
    p.add_argument("--off", action="store_true", help="stop shadowing")
    p.set_defaults(func=cmd_shadow)

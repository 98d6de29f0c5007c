"""``maas models verify``: check every model in a store the way the server will use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cards import NAME_RE, CardError, ModelCard
from .modelstore import ModelStore, ObjectNotFound
from .rollout import BASIS, AliasRoute, RouteError
from .runtime import VersionRejected, open_version


@dataclass
class VersionReport:
    name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    task: str = ""
    inputs: int = 0
    size: int = 0
    headline: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def headline(metrics: dict[str, Any]) -> str:
    """A card's headline metric, for tables: ROC AUC, R2, or a text model's int8/fp32
    parity."""
    if "roc_auc" in metrics:
        return f"roc_auc {metrics['roc_auc']}"
    if "r2" in metrics:
        return f"r2 {metrics['r2']}"
    parity = metrics.get("parity_int8_vs_fp32")
    return f"cosine vs fp32 {parity['mean_cosine']}" if parity else "-"


def verify_version(store: ModelStore, name: str, version: str) -> VersionReport:
    """Open the version through the server's own door (``runtime.open_version``)."""
    report = VersionReport(name, version)
    try:
        card = ModelCard.parse(store.read_json(f"{name}/{version}/card.json"))
    except ObjectNotFound:
        report.problems.append("card.json missing")
        return report
    except CardError as exc:
        report.problems += [f"card: {p}" for p in exc.problems]
        return report
    except Exception as exc:
        report.problems.append(f"card unreadable: {exc}")
        return report
    report.task, report.inputs, report.size = card.task, len(card.inputs), card.artifact_bytes
    report.headline = headline(card.raw.get("metrics", {}))
    if (card.name, card.version) != (name, version):
        report.problems.append(f"card names {card.name} v{card.version}")
    try:
        path = store.artifact_path(f"{name}/{version}/{card.artifact_file}", card.sha256)
    except ObjectNotFound:
        report.problems.append(f"{card.artifact_file} missing")
        return report
    files = {}
    for listed in card.files:
        try:
            files[listed.file] = store.artifact_path(f"{name}/{version}/{listed.file}",
                                                     listed.sha256)
        except ObjectNotFound:
            report.problems.append(f"{listed.file} missing")
            return report
    try:
        open_version(card, path, files=files)
    except VersionRejected as exc:
        report.problems += exc.problems
    return report


def verify_store(store: ModelStore) -> list[VersionReport]:
    reports: list[VersionReport] = []
    for name in store.list_dirs():
        if not NAME_RE.match(name):
            continue  # recipes/ and other non-model folders
        try:
            aliases = store.read_json(f"{name}/aliases.json")
        except ObjectNotFound:
            continue
        versions = [v for v in store.list_dirs(name) if not v.startswith("_")]
        by_version = {v: verify_version(store, name, v) for v in versions}
        for alias, value in (aliases or {}).items():
            try:
                route = AliasRoute.parse(value)
            except RouteError as exc:
                bad = VersionReport(name, "-", [alias])
                bad.problems.append(f"alias {alias!r}: {exc}")
                by_version[f"-{alias}"] = bad
                continue
            labels = [(v, alias if w == BASIS else f"{alias}:{w / 100:g}%")
                      for v, w in route.weights]
            if route.shadow is not None:
                labels.append((route.shadow, f"{alias}:shadow"))
            for target, label in labels:
                if target in by_version:
                    by_version[target].aliases.append(label)
                else:
                    bad = VersionReport(name, target, [label])
                    bad.problems.append(f"alias {label!r} points at a missing version")
                    by_version[target] = bad
        reports += by_version.values()
    return reports


def format_table(reports: list[VersionReport]) -> str:
    headers = ["model", "version", "aliases", "task", "inputs", "bytes", "holdout", "status"]
    rows = [[r.name, r.version, ",".join(r.aliases) or "-", r.task or "?", str(r.inputs),
             f"{r.size:,}", r.headline or "-", "ok" if r.ok else "FAIL: " + "; ".join(r.problems)]
            for r in reports]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)

"""``maas models publish``: put a model version into a store (S3 bucket or directory)
and optionally move an alias to it.

Order matters: the artifact goes first and the card last, because the registry treats a
version as existing once its card does; a half-finished upload is never served. Versions
are immutable: republishing identical bytes is a no-op, different bytes are refused.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cards import ALIAS_RE, CardError, ModelCard
from .runtime import VersionRejected, open_version


class PublishError(ValueError):
    pass


@dataclass(frozen=True)
class PublishResult:
    name: str
    version: str
    uploaded: bool
    aliases: dict[str, str]


@dataclass(frozen=True)
class CheckedVersion:
    """A version directory opened as the server will open it, with the bytes to upload."""

    card: ModelCard
    card_bytes: bytes
    model_bytes: bytes
    files: dict[str, bytes]


def check_model_dir(source: Path, name: str, version: str) -> CheckedVersion:
    """The version opened as the server will open it (``runtime.open_version``)."""
    try:
        card_bytes = (source / "card.json").read_bytes()
        card = ModelCard.parse(json.loads(card_bytes))
    except FileNotFoundError as exc:
        raise PublishError(f"{source} has no card.json") from exc
    except (ValueError, CardError) as exc:
        raise PublishError(f"{source}/card.json is invalid: {exc}") from exc
    if (card.name, card.version) != (name, version):
        raise PublishError(f"card.json describes {card.name} v{card.version}, "
                           f"not {name} v{version}")
    artifact = source / card.artifact_file
    if not artifact.is_file():
        raise PublishError(f"{artifact} is missing")
    model_bytes = artifact.read_bytes()
    files = {f.file: (source / f.file).read_bytes() for f in card.files
             if (source / f.file).is_file()}
    try:
        open_version(card, model_bytes, files=files)
    except VersionRejected as exc:
        raise PublishError(f"{artifact} cannot be served: {exc}") from exc
    return CheckedVersion(card, card_bytes, model_bytes, files)


class _S3Target:
    def __init__(self, uri: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client
        rest = uri.removeprefix("s3://")
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = prefix.strip("/")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise

    def put(self, key: str, body: bytes, content_type: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body,
                               ContentType=content_type)


class _DirTarget:
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def put(self, key: str, body: bytes, content_type: str) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(body)
        shutil.move(tmp, path)


def open_target(store: str, s3_client: Any = None) -> _S3Target | _DirTarget:
    """A store to write: an S3 prefix or a directory, in the bucket layout."""
    return _S3Target(store, s3_client) if store.startswith("s3://") else _DirTarget(store)


def publish(source: Path, store: str, name: str, version: str, *, alias: str | None = None,
            s3_client: Any = None) -> PublishResult:
    if alias is not None and not ALIAS_RE.match(alias):
        raise PublishError(f"alias {alias!r}: lowercase letters, digits and dashes")
    checked = check_model_dir(source, name, version)
    card = checked.card
    target = open_target(store, s3_client)
    prefix = f"{name}/{version}"
    existing = target.get(f"{prefix}/card.json")
    uploaded = False
    if existing is not None:
        try:
            existing_sha = json.loads(existing)["artifact"]["sha256"]
        except (ValueError, KeyError, TypeError):
            existing_sha = None
        if existing_sha != card.sha256:
            raise PublishError(f"{name} v{version} already exists with other bytes; versions "
                               "are immutable, publish a new version")
    else:
        # every other file and the graph first, the card last: a version exists for the
        # registry once its card does, so a half-finished upload is never served
        for file, data in sorted(checked.files.items()):
            target.put(f"{prefix}/{file}", data, "application/octet-stream")
        target.put(f"{prefix}/{card.artifact_file}", checked.model_bytes,
                   "application/octet-stream")
        target.put(f"{prefix}/card.json", checked.card_bytes, "application/json")
        uploaded = True
    raw_aliases = target.get(f"{name}/aliases.json")
    aliases: dict[str, str] = json.loads(raw_aliases) if raw_aliases else {}
    if alias is not None and aliases.get(alias) != version:
        aliases[alias] = version
        target.put(f"{name}/aliases.json",
                   (json.dumps(aliases, indent=2, sort_keys=True) + "\n").encode(),
                   "application/json")
    return PublishResult(name, version, uploaded, aliases)

"""S3 store: small objects are read on demand; artifacts are downloaded once per
container into a cache directory keyed by sha256 (``/tmp`` on Lambda)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .base import ModelStore, ObjectNotFound


class S3ModelStore(ModelStore):
    def __init__(self, bucket: str, prefix: str = "", *, cache_dir: str | Path | None = None,
                 client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.cache_dir = Path(cache_dir or "/tmp/finmaas-models")

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> S3ModelStore:
        rest = uri.removeprefix("s3://")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"{uri!r} is not s3://bucket/prefix")
        return cls(bucket, prefix, **kwargs)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectNotFound(f"{kwargs.get('Key')} not found in {self.uri}") from exc
            raise StoreError(f"S3 {code or 'error'} on {self.uri}: {exc}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 unreachable for {self.uri}: {exc}") from exc

    def read_bytes(self, key: str) -> bytes:
        resp = self._call(self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return resp["Body"].read()

    def list_dirs(self, prefix: str = "") -> list[str]:
        full = self._key(prefix).rstrip("/")
        full = f"{full}/" if full else ""
        names: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            resp = self._call(self.client.list_objects_v2, **kwargs)
            names += [p["Prefix"][len(full):].rstrip("/") for p in resp.get("CommonPrefixes", [])]
            token = resp.get("NextContinuationToken")
            if not token:
                return sorted(n for n in names if n and not n.startswith("."))

    def _cached(self, sha256: str) -> Path:
        return self.cache_dir / f"{sha256}.onnx"

    def artifact_path(self, key: str, sha256: str) -> Path:
        target = self._cached(sha256)
        if target.is_file():
            return target
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".part")
        os.close(fd)
        try:
            self._call(self.client.download_file, Bucket=self.bucket, Key=self._key(key),
                       Filename=tmp)
            os.replace(tmp, target)  # atomic: a crashed download never looks complete
        except Exception:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def evict(self, key: str, sha256: str) -> None:
        self._cached(sha256).unlink(missing_ok=True)

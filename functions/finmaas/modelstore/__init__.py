"""Where models live: a local directory or an S3 prefix, both in the bucket layout

``<name>/aliases.json``, ``<name>/<version>/{model.onnx,card.json}``.
"""

from __future__ import annotations

from .base import CorruptObject, ModelStore, ObjectNotFound
from .local import LocalModelStore

__all__ = ["CorruptObject", "LocalModelStore", "ModelStore", "ObjectNotFound", "open_store"]


def open_store(uri: str, *, cache_dir: str | None = None, s3_client: object | None = None
               ) -> ModelStore:
    """``s3://bucket/prefix`` or a directory path. boto3 is imported only for S3."""
    if uri.startswith("s3://"):
        from .s3 import S3ModelStore

        return S3ModelStore.from_uri(uri, cache_dir=cache_dir, client=s3_client)
    return LocalModelStore(uri)

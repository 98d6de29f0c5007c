from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..errors import StoreError


class ObjectNotFound(StoreError):
    """The key does not exist in the store (an unknown model or version)."""


class CorruptObject(StoreError):
    """The object exists but cannot be read as what it should be (garbled JSON)."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key} is not valid JSON: {detail}")
        self.key = key


class ModelStore(ABC):
    """Read-only access to a model store. Writes go through ``publish`` (CLI only)."""

    uri: str

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Small objects (cards, aliases). Raises ObjectNotFound or StoreError."""

    @abstractmethod
    def list_dirs(self, prefix: str = "") -> list[str]:
        """Immediate sub-folders of ``prefix`` (model names, or versions of a model)."""

    @abstractmethod
    def artifact_path(self, key: str, sha256: str) -> Path:
        """A local file holding the object's bytes (downloaded and cached if remote).

        The caller verifies the sha256 before trusting the file.
        """

    def evict(self, key: str, sha256: str) -> None:  # noqa: B027 - optional hook
        """Drop a cached copy that failed verification (remote stores only)."""

    def read_json(self, key: str) -> Any:
        raw = self.read_bytes(key)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:  # garbled, or nested past any parser
            raise CorruptObject(key, str(exc) or type(exc).__name__) from None

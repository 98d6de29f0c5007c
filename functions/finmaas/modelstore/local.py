from __future__ import annotations

from pathlib import Path

from ..errors import StoreError
from .base import ModelStore, ObjectNotFound


class LocalModelStore(ModelStore):
    """A directory in the bucket layout, e.g. the repository's ``model_store/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ObjectNotFound(f"{key} is outside the store")
        return path

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ObjectNotFound(f"{key} not found in {self.uri}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc

    def list_dirs(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def artifact_path(self, key: str, sha256: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"{key} not found in {self.uri}")
        return path

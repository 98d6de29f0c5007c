"""Where a tenant's batch job may read and write: only under its own folder of a root the
operator allows (``MAAS_BATCH_ROOTS``), ``<root><tenant>/``. A job can never name
another tenant's data, nor a path that climbs out of its folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import Forbidden, Unprocessable


@dataclass(frozen=True)
class Location:
    """An ``s3://bucket/key`` or ``file:///path`` location."""

    scheme: str
    bucket: str  # empty for file://
    key: str  # the S3 key, or the absolute path

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.scheme == "s3" else f"file://{self.key}"

    @property
    def path(self) -> Path:
        return Path(self.key)

    def child(self, name: str) -> Location:
        base = self.key if self.key.endswith("/") else self.key + "/"
        return Location(self.scheme, self.bucket, base + name)


def parse_location(url: object, field: str) -> Location:
    """An ``s3://`` or ``file://`` URL, or a 422 naming ``field``."""
    def bad(message: str) -> Unprocessable:
        return Unprocessable(message, code="invalid_location", details=[
            {"field": field, "code": "invalid_location", "message": message}])

    if not isinstance(url, str) or not url:
        raise bad(f"{field} must be an s3:// or file:// URL")
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise bad(f"{field} must not have a query or a fragment")
    if parts.scheme == "s3":
        key = parts.path.lstrip("/")
        if not parts.netloc or not key:
            raise bad(f"{field} must be s3://bucket/key")
        segments = key.split("/")
        if any(s in (".", "..") for s in segments) or "" in segments[:-1]:
            raise bad(f"{field} must not contain '.', '..' or empty path segments")
        return Location("s3", parts.netloc, key)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise bad(f"{field} must be a local file:///path")
        path = unquote(parts.path)
        if not path.startswith("/") or "\x00" in path:
            raise bad(f"{field} must be an absolute file:///path")
        trailing = "/" if path.endswith("/") else ""
        return Location("file", "", os.path.realpath(path) + trailing)  # no way out via ..
    raise bad(f"{field} must be an s3:// or file:// URL")


def tenant_area(root: str, tenant: str) -> Location:
    return parse_location(root.rstrip("/") + f"/{tenant}/", "root")


def check_allowed(loc: Location, tenant: str, roots: tuple[str, ...], field: str) -> None:
    """403 unless ``loc`` is inside ``<root><tenant>/`` of one of ``roots``."""
    for root in roots:
        area = tenant_area(root, tenant)
        if loc.scheme == area.scheme and loc.bucket == area.bucket \
                and loc.key.startswith(area.key) and loc.key != area.key.rstrip("/"):
            return
    where = ", ".join(tenant_area(r, tenant).url for r in roots) or "nowhere (no roots)"
    raise Forbidden(f"{field} is outside the locations allowed for your batch jobs: {where}",
                    code="location_not_allowed", details=[
                        {"field": field, "code": "location_not_allowed",
                         "message": f"use a location under {where}"}])

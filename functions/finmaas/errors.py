"""Errors that carry their HTTP status; one handler in ``api`` turns them into the body

``{"error": {"code", "message", "details"}}``. Domain code raises these and never
builds responses itself.
"""

from __future__ import annotations

from typing import Any

V2_ERROR_CODE_HEADER = "x-finmaas-error-code"


def is_v2_path(path: str) -> bool:
    """The Open Inference Protocol's paths: their errors are V2's ``{"error": "..."}``."""
    return path == "/v2" or path.startswith("/v2/")


def v2_error_body(message: str) -> dict[str, str]:
    return {"error": message}


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(ApiError):
    status, code = 422, "validation_error"


class ServiceUnavailable(ApiError):
    """A dependency (model store, metering store) failed; safe to retry."""

    status, code = 503, "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kwargs: Any) -> None:
        headers = {"Retry-After": str(retry_after), **kwargs.pop("headers", {})}
        super().__init__(message, headers=headers, **kwargs)


class StoreError(Exception):
    """A model store could not be read (network, permissions, missing object)."""


class IntegrityError(Exception):
    """An artifact's bytes do not match the sha256 its card declares."""

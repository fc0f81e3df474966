"""The JivaPay error family: every domain error carries an HTTP status and a stable machine code.

Services raise these (never `HTTPException`); `servers.exception_handlers` renders them as RFC 9457
problem+json. `code` is part of the public contract: clients switch on it, so never rename one.
"""

from __future__ import annotations

from typing import Any, ClassVar


class JivaPayException(Exception):
    """Base of every domain error."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int | None = None,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.title
        super().__init__(self.message)
        if status_code is not None:
            self.status_code = status_code  # type: ignore[misc]
        if code is not None:
            self.code = code  # type: ignore[misc]
        self.extra: dict[str, Any] = extra or {}


class ValidationFailed(JivaPayException):
    status_code = 422
    code = "validation_failed"
    title = "Validation failed"


class BadRequest(JivaPayException):
    status_code = 400
    code = "bad_request"
    title = "Bad request"


class AuthenticationFailed(JivaPayException):
    status_code = 401
    code = "authentication_failed"
    title = "Authentication failed"


class InvalidSignature(AuthenticationFailed):
    code = "invalid_signature"
    title = "Invalid request signature"


class Forbidden(JivaPayException):
    status_code = 403
    code = "forbidden"
    title = "Forbidden"


class PermissionDenied(Forbidden):
    code = "permission_denied"
    title = "Permission denied"


class NotFound(JivaPayException):
    status_code = 404
    code = "not_found"
    title = "Not found"


class Conflict(JivaPayException):
    status_code = 409
    code = "conflict"
    title = "Conflict"


class DuplicateObject(Conflict):
    code = "duplicate"
    title = "Already exists"


class InvalidStatusTransition(Conflict):
    code = "invalid_status_transition"
    title = "Invalid status transition"


class IdempotencyKeyInProgress(Conflict):
    code = "idempotency_key_in_progress"
    title = "A request with this Idempotency-Key is still being processed"


class IdempotencyKeyMismatch(JivaPayException):
    status_code = 422
    code = "idempotency_key_reused"
    title = "Idempotency-Key was already used with a different request"


class RequisiteNotFound(JivaPayException):
    status_code = 409
    code = "requisite_not_found"
    title = "No suitable requisite"


class RequisiteBusy(RequisiteNotFound):
    """No requisite was free, but one passed over only because another worker held its trader's
    deposit row at that moment: a fresh attempt a few milliseconds later may well succeed."""

    code = "requisite_busy"
    title = "Every suitable requisite is busy"


class LimitExceeded(JivaPayException):
    status_code = 422
    code = "limit_exceeded"
    title = "Limit exceeded"


class InsufficientBalance(JivaPayException):
    status_code = 422
    code = "insufficient_balance"
    title = "Insufficient balance"


class StaleExchangeRate(JivaPayException):
    status_code = 503
    code = "stale_exchange_rate"
    title = "Exchange rate is stale"


class RateLimited(JivaPayException):
    status_code = 429
    code = "rate_limited"
    title = "Too many requests"

    def __init__(self, message: str | None = None, *, retry_after: int = 60) -> None:
        super().__init__(message, extra={"retry_after": retry_after})
        self.retry_after = retry_after


class ConfigurationError(JivaPayException):
    status_code = 500
    code = "configuration_error"
    title = "Configuration error"


class InvariantViolation(JivaPayException):
    """A balance, hold or counter invariant would break: refuse the write, alert, answer a bare 500.

    Raised where the code checks what must hold by construction (order legs summing to zero, a
    hold in place before it is released, counters updated), never for a caller's mistake.
    """

    status_code = 500
    code = "invariant_violation"
    title = "Internal error"


class DatabaseError(JivaPayException):
    status_code = 503
    code = "database_error"
    title = "Database unavailable"


class StorageError(JivaPayException):
    status_code = 502
    code = "storage_error"
    title = "File storage unavailable"


class ServiceUnavailable(JivaPayException):
    status_code = 503
    code = "service_unavailable"
    title = "Service unavailable"


class FileTooLarge(JivaPayException):
    status_code = 413
    code = "file_too_large"
    title = "File too large"


class UnsupportedFileType(JivaPayException):
    status_code = 415
    code = "unsupported_file_type"
    title = "Unsupported file type"

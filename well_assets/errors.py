"""Typed errors shared by the client, the pipeline and the CLI.

Every error renders the seed system's failure JSON
(``{"success": false, "error": {"code", "message", "details"}}``) so the CLI's
``--json`` output and the report asset speak the same language. No error ever
carries a secret: callers pass only redacted URLs and header-free details.
"""

from __future__ import annotations

from typing import Any


class WellAssetsError(Exception):
    """Base class: an error with a stable machine-readable code."""

    code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def __reduce__(self):
        # Errors cross a process boundary (the page fetcher's worker); the subclasses'
        # constructors take other arguments than Exception.args, so rebuild by state.
        return (_rebuild, (type(self), self.args, self.__dict__))

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": False,
            "error": {"code": self.code, "message": self.message, "details": self.details},
        }


class ConfigError(WellAssetsError, ValueError):
    """A setting is invalid. The message names the setting and the allowed values."""

    code = "VALIDATION_ERROR"

    def __init__(self, setting: str, value: Any, allowed: str) -> None:
        super().__init__(
            f"invalid setting {setting}={value!r}: allowed values are {allowed}",
            setting=setting,
            value=repr(value),
            allowed=allowed,
        )
        self.setting = setting


class ExternalApiError(WellAssetsError):
    """The OData service failed (after retries, or with a non-retryable status). Its
    details are also attributes (None when unknown): ``status``, ``odata_code``, ``page``,
    ``retry_after``, ``request_id``, ``url`` (redacted), ``attempts``."""

    code = "EXTERNAL_API_ERROR"
    FIELDS = ("status", "odata_code", "page", "retry_after", "request_id", "url", "attempts")

    def __init__(self, message: str, **details: Any) -> None:
        unknown = set(details) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"ExternalApiError got unknown details {sorted(unknown)}")
        super().__init__(message, **details)
        for name in self.FIELDS:
            setattr(self, name, details.get(name))


class PaginationError(WellAssetsError):
    """Bad page parameters, or a paging protocol violation (nextLink loop, foreign host)."""

    code = "PAGINATION_ERROR"


class ChangeTrackingUnavailable(WellAssetsError):
    """ODATA_CHANGE_TRACKING=on, but the service gave no delta link (it did not apply
    ``odata.track-changes``, or applied it without a link)."""

    code = "EXTERNAL_API_ERROR"


class DeltaLinkExpired(WellAssetsError):
    """The service no longer answers a delta link (410 Gone, or an error saying its token
    is invalid or expired): the changes since it are unknown, so read everything again.
    The message never contains the link."""

    code = "EXTERNAL_API_ERROR"


class ValidationError(WellAssetsError):
    """A page's shape is wrong (a required column missing or renamed)."""

    code = "VALIDATION_ERROR"


class DeleteGuardError(WellAssetsError):
    """A page sync would delete more of its stored rows than ODATA_MAX_DELETE_FRACTION allows;
    nothing was written."""

    code = "DATABASE_ERROR"


class DatabaseError(WellAssetsError):
    """DuckDB failed; the page's transaction was rolled back."""

    code = "DATABASE_ERROR"


def _rebuild(cls: type, args: tuple, state: dict) -> WellAssetsError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error

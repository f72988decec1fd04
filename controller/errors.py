"""The project's own error types. Adapters map vendor exceptions into these in one place each.

Hierarchy::

    BurstError
    ├── ConfigError            a config or policy file is wrong (carries FILE:LINE:COL problems)
    ├── TransientError         worth retrying with backoff (throttling, 5xx, timeouts, connection refused)
    │   └── StateBusyError     the state database is locked or momentarily unavailable
    └── PermanentError         retrying the same call will not help
        ├── AuthError          credentials rejected (signature, unknown key, bad registry password)
        ├── CapacityError      the offering is sold out or not supported (try another type/zone)
        ├── QuotaError         an account quota is exhausted
        ├── NotFoundError      the thing asked for does not exist
        ├── NotPortableError   a workload cannot be copied to the cloud as it is (bind mounts, volumes)
        ├── IntegrityError     bytes did not match their digest
        └── FencedError        this controller is no longer the leader and must not act

Every error may carry ``request_id`` (the remote request id, for support tickets) and ``code`` (the
remote error code). Messages never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BurstError",
    "CapacityError",
    "ConfigError",
    "FencedError",
    "IntegrityError",
    "NotFoundError",
    "NotPortableError",
    "PermanentError",
    "QuotaError",
    "StateBusyError",
    "TransientError",
]


class BurstError(Exception):
    """Base of every error the project raises on purpose."""

    def __init__(self, message: str, *, code: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        extra = []
        if self.code:
            extra.append(f"code={self.code}")
        if self.request_id:
            extra.append(f"request_id={self.request_id}")
        return f"{self.message} ({', '.join(extra)})" if extra else self.message


class ConfigError(BurstError):
    """A configuration or policy file is invalid. ``problems`` holds one line per problem."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class TransientError(BurstError):
    """Retrying later may succeed; ``retry_after``: the wait the outside system asked for, when it said."""

    def __init__(self, message: str, *, code: str | None = None, request_id: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, code=code, request_id=request_id)
        self.retry_after = retry_after


class StateBusyError(TransientError):
    """The state store is locked, full or unreachable for now."""


class PermanentError(BurstError):
    """Retrying the same call will not help."""


class AuthError(PermanentError):
    pass


class CapacityError(PermanentError):
    """No stock, or the instance type is not offered where asked. Another offering may work."""


class QuotaError(PermanentError):
    pass


class NotFoundError(PermanentError):
    pass


class NotPortableError(PermanentError):
    pass


class IntegrityError(PermanentError):
    pass


class FencedError(PermanentError):
    pass

"""Errors of the speed layer."""

from cxd.errors import TransientError


class Backpressure(TransientError):
    """The dataset's unloaded backlog is at its cap; retry after the loader catches up.

    ``retry_after`` is the number of seconds a client should wait (sent as Retry-After).
    """

    code = "backpressure"
    status = 503

    def __init__(self, message: str, *, retry_after: int = 1, details=None):
        super().__init__(message, details=details)
        self.retry_after = retry_after


class PoisonEvent(Exception):
    """An event the loader cannot load (not JSON, or rejected by Postgres)."""

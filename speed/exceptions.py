"""Errors of the speed layer."""

from cxd.errors import TransientError


class Backpressure(TransientError):
    """The dataset's unloaded backlog is at its cap; retry after the loader catches up."""

    code = "backpressure"
    status = 503

"""Errors of the query router; each names where in the SQL or which parameter was wrong."""

from cxd.errors import BadInput


class QueryError(BadInput):
    """The SQL is not allowed or not valid; ``details`` carries line and column."""

    code = "bad_query"


class ParameterError(BadInput):
    """A parameter is missing or of the wrong type; the message names it."""

    code = "bad_parameter"

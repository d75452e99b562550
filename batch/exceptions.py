"""Errors of the batch layer."""

from cxd.errors import BadInput, CxdError


class LoadError(CxdError):
    """A load could not be applied; nothing of it was committed."""

    code = "load_failed"


class SchemaChangeError(BadInput):
    """A declared column changed type incompatibly; the raw table was left as it was."""

    code = "schema_change"
    status = 409

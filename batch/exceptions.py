"""Errors of the batch layer."""

from cxd.errors import BadInput, CxdError


class LoadError(CxdError):
    """A load could not be applied; nothing of it was committed."""

    code = "load_failed"


class SchemaChangeError(BadInput):
    """A declared column changed type incompatibly; the raw table was left as it was."""

    code = "schema_change"
    status = 409


class ArchiveError(CxdError):
    """An archived payload is missing or corrupt; reprocess cannot use it."""

    code = "archive_error"


class QualityError(CxdError):
    """A check of severity ``error`` failed: the load was not applied."""

    code = "quality_failed"
    status = 422

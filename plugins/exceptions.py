"""Errors raised by source plugins, split by what the runtime does next."""

from cxd.errors import BadInput, ConfigError, TransientError


class PluginConfigError(ConfigError):
    """The source's settings are wrong: the run fails and is not retried."""

    code = "plugin_config"


class FetchError(TransientError):
    """The source could not be reached now: the run is retried with backoff."""

    code = "fetch_failed"


class RecordError(BadInput):
    """One record cannot be ingested: it is quarantined, the rest load."""

    code = "bad_record"


class PayloadQuarantined(RecordError):
    """A whole payload (a file) was set aside with the reason: the run records it, the rest load."""

    code = "payload_quarantined"

"""Redis key names. The dataset sits in a hash tag so Redis Cluster keeps a dataset's
keys on one shard."""


def log_key(dataset: str) -> str:
    """Stream of live events since the batch watermark."""
    return f"cxd:{{{dataset}}}:log"


def latest_key(dataset: str) -> str:
    """Hash of the latest value per entity key."""
    return f"cxd:{{{dataset}}}:latest"


def notify_channel(dataset: str) -> str:
    """Pub/sub channel announcing that the dataset changed."""
    return f"cxd:{{{dataset}}}:changed"


def backlog_key(dataset: str) -> str:
    """Counter of appended events not yet acknowledged by the loader (the unloaded backlog)."""
    return f"cxd:{{{dataset}}}:backlog"


def dead_key(dataset: str) -> str:
    """Dead-letter stream: events the loader gave up on, with the reason."""
    return f"cxd:{{{dataset}}}:dead"


def dead_ids_key(dataset: str) -> str:
    """Set of the stream ids already dead-lettered (so a retried round never adds twice)."""
    return f"cxd:{{{dataset}}}:dead:ids"


def failures_key(dataset: str) -> str:
    """Hash: stream id -> how many times loading that event failed."""
    return f"cxd:{{{dataset}}}:failures"


def counters_key(dataset: str) -> str:
    """Hash: counter name -> value."""
    return f"cxd:{{{dataset}}}:counters"


def counters_at_key(dataset: str) -> str:
    """Hash: counter name -> time of its last change (milliseconds since the epoch)."""
    return f"cxd:{{{dataset}}}:counters:at"


LOADER_GROUP = "cxd-loader"
"""The consumer group the speed->batch loader reads each dataset's stream with."""

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

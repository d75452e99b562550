"""Hand-off: events above the batch watermark W are loaded into raw together with the new
W in one Postgres transaction; the stream is trimmed only below the committed W."""

from __future__ import annotations

import logging

from batch.load import get_watermark, load_rows
from cxd.catalog import get_source
from cxd.stores import Stores, process_stores
from speed.keys import log_key, notify_channel
from speed.stream import read_after

log = logging.getLogger(__name__)

QUEUE = "cxd-speed"


def drain(stores: Stores, dataset: str, batch_size: int = 10_000) -> int:
    """Load every event above the watermark into raw; return how many were loaded."""
    spec = get_source(stores.db, dataset)
    total = 0
    while True:
        watermark = get_watermark(stores.db, dataset)["stream_id"]
        entries = read_after(stores.redis, dataset, watermark, count=batch_size)
        if not entries:
            break
        ids = [eid for eid, _ in entries]
        load_rows(
            stores.db, spec, [rec for _, rec in entries], stream_ids=ids, stream_watermark=ids[-1]
        )
        # trimming after commit, never above the committed watermark (invariant 2)
        stores.redis.xtrim(log_key(dataset), minid=ids[-1], approximate=False)
        stores.redis.publish(notify_channel(dataset), "batch")
        total += len(entries)
        if len(entries) < batch_size:
            break
    return total


def drain_job(dataset: str) -> int:
    """rq entry point for :func:`drain`."""
    return drain(process_stores(), dataset)

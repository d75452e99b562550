"""Saved-query results cached in Redis under (query, parameters, data state).

The data state of a dataset is read from Redis alone, so a hit costs no Postgres query:
its speed high-water mark (a new event changes it) and its batch generation, a counter
bumped whenever the dataset's change channel announces a load ("batch"). Moving events
from the speed layer into raw does not change an answer (the merge counts each event
once whichever side holds it), so the watermark W need not be read from Postgres; the
batch generation covers every other change to raw. An entry is therefore replaced
exactly when data it depends on changes; entries also expire after ``TTL`` seconds in
case a change was announced while no cxd process was listening.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import redis

from speed.keys import notify_channel
from speed.stream import high_water

TTL = 600
PREFIX = "cxd:qcache:"


def generation_key(dataset: str) -> str:
    """Counter of batch loads announced for ``dataset``."""
    return f"cxd:{{{dataset}}}:batchgen"


class Listener:
    """This process's subscription to every dataset's change channel, polled on demand."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.lock = threading.Lock()
        self.heard: dict[str, int] = {}  # batch loads announced since this process subscribed
        self.errors = 0  # failed polls: announcements may have been missed
        self.pubsub.psubscribe(notify_channel("*"))
        # announcements count from the moment Redis confirms the subscription
        deadline = time.monotonic() + 2.0
        with self.lock:
            while not self.pubsub.subscribed and time.monotonic() < deadline:
                self._apply(self.pubsub.get_message(timeout=0.1))

    def _apply(self, message: dict | None) -> None:
        if message is not None and message.get("data") in (b"batch", "batch"):
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            dataset = channel[channel.index("{") + 1 : channel.rindex("}")]
            self.heard[dataset] = self.heard.get(dataset, 0) + 1
            bump(self.client, dataset)

    def poll(self) -> None:
        """Apply every change announcement that has arrived (never blocks)."""
        with self.lock:
            while True:
                try:
                    message = self.pubsub.get_message(timeout=0)
                except redis.RedisError:
                    self.errors += 1
                    raise
                if message is None:
                    return
                self._apply(message)


_listeners: dict[tuple[int, str], Listener] = {}
_listeners_lock = threading.Lock()


def listener(client: redis.Redis) -> Listener:
    """The listener of this process for ``client``'s server (created on first use)."""
    kwargs = client.connection_pool.connection_kwargs
    key = (os.getpid(), repr(sorted((k, str(v)) for k, v in kwargs.items())))
    with _listeners_lock:
        if key not in _listeners:
            _listeners[key] = Listener(client)
        return _listeners[key]


def announced(client: redis.Redis, dataset: str) -> tuple[int, int] | None:
    """(failed polls, batch loads of ``dataset`` announced) as this process heard them;
    None when it is not listening. Equal values at two moments: no load was announced."""
    try:
        heard = listener(client)
        heard.poll()
    except redis.RedisError:
        return None
    if not heard.pubsub.subscribed:
        return None
    return heard.errors, heard.heard.get(dataset, 0)


def bump(client: redis.Redis, dataset: str) -> None:
    """Announce that ``dataset``'s raw rows changed (invalidates its cached answers)."""
    client.incr(generation_key(dataset))


def data_state(client: redis.Redis, datasets: list[str]) -> dict[str, list[str]]:
    """Per dataset: [speed high-water mark, batch generation], from Redis only."""
    listener(client).poll()
    gens = client.mget([generation_key(d) for d in datasets]) if datasets else []
    return {
        d: [high_water(client, d), (g or b"0").decode()]
        for d, g in zip(datasets, gens, strict=True)
    }


def cache_key(name: str, sql: str, bound: dict[str, Any], state: dict[str, list[str]]) -> str:
    """The entry of one (query, parameters, data state)."""
    body = json.dumps([sql, bound, state], sort_keys=True, default=str)
    return PREFIX + name + ":" + hashlib.sha256(body.encode()).hexdigest()


LOCAL_ENTRIES = 32  # results this process also keeps unpickled (big dashboards)
_local: OrderedDict[str, tuple[bytes, dict[str, Any]]] = OrderedDict()
_local_lock = threading.Lock()


def _token_key(key: str) -> str:
    return key + "#token"


def get(client: redis.Redis, key: str) -> dict[str, Any] | None:
    """A cached result (rows shared with the cache: not to be mutated), or None.

    The entry's token in Redis says whether this process's unpickled copy is still the
    entry Redis holds (a flush or a rewrite changes it).
    """
    token = client.get(_token_key(key))
    if token is None:
        return None
    with _local_lock:
        local = _local.get(key)
        if local is not None and local[0] == token:
            _local.move_to_end(key)
            hit = local[1]
        else:
            hit = None
    if hit is None:
        raw = client.get(key)
        if raw is None:
            return None
        hit = pickle.loads(raw)
        _remember(key, token, hit)
    return {**hit, "freshness": copy.deepcopy(hit["freshness"])}


def _remember(key: str, token: bytes, result: dict[str, Any]) -> None:
    with _local_lock:
        _local[key] = (token, {**result, "freshness": copy.deepcopy(result["freshness"])})
        while len(_local) > LOCAL_ENTRIES:
            _local.popitem(last=False)


def put(client: redis.Redis, key: str, result: dict[str, Any], ttl: int = TTL) -> None:
    """Cache a result (values keep their Python types: datetimes, decimals)."""
    token = uuid.uuid4().hex.encode()
    pipe = client.pipeline(transaction=True)
    pipe.set(key, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL), ex=ttl)
    pipe.set(_token_key(key), token, ex=ttl)
    pipe.execute()
    _remember(key, token, result)


def forget(client: redis.Redis, name: str) -> None:
    """Drop every cached result of saved query ``name``."""
    for key in client.scan_iter(match=PREFIX + name + ":*", count=1000):
        client.delete(key)
    with _local_lock:
        for key in [k for k in _local if k.startswith(PREFIX + name + ":")]:
            del _local[key]

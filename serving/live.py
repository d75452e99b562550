"""The live hub: pushes saved-query results, pages and dataset changes to websocket clients.

One hub per server process. A single listener thread reads the speed and batch layers'
change notifications (``speed.keys.notify_channel``) and also fires each query's refresh
interval. Identical subscriptions (same query or page, same parameters) share one
:class:`Group`, evaluated once per change by a small pool of evaluator threads; a result
is pushed only when its columns or rows differ from the last one pushed.

Pushing never blocks the hub: each connection has a bounded outbox that keeps only the
newest message per subscription, and the connection's own thread does the socket writes,
so a slow consumer only ever delays itself.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from cxd.catalog import parse_duration
from cxd.errors import CxdError, TransientError
from cxd.stores import Stores
from cxd.web import to_json_value
from query_router import explain
from query_router import saved as saved_queries
from serving.pages import get_page
from speed.keys import notify_channel

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 100  # per connection; also bounds its outbox
EVALUATORS = 2
# Postgres work done from websocket threads (handshake token checks, dataset feeds) takes
# a slot first, so a burst of connections never exhausts the process's connection pool.
DB_SLOTS = threading.BoundedSemaphore(6)


def dumps(value: Any) -> str:
    """Compact JSON with database types (timestamps as ISO 8601)."""
    return json.dumps(value, default=to_json_value, separators=(",", ":"))


class TooManyConnections(TransientError):
    """The process holds its cap of websocket connections; retry later or on another one."""

    code = "too_many_connections"
    status = 503


class SlowConsumer(CxdError):
    """A connection's outbox overflowed: it reads slower than results arrive."""

    code = "slow_consumer"


def error_message(sub_id: str | None, exc: CxdError) -> str:
    """The protocol's error message for ``exc`` (on subscription ``sub_id``)."""
    return dumps({"op": "error", "id": sub_id, **exc.to_dict()})


class Connection:
    """The hub's side of one websocket: subscriptions and a bounded, coalescing outbox."""

    def __init__(
        self,
        hub: Hub,
        wake: Callable[[], None],
        try_send: Callable[[str], bool] | None = None,
    ):
        self.hub = hub
        self.wake = wake
        self.try_send = try_send
        self.subs: dict[str, Any] = {}  # id -> Group, or DatasetFeed
        self._outbox: dict[Any, str] = {}  # newest message per key, in first-offered order
        self._lock = threading.Lock()
        self._sending = False  # the connection's thread is writing what it took
        self.overflowed = False

    def offer(self, key: Any, message: str) -> None:
        """Send ``message`` now if that cannot block, else queue it (replacing an unsent one
        with the same key) and wake the connection's own thread to send it."""
        with self._lock:
            idle = not self._outbox and not self._sending  # so nothing older is unsent
            if idle and self.try_send is not None and self.try_send(message):
                return
            self._outbox.pop(key, None)
            self._outbox[key] = message
            if len(self._outbox) > 2 * MAX_SUBSCRIPTIONS:
                self.overflowed = True
        self.wake()

    def take(self) -> list[str]:
        """Every queued message, oldest first, emptying the outbox; call :meth:`sent` after
        writing them, so no newer message overtakes them meanwhile."""
        with self._lock:
            messages = list(self._outbox.values())
            self._outbox.clear()
            self._sending = bool(messages)
        return messages

    def sent(self) -> None:
        """The messages of the last :meth:`take` are written."""
        with self._lock:
            self._sending = False


@dataclass
class DatasetFeed:
    """A subscription to a dataset's changes: the cursor and whether new data may wait."""

    dataset: str
    cursor: str | None
    dirty: bool = True
    sent: bool = False  # the first page is sent even when empty: it acknowledges


@dataclass(eq=False)
class Group:
    """Every subscription to one (query or page, parameters): evaluated once, fanned out."""

    kind: str  # "query" | "page"
    name: str
    values: dict[str, Any]
    datasets: frozenset[str] | None  # None: re-evaluate on any dataset's change
    refresh: float | None
    members: dict[tuple[Connection, str], None] = field(default_factory=dict)
    last_rows: str | None = None  # rows and columns of the last result pushed, as JSON
    last_body: str | None = None  # the last data message without its leading op and id
    evaluations: int = 0
    pushes: int = 0
    queued: bool = False
    next_due: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def key(self) -> tuple[str, str, str]:
        """What identical subscriptions share: kind, name and parameter values."""
        return self.kind, self.name, dumps(self.values)


_HUBS: weakref.WeakSet = weakref.WeakSet()  # every hub of this process, for stop_all()


def stop_all() -> None:
    """Stop the threads of every hub in this process (before its stores go away)."""
    for hub in list(_HUBS):
        hub.stop()


class Hub:
    """Subscriptions of one server process and the threads that keep them current."""

    def __init__(self, stores: Stores, *, max_connections: int = 1000):
        _HUBS.add(self)
        self.stores = stores
        self.max_connections = max_connections
        self.connections: set[Connection] = set()
        self.groups: dict[tuple[str, str, str], Group] = {}
        self.feeds: dict[str, set[Connection]] = {}  # dataset -> connections following it
        self.notifications = 0
        self._lock = threading.RLock()
        self._creating = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[Group] = deque()
        self._stop = threading.Event()
        self.listening = threading.Event()  # set while change notifications are received
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the listener and evaluator threads (once; on the first connection)."""
        with self._lock:
            if self._threads:
                return
            self._stop.clear()
            self._threads = [threading.Thread(target=self._listen, name="cxd-live-listen")]
            self._threads += [
                threading.Thread(target=self._evaluate_loop, name=f"cxd-live-eval-{i}")
                for i in range(EVALUATORS)
            ]
            for thread in self._threads:
                thread.daemon = True
                thread.start()

    def stop(self) -> None:
        """Stop the hub's threads (tests; the process exiting stops them too)."""
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def connect(
        self, wake: Callable[[], None], try_send: Callable[[str], bool] | None = None
    ) -> Connection:
        """Register a new websocket; TooManyConnections at the cap.

        ``wake`` wakes the connection's thread; ``try_send`` (optional) sends a message at
        once if that cannot block, returning False otherwise.
        """
        with self._lock:
            if len(self.connections) >= self.max_connections:
                raise TooManyConnections(
                    f"this server holds its cap of {self.max_connections} websocket"
                    " connections; retry later or connect to another server"
                )
            conn = Connection(self, wake, try_send)
            self.connections.add(conn)
        self.start()
        return conn

    def disconnect(self, conn: Connection) -> None:
        """Forget a closed websocket and every subscription it held."""
        for sub_id in list(conn.subs):
            self.unsubscribe(conn, sub_id)
        with self._lock:
            self.connections.discard(conn)

    # --- subscriptions ---------------------------------------------------------------

    def subscribe(
        self, conn: Connection, sub_id: str, kind: str, name: str, values: dict[str, Any]
    ) -> None:
        """Follow a saved query or page; the current result is pushed as soon as known."""
        if sub_id not in conn.subs and len(conn.subs) >= MAX_SUBSCRIPTIONS:
            raise CxdError(
                f"a connection may hold at most {MAX_SUBSCRIPTIONS} subscriptions",
                status=400,
            )
        self.unsubscribe(conn, sub_id)
        key = (kind, name, dumps(values))
        with self._creating:  # a burst of identical subscriptions creates one group
            with self._lock:
                group = self.groups.get(key)
            if group is None:
                with DB_SLOTS:
                    group = self._new_group(kind, name, values)  # raises for unknown names
        with self._lock:
            group = self.groups.setdefault(key, group)
            group.members[(conn, sub_id)] = None
            conn.subs[sub_id] = group
            if group.last_body is not None:
                conn.offer(sub_id, self._message(sub_id, group.last_body))
            elif not group.queued and group.evaluations == 0:
                self._enqueue(group)

    def follow(self, conn: Connection, sub_id: str, dataset: str, since: str | None) -> None:
        """Follow a dataset's changes from ``since`` (a cursor or ISO time; default: now)."""
        from serving.changes import end_cursor, read_changes

        if since is None:
            since = end_cursor(self.stores, dataset)
        else:
            read_changes(self.stores, dataset, since, 1)  # a bad cursor or dataset fails now
        self.unsubscribe(conn, sub_id)
        with self._lock:
            conn.subs[sub_id] = DatasetFeed(dataset, since)
            self.feeds.setdefault(dataset, set()).add(conn)
        self.start()
        conn.wake()

    def unsubscribe(self, conn: Connection, sub_id: str) -> None:
        """Stop one subscription of ``conn`` (no-op for an unknown id)."""
        with self._lock:
            sub = conn.subs.pop(sub_id, None)
            if isinstance(sub, Group):
                sub.members.pop((conn, sub_id), None)
                if not sub.members:
                    self.groups.pop(sub.key, None)
            elif isinstance(sub, DatasetFeed):
                if not any(
                    isinstance(s, DatasetFeed) and s.dataset == sub.dataset
                    for s in conn.subs.values()
                ):
                    self.feeds.get(sub.dataset, set()).discard(conn)

    def _new_group(self, kind: str, name: str, values: dict[str, Any]) -> Group:
        queries = [name] if kind == "query" else get_page(self.stores, name)["queries"]
        datasets: set[str] = set()
        refreshes = []
        for qname in queries:
            q = saved_queries.get_query(self.stores, qname)
            datasets |= set(explain(self.stores, q["sql"], q["params"])["datasets"])
            if q.get("refresh"):
                refreshes.append(parse_duration(q["refresh"]))
        refresh = min(refreshes) if refreshes else None
        group = Group(kind, name, dict(values), frozenset(datasets), refresh)
        if refresh:
            group.next_due = time.monotonic() + refresh
        return group

    # --- evaluation ------------------------------------------------------------------

    def changed(self, dataset: str | None) -> None:
        """A dataset changed (None: maybe any): re-evaluate the groups and feeds that read it."""
        with self._lock:
            self.notifications += 1
            for group in self.groups.values():
                if dataset is None or group.datasets is None or dataset in group.datasets:
                    self._enqueue(group)
            followers = (
                set().union(*self.feeds.values()) if dataset is None else self.feeds.get(dataset)
            )
            for conn in list(followers or ()):
                for sub in conn.subs.values():
                    if isinstance(sub, DatasetFeed) and dataset in (None, sub.dataset):
                        sub.dirty = True
                conn.wake()

    def _enqueue(self, group: Group) -> None:
        with self._lock:
            if not group.queued:
                group.queued = True
                self._queue.append(group)
                self._ready.notify()

    def _evaluate_loop(self) -> None:
        while not self._stop.is_set():
            with self._ready:
                while not self._queue and not self._stop.is_set():
                    self._ready.wait(timeout=1.0)
                if self._stop.is_set():
                    return
                group = self._queue.popleft()
            try:
                self.evaluate(group)
            except Exception:  # never let one query stop the hub
                log.exception("live: evaluating %s %r failed", group.kind, group.name)

    def _run(self, name: str, values: dict[str, Any]) -> dict[str, Any]:
        # the hub evaluates on a change or at the refresh interval: either way the answer
        # must be read anew (a refresh exists to catch loads that announced nothing)
        return saved_queries.run_saved(self.stores, name, values, fresh=True)

    def _result(self, group: Group) -> tuple[str, str]:
        """(rows-and-columns JSON to compare, message body) of a fresh evaluation."""
        if group.kind == "query":
            result = self._run(group.name, group.values)
            rows = dumps([result["columns"], result["rows"]])
            body = dumps(
                {
                    "query": group.name,
                    "columns": result["columns"],
                    "rows": result["rows"],
                    "freshness": result["freshness"],
                }
            )
            return rows, body
        results = {}
        for qname in get_page(self.stores, group.name)["queries"]:
            declared = {p["name"] for p in saved_queries.get_query(self.stores, qname)["params"]}
            values = {k: v for k, v in group.values.items() if k in declared}
            results[qname] = self._run(qname, values)
        rows = dumps({q: [r["columns"], r["rows"]] for q, r in results.items()})
        body = dumps(
            {
                "page": group.name,
                "results": results,
                "freshness": {q: r["freshness"] for q, r in results.items()},
            }
        )
        return rows, body

    def evaluate(self, group: Group) -> None:
        """Evaluate ``group`` once and push the result to its members if it changed."""
        with group.lock:  # one evaluation of a group at a time, so pushes stay in order
            with self._lock:
                group.queued = False
                if not group.members:
                    return
            group.evaluations += 1
            try:
                rows, body = self._result(group)
            except CxdError as exc:
                with self._lock:
                    for conn, sub_id in list(group.members):
                        conn.offer(sub_id, error_message(sub_id, exc))
                return
            with self._lock:
                if rows == group.last_rows:
                    return
                group.last_rows, group.last_body = rows, body[1:-1]
                group.pushes += 1
                members = list(group.members)
            # outside the hub's lock: a member joining now was sent last_body when it joined
            for conn, sub_id in members:
                conn.offer(sub_id, self._message(sub_id, group.last_body))

    @staticmethod
    def _message(sub_id: str, body: str) -> str:
        return f'{{"op":"data","id":{dumps(sub_id)},{body}}}'

    # --- the listener ----------------------------------------------------------------

    def _due(self) -> float:
        """Seconds until the next refresh is due (at most one), enqueuing those that are."""
        now = time.monotonic()
        wait = 1.0
        with self._lock:
            for group in self.groups.values():
                if group.refresh:
                    if group.next_due <= now:
                        group.next_due = now + group.refresh
                        self._enqueue(group)
                    wait = min(wait, group.next_due - now)
        return max(wait, 0.001)

    def _listen(self) -> None:
        pattern = notify_channel("*")
        prefix, suffix = pattern.split("*")
        while not self._stop.is_set():
            pubsub = self.stores.redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(pattern)
                pubsub.get_message(timeout=5, ignore_subscribe_messages=False)  # confirmed
                self.changed(None)  # anything may have changed while not listening
                self.listening.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=self._due())
                    if message and message["type"] == "pmessage":
                        channel = message["channel"].decode()
                        self.changed(channel[len(prefix) : len(channel) - len(suffix)])
            except redis.RedisError as exc:
                self.listening.clear()
                log.warning("live: change notifications lost (%s); reconnecting", exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("live: listener failed; restarting")
                self._stop.wait(1.0)
            finally:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass

    # --- stats -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Connections, subscriptions and per-group evaluation counts (GET /api/live)."""
        with self._lock:
            return {
                "connections": len(self.connections),
                "max_connections": self.max_connections,
                "subscriptions": sum(len(c.subs) for c in self.connections),
                "notifications": self.notifications,
                "groups": [
                    {
                        "kind": g.kind,
                        "name": g.name,
                        "params": g.values,
                        "subscribers": len(g.members),
                        "evaluations": g.evaluations,
                        "pushes": g.pushes,
                        "refresh_seconds": g.refresh,
                    }
                    for g in self.groups.values()
                ],
                "feeds": {ds: len(conns) for ds, conns in self.feeds.items() if conns},
            }

"""Invariant 1 at query time: every acknowledged event is counted exactly once in every
answer, whatever the loader did (loaded, died after commit before trimming, trimmed).

A Hypothesis state machine produces events (old, and live ones newer than any before),
loads batches with the speed loader, kills the loader between commit and trim, trims,
loads rows around the stream (announced), and asks random saved queries with random
parameters and live windows just before the newest event; every answer is compared with the same SQL over a
plain Postgres table holding all acknowledged events. ``CXD_SOAK=1`` runs it longer.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from batch.load import get_watermark, load_rows
from cxd.catalog import get_source
from query_router import cache, run_query
from query_router.read_speed import forget_speed_state
from query_router.saved import run_saved, save_query
from speed.keys import log_key
from speed.loader import drain
from speed.stream import append, read_after
from tests.query_router.conftest import declare

SOAK = os.environ.get("CXD_SOAK") == "1"
BASE = datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
KEYS = ["a", "b", "c", "d"]

EV = {
    "name": "ev",
    "type": "webhook",
    "kind": "time_series",
    "columns": [
        {"name": "k", "type": "text"},
        {"name": "t", "type": "timestamptz"},
        {"name": "v", "type": "double precision"},
    ],
    "time_column": "t",
}
SITES = {
    "name": "sites",
    "type": "file",
    "kind": "point_in_time",
    "options": {"path": "/nonexistent/*.csv"},
    "columns": [{"name": "k", "type": "text"}, {"name": "name", "type": "text"}],
    "key": ["k"],
}
TS = {"type": "timestamptz"}
QUERIES = {
    "per_key": ("SELECT k, count(*) AS n, sum(v) AS s FROM ev GROUP BY k", []),
    "in_range": (
        "SELECT count(*) AS n, sum(v) AS s FROM ev WHERE t >= :lo AND t < :hi",
        [{"name": "lo", **TS}, {"name": "hi", **TS}],
    ),
    "before": (
        "SELECT date_trunc('minute', t) AS m, avg(v) AS a, count(*) AS n FROM ev"
        " WHERE t <= :hi GROUP BY 1",
        [{"name": "hi", **TS}],
    ),
    "window": (
        "SELECT k, t, v, row_number() OVER (PARTITION BY k ORDER BY t, v) AS rn,"
        " sum(v) OVER (PARTITION BY k) AS total FROM ev WHERE k = :k",
        [{"name": "k", "type": "text"}],
    ),
    "distinct": (
        "SELECT DISTINCT k FROM ev WHERE v > :min",
        [{"name": "min", "type": "double precision"}],
    ),
    "join": (
        "SELECT s.name, count(*) AS n, max(e.t) AS last FROM ev e JOIN sites s ON s.k = e.k"
        " GROUP BY s.name",
        [],
    ),
    "union": (
        "SELECT k FROM ev WHERE t < :hi UNION SELECT k FROM sites",
        [{"name": "hi", **TS}],
    ),
    # live windows: a range starting near the newest events (speed only when raw has none)
    "recent": (
        "SELECT k, count(*) AS n, sum(v) AS s, max(t) AS last FROM ev WHERE t > :since GROUP BY k",
        [{"name": "since", **TS}],
    ),
    "recent_rows": (
        "SELECT k, t, v FROM ev WHERE t >= :since AND k = :k",
        [{"name": "since", **TS}, {"name": "k", "type": "text"}],
    ),
    "recent_minutes": (
        "SELECT date_trunc('minute', t) AS m, avg(v) AS a, min(v) AS lo FROM ev"
        " WHERE t >= :since GROUP BY 1 ORDER BY 1 DESC LIMIT 3",
        [{"name": "since", **TS}],
    ),
}
LIVE_FROM = BASE + timedelta(minutes=121)  # live events come after every old one
times = st.integers(min_value=0, max_value=120).map(lambda m: BASE + timedelta(minutes=m))
values = {
    "lo": times,
    "hi": times,
    "k": st.sampled_from(KEYS),
    "min": st.integers(min_value=-5, max_value=5).map(float),
}
events = st.lists(
    st.fixed_dictionaries(
        {
            "k": st.sampled_from(KEYS),
            "t": times.map(lambda t: t.isoformat()),
            "v": st.integers(min_value=-10, max_value=10).map(float),
        }
    ),
    min_size=1,
    max_size=8,
)


def reference(stores, sql: str, params: list[dict], bound: dict) -> list[tuple]:
    """The same SQL over plain tables holding every acknowledged event."""
    text = sql.replace("FROM ev", "FROM public.ref_ev").replace("FROM sites", "FROM raw.sites")
    text = text.replace("JOIN sites", "JOIN raw.sites")
    for p in params:
        text = text.replace(f":{p['name']}", f"%({p['name']})s")
    with stores.db.cursor() as cur:
        cur.execute(text, bound)
        return sorted(cur.fetchall(), key=repr)


def answer(result: dict) -> list[tuple]:
    names = [c["name"] for c in result["columns"]]
    return sorted((tuple(r[n] for n in names) for r in result["rows"]), key=repr)


def setup_datasets(stores) -> None:
    declare(stores, **EV)
    sites = declare(stores, **SITES)
    load_rows(stores.db, sites, [{"k": "a", "name": "Alpha"}, {"k": "b", "name": "Beta"}])
    stores.db.execute(  # public is not reset between tests: start from an empty table
        "DROP TABLE IF EXISTS public.ref_ev;"
        " CREATE TABLE public.ref_ev (k text, t timestamptz, v double precision)"
    )
    for name, (sql, params) in QUERIES.items():
        save_query(stores, {"name": name, "sql": sql, "params": params})


class MergeMachine(RuleBasedStateMachine):
    """Produce, load, crash, trim and query; compare every answer with the reference."""

    stores = None
    plans: dict[str, int] = {}

    @initialize()
    def reset(self):
        stores = self.stores
        stores.db.execute("TRUNCATE raw.ev, public.ref_ev")
        stores.db.execute("UPDATE cxd.watermarks SET stream_id = '0-0' WHERE dataset = 'ev'")
        stores.redis.delete(log_key("ev"))
        forget_speed_state()  # a fresh database: as if this process had never read one
        self.spec = get_source(stores.db, "ev")
        self.clock = LIVE_FROM

    def _remember(self, batch):
        with self.stores.db.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.ref_ev (k, t, v) VALUES (%(k)s, %(t)s, %(v)s)", batch
            )

    @rule(batch=events)
    def produce(self, batch):
        append(self.stores.redis, "ev", batch)  # acknowledged once this returns
        self._remember(batch)

    @rule(batch=events, step=st.integers(min_value=0, max_value=90))
    def produce_live(self, batch, step):
        """Events newer than every event so far (seconds apart), as a live source sends."""
        for event in batch:
            self.clock += timedelta(seconds=step)
            event["t"] = self.clock.isoformat()
        append(self.stores.redis, "ev", batch)
        self._remember(batch)

    @rule(batch=events, live=st.booleans())
    def load_around_the_stream(self, batch, live):
        """Rows loaded into raw without the stream (a backfill), announced as loads are."""
        if live:
            for event in batch:
                event["t"] = (self.clock - timedelta(seconds=30)).isoformat()
        heard = cache.announced(self.stores.redis, "ev")
        load_rows(self.stores.db, self.spec, batch)
        self._remember(batch)
        self.stores.redis.publish("cxd:{ev}:changed", "batch")
        for _ in range(200):  # the announcement has reached this process's listener
            if cache.announced(self.stores.redis, "ev") != heard:
                break
            time.sleep(0.005)

    @rule(batch_size=st.integers(min_value=1, max_value=10))
    def load(self, batch_size):
        drain(self.stores, "ev", batch_size=batch_size)

    @rule(count=st.integers(min_value=1, max_value=6))
    def loader_dies_after_commit(self, count):
        """A loader that committed rows and W but died before trimming the stream."""
        w = get_watermark(self.stores.db, "ev")["stream_id"]
        entries = read_after(self.stores.redis, "ev", w, count=count)
        if entries:
            ids = [eid for eid, _ in entries]
            load_rows(
                self.stores.db,
                self.spec,
                [rec for _, rec in entries],
                stream_ids=ids,
                stream_watermark=ids[-1],
            )

    @rule()
    def trim(self):
        w = get_watermark(self.stores.db, "ev")["stream_id"]
        self.stores.redis.xtrim(log_key("ev"), minid=w, approximate=False)

    @rule(
        name=st.sampled_from(["recent", "recent_rows", "recent_minutes"]),
        back=st.integers(min_value=-30, max_value=180),
        k=st.sampled_from(KEYS),
    )
    def query_live_window(self, name, back, k):
        """A dashboard's live window, just before the newest event (not cached)."""
        sql, params = QUERIES[name]
        bound = {"since": self.clock - timedelta(seconds=back), "k": k}
        bound = {p["name"]: bound[p["name"]] for p in params}
        result = run_query(self.stores, sql, params, bound)
        plan = result["freshness"]["plan"] + "+live"
        MergeMachine.plans[plan] = MergeMachine.plans.get(plan, 0) + 1
        assert answer(result) == reference(self.stores, sql, params, bound), result["freshness"]

    @rule(name=st.sampled_from(sorted(QUERIES)), data=st.data())
    def query(self, name, data):
        sql, params = QUERIES[name]
        since = st.integers(min_value=-600, max_value=60).map(
            lambda s: self.clock + timedelta(seconds=s)
        )
        bound = {
            p["name"]: data.draw(since if p["name"] == "since" else values[p["name"]], p["name"])
            for p in params
        }
        result = run_saved(self.stores, name, bound)
        plan = result["freshness"]["plan"] + ("+cached" if result["freshness"]["cached"] else "")
        MergeMachine.plans[plan] = MergeMachine.plans.get(plan, 0) + 1
        assert answer(result) == reference(self.stores, sql, params, bound), result["freshness"]


def test_merged_answers_match_the_reference(stores):
    setup_datasets(stores)
    MergeMachine.stores = stores
    MergeMachine.plans = {}
    run_state_machine_as_test(
        MergeMachine,
        settings=settings(
            max_examples=1000 if SOAK else 200,
            stateful_step_count=60 if SOAK else 30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=not SOAK,  # the same cases on every CI run; the soak explores
        ),
    )
    # every path was exercised: merged, batch-only and cached answers
    assert {"merge", "batch", "merge+cached", "speed+live"} <= set(MergeMachine.plans), (
        MergeMachine.plans
    )
    assert MergeMachine.plans["speed+live"] >= 100, MergeMachine.plans
    assert sum(MergeMachine.plans.values()) >= 300


def test_queries_racing_watermark_commits_stay_exact(stores):
    """One thread loads in small batches (commit, then trim) while queries run."""
    setup_datasets(stores)
    rng = __import__("random").Random(7)
    batch = [
        {
            "k": rng.choice(KEYS),
            "t": (BASE + timedelta(minutes=rng.randint(0, 120))).isoformat(),
            "v": float(rng.randint(-10, 10)),
        }
        for _ in range(3000 if SOAK else 600)
    ]
    for i in range(0, len(batch), 50):
        append(stores.redis, "ev", batch[i : i + 50])
    with stores.db.cursor() as cur:
        cur.executemany("INSERT INTO public.ref_ev (k, t, v) VALUES (%(k)s, %(t)s, %(v)s)", batch)
    expected = {
        name: reference(
            stores, sql, params, {p["name"]: BASE + timedelta(minutes=60) for p in params}
        )
        for name, (sql, params) in QUERIES.items()
        if all(p["type"] == "timestamptz" for p in params)
    }
    done = threading.Event()
    errors: list[BaseException] = []

    def loader():
        try:
            while drain(stores, "ev", batch_size=7):
                pass
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=loader)
    thread.start()
    mismatches, answered = [], 0
    while not done.is_set() or answered < 20:
        for name, want in expected.items():
            sql, params = QUERIES[name]
            bound = {p["name"]: BASE + timedelta(minutes=60) for p in params}
            got = answer(run_query(stores, sql, params, bound))  # no cache: Postgres every time
            answered += 1
            if got != want:
                mismatches.append((name, got[:3], want[:3]))
    thread.join()
    assert errors == []
    assert get_watermark(stores.db, "ev")["stream_id"] != "0-0"
    assert mismatches == [] and answered >= 20

"""Declaring, changing and deleting sources over REST; their schedules and their health."""

from __future__ import annotations

import psycopg2.errors
import pytest
from rq.job import Job

from batch.schedule import scheduler
from cxd.catalog import get_source
from speed.stream import backlog

COLUMNS = [
    {"name": "sensor", "type": "text"},
    {"name": "at", "type": "timestamptz"},
    {"name": "level", "type": "double precision"},
]


def webhook(name="levels", **extra):
    return {
        "name": name,
        "type": "webhook",
        "kind": "time_series",
        "columns": COLUMNS,
        "key": ["sensor", "at"],
        "time_column": "at",
        **extra,
    }


def file_source(tmp_path, name="readings", **extra):
    return {
        "name": name,
        "type": "file",
        "kind": "time_series",
        "options": {"path": f"{tmp_path}/in/*.csv", "format": "csv"},
        "columns": COLUMNS,
        "key": ["sensor", "at"],
        "time_column": "at",
        **extra,
    }


def schedules(stores) -> dict[str, object]:
    """Scheduled entry id -> its interval (seconds) or cron string."""
    sch = scheduler(stores)
    out = {}
    for raw in stores.redis.zrange(sch.scheduled_jobs_key, 0, -1):
        job = Job.fetch(raw.decode(), connection=stores.redis)
        out[job.id] = job.meta.get("interval") or job.meta.get("cron_string")
    return out


def test_declare_a_source(stores, client, auth):
    r = client.post("/api/sources", json=webhook(secrets={"token": "t0k3n-value"}), headers=auth())
    assert r.status_code == 201, r.get_json()
    body = r.get_json()
    assert body["name"] == "levels" and body["type"] == "webhook"
    assert body["secrets"] == ["token"]
    assert "t0k3n-value" not in r.get_data(as_text=True)
    assert get_source(stores.db, "levels").secrets == {"token": "t0k3n-value"}
    # the dataset exists at once: its raw table can be queried
    assert stores.db.fetchone('SELECT count(*) AS n FROM raw."levels"')["n"] == 0
    listed = client.get("/api/sources", headers=auth("read")).get_json()
    assert [s["name"] for s in listed] == ["levels"]
    again = client.post("/api/sources", json=webhook(), headers=auth())
    assert again.status_code == 409
    assert "PUT /api/sources/levels" in again.get_json()["error"]["message"]
    assert (
        client.post("/api/sources", json=webhook("other"), headers=auth("read")).status_code == 403
    )


def test_every_problem_is_listed(stores, client, auth):
    bad = {
        "name": "Bad Name",
        "type": "ftp",
        "kind": "weekly",
        "columns": [{"name": "a", "type": "blob"}],
        "key": ["b"],
        "schedule": {"every": "often"},
        "colour": "red",
    }
    r = client.post("/api/sources", json=bad, headers=auth())
    assert r.status_code == 400
    problems = r.get_json()["error"]["details"]["problems"]
    for field in ("name", "type", "kind", "columns[0].type", "key", "schedule.every", "colour"):
        assert any(p.startswith(f"body.{field}:") for p in problems), (field, problems)
    # the plugin's own settings are checked too, all problems at once
    r = client.post(
        "/api/sources",
        json=webhook(options={"event_id": "nope", "max_body": "huge"}),
        headers=auth(),
    )
    assert r.status_code == 400
    assert len(r.get_json()["error"]["details"]["problems"]) == 2
    assert client.get("/api/sources", headers=auth("read")).get_json() == []


# rq-scheduler's cron() calls crontab in a way crontab warns about (a third-party FutureWarning)
@pytest.mark.filterwarnings("ignore::FutureWarning:rq_scheduler.utils")
def test_put_changes_a_source_and_its_schedule(stores, client, auth, tmp_path):
    declared = file_source(tmp_path, schedule={"every": "30m", "full_refresh": "0 3 * * *"})
    assert client.post("/api/sources", json=declared, headers=auth()).status_code == 201
    assert schedules(stores) == {
        "cxd-schedule-readings-every": 1800,
        "cxd-schedule-readings-full": "0 3 * * *",
    }
    changed = file_source(
        tmp_path,
        schedule={"every": "1h", "cron": "*/5 * * * *"},
        columns=[*COLUMNS, {"name": "unit", "type": "text"}],
    )
    r = client.put("/api/sources/readings", json=changed, headers=auth())
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["schedule"] == {"every": "1h", "cron": "*/5 * * * *"}
    assert schedules(stores) == {
        "cxd-schedule-readings-every": 3600,
        "cxd-schedule-readings-cron": "*/5 * * * *",
    }
    assert [
        c["name"]
        for c in client.get("/api/sources/readings", headers=auth("read")).get_json()["columns"]
    ][-1] == "unit"
    stores.db.fetchone('SELECT unit FROM raw."readings" LIMIT 1')  # the new column exists
    no_schedule = file_source(tmp_path)
    assert client.put("/api/sources/readings", json=no_schedule, headers=auth()).status_code == 200
    assert schedules(stores) == {}
    renamed = client.put(
        "/api/sources/readings", json=file_source(tmp_path, "other"), headers=auth()
    )
    assert renamed.status_code == 400
    assert (
        client.put("/api/sources/missing", json=webhook("missing"), headers=auth()).status_code
        == 404
    )
    bad = client.put(
        "/api/sources/readings", json={**no_schedule, "kind": "weekly"}, headers=auth()
    )
    assert bad.status_code == 400


def test_put_keeps_write_only_secrets(stores, client, auth):
    declared = webhook(secrets={"token": "one", "hmac_secret": "two"})
    client.post("/api/sources", json=declared, headers=auth())
    shown = client.get("/api/sources/levels", headers=auth("read")).get_json()
    assert shown["secrets"] == ["hmac_secret", "token"]
    # a GET body sent back as is keeps the stored values
    shown.pop("health")
    assert client.put("/api/sources/levels", json=shown, headers=auth()).status_code == 200
    assert get_source(stores.db, "levels").secrets == {"token": "one", "hmac_secret": "two"}
    # a mapping sets values; null removes one
    client.put(
        "/api/sources/levels",
        json=webhook(secrets={"token": "three", "hmac_secret": None}),
        headers=auth(),
    )
    assert get_source(stores.db, "levels").secrets == {"token": "three"}
    # omitted: unchanged
    client.put("/api/sources/levels", json=webhook(), headers=auth())
    assert get_source(stores.db, "levels").secrets == {"token": "three"}


def test_delete_keeps_data_unless_asked(stores, client, ingest_client, auth, tmp_path):
    declared = file_source(tmp_path, schedule={"every": "10m"})
    client.post("/api/sources", json=declared, headers=auth())
    client.post("/api/sources", json=webhook(), headers=auth())
    from batch.load import load_rows
    from cxd.catalog import get_source

    row = {"sensor": "a", "at": "2026-05-05T10:00:00Z", "level": 1}
    load_rows(stores.db, get_source(stores.db, "readings"), [row])
    r = client.delete("/api/sources/readings", headers=auth())
    assert r.status_code == 200
    assert r.get_json() == {"deleted": "readings", "data_dropped": False}
    assert client.get("/api/sources/readings", headers=auth("read")).status_code == 404
    assert schedules(stores) == {}
    assert stores.db.fetchone('SELECT count(*) AS n FROM raw."readings"')["n"] == 1
    # declaring it again finds its data
    assert client.post("/api/sources", json=declared, headers=auth()).status_code == 201

    ingest_client.post(
        "/hooks/levels",
        json={"sensor": "a", "at": "2026-05-05T10:00:00Z", "level": 1},
        headers=auth("ingest"),
    )
    assert backlog(stores.redis, "levels") == 1
    r = client.delete("/api/sources/levels?drop_data=true", headers=auth())
    assert r.get_json() == {"deleted": "levels", "data_dropped": True}
    with pytest.raises(psycopg2.errors.UndefinedTable):
        stores.db.fetchone('SELECT count(*) FROM raw."levels"')
    assert list(stores.redis.scan_iter(match="cxd:{levels}:*")) == []
    assert client.delete("/api/sources/levels", headers=auth()).status_code == 404
    assert client.delete("/api/sources/readings", headers=auth("read")).status_code == 403


def test_health_of_a_resident_source_is_shown(stores, client, ingest_client, auth):
    client.post("/api/sources", json=webhook(), headers=auth())
    assert client.get("/api/sources/levels", headers=auth("read")).get_json()["health"] is None
    ingest_client.post(
        "/hooks/levels",
        json=[{"sensor": "a", "at": "2026-05-05T10:00:00Z", "level": 1}] * 2,
        headers=auth("ingest"),
    )
    ingest_client.post("/hooks/levels", json={"sensor": "a"}, headers=auth("ingest"))
    health = client.get("/api/sources/levels", headers=auth("read")).get_json()["health"]
    assert health["messages"] == 2
    assert health["errors"] == 1
    assert "invalid" in health["last_error"]
    assert health["last_message_at"] is not None
    assert set(health) >= {"connected", "last_message_at", "messages", "errors", "last_error"}


def test_the_ingest_keeper_cancels_entries_no_source_wants(stores, tmp_path):
    from batch.schedule import register_schedules
    from cxd.catalog import parse_source
    from cxd.ingest import prune_schedules

    kept = parse_source(file_source(tmp_path, schedule={"every": "5m"}))
    gone = parse_source(file_source(tmp_path, "gone", schedule={"every": "10m"}))
    register_schedules(stores, [kept, gone])
    # e.g. the keeper registered "gone" from a list read just before it was deleted
    assert prune_schedules(stores, [kept]) == ["cxd-schedule-gone-every"]
    assert schedules(stores) == {"cxd-schedule-readings-every": 300}
    assert prune_schedules(stores, [kept]) == []

"""The thin end-to-end path: a CSV source loaded by an rq job, a webhook event in the
Redis stream, and a saved query answering from both with a freshness object."""

from __future__ import annotations

import textwrap

from batch.jobs import enqueue_run
from cxd.bootstrap import sync_config
from speed.stream import backlog


def declare(settings, folder):
    (folder / "weather").mkdir()
    (folder / "weather" / "day1.csv").write_text(
        "origin,time_hour,temp\nEWR,2026-05-05T10:00:00Z,12.5\nJFK,2026-05-05T10:00:00Z,11.0\n"
    )
    settings.config_file.write_text(
        textwrap.dedent(
            f"""
            sources:
              - name: weather
                type: file
                kind: time_series
                options: {{path: "{folder}/weather/*.csv", format: csv}}
                columns:
                  - {{name: origin, type: text}}
                  - {{name: time_hour, type: timestamptz}}
                  - {{name: temp, type: double precision}}
                key: [origin, time_hour]
                time_column: time_hour
              - name: weather_live
                type: webhook
                kind: time_series
                columns:
                  - {{name: origin, type: text}}
                  - {{name: time_hour, type: timestamptz}}
                  - {{name: temp, type: double precision}}
                key: [origin, time_hour]
                time_column: time_hour
            """
        )
    )
    return sync_config(settings)


def test_csv_webhook_and_saved_query_meet(
    stores, settings, tmp_path, client, ingest_client, auth, run_jobs
):
    declare(settings, tmp_path)
    run_id = enqueue_run(stores, "weather")
    assert run_jobs() == 1
    run = client.get(f"/api/runs/{run_id}", headers=auth("read")).get_json()
    assert run["status"] == "succeeded", run
    assert run["rows_loaded"] == 2

    hook = ingest_client.post(
        "/hooks/weather_live",
        json={"origin": "LGA", "time_hour": "2026-05-05T11:00:00Z", "temp": 14.25},
        headers=auth("ingest"),
    )
    assert hook.status_code == 202, hook.get_json()
    assert hook.get_json()["accepted"] == 1
    assert backlog(stores.redis, "weather_live") == 1

    saved = client.post(
        "/api/queries",
        json={
            "name": "temps",
            "sql": "SELECT origin, temp FROM weather WHERE temp > :min_temp"
            " UNION ALL SELECT origin, temp FROM weather_live WHERE temp > :min_temp ORDER BY origin",
            "params": [{"name": "min_temp", "type": "double precision", "default": 0}],
            "outputs": [
                {"name": "origin", "type": "text"},
                {"name": "temp", "type": "double precision"},
            ],
        },
        headers=auth("analyst"),
    )
    assert saved.status_code == 201, saved.get_json()

    result = client.get("/api/queries/temps/results?min_temp=11.5", headers=auth("read")).get_json()
    assert result["rows"] == [{"origin": "EWR", "temp": 12.5}, {"origin": "LGA", "temp": 14.25}]
    assert [c["name"] for c in result["columns"]] == ["origin", "temp"]
    fresh = result["freshness"]
    assert fresh["plan"] == "merge"
    assert fresh["speed_high_water"] == hook.get_json()["ids"][0]
    assert fresh["datasets"]["weather"]["refreshed_at"] is not None


def test_live_event_counted_once_after_hand_off(
    stores, settings, tmp_path, client, ingest_client, auth
):
    from speed.loader import drain

    declare(settings, tmp_path)
    for hour in (11, 12):
        r = ingest_client.post(
            "/hooks/weather_live",
            json={"origin": "LGA", "time_hour": f"2026-05-05T{hour}:00:00Z", "temp": 10.0 + hour},
            headers=auth("ingest"),
        )
        assert r.status_code == 202
    sql = {"sql": "SELECT count(*) AS n, sum(temp) AS total FROM weather_live"}
    before = client.post("/api/sql", json=sql, headers=auth("analyst")).get_json()
    assert before["rows"] == [{"n": 2, "total": 43.0}]
    assert drain(stores, "weather_live") == 2
    after = client.post("/api/sql", json=sql, headers=auth("analyst")).get_json()
    assert after["rows"] == before["rows"]
    assert after["freshness"]["batch_watermark"] == after["freshness"]["speed_high_water"]


def test_every_endpoint_needs_a_token(stores, settings, tmp_path, client, ingest_client, auth):
    declare(settings, tmp_path)
    for path in ("/api/health", "/api/datasets", "/api/sources", "/api/runs", "/api/queries"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.get_json()["error"]["code"] == "unauthorized"
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get(path, headers=auth("read")).status_code == 200, path
    assert (
        client.post("/api/sql", json={"sql": "SELECT 1"}, headers=auth("read")).status_code == 403
    )
    hook = ingest_client.post("/hooks/weather_live", json={"origin": "x"})
    assert hook.status_code == 401
    assert (
        ingest_client.post("/hooks/weather_live", json={}, headers=auth("read")).status_code == 403
    )
    assert backlog(stores.redis, "weather_live") == 0


def test_bad_webhook_record_is_named_and_nothing_stored(
    stores, settings, tmp_path, ingest_client, auth
):
    declare(settings, tmp_path)
    body = [
        {"origin": "LGA", "time_hour": "2026-05-05T11:00:00Z", "temp": 1},
        {"origin": "LGA", "time_hour": "yesterday", "temp": "warm"},
    ]
    r = ingest_client.post("/hooks/weather_live", json=body, headers=auth("ingest"))
    assert r.status_code == 400
    bad = r.get_json()["error"]["details"]["records"]
    assert {(b["index"], b["field"]) for b in bad} == {(1, "time_hour"), (1, "temp")}
    assert backlog(stores.redis, "weather_live") == 0

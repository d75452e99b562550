"""Console pages through Flask's test client: what an operator sees and can do."""

from __future__ import annotations

from batch import runs
from batch.jobs import enqueue_run, queue, run_job
from batch.schedule import register_schedules, scheduler
from cxd.catalog import get_source
from speed.stream import append
from tests.admin.conftest import SECRET, csrf_of, declare
from tests.admin.test_auth import console_routes

CONTRACT_TABLES = """
CREATE TABLE IF NOT EXISTS cxd.quarantine (id bigserial PRIMARY KEY, dataset text, run_id bigint,
  line integer, row jsonb, check_name text, reason text, created_at timestamptz DEFAULT now());
CREATE TABLE IF NOT EXISTS cxd.quality_events (id bigserial PRIMARY KEY, dataset text,
  run_id bigint, check_name text, severity text, message text, created_at timestamptz DEFAULT now());
"""


def post(client, url, page_url, **data):
    """Submit a console form the way the browser does: with the page's CSRF token."""
    token = csrf_of(client.get(page_url).text)
    return client.post(url, data={"csrf_token": token, **data})


def test_overview_shows_every_dataset_with_its_state(admin_client, weather, stores, run_jobs):
    register_schedules(stores, [get_source(stores.db, "weather")])
    run_id = enqueue_run(stores, "weather")
    run_jobs()
    append(
        stores.redis, "weather", [{"origin": "LGA", "time_hour": "2026-05-06T00:00:00Z", "temp": 1}]
    )
    stores.db.execute(CONTRACT_TABLES)
    stores.db.execute(
        "INSERT INTO cxd.quality_events (dataset, check_name, severity, message) VALUES"
        " ('weather', 'range', 'error', 'temp out of range'), ('weather', 'x', 'info', 'fine')"
    )
    [row] = admin_client.get("/admin/overview.json").get_json()
    assert row["kind"] == "time_series" and row["schedule"] == "every 30m"
    assert row["next_run"] is not None
    assert (row["last_run_id"], row["last_status"]) == (run_id, "succeeded")
    assert (row["rows"], row["rows_exact"]) == (12, True)
    assert row["speed_backlog"] == 1 and row["quality_alerts"] == 1
    assert row["freshness_age"].endswith("s ago")
    html = admin_client.get("/admin/").text
    assert 'data-poll="/admin/overview.part"' in html
    assert '<span class="status succeeded">succeeded</span>' in html


def test_no_page_shows_a_secret(admin_client, weather, stores, run_jobs):
    run_id = enqueue_run(stores, "weather")
    run_jobs()
    failed = runs.create_run(stores.db, "weather")
    runs.fail_run(stores.db, failed, "fetch", f"could not connect to db://app:{SECRET}@db/x")
    stores.redis.hset("cxd:{weather}:health", mapping={"status": "ok", "dsn": f"x:{SECRET}"})
    source_page = admin_client.get("/admin/sources/weather").text
    assert "secret password" in source_page and "••••••" in source_page
    seen = 0
    for method, url in console_routes(admin_client.application):
        if method != "GET":
            continue
        url = url.replace("/runs/1", f"/runs/{failed}").replace("cxd-run-1", f"cxd-run-{run_id}")
        response = admin_client.get(url)
        assert response.status_code in (200, 404), url
        assert SECRET not in response.text, url
        seen += 1
    assert seen >= 12
    assert (
        "could not connect to db://app:••••••@db/x"
        in admin_client.get(f"/admin/runs/{failed}").text
    )


def test_run_history_pages_with_durations_counts_and_errors(admin_client, weather, stores):
    for i in range(120):
        run_id = runs.create_run(stores.db, "weather")
        if i == 7:
            runs.fail_run(stores.db, run_id, "ingest", "ValueError: bad date in line 3")
    stores.db.execute(
        "UPDATE cxd.runs SET started_at = queued_at, finished_at = queued_at + interval '1500 ms',"
        " rows_loaded = id * 10, rows_quarantined = 2 WHERE id <> %s",
        (8,),
    )
    first = admin_client.get("/admin/sources/weather").text
    assert first.count("<tr data-run=") == 50
    assert "/admin/sources/weather?before=71" in first
    assert "1.5 s" in first and '<td class="num">1200</td>' in first
    older = admin_client.get("/admin/sources/weather?before=71").text
    assert older.count("<tr data-run=") == 50 and 'data-run="70"' in older
    assert "data-poll" not in older  # older pages stay still
    last = admin_client.get("/admin/sources/weather?before=21").text
    assert "<strong>ingest:</strong> ValueError: bad date in line 3" in last


def test_dataset_preview_filters_and_pages_on_seq(admin_client, weather, stores, run_jobs):
    enqueue_run(stores, "weather")
    run_jobs()
    jfk = admin_client.get("/admin/datasets/weather?f_origin=JFK").text
    assert jfk.count('<td class="">JFK</td>') == 6 and "EWR</td>" not in jfk
    ranged = admin_client.get(
        "/admin/datasets/weather?f_time_from=2026-05-05T04:00:00Z&f_origin=EWR"
    ).text
    assert ranged.count("EWR</td>") == 2
    bad = admin_client.get("/admin/datasets/weather?f_temp=warm")
    assert bad.status_code == 200 and "invalid input syntax for type double precision" in bad.text
    assert "/admin/datasets/weather?before=" not in admin_client.get("/admin/datasets/weather").text


def test_quarantine_and_quality_events_are_browsable(admin_client, weather, stores):
    before = admin_client.get("/admin/datasets/weather").text
    assert "keeps no quarantine table yet" in before or "Nothing quarantined" in before
    stores.db.execute(CONTRACT_TABLES)
    stores.db.execute(
        "INSERT INTO cxd.quarantine (dataset, run_id, line, row, check_name, reason) VALUES"
        " ('weather', 3, 17, '{\"temp\": 99}', 'range', 'temp 99 is above 60')"
    )
    stores.db.execute(
        "INSERT INTO cxd.quality_events (dataset, check_name, severity, message) VALUES"
        " ('weather', 'freshness', 'warning', 'no new rows for 2h')"
    )
    page = admin_client.get("/admin/datasets/weather").text
    assert "temp 99 is above 60" in page and '{"temp": 99}' in page
    assert "no new rows for 2h" in page and '<span class="status paused">warning</span>' in page


def test_actions_run_pause_resume_and_explain_missing_backends(admin_client, weather, stores):
    spec = get_source(stores.db, "weather")
    register_schedules(stores, [spec])
    page = "/admin/sources/weather"
    assert post(admin_client, "/admin/sources/weather/actions/full", page).status_code == 302
    assert stores.db.fetchone("SELECT mode, status FROM cxd.runs") == {
        "mode": "full",
        "status": "queued",
    }
    assert "queued full refresh #" in admin_client.get(page).text

    post(admin_client, "/admin/sources/weather/actions/pause", page)
    assert "cxd-schedule-weather-every" not in scheduler(stores)
    paused = admin_client.get(page).text
    assert "paused the schedule of weather" in paused and 'data-action="resume"' in paused
    post(admin_client, "/admin/sources/weather/actions/resume", page)
    assert "cxd-schedule-weather-every" in scheduler(stores)
    assert stores.db.fetchone("SELECT paused FROM cxd.sources")["paused"] is False

    post(
        admin_client,
        "/admin/sources/weather/actions/backfill",
        page,
        **{"from": "2026-05-01", "to": "2026-05-03"},
    )
    shown = admin_client.get(page).text
    assert "queued backfill #" in shown, shown
    [run] = stores.db.fetchall("SELECT mode, params FROM cxd.runs WHERE mode = 'backfill'")
    assert run["params"] == {"from": "2026-05-01", "to": "2026-05-03"}


def test_query_errors_point_at_line_and_column(admin_client, weather):
    response = post(
        admin_client, "/admin/queries", "/admin/queries/new",
        name="broken", sql="SELECT origin\nFROM weather WHERE (temp >", param_name="",
        param_type="text", param_default="",
    )  # fmt: skip
    assert response.status_code == 400
    assert "line 2" in response.text and "column" in response.text
    assert '<span class="sqlerr">  2  FROM weather WHERE (temp &gt;</span>' in response.text
    assert "SELECT origin\nFROM weather WHERE (temp &gt;</textarea>" in response.text


def test_failed_jobs_show_tracebacks_and_can_be_retried(admin_client, stores, run_jobs):
    job = queue(stores).enqueue(run_job, 424242)
    run_jobs()
    page = admin_client.get("/admin/workers").text
    assert f'data-job="{job.id}"' in page
    assert "no run 424242" in page and "Traceback" in page
    response = post(admin_client, f"/admin/jobs/{job.id}/retry", "/admin/workers")
    assert response.status_code == 302
    assert queue(stores).count == 1 and queue(stores).failed_job_registry.count == 0
    assert f"re-queued job {job.id} on cxd-batch" in admin_client.get("/admin/workers").text


def test_instantaneous_datasets_chart_their_current_values(admin_client, settings, stores):
    levels = {
        "name": "levels", "type": "webhook", "kind": "instantaneous", "key": ["site"],
        "time_column": "at", "columns": [
            {"name": "site", "type": "text"}, {"name": "at", "type": "timestamptz"},
            {"name": "level", "type": "double precision"},
        ],
    }  # fmt: skip
    declare(settings, levels)
    events = [
        {"site": "north", "at": "2026-05-05T10:00:00Z", "level": 1.5},
        {"site": "south", "at": "2026-05-05T10:00:00Z", "level": 2.0},
        {"site": "north", "at": "2026-05-05T10:01:00Z", "level": 1.75},
    ]
    append(stores.redis, "levels", events, key_columns=["site"])
    current = admin_client.get("/admin/datasets/levels/current.json").get_json()
    assert current == [{"label": "north", "value": 1.75}, {"label": "south", "value": 2.0}]
    page = admin_client.get("/admin/datasets/levels").text
    assert 'id="current-chart"' in page and '"label": "north", "value": 1.75' in page


def test_errors_are_pages_for_people_and_json_for_scripts(admin_client, weather):
    missing = admin_client.get("/admin/sources/nope")
    assert (
        missing.status_code == 404 and "no source or dataset named &#39;nope&#39;" in missing.text
    )
    assert '<h1 class="error">404</h1>' in missing.text
    bad = admin_client.get("/admin/datasets/weather/points.json?after=yesterday")
    assert bad.status_code == 400 and "stream id" in bad.get_json()["error"]["message"]


def test_query_parameter_errors_name_the_parameter(admin_client, weather):
    post(
        admin_client, "/admin/queries", "/admin/queries/new", name="hot",
        sql="SELECT origin FROM weather WHERE temp > :min_temp",
        param_name="min_temp", param_type="double precision", param_default="",
    )  # fmt: skip
    page = admin_client.get("/admin/queries/hot?run=1&v_min_temp=warm").text
    assert "parameter &#39;min_temp&#39; must be of type double precision" in page
    assert 'id="result"' not in page


def test_point_in_time_preview_can_show_current_versions_only(admin_client, settings, stores):
    from batch.load import load_rows

    sites = {
        "name": "sites", "type": "webhook", "kind": "point_in_time", "key": ["site"],
        "columns": [{"name": "site", "type": "text"}, {"name": "city", "type": "text"}],
    }  # fmt: skip
    [spec] = declare(settings, sites)
    load_rows(
        stores.db, spec, [{"site": "old-mill", "city": "Leeds"}, {"site": "dock", "city": "Hull"}]
    )
    stores.db.execute("ALTER TABLE raw.sites ADD COLUMN IF NOT EXISTS _valid_to timestamptz")
    stores.db.execute("UPDATE raw.sites SET _valid_to = now() WHERE site = 'old-mill'")
    every = admin_client.get("/admin/datasets/sites").text
    assert "Leeds" in every and "Hull" in every and 'name="f_current"' in every
    current = admin_client.get("/admin/datasets/sites?f_current=1").text
    assert "Leeds" not in current and "Hull" in current


def test_delete_a_saved_query_or_say_the_build_cannot(admin_client, weather, stores):
    from query_router.saved import list_queries, save_query

    save_query(stores, {"name": "gone", "sql": "SELECT origin FROM weather"})
    response = post(admin_client, "/admin/queries/gone/delete", "/admin/queries/gone")
    shown = admin_client.get(response.location).text
    if list_queries(stores):
        assert "has no query_router.saved.delete_query" in shown
    else:
        assert "deleted query gone" in shown and "No saved queries yet" in shown

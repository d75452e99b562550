"""The console in a real browser: headless Chromium (Debian's) driven by Playwright against
the app served by werkzeug in a thread, with real Postgres, Redis and rq workers."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

import pytest

from batch.jobs import enqueue_run
from speed.stream import append
from tests.admin.conftest import csv_source, declare

pytestmark = pytest.mark.browser

WORKER = (
    "import os, redis; from rq import SimpleWorker;"
    " SimpleWorker(['cxd-batch'], connection=redis.Redis.from_url(os.environ['CXD_REDIS_URL']))"
    ".work(burst=True)"
)


def run_worker_process() -> None:
    """Work the batch queue empty in a separate process: a real rq SimpleWorker."""
    subprocess.run([sys.executable, "-c", WORKER], check=True, timeout=120, env=dict(os.environ))


def declare_broken(settings, tmp_path):
    """Add a source whose data is older than its error-severity staleness check allows,
    so its load is rolled back and the run fails."""
    (tmp_path / "bad.csv").write_text("origin,time_hour,temp\nEWR,2026-05-05T00:00:00Z,9\n")
    check = {"staleness": "1h", "severity": "error", "name": "fresh_within_an_hour"}
    declare(settings, csv_source("broken", str(tmp_path / "bad.csv"), checks=[check]))


def test_log_in_and_see_a_failed_run_and_its_error(
    weather, settings, stores, tmp_path, run_jobs, page, server, admin_token
):
    declare_broken(settings, tmp_path)
    run_id = enqueue_run(stores, "broken")
    run_jobs()
    page.goto(f"{server}/admin/")
    assert "/admin/login" in page.url
    page.fill("input[name=token]", "cxd_not-a-token")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "the token is not valid"
    page.fill("input[name=token]", admin_token)
    page.click("button[type=submit]")
    row = page.locator("tr[data-dataset=broken]")
    assert row.locator(".status").inner_text() == "failed"
    backlog = page.locator("tr[data-dataset=weather] [data-field=speed_backlog]")
    assert backlog.inner_text() == "0"
    page.wait_for_function("document.querySelector('#overview tbody').dataset.live === 'websocket'")
    append(stores.redis, "weather", [{"origin": "LGA", "time_hour": "2026-05-06T00:00:00Z"}])
    page.wait_for_function(
        "document.querySelector('tr[data-dataset=weather] [data-field=speed_backlog]')"
        ".innerText === '1'"
    )  # the overview updates live ...
    page.wait_for_function(  # ... on the change pushed over the websocket
        "Number(document.querySelector('#overview tbody').dataset.pushes || 0) >= 1"
    )
    row.locator(f"a:text('#{run_id}')").click()
    error = page.locator("#run-error").inner_text()
    stored = stores.db.fetchone("SELECT error, error_step FROM cxd.runs WHERE id = %s", (run_id,))
    assert error == stored["error"] and "fresh_within_an_hour" in error
    assert page.locator("h2.error").inner_text() == f"Failed at {stored['error_step']}"


def test_trigger_a_run_and_watch_its_status_change_without_reloading(
    weather, stores, logged_in, server
):
    page = logged_in
    page.goto(f"{server}/admin/sources/weather")
    page.click("button[data-action=run]")
    assert "queued run #" in page.locator(".flash").inner_text()
    run_id = stores.db.fetchone("SELECT max(id) AS id FROM cxd.runs")["id"]
    status = page.locator(f"tr[data-run='{run_id}'] [data-field=status]")
    assert status.inner_text() == "queued"
    page.evaluate("window.__sameDocument = true")
    run_worker_process()
    page.wait_for_function(
        f"document.querySelector(\"tr[data-run='{run_id}'] [data-field=status]\")"
        ".innerText === 'succeeded'"
    )
    assert page.evaluate("window.__sameDocument") is True  # the page was never reloaded
    assert page.locator(f"tr[data-run='{run_id}'] td.num").nth(2).inner_text() == "12"


def test_dataset_chart_points_match_the_data_and_live_points_arrive(
    weather, stores, run_jobs, logged_in, server
):
    enqueue_run(stores, "weather")
    run_jobs()
    page = logged_in
    page.goto(f"{server}/admin/datasets/weather")
    circles = page.locator("#line-chart circle.point")
    assert circles.count() == 12
    drawn = sorted(
        (
            float(c.get_attribute("data-x")),
            float(c.get_attribute("data-y")),
            c.get_attribute("data-g"),
        )
        for c in circles.all()
    )
    rows = stores.db.fetchall("SELECT origin, time_hour, temp FROM raw.weather")
    expected = sorted((r["time_hour"].timestamp() * 1000, r["temp"], r["origin"]) for r in rows)
    assert drawn == expected
    bars = {
        b.get_attribute("data-label"): float(b.get_attribute("data-value"))
        for b in page.locator("#bar-chart rect.bar").all()
    }
    means = stores.db.fetchall("SELECT origin, avg(temp) AS m FROM raw.weather GROUP BY origin")
    assert bars == pytest.approx({r["origin"]: r["m"] for r in means})
    assert page.locator("#preview tbody tr").count() == 12

    append(
        stores.redis,
        "weather",
        [{"origin": "LGA", "time_hour": "2026-05-05T07:00:00Z", "temp": 33.5}],
    )
    live = page.locator("#line-chart circle.point.speed")
    live.wait_for()
    assert float(live.get_attribute("data-y")) == 33.5
    assert (
        float(live.get_attribute("data-x"))
        == datetime.fromisoformat("2026-05-05T07:00:00+00:00").timestamp() * 1000
    )
    assert page.locator("#bar-chart rect.bar[data-label=LGA]").get_attribute("data-value") == "33.5"


def test_save_a_query_with_a_parameter_and_see_its_table(
    weather, stores, run_jobs, logged_in, server
):
    enqueue_run(stores, "weather")
    run_jobs()
    page = logged_in
    page.click("a:text('Queries')")
    page.click("a:text('+ new query')")
    page.fill("input[name=name]", "warm_origins")
    page.fill(
        "textarea[name=sql]",
        "SELECT origin, avg(temp) AS mean_temp\nFROM weather\nWHERE temp > :min_temp\n"
        "GROUP BY origin ORDER BY origin",
    )
    page.locator("input[name=param_name]").first.fill("min_temp")
    page.locator("select[name=param_type]").first.select_option("double precision")
    page.locator("input[name=param_default]").first.fill("0")
    page.click("#editor button[type=submit]")
    assert page.locator(".flash").inner_text() == "saved query warm_origins"
    page.fill("input[name=v_min_temp]", "12")
    page.click("#run-form button[type=submit]")
    cells = [
        [td.inner_text() for td in tr.locator("td").all()]
        for tr in page.locator("#result tbody tr").all()
    ]
    expected = stores.db.fetchall(
        "SELECT origin, avg(temp) AS m FROM raw.weather WHERE temp > 12 GROUP BY 1 ORDER BY 1"
    )
    assert [(c[0], pytest.approx(float(c[1]))) for c in cells] == [
        (r["origin"], r["m"]) for r in expected
    ]
    assert page.locator("#plan").inner_text().startswith("plan\nbatch")
    bars = page.locator("#result-chart rect.bar")
    assert [b.get_attribute("data-label") for b in bars.all()] == [r["origin"] for r in expected]


def test_retry_a_failed_job_from_the_workers_page(weather, stores, run_jobs, logged_in, server):
    from batch.jobs import queue, run_job

    job = queue(stores).enqueue(run_job, 777777)
    run_jobs()
    page = logged_in
    page.click("a:text('Workers & queues')")
    row = page.locator(f"tr[data-job='{job.id}']")
    assert "no run 777777" in row.locator("summary").inner_text()
    row.locator("summary").click()
    assert "Traceback" in row.locator("pre").inner_text()
    row.locator("button:text('Retry')").click()
    assert page.locator(".flash").inner_text() == f"re-queued job {job.id} on cxd-batch"
    queued = page.locator("#queues tr", has_text="cxd-batch").locator("td").nth(1)
    assert queued.inner_text() == "1"

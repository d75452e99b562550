"""The HTTP document source against a real local HTTP server."""

from __future__ import annotations

import io
import json

import pytest
from openpyxl import Workbook

from batch.load import get_watermark
from cxd.catalog import parse_source
from plugins.exceptions import PluginConfigError
from plugins.registry import plugin_for
from tests.plugins.sources import declare, doc_server, raw_rows, run  # noqa: F401

COLUMNS = [
    {"name": "station", "type": "text"},
    {"name": "level", "type": "double precision"},
]


def source(url: str, **options):
    return {
        "name": "levels",
        "type": "http",
        "kind": "point_in_time",
        "options": {"url": url, "backoff": "0.05s", **options},
        "columns": COLUMNS,
        "key": ["station"],
    }


def json_doc(records, status=200, **headers):
    body = json.dumps(records).encode()
    return lambda req: (status, {"Content-Type": "application/json", **headers}, body)


def pairs(stores):
    return [(r["station"], r["level"]) for r in raw_rows(stores, "levels", "station")]


def test_json_document_with_records_path_loads(stores, doc_server):  # noqa: F811
    doc_server.routes["/levels"] = json_doc(
        {
            "data": {
                "items": [
                    {"station": "A", "level": 1.5, "extra": "x"},
                    {"station": "B", "level": 2},
                ]
            }
        }
    )
    declare(stores, source(doc_server.url + "/levels", records_path="data.items"))
    result = run(stores, "levels")
    assert result["status"] == "succeeded", result["error"]
    assert pairs(stores) == [("A", 1.5), ("B", 2.0)]


def test_unchanged_document_is_not_reloaded(stores, doc_server):  # noqa: F811
    state = {"etag": '"v1"', "rows": [{"station": "A", "level": 1.0}]}

    def conditional(req):
        if req["headers"].get("If-None-Match") == state["etag"]:
            return 304, {"ETag": state["etag"]}, b""
        return (
            200,
            {"Content-Type": "application/json", "ETag": state["etag"]},
            json.dumps(state["rows"]).encode(),
        )

    doc_server.routes["/levels"] = conditional
    declare(stores, source(doc_server.url + "/levels"))
    assert run(stores, "levels")["rows_fetched"] == 1
    assert get_watermark(stores.db, "levels")["cursor"]["etag"] == '"v1"'

    again = run(stores, "levels")
    assert again["status"] == "succeeded"
    assert again["rows_fetched"] == 0
    assert doc_server.requests[-1]["headers"]["If-None-Match"] == '"v1"'

    state.update(etag='"v2"', rows=[{"station": "A", "level": 3.0}, {"station": "B", "level": 4.0}])
    changed = run(stores, "levels")
    assert changed["rows_fetched"] == 2
    assert pairs(stores) == [("A", 3.0), ("B", 4.0)]
    # a full refresh ignores the validators and fetches the document
    assert run(stores, "levels", mode="full")["rows_fetched"] == 2
    assert "If-None-Match" not in doc_server.requests[-1]["headers"]


def test_last_modified_is_sent_back(stores, doc_server):  # noqa: F811
    stamp = "Wed, 25 Nov 2026 10:00:00 GMT"

    def by_date(req):
        if req["headers"].get("If-Modified-Since") == stamp:
            return 304, {}, b""
        return 200, {"Content-Type": "text/csv", "Last-Modified": stamp}, b"station,level\nA,1\n"

    doc_server.routes["/levels.csv"] = by_date
    declare(stores, source(doc_server.url + "/levels.csv"))
    assert run(stores, "levels")["rows_fetched"] == 1
    assert run(stores, "levels")["rows_fetched"] == 0
    assert pairs(stores) == [("A", 1.0)]


def test_csv_and_excel_documents(stores, doc_server):  # noqa: F811
    doc_server.routes["/levels.csv"] = lambda req: (
        200,
        {"Content-Type": "text/csv; charset=utf-8"},
        b"level;station\n1.25;A\n2.5;B\n",
    )
    declare(stores, source(doc_server.url + "/levels.csv", delimiter=";"))
    assert run(stores, "levels")["status"] == "succeeded"
    assert pairs(stores) == [("A", 1.25), ("B", 2.5)]

    book = Workbook()
    sheet = book.active
    sheet.append(["Station", "Level"])
    sheet.append(["C", 7.5])
    sheet.append(["D", 8])
    buf = io.BytesIO()
    book.save(buf)
    doc_server.routes["/report"] = lambda req: (
        200,
        {"Content-Type": "application/octet-stream"},
        buf.getvalue(),
    )
    declare(stores, source(doc_server.url + "/report", format="xlsx"))
    result = run(stores, "levels", mode="full")
    assert result["status"] == "succeeded", result["error"]
    assert ("C", 7.5) in pairs(stores) and ("D", 8.0) in pairs(stores)


PAGES = [
    [{"station": "A", "level": 1}, {"station": "B", "level": 2}],
    [{"station": "C", "level": 3}, {"station": "D", "level": 4}],
    [{"station": "E", "level": 5}],
]


@pytest.mark.parametrize("style", ["next_link", "link_header", "cursor", "offset"])
def test_pagination(stores, doc_server, style):  # noqa: F811
    def paged(req):
        q = req["query"]
        if style == "offset":
            n = int(q.get("offset", 0)) // 2
            assert q["limit"] == "2"
            return (
                200,
                {"Content-Type": "application/json"},
                json.dumps(PAGES[n] if n < len(PAGES) else []).encode(),
            )
        n = int(q.get("page", q.get("after", 0)))
        body = {"items": PAGES[n]}
        headers = {"Content-Type": "application/json"}
        if n + 1 < len(PAGES):
            if style == "next_link":
                body["next"] = f"/levels?page={n + 1}"
            elif style == "link_header":
                headers["Link"] = f'<{doc_server.url}/levels?page={n + 1}>; rel="next"'
            else:
                body["meta"] = {"next_token": str(n + 1)}
        return 200, headers, json.dumps(body).encode()

    pagination = {
        "next_link": {"type": "next_link", "next_path": "next"},
        "link_header": {"type": "next_link"},
        "cursor": {"type": "cursor", "cursor_path": "meta.next_token", "cursor_param": "after"},
        "offset": {"type": "offset", "limit": 2},
    }[style]
    doc_server.routes["/levels"] = paged
    options = {"pagination": pagination}
    if style != "offset":
        options["records_path"] = "items"
    declare(stores, source(doc_server.url + "/levels", **options))
    result = run(stores, "levels")
    assert result["status"] == "succeeded", result["error"]
    assert [s for s, _ in pairs(stores)] == ["A", "B", "C", "D", "E"]
    assert len(doc_server.requests) == 3


def test_retries_honour_retry_after(stores, doc_server):  # noqa: F811
    answers = [
        (503, {"Retry-After": "1"}, b"busy"),
        (429, {"Retry-After": "0"}, b"slow down"),
        (200, {"Content-Type": "application/json"}, b'[{"station": "A", "level": 1}]'),
    ]
    doc_server.routes["/levels"] = lambda req: answers.pop(0)
    declare(stores, source(doc_server.url + "/levels", backoff="5s", max_retry_after="2s"))
    result = run(stores, "levels")
    assert result["status"] == "succeeded", result["error"]
    times = [r["at"] for r in doc_server.requests]
    assert len(times) == 3
    assert 0.9 <= times[1] - times[0] < 1.9  # waited the asked second, not the 5s backoff
    assert times[2] - times[1] < 0.5
    assert pairs(stores) == [("A", 1.0)]


def test_server_errors_fail_the_run_after_retries(stores, doc_server):  # noqa: F811
    doc_server.routes["/levels"] = lambda req: (502, {}, b"bad gateway")
    declare(stores, source(doc_server.url + "/levels", retries=2))
    result = run(stores, "levels")
    assert result["status"] == "failed"
    assert result["error_step"] == "fetch"
    assert "answered 502 Bad Gateway (3 attempts)" in result["error"]
    assert len(doc_server.requests) == 3
    assert raw_rows(stores, "levels", "station") == []


def test_server_killed_mid_run_leaves_no_partial_data(stores, doc_server):  # noqa: F811
    def first_then_die(req):
        doc_server.routes["/levels"] = None
        import threading

        threading.Thread(target=doc_server.stop).start()  # gone before page 2 is asked for
        return (
            200,
            {"Content-Type": "application/json"},
            json.dumps({"items": PAGES[0], "next": "/levels?page=1"}).encode(),
        )

    doc_server.routes["/levels"] = first_then_die
    declare(
        stores,
        source(
            doc_server.url + "/levels",
            records_path="items",
            pagination={"type": "next_link", "next_path": "next"},
            retries=1,
            connect_timeout="1s",
        ),
    )
    result = run(stores, "levels")
    assert result["status"] == "failed"
    assert "could not connect" in result["error"] and "/levels?page=1" in result["error"]
    assert raw_rows(stores, "levels", "station") == []
    assert get_watermark(stores.db, "levels")["cursor"] is None


def test_read_timeout_is_a_readable_failure(stores, doc_server):  # noqa: F811
    import time

    def slow(req):
        time.sleep(1.5)
        return 200, {"Content-Type": "application/json"}, b"[]"

    doc_server.routes["/levels"] = slow
    declare(stores, source(doc_server.url + "/levels", read_timeout="0.3s", retries=0))
    result = run(stores, "levels")
    assert result["status"] == "failed"
    assert "timed out (ReadTimeout)" in result["error"]


def test_auth_header_comes_from_secrets_and_never_shows(stores, doc_server):  # noqa: F811
    def guarded(req):
        if req["headers"].get("Authorization") != "Bearer t0ken-XYZ":
            return 401, {}, b"who are you"
        return 200, {"Content-Type": "application/json"}, b'[{"station": "A", "level": 1}]'

    doc_server.routes["/levels"] = guarded
    body = source(doc_server.url + "/levels", token="t0ken-XYZ", headers={"X-Client": "cxd"})
    spec = declare(stores, body)
    assert "token" not in spec.options and spec.secrets["token"] == "t0ken-XYZ"
    assert run(stores, "levels")["status"] == "succeeded"
    assert doc_server.requests[-1]["headers"]["X-Client"] == "cxd"

    declare(stores, {**body, "options": {**body["options"], "token": "wrong-S3CRET"}})
    failed = run(stores, "levels", mode="full")
    assert failed["status"] == "failed"
    assert "answered 401 Unauthorized" in failed["error"]
    assert "S3CRET" not in json.dumps(failed, default=str)


def test_one_session_per_source_reuses_connections(stores, doc_server):  # noqa: F811
    from plugins.http import session_for

    doc_server.routes["/levels"] = json_doc([{"station": "A", "level": 1}])
    declare(stores, source(doc_server.url + "/levels", conditional=False))
    run(stores, "levels")
    run(stores, "levels")
    assert session_for("levels") is session_for("levels")
    assert session_for("levels") is not session_for("other")


def test_bad_settings_are_reported_together():
    spec = parse_source(
        source(
            "ftp://nope",
            format="pdf",
            pagination={"type": "offset"},
            retries=-1,
            read_timeout="later",
        )
    )
    with pytest.raises(PluginConfigError) as err:
        plugin_for(spec)
    assert len(err.value.details["problems"]) == 5, err.value.details


def test_an_api_key_query_parameter_from_secrets_never_shows(stores, doc_server):  # noqa: F811
    from urllib.parse import quote_plus

    from plugins.http import HttpSource

    def keyed(req):
        if req["query"].get("apikey") != "k3y/with+odd chars":
            return 401, {}, b"bad key"
        return 200, {"Content-Type": "application/json"}, b'[{"station": "A", "level": 1}]'

    doc_server.routes["/levels"] = keyed
    body = source(doc_server.url + "/levels", params={"region": "north"})
    body["secrets"] = {"params": {"apikey": "k3y/with+odd chars"}}
    spec = declare(stores, body)
    (payload,) = HttpSource(spec).fetch(None)
    assert payload.name == doc_server.url + "/levels?region=north&apikey=***"
    assert doc_server.requests[-1]["query"] == {"region": "north", "apikey": "k3y/with+odd chars"}
    assert run(stores, "levels")["status"] == "succeeded"

    body["secrets"] = {"params": {"apikey": "wr0ng/key+1"}}
    declare(stores, body)
    failed = run(stores, "levels", mode="full")
    assert failed["status"] == "failed"
    assert "apikey=*** answered 401" in failed["error"]
    text = json.dumps(failed, default=str)
    assert "wr0ng" not in text and quote_plus("wr0ng/key+1") not in text

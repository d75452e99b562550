"""No console page or action without an admin token; sessions end on logout and revocation."""

from __future__ import annotations

import pytest

from tests.admin.conftest import csrf_of

OPEN = {"admin.login_form", "admin.login_submit", "admin.static"}
SAMPLE_ARGS = {"name": "weather", "run_id": 1, "job_id": "cxd-run-1", "action": "run"}


def console_routes(app) -> list[tuple[str, str]]:
    """(method, url) of every console route that needs a login."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin.") or rule.endpoint in OPEN:
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = url.replace(f"<{arg}>", str(SAMPLE_ARGS[arg])).replace(
                f"<int:{arg}>", str(SAMPLE_ARGS[arg])
            )
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, url))
    return out


def test_every_route_refuses_without_an_admin_token(app, client, weather, auth, stores):
    routes = console_routes(app)
    assert len(routes) >= 15, routes
    for role in (None, "read", "analyst", "ingest"):
        headers = auth(role) if role else {}
        for method, url in routes:
            response = client.open(url, method=method, headers=headers)
            if method == "GET" and not url.endswith((".json", ".part")):
                assert response.status_code == 302, (role, url)
                assert response.location.startswith("/admin/login"), (role, url)
            else:
                assert response.status_code == 401, (role, method, url)
    # nothing happened: the "run now" action above queued no run
    assert stores.db.fetchone("SELECT count(*) AS n FROM cxd.runs")["n"] == 0


def test_login_with_a_non_admin_token_is_refused(client, token):
    response = client.post("/admin/login", data={"token": token("analyst")})
    assert response.status_code == 401
    assert b"admin" in response.data
    assert client.get("/admin/").status_code == 302


def test_login_sets_an_httponly_cookie_and_logout_ends_the_session(client, admin_token):
    response = client.post("/admin/login", data={"token": admin_token, "next": "/admin/workers"})
    assert response.status_code == 302 and response.location == "/admin/workers"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and admin_token not in cookie
    page = client.get("/admin/")
    assert page.status_code == 200
    logout = client.post("/admin/logout", data={"csrf_token": csrf_of(page.text)})
    assert logout.status_code == 302
    assert client.get("/admin/").status_code == 302


def test_login_never_redirects_off_the_console(client, admin_token):
    response = client.post("/admin/login", data={"token": admin_token, "next": "//evil.example/"})
    assert response.location == "/admin/"


def test_revoking_the_token_ends_its_console_sessions(admin_client, stores):
    assert admin_client.get("/admin/").status_code == 200
    stores.db.execute("UPDATE cxd.tokens SET revoked_at = now()")
    assert admin_client.get("/admin/").status_code == 302


@pytest.mark.parametrize("csrf", [None, "wrong"])
def test_actions_need_the_sessions_csrf_token(admin_client, weather, stores, csrf):
    data = {} if csrf is None else {"csrf_token": csrf}
    response = admin_client.post("/admin/sources/weather/actions/run", data=data)
    assert response.status_code == 403
    assert stores.db.fetchone("SELECT count(*) AS n FROM cxd.runs")["n"] == 0


def test_an_admin_bearer_token_works_without_a_session(client, weather, auth):
    response = client.get("/admin/overview.json", headers=auth("admin"))
    assert response.status_code == 200
    assert [r["name"] for r in response.get_json()] == ["weather"]

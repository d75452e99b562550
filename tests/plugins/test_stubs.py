"""The stub generator: every type's generated plugin passes its generated test unedited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxd.cli import build_parser
from plugins.registry import discover
from plugins.stubs import STUB_TYPES
from tests.plugins.sources import declare, doc_server, raw_rows, run  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def cxd(*args: str, cwd: Path, ok: bool = True, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "cxd.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode == 0) == ok, result.stderr
    return result


def plugin_new(*args: str) -> int:
    """``cxd plugin new ...`` in this process (quicker than a subprocess)."""
    parsed = build_parser().parse_args(["plugin", "new", *args])
    return parsed.fn(parsed)


def test_every_generated_stub_passes_its_own_test(store_urls, settings, tmp_path, capsys):
    folder = settings.plugin_dir
    for stub_type in STUB_TYPES:
        if stub_type in ("odbc", "webhook", "mqtt", "python"):
            assert plugin_new(f"my_{stub_type}", "--type", stub_type) == 0
            assert f"wrote {folder / f'my_{stub_type}.py'}" in capsys.readouterr().out
        elif stub_type == "file":  # the shell helper, as the docs show it
            subprocess.run(
                [str(ROOT / "scripts" / "new-plugin.sh"), "my_file", "file"],
                cwd=tmp_path,
                env={**os.environ, "CXD": f"{sys.executable} -m cxd.cli", "PYTHONPATH": str(ROOT)},
                check=True,
                capture_output=True,
                timeout=120,
            )
        else:
            out = cxd("plugin", "new", f"my_{stub_type}", "--type", stub_type, cwd=tmp_path)
            assert f"wrote {folder / f'my_{stub_type}.py'}" in out.stdout
    assert sorted(p.name for p in folder.glob("*.py")) == sorted(f"my_{t}.py" for t in STUB_TYPES)

    db_url, _ = store_urls
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            str(folder / "tests"),
        ],
        cwd=tmp_path,
        env={**os.environ, "CXD_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{2 * len(STUB_TYPES)} passed" in result.stdout, result.stdout
    assert "skipped" not in result.stdout

    found = discover(folder)
    assert {f"my_{t}" for t in STUB_TYPES} <= set(found)
    assert found["my_http"].__name__ == "MyHttp"


def test_a_generated_file_plugin_loads_through_a_run(stores, settings, tmp_path):
    plugin_new("shift_sheet", "--type", "file")
    cls = discover(settings.plugin_dir)["shift_sheet"]
    body = yaml.safe_load(cls.EXAMPLE)
    body["options"].update(dir=str(settings.plugin_dir / "samples" / "shift_sheet"), after="keep")
    declare(stores, body)
    result = run(stores, "shift_sheet")
    assert result["status"] == "succeeded", result["error"]
    rows = raw_rows(stores, "shift_sheet", "sensor")
    assert [(r["sensor"], r["value"]) for r in rows] == [("s1", 21.5), ("s2", 19.0)]


def test_a_generated_webhook_plugin_cleans_what_cxd_ingest_receives(
    stores, settings, ingest_client, auth
):
    from speed.stream import read_after

    plugin_new("boiler", "--type", "webhook")
    declare(stores, yaml.safe_load(discover(settings.plugin_dir)["boiler"].EXAMPLE))
    body = [
        {"device": "b1", "at": "2026-05-05T10:00:00Z", "fahrenheit": 212},
        {"device": "b2", "at": "2026-05-05T10:00:01Z", "celsius": 20.5},
    ]
    r = ingest_client.post("/hooks/boiler", json=body, headers=auth("ingest"))
    assert r.status_code == 202, r.get_json()
    stored = [rec for _, rec in read_after(stores.redis, "boiler", "0-0")]
    assert [(s["device"], s["celsius"]) for s in stored] == [("b1", 100.0), ("b2", 20.5)]
    # a record the hook cannot clean is named, and nothing of the request is stored
    bad = [body[1], {"device": "b3", "at": "2026-05-05T10:00:02Z", "fahrenheit": "hot"}]
    r = ingest_client.post("/hooks/boiler", json=bad, headers=auth("ingest"))
    assert r.status_code == 400
    assert r.get_json()["error"]["details"]["records"][0]["index"] == 1
    assert "could not be cleaned" in r.get_json()["error"]["message"]
    assert len(read_after(stores.redis, "boiler", "0-0")) == 2


def test_bad_names_and_existing_files_are_refused(tmp_path):
    out = cxd(
        "plugin",
        "new",
        "Bad-Name",
        "--type",
        "http",
        "--dir",
        str(tmp_path),
        cwd=tmp_path,
        ok=False,
    )
    assert "is not a plugin name" in out.stderr
    cxd("plugin", "new", "levels", "--type", "http", "--dir", str(tmp_path), cwd=tmp_path)
    again = cxd(
        "plugin", "new", "levels", "--type", "odbc", "--dir", str(tmp_path), cwd=tmp_path, ok=False
    )
    assert "already exist" in again.stderr and "--force" in again.stderr
    cxd(
        "plugin", "new", "levels", "--type", "odbc", "--dir", str(tmp_path), "--force", cwd=tmp_path
    )
    assert "OdbcSource" in (tmp_path / "levels.py").read_text()


@pytest.mark.parametrize("args", [["x"], []])
def test_the_shell_helper_explains_its_usage(args):
    result = subprocess.run(
        [str(ROOT / "scripts" / "new-plugin.sh"), *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr and "mqtt" in result.stderr


def test_docs_walkthrough_generate_declare_run(stores, settings, tmp_path, doc_server):  # noqa: F811
    """The commands of docs/plugins.md, "Writing a one-file plugin", in order."""
    doc_server.routes["/v1/stations"] = lambda req: (
        (200, {"Content-Type": "application/json"}, b'{"items": [{"station": "n1", "level": 2.5}]}')
        if req["headers"].get("Authorization") == "Bearer doc-token"
        else (401, {}, b"")
    )
    cxd("plugin", "new", "water_levels", "--type", "http", cwd=tmp_path)
    cls = discover(settings.plugin_dir)["water_levels"]
    example = cls.EXAMPLE.replace("https://api.example.com", doc_server.url)
    settings.config_file.write_text(yaml.safe_dump({"sources": [yaml.safe_load(example)]}))
    env = {"WATER_LEVELS_TOKEN": "doc-token"}
    cxd("init", cwd=tmp_path, env=env)
    out = cxd("run", "water_levels", cwd=tmp_path, env=env)
    assert "1 rows fetched" in out.stdout
    assert [(r["station"], r["level"]) for r in raw_rows(stores, "water_levels", "station")] == [
        ("N1", 2.5)
    ]
    listing = cxd("plugins", "--check", cwd=tmp_path)
    assert "water_levels" in listing.stdout and "WaterLevels" in listing.stdout
    docs = (ROOT / "docs" / "plugins.md").read_text()
    for command in (
        "cxd plugin new water_levels --type http",
        "pytest plugins.d/tests/test_water_levels.py",
        "cxd init",
        "cxd run water_levels",
        "cxd plugins --check",
    ):
        assert command in docs

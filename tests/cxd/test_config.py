"""Bad configuration stops with one clear message naming the setting, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxd.config import load_settings
from cxd.errors import ConfigError

CXD = [sys.executable, "-m", "cxd.cli"]


def cxd(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CXD_")}
    full.update(env)
    full["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return subprocess.run(
        CXD + args, env=full, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def assert_one_clear_line(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) >= 1
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_unreachable_database_url_is_named(tmp_path, store_urls):
    _, redis_url = store_urls
    env = {
        "CXD_DATABASE_URL": "postgresql://cxd:hunter2@127.0.0.1:1/cxd",
        "CXD_REDIS_URL": redis_url,
    }
    result = cxd(["status"], env, tmp_path)
    assert_one_clear_line(result, "CXD_DATABASE_URL", "not reachable")
    assert "hunter2" not in result.stderr + result.stdout  # the password is never echoed


def test_unreachable_redis_url_is_named(tmp_path, store_urls):
    db_url, _ = store_urls
    result = cxd(
        ["status"], {"CXD_DATABASE_URL": db_url, "CXD_REDIS_URL": "redis://127.0.0.1:1/0"}, tmp_path
    )
    assert_one_clear_line(result, "CXD_REDIS_URL", "not reachable")


def test_url_with_the_wrong_scheme_is_named(tmp_path):
    result = cxd(["status"], {"CXD_DATABASE_URL": "mysql://root@localhost/x"}, tmp_path)
    assert_one_clear_line(result, "CXD_DATABASE_URL", "postgresql://")


def test_unwritable_home_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = cxd(["status"], {"CXD_HOME": str(blocker / "home")}, tmp_path)
    assert_one_clear_line(result, "CXD_HOME", "not a writable directory")


def test_bad_yaml_names_file_and_line(tmp_path, store_urls):
    db_url, redis_url = store_urls
    config = tmp_path / "cxd.yml"
    config.write_text("sources:\n  - name: weather\n    type: [file\n")
    env = {"CXD_DATABASE_URL": db_url, "CXD_REDIS_URL": redis_url, "CXD_CONFIG": str(config)}
    assert_one_clear_line(cxd(["init"], env, tmp_path), "CXD_CONFIG", str(config), "line")


def test_every_problem_of_a_source_is_listed_at_once(tmp_path, store_urls):
    db_url, redis_url = store_urls
    config = tmp_path / "cxd.yml"
    config.write_text(
        "sources:\n"
        "  - name: Weather\n"
        "    type: ftp\n"
        "    columns: [{name: t, type: timestamp}, {name: v, type: float8}]\n"
        "    key: [station]\n"
    )
    env = {"CXD_DATABASE_URL": db_url, "CXD_REDIS_URL": redis_url, "CXD_CONFIG": str(config)}
    result = cxd(["init"], env, tmp_path)
    assert_one_clear_line(
        result, "sources[0].name", "sources[0].type", "sources[0].columns[1].type", "sources[0].key"
    )


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [("CXD_PORT", "eighty", "not a port number"), ("CXD_INGEST_PORT", "70000", "outside"),
     ("CXD_LOG_LEVEL", "LOUD", "CXD_LOG_LEVEL")],
)  # fmt: skip
def test_bad_settings_raise_config_error(name, value, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings({name: value})

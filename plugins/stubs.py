"""The stub generator behind ``cxd plugin new NAME --type TYPE``: a commented one-class
plugin file for each source type, plus a test of it that passes as generated.

Files written into the plugin folder (``CXD_PLUGIN_DIR``)::

    <dir>/NAME.py                 the plugin (loaded by path; edit it)
    <dir>/tests/test_NAME.py      its test: ``pytest <dir>/tests/test_NAME.py``
    <dir>/samples/NAME/...        sample data the test reads (file plugins)
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path

from plugins.exceptions import PluginConfigError

STUB_TYPES = ("odbc", "http", "webhook", "file", "mqtt", "python")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _template(name: str) -> str:
    return resources.files("plugins").joinpath("templates", name).read_text(encoding="utf-8")


def _render(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def class_name(name: str) -> str:
    """The class name of plugin ``name``: ``water_levels`` -> ``WaterLevels``."""
    return "".join(part.capitalize() for part in name.split("_") if part) or "Source"


def write_stub(name: str, stub_type: str, folder: Path, *, force: bool = False) -> list[Path]:
    """Write the plugin ``name`` of ``stub_type`` and its test into ``folder``; return the paths."""
    problems = []
    if not _NAME.match(name) or keyword.iskeyword(name):
        problems.append(
            f"{name!r} is not a plugin name: lower-case letters, digits and _, starting with a letter"
        )
    if stub_type not in STUB_TYPES:
        problems.append(f"type {stub_type!r} is not one of {', '.join(STUB_TYPES)}")
    if problems:
        raise PluginConfigError("; ".join(problems), details={"problems": problems})
    plugin_path = folder / f"{name}.py"
    test_path = folder / "tests" / f"test_{name}.py"
    files = {plugin_path: f"{stub_type}.py.tmpl", test_path: f"test_{stub_type}.py.tmpl"}
    if stub_type == "file":
        files[folder / "samples" / name / "readings.csv"] = "file.sample.csv"
    existing = [str(p) for p in files if p.exists()]
    if existing and not force:
        raise PluginConfigError(
            f"{', '.join(existing)} already exist(s); choose another name or pass --force"
        )
    values = {
        "name": name,
        "class_name": class_name(name),
        "env_name": name.upper(),
        "test_path": str(test_path),
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(_template(template), values), encoding="utf-8")
    return list(files)

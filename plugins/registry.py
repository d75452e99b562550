"""Plugin discovery: built-ins, the ``cxd.plugins`` entry-point group, and ``*.py`` files
in the plugin directory loaded by path. A broken plugin file is logged and skipped at
run time; ``cxd plugins --check`` fails on it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from importlib.metadata import entry_points
from pathlib import Path

from cxd.catalog import SourceSpec
from plugins.base import SourcePlugin
from plugins.exceptions import PluginConfigError

log = logging.getLogger(__name__)

BUILTINS = {
    "file": "plugins.file:FileSource",
    "http": "plugins.http:HttpSource",
    "odbc": "plugins.odbc:OdbcSource",
    "webhook": "plugins.webhook:WebhookSource",
    "mqtt": "plugins.mqtt:MqttSource",
}

_loaded: dict[str, type[SourcePlugin]] = {}
_seen: tuple = ()  # the plugin files (path, size, mtime) the last discovery read


def _files(plugin_dir: Path | None) -> tuple:
    if not plugin_dir or not plugin_dir.is_dir():
        return ()
    out = []
    for path in sorted(plugin_dir.glob("*.py")):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        out.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(out)


_errors: dict[str, str] = {}


def _import(target: str) -> type[SourcePlugin]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _classes_in(module) -> list[type[SourcePlugin]]:
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, SourcePlugin) and obj.__module__ == module.__name__
    ]


def discover(plugin_dir: Path | None = None) -> dict[str, type[SourcePlugin]]:
    """Every plugin class by name (``type`` for built-ins, module or entry-point name else)."""
    global _seen
    found: dict[str, type[SourcePlugin]] = {}
    _errors.clear()
    _seen = _files(plugin_dir)
    for name, target in BUILTINS.items():
        found[name] = _import(target)
    for ep in entry_points(group="cxd.plugins"):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # a third-party plugin may fail in any way
            _errors[f"entry point {ep.name}"] = repr(exc)
            log.error("plugin entry point %s failed to load: %r", ep.name, exc)
    if plugin_dir and plugin_dir.is_dir():
        for path in sorted(plugin_dir.glob("*.py")):
            try:
                spec = importlib.util.spec_from_file_location(f"cxd_user_plugins.{path.stem}", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                for cls in _classes_in(module):
                    found[path.stem] = cls
            except Exception as exc:
                _errors[str(path)] = repr(exc)
                log.error("plugin file %s failed to load and is skipped: %r", path, exc)
    _loaded.clear()
    _loaded.update(found)
    return found


def load_errors() -> dict[str, str]:
    """Plugins that failed to load in the last :func:`discover`, with the reason."""
    return dict(_errors)


def plugin_types() -> list[str]:
    """Names of every known plugin."""
    return sorted(_loaded or discover())


def plugin_for(spec: SourceSpec, plugin_dir: Path | None = None) -> SourcePlugin:
    """An instance of the plugin serving ``spec``, its settings checked."""
    if (
        not _loaded
        or (plugin_dir and spec.plugin and spec.plugin not in _loaded)
        or (spec.plugin and _files(plugin_dir) != _seen)  # a plugin file added, edited or gone
    ):
        discover(plugin_dir)
    name = spec.plugin or spec.type
    cls = _loaded.get(name)
    if cls is None:
        raise PluginConfigError(
            f"source {spec.name!r}: no plugin named {name!r} (known: {', '.join(sorted(_loaded))})"
        )
    from batch.quality import check_problems

    plugin = cls(spec)
    problems = plugin.validate() + check_problems(spec)
    if problems:
        raise PluginConfigError(
            f"source {spec.name!r} has {len(problems)} setting problem(s): " + "; ".join(problems),
            details={"problems": problems},
        )
    return plugin

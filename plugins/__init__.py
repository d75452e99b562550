"""Source plugins: the base class every source subclasses, built-ins, and discovery."""

from plugins.base import Payload, SourcePlugin
from plugins.registry import plugin_for, plugin_types

__all__ = ["Payload", "SourcePlugin", "plugin_for", "plugin_types"]

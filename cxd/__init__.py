"""cxd: a Lambda-architecture data engine (shared configuration, connections, metadata, CLI)."""

__version__ = "0.1.0"

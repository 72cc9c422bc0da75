"""HTTP API and web page over a store."""

from ragtune.server.app import create_app

__all__ = ["create_app"]

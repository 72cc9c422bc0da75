"""HTTP API and web page over a store."""

from ragtune.server.app import ServeSettings, create_app
from ragtune.server.run import serve_forever

__all__ = ["ServeSettings", "create_app", "serve_forever"]

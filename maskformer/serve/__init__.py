"""``maskformer serve``: a web page and an HTTP API around one loaded model, with dynamic batching."""

from .app import create_app
from .config import ServeConfig
from .server import background_server, serve

__all__ = ["ServeConfig", "background_server", "create_app", "serve"]

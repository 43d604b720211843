"""Running the app: load the model once, listen, and stop cleanly on SIGTERM / Ctrl-C (requests in flight
are answered first)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from ..predict import Predictor
from .app import create_app
from .config import ServeConfig

log = logging.getLogger("maskformer")


def serve(
    source: str, config: ServeConfig, device: str = "cpu", precision: str = "fp32", compile: bool = False
) -> None:
    """Serve the model ``source`` (anything ``--model`` takes) until SIGTERM or Ctrl-C; ``compile``:
    torch.compile its network (:class:`Predictor`)."""
    import uvicorn

    predictor = Predictor.from_pretrained(source, device=device, precision=precision, compile=compile)
    app = create_app(predictor, config, source)
    meta = predictor.metadata
    url = f"http://{config.host if ':' not in config.host else f'[{config.host}]'}:{config.port}"
    log.info(
        f"serving {source} ({predictor.model.config.family}, {len(meta.class_names)} classes, {device}, "
        f"{precision}) at {url}/ ; API docs at {url}/docs"
    )
    # uvicorn answers the requests in flight on SIGTERM / Ctrl-C, then raises the signal again for the
    # handler it found: a quiet one here, so that a clean stop exits 0 rather than dying by the signal.
    quiet = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)} if quiet else {}
    try:
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            log_level="info",
            # A stop waits for requests in flight, but no longer than one request may take.
            timeout_graceful_shutdown=int(config.timeout_s) + 1,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped")


def _stopped(signum: int, frame: object) -> None:
    """The signal that stopped the server, raised again once it has stopped: nothing more to do."""


@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` on a thread of this process (a notebook, a test, a benchmark) and yield its base URL,
    e.g. "http://127.0.0.1:54321"; port 0 picks a free port. Leaving the block stops it as SIGTERM would:
    requests in flight are answered first."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="maskformer-server", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{shown}:{bound}"
    finally:
        server.should_exit = True
        thread.join()

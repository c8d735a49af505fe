"""Helpers for the service tests: a private copy of the session's SMVS bundle (admin tests change it) and a
Litestar TestClient around the real app (real model, real bundle, nothing mocked)."""

from __future__ import annotations

import shutil
from pathlib import Path

from litestar.testing import TestClient

from artlens.server.app import create_app
from artlens.server.settings import load_settings

API_KEY = "test-admin-key-0123456789"


def copy_bundle(bundle: Path, dest: Path) -> Path:
    target = dest / "bundle"
    shutil.copytree(bundle, target)
    return target


def client_for(bundle: Path, **settings) -> TestClient:
    defaults = {"index": str(bundle), "api_keys": [API_KEY], "rate_limit_per_minute": 0, "log_json": True}
    app = create_app(load_settings({}, **{**defaults, **settings}), configure_logs=False)
    return TestClient(app, raise_server_exceptions=False)


class LiveServer:
    """The real app on uvicorn in a background thread, on a free loopback port (browser tests)."""

    def __init__(self, bundle: Path, **settings) -> None:
        import socket

        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        defaults = {"index": str(bundle), "api_keys": [API_KEY], "rate_limit_per_minute": 0}
        app = create_app(load_settings({}, **{**defaults, **settings}), configure_logs=False)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None,
                                                    access_log=False, lifespan="on"))
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ServedApp(LiveServer):
    """The app exactly as ``artlens serve`` runs it (server/protocol.uvicorn_config: our h11 protocol, its
    timeouts, connection cap and head limits), on uvicorn in a thread on a free loopback port."""

    def __init__(self, bundle: Path, **settings) -> None:
        import socket

        import uvicorn

        from artlens.server.protocol import uvicorn_config

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        defaults = {"index": str(bundle), "api_keys": [API_KEY], "host": "127.0.0.1", "port": self.port}
        self.app = create_app(load_settings({}, **{**defaults, **settings}), configure_logs=False)
        self.server = uvicorn.Server(uvicorn_config(self.app))
        self.url = f"http://127.0.0.1:{self.port}"

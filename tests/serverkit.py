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

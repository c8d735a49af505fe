"""Service settings from ``ARTLENS_*`` environment variables (table in docs/service.md).

A msgspec struct (no extra dependency): each field ``name`` is read from ``ARTLENS_<NAME>``; lists are
comma-separated; values are converted and checked by msgspec, and a bad value is one clear error at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from artlens.errors import ArtlensError


class SettingsError(ArtlensError):
    code = "bad_settings"


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    index: str = ""  # bundle directory (required to serve; `artlens serve --index` sets it)
    model: str = ""  # model directory; empty: the one recorded in the bundle
    host: str = "127.0.0.1"
    port: int = 8000
    # Admin API keys (X-API-Key header). Empty: admin routes answer 401 to everyone.
    api_keys: list[str] = msgspec.field(default_factory=list)
    cors_origins: list[str] = msgspec.field(default_factory=list)  # allow-list; empty: no cross-origin access
    rate_limit_per_minute: int = 120  # per client address on public routes; 0 turns it off
    # Recognitions in progress at once (a thread pool off the event loop). More than the cores: while one waits
    # for its micro-batch or for ONNX Runtime, another extracts features; all heavy stages release the GIL.
    inference_threads: int = 4
    max_queue: int = 32  # recognitions waiting beyond those; more → 503 + Retry-After
    micro_batching: bool = True  # concurrent photos share one ONNX call
    batch_max: int = 8
    batch_wait_ms: float = 10.0
    max_upload_bytes: int = 30 * 1024 * 1024  # whole request body → 413 beyond
    max_image_bytes: int = 15 * 1024 * 1024  # one image → 413 beyond
    max_pixels: int = 50_000_000  # one decoded image (decompression bombs) → 413 beyond
    max_frames: int = 5  # images per burst
    default_top_k: int = 20
    rendition_sizes: list[int] = msgspec.field(default_factory=lambda: [128, 256, 512, 1024])
    rendition_cache: int = 256  # encoded renditions kept in memory
    log_level: str = "INFO"
    log_json: bool = True

    def __post_init__(self) -> None:
        if self.inference_threads < 1 or self.max_queue < 0 or self.batch_max < 1:
            raise SettingsError("inference_threads and batch_max must be ≥ 1, max_queue ≥ 0")
        if not 1 <= self.max_frames <= 5:
            raise SettingsError("ARTLENS_MAX_FRAMES must be between 1 and 5")


_LISTS = {name for name, typ in Settings.__annotations__.items() if "list" in str(typ)}


def load_settings(env: Mapping[str, str] | None = None, **overrides) -> Settings:
    """Settings from ``env`` (default: ``os.environ``), then keyword overrides (CLI options)."""
    env = os.environ if env is None else env
    raw: dict = {}
    for field in Settings.__struct_fields__:
        value = env.get(f"ARTLENS_{field.upper()}")
        if value is None:
            continue
        raw[field] = [v.strip() for v in value.split(",") if v.strip()] if field in _LISTS else value
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"bad setting: {exc} (environment variables ARTLENS_<NAME>)") from None

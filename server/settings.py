"""Service settings from ``ARTLENS_*`` environment variables (table in docs/service.md).

A msgspec struct (no extra dependency): each field ``name`` is read from ``ARTLENS_<NAME>``; lists are
comma-separated; values are converted and checked by msgspec, and a bad value is one clear error at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from artlens.errors import ArtlensError
from artlens.imaging import DECODE_PIXEL_CAP
from artlens.recognition.settings import DEFAULT_TOP_K, SHORTLIST_MODES


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
    # Rate limits (server/ratelimit.py): per client (device) and minute; 0 turns every request limit off.
    rate_limit_per_minute: int = 300  # browsing: the /v1 GETs (metadata, thumbnails, similar)
    recognize_per_minute: int = 30  # POST /v1/recognize, counted apart (expensive); 0: not limited
    rate_limit_address_factor: int = 20  # one address (a museum's NAT) gets this many clients' allowance in all
    trusted_proxies: list[str] = msgspec.field(default_factory=list)  # addresses/CIDRs whose forwarding is believed
    forwarded_header: str = "x-forwarded-for"  # the one header those proxies set: x-forwarded-for or forwarded
    app_keys: list[str] = msgspec.field(default_factory=list)  # X-App-Key values; set: devices need a known one
    admin_failures_per_minute: int = 10  # wrong X-API-Key attempts per client before admin routes answer 429
    # Connections and timeouts (uvicorn; server/protocol.py). h11 has no timeouts of its own while reading.
    max_connections: int = 1000  # open connections; more → 503 overloaded
    header_timeout_s: float = 10.0  # a request head must arrive within this
    body_timeout_s: float = 15.0  # longest wait for the next piece of a request body → 408
    body_deadline_s: float = 120.0  # a whole request body → 408 beyond
    keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this
    max_url_bytes: int = 8192  # request target (path + query) → 414 beyond
    max_header_bytes: int = 32768  # all request headers together → 431 beyond
    # Recognitions in progress at once (a thread pool off the event loop). More than the cores: while one waits
    # for its micro-batch or for ONNX Runtime, another extracts features; all heavy stages release the GIL.
    # 2, 4 and 8 gave the same requests/s on 2 cores; 8 held 350 MB more (docs/service.md, "Threads").
    inference_threads: int = 4
    max_queue: int = 32  # recognitions waiting beyond those; more → 503 + Retry-After
    micro_batching: bool = True  # concurrent photos share one ONNX call
    batch_max: int = 8
    batch_wait_ms: float = 10.0
    max_upload_bytes: int = 30 * 1024 * 1024  # whole request body → 413 beyond
    max_image_bytes: int = 15 * 1024 * 1024  # one image → 413 beyond
    max_pixels: int = 50_000_000  # one decoded image (decompression bombs) → 413 beyond
    # Pixels being decoded at once across requests (imaging.DecodeBudget: a baseline JPEG counts at its reduced
    # decoding scale, WebP 4× its pixels); a decode that would exceed it → 503 + Retry-After. ~4 bytes each.
    max_inflight_pixels: int = 100_000_000
    max_frames: int = 5  # images per burst
    default_top_k: int = DEFAULT_TOP_K  # shortlist verified per frame when a request gives no top_k
    # Which rankings make the shortlist (recognition/settings.py): auto (the one the bundle was built for) | fused |
    # global | local. fused/global on a bundle built without global embeddings is refused at load.
    shortlist: str = "auto"
    rendition_sizes: list[int] = msgspec.field(default_factory=lambda: [128, 256, 512, 1024])
    rendition_cache: int = 256  # encoded renditions kept in memory
    # Replicas (docs/service.md, "Replicas"): seconds between checks of the bundle on disk for a version another
    # process wrote (0: never; POST /v1/index/reload still works).
    watch_interval: float = 1.0
    # Directory the CSV of POST /v1/jobs/import names its images in (relative paths only); empty: import is off.
    import_root: str = ""
    log_level: str = "INFO"
    log_json: bool = True

    def __post_init__(self) -> None:
        if self.inference_threads < 1 or self.max_queue < 0 or self.batch_max < 1:
            raise SettingsError("inference_threads and batch_max must be ≥ 1, max_queue ≥ 0")
        if not 1 <= self.max_frames <= 5:
            raise SettingsError("ARTLENS_MAX_FRAMES must be between 1 and 5")
        if not 1 <= self.max_pixels <= DECODE_PIXEL_CAP:
            raise SettingsError(f"ARTLENS_MAX_PIXELS must be between 1 and {DECODE_PIXEL_CAP}")
        if self.max_inflight_pixels < 1:
            raise SettingsError("ARTLENS_MAX_INFLIGHT_PIXELS must be ≥ 1")
        if not 0 <= self.watch_interval <= 3600:
            raise SettingsError("ARTLENS_WATCH_INTERVAL must be between 0 (off) and 3600 seconds")
        if self.shortlist not in SHORTLIST_MODES:
            raise SettingsError(f"ARTLENS_SHORTLIST must be one of {', '.join(SHORTLIST_MODES)}")
        self._check_edge()

    def _check_edge(self) -> None:
        from ipaddress import ip_network

        for name in ("header_timeout_s", "body_timeout_s", "body_deadline_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"ARTLENS_{name.upper()} must be > 0")
        for name in ("max_connections", "max_url_bytes", "max_header_bytes", "rate_limit_address_factor"):
            if getattr(self, name) < 1:
                raise SettingsError(f"ARTLENS_{name.upper()} must be ≥ 1")
        for name in ("rate_limit_per_minute", "recognize_per_minute", "admin_failures_per_minute"):
            if getattr(self, name) < 0:
                raise SettingsError(f"ARTLENS_{name.upper()} must be ≥ 0 (0 turns it off)")
        self.forwarded_header = self.forwarded_header.strip().lower()
        if self.forwarded_header not in ("x-forwarded-for", "forwarded"):
            raise SettingsError("ARTLENS_FORWARDED_HEADER must be x-forwarded-for or forwarded")
        for proxy in self.trusted_proxies:
            try:
                ip_network(proxy, strict=False)
            except ValueError:
                raise SettingsError(f"ARTLENS_TRUSTED_PROXIES: {proxy!r} is not an IP address or CIDR") from None


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

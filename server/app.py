"""The Litestar application: ``create_app(settings)``. Heavy objects load once in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router

import artlens

from .edge import edge_middleware
from .errors import EXCEPTION_HANDLERS
from .jobs import JobService
from .prometheus import Metrics
from .ratelimit import AdminThrottle, ClientResolver, RateLimiter, rate_limit_middleware
from .requestlog import configure_logging, request_log_middleware
from .routes import ROUTES, STATIC
from .services import CatalogueService, IndexHolder, RecognitionService
from .settings import Settings, load_settings


def _provider(name: str) -> Provide:
    def provide(state: State):
        return state[name]

    return Provide(provide, sync_to_thread=False)


def create_app(settings: Settings | None = None, *, configure_logs: bool = True, preload: bool = False) -> Litestar:
    """``preload``: load the bundle and model now rather than in the lifespan, so that a bundle or model that
    cannot be served is an error of this call (one line from `artlens serve`, not a failed lifespan's traceback)."""
    settings = settings or load_settings()
    if configure_logs:
        configure_logging(settings.log_level, settings.log_json)
    metrics = Metrics()
    preloaded = IndexHolder(settings, metrics) if preload else None

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        holder = preloaded or IndexHolder(settings, metrics)  # bundle + model: loaded once, shared by every request
        recognition = RecognitionService(holder, settings, metrics)
        jobs = JobService(holder, settings)
        app.state.update(holder=holder, recognition=recognition, catalogue=CatalogueService(holder, settings),
                         jobs=jobs)
        holder.watch()  # follow the bundle on disk: versions other replicas write
        try:
            yield
        finally:
            holder.close()
            jobs.close()
            recognition.close()

    clients = ClientResolver(settings.trusted_proxies, settings.forwarded_header)
    limiter = RateLimiter(settings.rate_limit_address_factor)
    middleware = [rate_limit_middleware(settings, limiter, clients)]  # after routing: the route says its bucket
    cors = CORSConfig(allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                      allow_headers=["Content-Type", "X-API-Key", "X-Request-ID", "X-Device-Id", "X-App-Key"],
                      expose_headers=["Server-Timing", "X-Request-ID", "ETag", "Retry-After", "RateLimit-Limit",
                                      "RateLimit-Remaining", "RateLimit-Reset"]
                      ) if settings.cors_origins else None
    openapi = OpenAPIConfig(
        title="artlens", version=artlens.__version__, path="/schema",
        description="Recognise artworks in visitors' photos; browse a collection by visual similarity.",
        render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin(path="/openapi.json")],
        components=Components(security_schemes={"ApiKey": SecurityScheme(
            type="apiKey", name="X-API-Key", security_scheme_in="header",
            description="admin routes (ARTLENS_API_KEYS)")}))
    app = Litestar(
        route_handlers=[*ROUTES, create_static_files_router(path="/static", directories=[STATIC],
                                                            include_in_schema=False)],
        lifespan=[lifespan],
        state=State({"settings": settings, "metrics": metrics, "clients": clients,
                     "admin_throttle": AdminThrottle(clients, settings.admin_failures_per_minute)}),
        dependencies={name: _provider(name) for name in ("holder", "recognition", "catalogue", "settings",
                                                                  "jobs")},
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=middleware,
        cors_config=cors,
        openapi_config=openapi,
        request_max_body_size=settings.max_upload_bytes,
        multipart_form_part_limit=32,
        logging_config=None,
    )
    # Around everything Litestar does (CORS, routing, errors): the request log outermost, so that requests refused
    # before routing are logged and counted too, then the checks made before routing.
    app.asgi_handler = request_log_middleware(edge_middleware(app.asgi_handler, settings, cors))
    return app

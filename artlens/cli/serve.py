"""`artlens serve`: the HTTP service on uvicorn, started only once the bundle is known to be servable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from artlens.cli.common import errors, warn_if_random


def serve(
    index: Annotated[Path | None, typer.Option(help="Bundle directory to serve (or ARTLENS_INDEX).")] = None,
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the bundle's).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1, or ARTLENS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000, or ARTLENS_PORT).")] = None,
    micro_batching: Annotated[bool | None, typer.Option("--micro-batching/--no-micro-batching",
                                                        help="Share ONNX calls between concurrent photos.")] = None,
) -> None:
    """Run the HTTP service (Litestar on uvicorn). Other settings: ARTLENS_* variables (docs/service.md)."""
    with errors():
        import uvicorn

        from artlens.indexing.store.bundle import read_meta
        from artlens.server.app import create_app
        from artlens.server.protocol import uvicorn_config
        from artlens.server.settings import load_settings

        settings = load_settings(index=str(index) if index else None, model=str(model) if model else None,
                                 host=host, port=port, micro_batching=micro_batching)
        if not settings.index:
            raise typer.BadParameter("pass --index BUNDLE (or set ARTLENS_INDEX)")
        meta = read_meta(Path(settings.index))  # a wrong path fails here as one line, before the server starts
        warn_if_random(meta["model"]["pretrained"])
        application = create_app(settings, preload=True)
    # One process: the model and index are held once; concurrency comes from the inference thread pool.
    # Connection cap, timeouts and head limits: server/protocol.py (ARTLENS_* settings).
    server = uvicorn.Server(uvicorn_config(application))
    server.run()
    if not server.started:
        raise typer.Exit(3)

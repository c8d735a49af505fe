"""The `artlens` command: one subcommand per pipeline stage, one module per command group.

The modules import the stages inside the commands, so `artlens --help` loads none of them.
"""

from __future__ import annotations

import os
import sys

import typer

from artlens.cli import bench, calibrate, dataset, evaluate, index, recognize, segments, serve
from artlens.cli.common import console

app = typer.Typer(name="artlens", help="Recognise artworks in visitors' photos.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def one_blas_thread_per_call() -> None:
    """Every command gives OpenBLAS one thread per call: concurrent recognitions (the service's threads, verification
    of a shortlist on several threads) are the parallelism. OpenBLAS's default pool of one thread per core is shared
    by every calling thread and its idle threads spin, so the requests' matrix products (descriptor matching) got in
    each other's way: one thread per call gave 2.2× the requests/s on 2 cores (docs/service.md, "Threads"). OpenBLAS
    reads this when NumPy loads, which the commands defer until after this callback; an operator's value is kept."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


app.command()(recognize.recognize)
app.command()(calibrate.calibrate)
app.command("eval")(evaluate.evaluate)
app.command()(serve.serve)
app.add_typer(index.index_app, name="index")
app.add_typer(dataset.dataset_app, name="dataset")
app.add_typer(segments.segments_app, name="segments")
app.add_typer(bench.bench_app, name="bench")


def _add_export_app() -> None:
    try:
        from artlens.cli.export import export_app
    except ImportError as exc:  # torch/transformers are an optional extra; say how to get them when asked for
        missing = exc.name

        export_app = typer.Typer(help="Export models to ONNX (needs `pip install artlens[export]`).")

        @export_app.callback(invoke_without_command=True)
        def _missing() -> None:
            console.print(f"[red]artlens export needs PyTorch and transformers ({missing} is not installed):"
                          " pip install 'artlens[export]'[/red]")
            raise typer.Exit(2)

    app.add_typer(export_app, name="export")


_add_export_app()


def main() -> None:  # pragma: no cover - console-script shim
    sys.exit(app())

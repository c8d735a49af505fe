"""`artlens segments …`: the SAM segments of a bundle built with --segments: list them, find similar ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from artlens.cli.common import console, errors, json_line, out, warn_if_random

segments_app = typer.Typer(help="SAM segments of a bundle built with --segments: list, search.", no_args_is_help=True)


def _segment_search(index: Path):
    from artlens.indexing.store.bundle import load_bundle
    from artlens.recognition.segment_search import SegmentSearch
    from artlens.recognition.settings import resolve_segment_settings

    bundle = load_bundle(index)
    return SegmentSearch(bundle, resolve_segment_settings(pretrained=bundle.pretrained))


@segments_app.command("list")
def segments_list(
    object_id: Annotated[str, typer.Argument(help="Object id of an artwork in the bundle.")],
    index: Annotated[Path, typer.Option(help="Bundle directory (built with --segments).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per segment, with polygons).")]
    = False,
) -> None:
    """The SAM segments of an artwork, largest first (polygons in reference-image pixels)."""
    import msgspec

    with errors():
        found = _segment_search(index).segments_of(object_id, with_polygons=as_json)
    if as_json:
        for segment in found:
            json_line(msgspec.to_builtins(segment))
        return
    table = Table(title=f"{escape(object_id)}: {len(found)} segments")
    for col in ("id", "bbox x, y, w, h (px)", "area", "predicted IoU", "stability"):
        table.add_column(col)
    for segment in found:
        table.add_row(escape(segment.id), ", ".join(f"{v:.0f}" for v in segment.bbox), f"{segment.area:.3f}",
                      f"{segment.predicted_iou:.3f}", f"{segment.stability:.3f}")
    out.print(table)


@segments_app.command("similar")
def segments_similar(
    segment_id: Annotated[str, typer.Argument(help="Segment id, '<object_id>#<n>' (see `artlens segments list`).")],
    index: Annotated[Path, typer.Option(help="Bundle directory (built with --segments).")],
    k: Annotated[int, typer.Option("--k", min=1, help="How many similar segments.")] = 10,
    include_same_artwork: Annotated[bool, typer.Option("--include-same-artwork",
                                                       help="Also list the artwork's own other segments.")] = False,
    space: Annotated[str, typer.Option(help="auto | dinov2 | local (weight-free VLAD of the segment's keypoints);"
                                            " auto: dinov2 for a pretrained model, local otherwise.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per hit, with polygons).")] = False,
) -> None:
    """Segments across the collection most similar to one segment (other artworks unless asked)."""
    import msgspec

    from artlens.recognition.settings import SEGMENT_SPACES

    if space not in SEGMENT_SPACES:
        console.print(f"[red]error:[/red] --space must be one of {', '.join(SEGMENT_SPACES)}", highlight=False)
        raise typer.Exit(2)
    with errors():
        search = _segment_search(index)
        hits = search.similar_segments(segment_id, k, include_same_artwork=include_same_artwork, space=space,
                                       with_polygons=as_json)
    if as_json:
        for hit in hits:
            json_line(msgspec.to_builtins(hit))
        return
    if not search.settings.pretrained and space == "dinov2":
        warn_if_random(False)
    table = Table(title=f"segments like {escape(segment_id)}")
    for col in ("rank", "id", "title", "score", "bbox x, y, w, h (px)", "area"):
        table.add_column(col)
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), escape(hit.id), escape(hit.metadata.get("title", "")), f"{hit.score:.3f}",
                      ", ".join(f"{v:.0f}" for v in hit.bbox), f"{hit.area:.3f}")
    out.print(table)

"""`artlens recognize`: the answer for each photo, as text or one JSON object per photo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from artlens.cli.common import checked_shortlist, console, errors, json_line, out, warn_if_random
from artlens.errors import ArtlensError


def recognize(
    photos: Annotated[list[Path], typer.Argument(help="Photo(s) to recognise.")],
    index: Annotated[Path, typer.Option(help="Bundle directory.")],
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the one the bundle names).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Shortlist size verified.")] = None,
    shortlist: Annotated[str, typer.Option(help="auto (the one the bundle was built for) | fused | global (DINOv2) |"
                                                " local (VLAD); fused/global need a bundle built with global"
                                                " embeddings.")] = "auto",
    min_confidence: Annotated[float | None, typer.Option(min=0.0, max=1.0,
                                                         help="Override the bundle's threshold.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per photo).")] = False,
) -> None:
    """Recognise the artwork(s) in each photo."""
    import msgspec

    from artlens.recognition.recognizer import Recognizer

    failed = False
    with errors():
        recognizer = Recognizer(index, model, config={"shortlist": checked_shortlist(shortlist)})
    if not as_json:
        warn_if_random(recognizer.model_summary.pretrained)
    for photo in photos:
        try:
            result = recognizer.recognize(photo, top_k=top_k, min_confidence=min_confidence, name=str(photo))
        except ArtlensError as exc:
            failed = True
            if as_json:
                json_line({"photo": str(photo), "error": {"code": exc.code, "message": str(exc)}})
            else:
                console.print(f"[red]error:[/red] {exc}", highlight=False)
            continue
        if as_json:
            json_line({"photo": str(photo), **msgspec.to_builtins(result)})
        else:
            print_result(str(photo), result)
    if failed:
        raise typer.Exit(2)


def print_result(photo: str, result) -> None:
    """One line per answer (or the no-match line); photo names and titles are printed verbatim, never as markup."""
    photo = escape(photo)
    if result.status == "no_match":
        best = result.best_rejected
        hint = escape(f" (best rejected: {best.object_id}, confidence {best.confidence:.3f}, {best.inliers} inliers"
                      f"{', ' + best.rejected if best.rejected else ''})") if best else ""
        took = escape(f"[{result.timings_ms['total']:.0f} ms]")
        out.print(f"{photo}: [yellow]no match[/yellow]{hint}  {took}", highlight=False)
        return
    for match in result.matches:
        title = escape(match.metadata.get("title", ""))
        detail = escape(f"  detail: segment {match.segment.id}") if getattr(match, "segment", None) else ""
        out.print(f"{photo}: [green]{escape(match.object_id)}[/green] {title}  confidence {match.confidence:.3f},"
                  f" {match.inliers} inliers, rank {match.retrieval_rank}{detail}  "
                  + escape(f"[{result.timings_ms['total']:.0f} ms]"), highlight=False)

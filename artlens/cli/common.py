"""What every command shares: the two consoles, the error context, progress bars and printing helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from artlens.errors import ArtlensError

console = Console(stderr=True)  # progress, warnings, errors and "wrote …" lines
out = Console()  # results: tables and answers


class PhaseTick(Protocol):
    """Moves one progress bar: ``done`` of ``total``, optionally renamed to ``stage``."""

    def __call__(self, done: int, total: int, stage: str | None = None) -> None: ...


def checked_shortlist(shortlist: str) -> str:
    """``shortlist`` (a --shortlist option) if it is a shortlist mode, else an error naming the choices."""
    from artlens.indexing.store.bundle import SHORTLIST_MODES

    if shortlist not in SHORTLIST_MODES:
        raise ArtlensError(f"--shortlist must be one of {', '.join(SHORTLIST_MODES)}, not {shortlist!r}")
    return shortlist


@contextmanager
def errors() -> Iterator[None]:
    """Errors the user can fix are one red line and exit status 2, never a traceback."""
    try:
        yield
    except ArtlensError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)  # text, not markup
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None


def progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)


@contextmanager
def phase_bar(description: str) -> Iterator[PhaseTick]:
    """One bar, of unknown length until the first tick, for one phase of a command."""
    with progress() as bars:
        task = bars.add_task(description, total=None)

        def tick(done: int, total: int, stage: str | None = None) -> None:
            bars.update(task, completed=done, total=total, **({"description": stage} if stage else {}))

        yield tick


def stage_ticker(bars: Progress) -> Callable[[str, int, int], None]:
    """A ``progress(stage, done, total)`` callback that draws one bar per stage, added when the stage starts."""
    tasks: dict[str, Any] = {}

    def tick(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    return tick


def warn_if_random(pretrained: bool) -> None:
    if not pretrained:
        console.print(Panel("model is random-init ([bold]pretrained: false[/bold]): global descriptors carry no"
                            " learned meaning; recognition relies on geometric verification",
                            style="yellow", title="warning"))


def json_line(obj: dict) -> None:
    """One JSON object per line on stdout, untouched by rich (titles may contain '[…]')."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, its folder made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))

"""Rich tables for the result objects the library returns (no logic, only presentation)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from yolodefect.data.convert import ConversionResult


def _notes_summary(console: Console, title: str, notes, colour: str, limit: int = 5) -> None:
    if not notes:
        return
    console.print(f"[{colour}]{len(notes)} {title}[/{colour}] (all listed in conversion.json)")
    for note in notes[:limit]:
        console.print(f"  {note.message}" if note.message.startswith(note.path) else f"  {note.path}: {note.message}",
                      highlight=False, soft_wrap=True)
    if len(notes) > limit:
        console.print(f"  ... and {len(notes) - limit} more")


def render_conversion(result: ConversionResult, console: Console) -> None:
    detected = " (detected)" if result.format_detected else ""
    console.print(f"Read [bold]{result.images_read}[/bold] images and [bold]{result.boxes_read}[/bold] boxes "
                  f"from {result.source} as [bold]{result.format}[/bold]{detected}.", highlight=False)
    console.print(f"Split: {result.split_mode}.", highlight=False)
    # Classes as rows: defect datasets have more classes than splits, and names stay readable.
    table = Table(title=f"{result.out}", title_justify="left")
    table.add_column("")
    for split in result.splits:
        table.add_column(split, justify="right")
    splits = list(result.splits.values())
    table.add_row("images", *(str(s.images) for s in splits))
    table.add_row("defect-free images", *(str(s.backgrounds) for s in splits))
    table.add_row("boxes", *(str(s.boxes) for s in splits), end_section=True)
    for name in result.class_names:
        table.add_row(name, *(str(s.boxes_per_class.get(name, 0)) for s in splits))
    console.print(table)
    _notes_summary(console, "files skipped", result.skipped, "red")
    _notes_summary(console, "warnings", result.warnings, "yellow")
    _notes_summary(console, "groups of identical images kept in one split", result.duplicates, "cyan", limit=3)
    console.print(f"Wrote {result.images_written} images, {result.boxes_written} boxes in {result.seconds:.1f} s. "
                  f"Next: [bold]yolodefect check {result.out}[/bold] then "
                  f"[bold]yolodefect train {result.out}[/bold]", highlight=False)

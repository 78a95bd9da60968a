"""The progress callback every long-running library function takes; the CLI draws it (console.progress_bar).

Library code reports and never draws, so a caller embedding yolodefect chooses its own display and
``--json`` output on stdout stays clean.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[str, int, int], None]
"""Called as (stage, done, total) while a long stage runs; the same stage name updates the same bar."""


def no_progress(stage: str, done: int, total: int) -> None:
    """The callback used when the caller passes none."""

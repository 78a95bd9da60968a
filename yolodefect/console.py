"""How the CLI talks to people: one red line for errors, progress bars, JSON on stdout."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from yolodefect.errors import UsageError, YoloDefectError

# Human output goes to stderr so that ``--json`` output on stdout stays parseable.
err_console = Console(stderr=True)
out_console = Console()


LOG_FORMATS = ("human", "json")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line (journald, Loki): time (ISO 8601 UTC), level, logger, message[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Escaped non-ASCII keeps each line valid JSON whatever the stderr encoding; a newline in a message
        # stays inside its JSON string, so one record is always one line.
        return json.dumps(entry, default=str)


def configure_logging(debug: bool, log_format: str = "human") -> None:
    """Logs on stderr: ``"human"`` (rich, for a terminal) or ``"json"`` (one JSON object per line)."""
    if log_format == "human":
        handler: logging.Handler = RichHandler(console=err_console, show_path=debug, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    elif log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLogFormatter())
    else:
        raise ValueError(f"unknown log format {log_format!r}; use one of: {', '.join(LOG_FORMATS)}")
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler], force=True)
    if not debug:
        # Ultralytics logs every step at INFO; our own messages are enough by default.
        logging.getLogger("ultralytics").setLevel(logging.WARNING)


def ultralytics_logs_to_stderr(stdout=None) -> None:
    """Point Ultralytics' log handler (it writes to stdout) at stderr, so stdout carries only data."""
    from ultralytics.utils import LOGGER

    for handler in LOGGER.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (stdout, sys.stdout, sys.__stdout__):
            handler.setStream(sys.stderr)


@contextlib.contextmanager
def stdout_reserved(enabled: bool) -> Iterator[None]:
    """With --json, stdout is for the JSON alone: Ultralytics' logs and progress bars go to stderr meanwhile."""
    if not enabled:
        yield
        return
    real = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        ultralytics_logs_to_stderr(real)
        yield


@contextlib.contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn library errors into one red line and an exit code (2: usage, 1: everything else)."""
    try:
        yield
    except typer.Exit:
        raise
    except UsageError as error:
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except YoloDefectError as error:
        if debug:
            raise
        err_console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt as error:  # Ctrl-C, or a Terminated (SIGTERM) that carries its own exit code
        err_console.print(f"[yellow]{escape(str(error)) or 'interrupted'}[/yellow]")
        raise typer.Exit(getattr(error, "exit_code", 130)) from None
    except Exception as error:  # a bug of ours or of a dependency: still no traceback unless asked
        if debug:
            raise
        err_console.print(f"[red]error:[/red] unexpected {type(error).__name__}: {escape(str(error))} "
                          "(run with --debug for the traceback)", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """A callback (stage, done, total) drawing one bar per stage on stderr."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield update


def default_of(owner: type | Callable, name: str):
    """The library's default for ``name``: a field of an options dataclass, or a parameter of a function.

    The CLI shows and uses these, so a default is written once, where the library defines it.
    """
    if dataclasses.is_dataclass(owner):
        for option in dataclasses.fields(owner):
            if option.name == name:
                if option.default is not dataclasses.MISSING:
                    return option.default
                if option.default_factory is not dataclasses.MISSING:
                    return option.default_factory()
                break
    else:
        parameter = inspect.signature(owner).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    raise KeyError(f"{getattr(owner, '__name__', owner)} has no default for {name!r}")


def _default(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_json(data) -> None:
    """Machine-readable output on stdout, nothing else on it."""
    print(json.dumps(data, indent=2, default=_default))

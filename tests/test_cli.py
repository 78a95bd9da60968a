"""CLI conventions every command keeps: help with examples, --json, one red line and exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yolodefect.cli import app

REPO_ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def command_names() -> list[str]:
    return sorted(command.name or command.callback.__name__ for command in app.registered_commands)


@pytest.mark.parametrize("name", command_names())
def test_every_command_has_help_with_an_example_and_a_readme_section(name):
    result = runner.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"^##+ .*`yolodefect {name}", readme, re.MULTILINE), f"README has no section for {name}"


def test_python_dash_m_works_and_prints_the_version():
    completed = subprocess.run([sys.executable, "-m", "yolodefect", "--version"], capture_output=True, text=True)
    assert completed.returncode == 0 and completed.stdout.startswith("yolodefect ")


def test_library_error_is_one_red_line_and_exit_code_1(tmp_path):
    result = runner.invoke(app, ["convert", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "does not exist" in lines[0]
    assert "Traceback" not in result.output


def test_usage_error_exits_2(tmp_path):
    (tmp_path / "src").mkdir()
    result = runner.invoke(app, ["convert", str(tmp_path / "src"), str(tmp_path / "out"), "--split", "0.9,0.9"])
    assert result.exit_code == 2
    assert "--split" in result.output


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "convert", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert result.exit_code == 1 and result.exception is not None


def test_synth_json_output_is_parseable_and_complete(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "data"), "--images", "20", "--size", "96", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images_written"] == 20
    assert set(report["splits"]) == {"train", "val", "test"}
    assert (tmp_path / "data" / "data.yaml").is_file()


def test_an_error_with_brackets_is_printed_whole(demo_data):
    # The red line is rich markup: a message's own "[x, y]" must not be taken for a style tag and vanish.
    from tests.conftest import DEMO_MODEL

    result = CliRunner().invoke(app, ["eval", str(DEMO_MODEL), str(demo_data), "--roi", "0,0 100,0 100"])
    assert result.exit_code == 2
    assert "the ROI must be a list of [x, y] points in frame pixels" in result.output

"""The README's CPU performance table is what bench/results says, not what someone typed."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_table():
    spec = importlib.util.spec_from_file_location("readme_table", ROOT / "bench" / "readme_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_matches_the_result_files():
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "readme_table.py"), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_changed_result_changes_the_table(tmp_path, monkeypatch):
    module = readme_table()
    results = tmp_path / "results"
    shutil.copytree(ROOT / "bench" / "results", results)
    train = json.loads((results / "train_neu.json").read_text(encoding="utf-8"))
    before = module.table()
    train["yolodefect"]["test"]["map50"] = 0.123
    (results / "train_neu.json").write_text(json.dumps(train), encoding="utf-8")
    monkeypatch.setattr(module, "RESULTS", results)
    after = module.table()
    assert after != before and "0.123" in after
    (results / "compare_neu.json").unlink(missing_ok=True)
    assert "| compare | - | not run: no result file |" in module.table()
    readme = module.README.read_text(encoding="utf-8")
    assert module.replace_block(readme, after) != readme  # --check would fail on the stale README

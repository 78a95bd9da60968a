"""Gated promotion (``yolodefect eval NEW --baseline OLD``): the new model replaces the old one only when, at the old
model's false-reject rate, it lets no more defective parts through, overall and in every class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tests.builders import detections
from tests.conftest import DEMO_MODEL
from tests.test_evaluate import write_dataset
from yolodefect.cli import app
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.evaluate import evaluate
from yolodefect.evaluation import GroundTruth
from yolodefect.evaluation.promotion import thresholds_at_false_reject_rate
from yolodefect.inference.thresholds_file import read_thresholds_yaml

NAMES = ["scratch", "dent"]
SCRATCH, DENT = 0, 1
# Four scratched parts, three dented ones, four good ones (one YOLO label line each: class cx cy w h).
LABELS = {**{f"s{i}": "0 0.5 0.5 0.4 0.4\n" for i in range(4)}, **{f"d{i}": "1 0.5 0.5 0.4 0.4\n" for i in range(3)},
          **{f"g{i}": "" for i in range(4)}}


class ScorePredictor:
    """A 'model' giving each part (by image stem) one box of a class at a confidence: {stem: (class_id, conf)}."""

    class_names = NAMES

    def __init__(self, scores: dict[str, tuple[int, float]]):
        self.scores = scores

    def __call__(self, images: list[Path]) -> list[Detections]:
        out = []
        for path in images:
            found = self.scores.get(path.stem)
            out.append(detections([[10, 5, 40, 30]], [found[1]], [found[0]]) if found else Detections.empty())
        return out


# The baseline: every defective part at 0.8 except d2 (0.05, below the good parts), good parts 0.1 and g0 at 0.6.
# At its thresholds (0.5 for both classes) it rejects 6 of 7 defective parts (d2 escapes) and 1 of 4 good ones (g0).
OLD = {**{f"s{i}": (SCRATCH, 0.8) for i in range(4)}, "d0": (DENT, 0.8), "d1": (DENT, 0.8), "d2": (DENT, 0.05),
       "g0": (SCRATCH, 0.6), "g1": (SCRATCH, 0.1), "g2": (SCRATCH, 0.1), "g3": (SCRATCH, 0.1)}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = write_dataset(tmp_path / "ds", LABELS)
    (tmp_path / "old").mkdir()
    # The baseline's operating point sits beside it, as eval --target-recall writes it.
    (tmp_path / "old" / "thresholds.yaml").write_text(yaml.safe_dump({"conf": {"scratch": 0.5, "dent": 0.5}}))
    return path


def gate(tmp_path: Path, data: Path, new: dict, **options):
    return evaluate(tmp_path / "new.pt", data, baseline=tmp_path / "old" / "best.pt", predictor=ScorePredictor(new),
                    baseline_predictor=ScorePredictor(OLD), plots=False, out_dir=tmp_path / "out", **options)


def test_a_model_with_lower_scores_but_the_same_ranking_is_promoted(tmp_path, data):
    # Every score halved: at the baseline's thresholds it would miss everything; at the baseline's false-reject
    # rate (1 of 4 good parts) its own thresholds reject exactly the same parts.
    new = {stem: (cls, conf / 2) for stem, (cls, conf) in OLD.items()}
    result = gate(tmp_path, data, new)
    p = result.promotion
    assert p is not None and p.verdict == "promote" and p.promote
    assert p.baseline_threshold_source == f"thresholds file {tmp_path / 'old' / 'thresholds.yaml'}"
    assert (p.defective, p.good) == (7, 4)
    assert (p.baseline_escapes, p.candidate_escapes, p.baseline_false_rejects, p.candidate_false_rejects) == (1, 1, 1, 1)
    assert [(r.name, r.defective, r.baseline_escapes, r.candidate_escapes) for r in p.per_class] == [
        ("scratch", 4, 0, 0), ("dent", 3, 1, 1)]
    # The new thresholds lie midway between g0 (0.3, the one good part it may reject) and the highest part
    # it passes (g1-g3: 0.05).
    assert p.candidate_thresholds == {"scratch": pytest.approx(0.175), "dent": pytest.approx(0.175)}
    assert result.metrics.decisions.escaped_parts == [str(data.parent / "images" / "val" / "d2.png")]
    # They are written for the new model to run with, and the JSON carries the verdict.
    assert read_thresholds_yaml(result.files["thresholds"]).conf["dent"] == pytest.approx(0.175)
    saved = json.loads(result.files["metrics"].read_text())
    assert saved["promotion"]["verdict"] == "promote"
    assert saved["promotion"]["candidate_escape_rate"] == pytest.approx(1 / 7)


def test_a_model_that_escapes_more_is_refused(tmp_path, data):
    new = {**OLD, "s3": (SCRATCH, 0.05)}  # one scratched part more scores like a good one
    p = gate(tmp_path, data, new).promotion
    assert p.verdict == "keep" and not p.promote
    assert (p.baseline_escapes, p.candidate_escapes) == (1, 2)
    scratch = next(r for r in p.per_class if r.name == "scratch")
    assert (scratch.baseline_escapes, scratch.candidate_escapes, scratch.worse) == (0, 1, True)
    assert any(reason.startswith("escape rate 28.6% (2 of 7) is higher than the baseline's 14.3% (1 of 7)")
               for reason in p.reasons)
    assert "class scratch: 1 of its 4 defective parts escape, the baseline's 0" in p.reasons


def test_escapes_are_compared_per_class_not_only_overall(tmp_path, data):
    # The new model catches the dent the old one missed but misses a scratch: overall equal (1 of 7), and still
    # refused, because scratches now escape that did not before.
    new = {**OLD, "d2": (DENT, 0.8), "s0": (SCRATCH, 0.05)}
    p = gate(tmp_path, data, new).promotion
    assert (p.baseline_escapes, p.candidate_escapes) == (1, 1)
    rows = {r.name: (r.baseline_escapes, r.candidate_escapes, r.worse) for r in p.per_class}
    assert rows == {"scratch": (0, 1, True), "dent": (1, 0, False)}
    assert p.verdict == "keep" and p.reasons == ["class scratch: 1 of its 4 defective parts escape, the baseline's 0"]


def test_escapes_are_compared_at_the_baseline_false_reject_rate(tmp_path, data):
    # The new model scores good part g1 above every defect, which spends the baseline's whole budget (1 false
    # reject of 4): it must pass g0 (0.6), so the two scratches it scores at 0.55 escape. Catching them would
    # reject 2 good parts of 4, which a lower escape rate at a higher false-reject rate does not excuse.
    new = {**OLD, "g1": (SCRATCH, 0.9), "s0": (SCRATCH, 0.55), "s1": (SCRATCH, 0.55)}
    p = gate(tmp_path, data, new).promotion
    assert p.candidate_false_rejects == 1 and p.candidate_thresholds["scratch"] == pytest.approx(0.7)
    assert (p.baseline_escapes, p.candidate_escapes) == (1, 3) and p.verdict == "keep"
    # A better one at the same false-reject rate is promoted: it catches d2 without a false reject more.
    result = evaluate(tmp_path / "new.pt", data, baseline=tmp_path / "old" / "best.pt", plots=False,
                      predictor=ScorePredictor({**OLD, "d2": (DENT, 0.7)}), baseline_predictor=ScorePredictor(OLD))
    assert result.promotion.verdict == "promote" and result.promotion.candidate_escapes == 0


def test_the_baseline_operating_point_can_be_chosen_for_a_recall(tmp_path, data):
    (tmp_path / "old" / "thresholds.yaml").unlink()
    # Recall 1.0 for the baseline needs a threshold at d2's 0.05: every good part is rejected too.
    result = gate(tmp_path, data, OLD, target_recall=1.0)
    p = result.promotion
    assert p.baseline_threshold_source == "chosen on val for recall >= 1.0"
    assert (p.baseline_escapes, p.baseline_false_rejects) == (0, 4)
    assert (p.candidate_escapes, p.candidate_false_rejects) == (0, 4) and p.verdict == "promote"


def test_a_split_without_good_parts_cannot_gate(tmp_path):
    data = write_dataset(tmp_path / "ds", {"s0": "0 0.5 0.5 0.4 0.4\n"})
    with pytest.raises(UsageError, match="no defect-free images"):
        evaluate(tmp_path / "new.pt", data, baseline=tmp_path / "old.pt", conf=0.5, predictor=ScorePredictor(OLD),
                 baseline_predictor=ScorePredictor(OLD), plots=False)


def test_thresholds_at_a_false_reject_rate_exactly():
    def part(name, classes):
        return GroundTruth(Path(f"{name}.png"), (100, 100), np.array([[0, 0, 10, 10]] * len(classes), dtype=float),
                           classes)

    truth = [part("s", [SCRATCH]), part("d", [DENT]), part("g1", []), part("g2", [])]
    scores = [detections([[0, 0, 9, 9]], [c], [k]) for k, c in ((SCRATCH, 0.9), (DENT, 0.2), (DENT, 0.4), (SCRATCH, 0.1))]
    # No false reject allowed: one threshold must stay above g1's 0.4, so d (0.2) escapes...
    chosen = thresholds_at_false_reject_rate(truth, scores, NAMES, max_false_reject_rate=0.0)
    assert chosen.conf == {"scratch": pytest.approx(0.65), "dent": pytest.approx(0.65)}
    assert (chosen.escape_rate, chosen.false_reject_rate) == (0.5, 0.0)
    # ... one per class cannot help either: g1's false alarm is a dent above d's.
    per_class = thresholds_at_false_reject_rate(truth, scores, NAMES, max_false_reject_rate=0.0, per_class=True)
    assert per_class.escape_rate == 0.5 and per_class.false_reject_rate == 0.0
    # Half the good parts may be rejected: 0.2 catches d and rejects g1 only.
    half = thresholds_at_false_reject_rate(truth, scores, NAMES, max_false_reject_rate=0.5)
    assert (half.escape_rate, half.false_reject_rate) == (0.0, 0.5)
    assert half.conf["dent"] == pytest.approx(0.15)  # midway between 0.2 and g2's 0.1, the highest part passed


# --- through the CLI, with real models -------------------------------------------------------------------------


def _edited_demo_model(path: Path, edit) -> Path:
    """A copy of the shipped demo checkpoint with its class-score layers changed by ``edit(conv)``: a real model file."""
    import torch

    checkpoint = torch.load(DEMO_MODEL, map_location="cpu", weights_only=False)
    for branch in checkpoint["model"].model[-1].cv3:
        edit(branch[-1])
    checkpoint["ema"] = None
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def steel(tmp_path_factory) -> Path:
    """Generated steel parts named with the demo model's classes, with good and defective parts in val."""
    from yolodefect.data.synth_dataset import SynthOptions, synthesize
    from yolodefect.inference.model_file import read_model_file

    out = tmp_path_factory.mktemp("steel") / "data"
    synthesize(out, SynthOptions(kind="steel", images=20, size_wh=(96, 96), background_fraction=0.4,
                                 split="0.3,0.6,0.1"))
    config = yaml.safe_load((out / "data.yaml").read_text())
    names = read_model_file(DEMO_MODEL).class_names
    config["names"], config["nc"] = names, len(names)
    (out / "data.yaml").write_text(yaml.safe_dump(config))
    return out


def test_cli_exit_code_gates_on_the_verdict(tmp_path, steel):
    import torch

    def blind(conv: torch.nn.Conv2d) -> None:  # the same score for every class everywhere: it cannot tell parts apart
        conv.weight.data.zero_()
        conv.bias.data.fill_(-1.0)

    def shy(conv: torch.nn.Conv2d) -> None:  # every class logit 1 lower: other scores, same ranking
        conv.bias.data -= 1.0

    runner = CliRunner()
    common = [str(steel), "--baseline", str(DEMO_MODEL), "--target-recall", "0.9", "--json"]
    refused = runner.invoke(app, ["eval", str(_edited_demo_model(tmp_path / "blind.pt", blind)), *common,
                                  "--out", str(tmp_path / "a")])
    assert refused.exit_code == 1, refused.output
    report = json.loads(refused.stdout)["promotion"]
    assert report["verdict"] == "keep" and report["candidate_escapes"] > report["baseline_escapes"]
    assert any(row["worse"] for row in report["per_class"])

    promoted = runner.invoke(app, ["eval", str(_edited_demo_model(tmp_path / "shy.pt", shy)), *common,
                                   "--out", str(tmp_path / "b")])
    assert promoted.exit_code == 0, promoted.output
    report = json.loads(promoted.stdout)["promotion"]
    assert report["verdict"] == "promote"
    assert report["candidate_escapes"] <= report["baseline_escapes"]
    assert report["candidate_false_rejects"] <= report["baseline_false_rejects"]
    assert (tmp_path / "b" / "thresholds.yaml").is_file()

"""`yolodefect.train` on DeepPCB trainval at 640 px on a lent GPU (one H200): the full-scale detector of
bench/results/line_gpu.json. Run there as

    yolodefect convert ../shared/datasets/deeppcb .gpu/pcb --format deeppcb --copy   # here; test split removed
    python3 bench/train_pcb_gpu.py OUT 0.068 0      # there: OUT, time budget in hours, device

(the dataset and the Ultralytics wheels travel in the ignored folder .gpu/). Writes OUT/best.pt and, when our
evaluator can run there, OUT/training.json; else the weights and Ultralytics' results.csv only (the device
image lacks faster_coco_eval) and the model is scored here with `yolodefect eval`.

Two patches for the bare device image, neither changing what is trained: polars is not installed there (Ultralytics
reads its own results.csv with it when saving a checkpoint; a csv reader gives the same dict), and the AMP check
would try to download yolo26n.pt (no network there).
"""

import csv
import json
import sys
import time
from pathlib import Path

from ultralytics.engine import trainer as ul_trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _read_results_csv(self):
    if not self.csv.exists():
        return {}
    with open(self.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = {}
    for row in rows:
        for key, value in row.items():
            out.setdefault(key.strip(), []).append(float(value))
    return out


ul_trainer.BaseTrainer.read_results_csv = _read_results_csv
ul_trainer.check_amp = lambda model: True

from yolodefect.train import TrainOptions, train  # noqa: E402

out = Path(sys.argv[1])
hours = float(sys.argv[2])
device = sys.argv[3] if len(sys.argv) > 3 else "0"
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
root = Path(__file__).resolve().parents[1]
options = TrainOptions(model=str(root / "weights" / "yolodefect-demo.pt"), epochs=300, imgsz=640,
                       batch=extra.pop("batch", 32), workers=extra.pop("workers", 14), device=device,
                       patience=300, project=Path("/tmp/runs"), name="pcb", plots=False,
                       overrides={"time": hours, "cache": "ram", **extra})
started = time.perf_counter()
out.mkdir(parents=True, exist_ok=True)
try:
    result = train(root / ".gpu" / "pcb", options)
except Exception as exc:  # our own evaluation needs faster_coco_eval, absent there: keep the weights regardless
    import shutil
    print(f"after training: {type(exc).__name__}: {exc}")
    for name in ("weights/best.pt", "results.csv", "args.yaml"):
        if (Path("/tmp/runs/pcb") / name).exists():
            shutil.copy(Path("/tmp/runs/pcb") / name, out / Path(name).name)
    (out / "seconds.txt").write_text(str(round(time.perf_counter() - started, 1)))
    sys.exit(0)
seconds = time.perf_counter() - started
metrics = result.evaluation.metrics
record = {
    "source": "trained on the lent GPU (yolodefect.train, .gpu/train_pcb.py)",
    "from": "weights/yolodefect-demo.pt", "data": "DeepPCB trainval (886 train / 114 val, yolodefect convert)",
    "imgsz": 640, "time_budget_h": hours, "seconds": round(seconds, 1),
    "val_map50": metrics.map50, "val_map50_95": metrics.map50_95,
    "per_class_ap50": {c.name: c.ap50 for c in metrics.per_class},
    "presets": [{"key": p.key, "value": p.value, "reason": p.reason} for p in result.presets],
    "arguments": {k: str(v) for k, v in result.arguments.items()},
}
import torch  # noqa: E402

record["device_name"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
out.mkdir(parents=True, exist_ok=True)
(out / "best.pt").write_bytes(Path(result.best_model).read_bytes())
(out / "training.json").write_text(json.dumps(record, indent=2, default=str))
results_csv = Path(result.run_dir) / "results.csv"
if results_csv.exists():
    (out / "results.csv").write_bytes(results_csv.read_bytes())
print(json.dumps({k: record[k] for k in ("seconds", "val_map50", "val_map50_95", "per_class_ap50")}))

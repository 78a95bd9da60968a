"""NEU-DET: YOLO vs SSD with `yolodefect compare`, CPU protocol.

    python bench/compare_neu.py                              # yolo11n.yaml at 256 px vs ssdlite320 at 320 px, 30 epochs
    python bench/compare_neu.py --data /tmp/bench-neu/neu-yolo --work /tmp/compare-neu
    python bench/compare_neu.py --epochs 1 --fraction 0.05 --name compare_neu_smoke   # does it run?

Converts ../shared/datasets/neu-det with our converter (seeded split), unless --data names an
already converted dataset. Both detectors train from scratch by default (no weights can be
downloaded here) for the same number of epochs on the same machine, both are scored by
yolodefect's evaluator on the test split, both are timed at batch 1 in PyTorch and ONNX Runtime.
Writes bench/results/NAME.json. --fraction keeps a seeded share of every split, for smoke runs only.

Published NEU-DET figures, for scale only (other splits, 640 px, pretrained): SSD300 about 0.64
mAP50, YOLOv8n about 0.77.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import SHARED_DIR, machine_info, machine_line, write_result  # noqa: E402

PUBLISHED = {"ssd300_map50": 0.64, "yolov8n_map50": 0.77, "note": "published NEU-DET figures, for scale only"}


def subset(data: Path, out: Path, fraction: float, seed: int) -> Path:
    """A seeded ``fraction`` of every split of ``data``, as symlinks, with its own data.yaml."""
    import yaml

    from yolodefect.data.yolo_dataset import label_path_for, load_data_config

    config = load_data_config(data)
    lines = [f"path: {out}"]
    for split in config.split_dirs:
        images = config.images(split)
        keep = sorted(random.Random(seed).sample(images, max(2, round(len(images) * fraction))))
        for folder in ("images", "labels"):
            (out / folder / split).mkdir(parents=True, exist_ok=True)
        for image in keep:
            (out / "images" / split / image.name).symlink_to(image)
            label = label_path_for(image)
            if label.exists():
                (out / "labels" / split / label.name).symlink_to(label)
        lines.append(f"{split}: images/{split}")
    lines.append("names: " + yaml.safe_dump(config.class_names, default_flow_style=True).strip())
    (out / "data.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="An already converted NEU-DET (data.yaml or folder).")
    parser.add_argument("--yolo", default="yolo11n.yaml")
    parser.add_argument("--yolo-imgsz", type=int, default=256)
    parser.add_argument("--ssd", default="ssdlite320", choices=["ssdlite320", "ssd300"])
    parser.add_argument("--ssd-imgsz", type=int, default=None, help="Default: the SSD's native size.")
    parser.add_argument("--ssd-backbone-weights", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--time-budget", type=float, default=None, help="Minutes per model instead of epochs.")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="0.8,0.1,0.1")
    parser.add_argument("--fraction", type=float, default=1.0, help="Keep this share of each split (smoke runs).")
    parser.add_argument("--latency-runs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None,
                        help="Threads for latency (default: torch's); on a busy machine 1 gives steadier figures.")
    parser.add_argument("--name", default="compare_neu")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the dataset and runs (default: a temp "
                                                                "dir); rerun with the same one to resume.")
    args = parser.parse_args()
    from yolodefect.compare import CompareOptions, compare
    from yolodefect.data.convert import ConvertOptions, convert

    info = machine_info()
    print(machine_line(info))
    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-compare-neu-"))).resolve()
    data = args.data
    if data is None:
        if not (SHARED_DIR / "datasets" / "neu-det").is_dir():
            print(f"skipped: NEU-DET not found under {SHARED_DIR} (or give --data)")
            return 0
        data = work / "neu-yolo"
        if not (data / "data.yaml").exists():
            convert(SHARED_DIR / "datasets" / "neu-det", data, ConvertOptions(format="voc", split=args.split,
                                                                             seed=args.seed))
    if args.fraction < 1.0:
        target = work / f"neu-{args.fraction:g}"
        data = target if (target / "data.yaml").exists() else subset(Path(data), target, args.fraction, args.seed)

    options = CompareOptions(
        out=work / "compare", yolo=args.yolo, ssd=args.ssd, epochs=args.epochs, time_budget_min=args.time_budget,
        yolo_imgsz=args.yolo_imgsz, ssd_imgsz=args.ssd_imgsz, ssd_backbone_weights=args.ssd_backbone_weights,
        batch=args.batch, device="cpu", split="test", seed=args.seed, latency_runs=args.latency_runs,
        threads=args.threads,
    )
    started = time.perf_counter()
    result = compare(data, options)
    seconds = time.perf_counter() - started
    ssd = result.side("ssd")
    history = [asdict(record) for record in _ssd_history(ssd.best_model.parent)]
    payload = {
        "benchmark": args.name, "protocol": "CPU", "machine": info, "data": str(data), "fraction": args.fraction,
        "split": {"fractions": args.split, "seed": args.seed},
        "budget": result.budget, "yolo_imgsz": args.yolo_imgsz, "ssd": args.ssd, "seconds_total": round(seconds, 1),
        "ssd_epoch_seconds": [round(r["train_seconds"] + r["val_seconds"], 1) for r in history],
        "published_for_scale": PUBLISHED,
        "result": result.to_dict(),
    }
    path = write_result(args.name, payload)
    header, rows = result.table()
    width = max(len(row[0]) for row in rows)
    print(f"{'':{width}}  " + "  ".join(f"{h:>22}" for h in header[1:]))
    for row in rows:
        print(f"{row[0]:{width}}  " + "  ".join(f"{cell:>22}" for cell in row[1:]))
    print(result.verdict)
    print(f"total {seconds / 60:.1f} min; wrote {path} and {result.files['markdown']}")
    return 0


def _ssd_history(run_dir: Path):
    from yolodefect.compare.ssd_train import DONE_MARKER, SSDTrainResult

    marker = run_dir / DONE_MARKER
    return SSDTrainResult.from_dict(json.loads(marker.read_text())["result"]).history if marker.exists() else []


if __name__ == "__main__":
    raise SystemExit(main())

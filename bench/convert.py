"""Conversion speed on the real datasets: NEU-DET (VOC, link mode) and DeepPCB (copy mode).

    python bench/convert.py [--repeats 3] [--output PATH]

Writes bench/results/convert.json (or --output). Needs ../shared (skips with a message when absent).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import SHARED_DIR, machine_info, machine_line, median, write_result  # noqa: E402

from yolodefect.data.convert import ConvertOptions, convert  # noqa: E402

CASES = {
    "neu-det (voc, link)": ("neu-det", ConvertOptions(format="voc", transfer="link")),
    "deeppcb (deeppcb, copy)": ("deeppcb", ConvertOptions(format="deeppcb", transfer="copy")),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None, help="default: bench/results/convert.json")
    args = parser.parse_args()
    if not (SHARED_DIR / "datasets").is_dir():
        print(f"skipped: the real datasets are not at {SHARED_DIR}")
        return 0
    info = machine_info()
    print(machine_line(info))
    results = {}
    for label, (folder, options) in CASES.items():
        seconds, result = [], None
        for _ in range(args.repeats):
            work = Path(tempfile.mkdtemp())
            started = time.perf_counter()
            result = convert(SHARED_DIR / "datasets" / folder, work / "out", options)
            seconds.append(time.perf_counter() - started)
            shutil.rmtree(work)
        med = median(seconds)
        results[label] = {
            "images": result.images_written, "boxes": result.boxes_written,
            "seconds_median": round(med, 3), "seconds_all": [round(s, 3) for s in seconds],
            "images_per_second_median": round(result.images_written / med, 1),
            "split_mode": result.split_mode,
        }
        print(f"{label}: {result.images_written} images, {result.boxes_written} boxes, "
              f"median {med:.2f} s ({result.images_written / med:.0f} images/s) over {args.repeats} runs")
    path = write_result("convert", {"benchmark": "convert", "machine": info, "machine_line": machine_line(info),
                                    "results": results}, args.output)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A station with several cameras and its web server, run as a child process by tests/test_web_browser.py.

    python -m tests.station_child PORT MQTT_URL OUT_DIR FPS_CAP VIDEO [VIDEO ...]

It is ``yolodefect watch --source VIDEO ... --serve 127.0.0.1:PORT`` with a fake model: each video's
ground truth lies beside it (``<stem>.truth.json``, as ``yolodefect demo`` writes it) and the detector
recognises the generated frames by content, so the test knows every reject without minutes of a real
model. Camera names are the videos' stems; events go to MQTT_URL and OUT_DIR/events.jsonl, evidence to
OUT_DIR/evidence, the outbox is OUT_DIR/outbox.sqlite. SIGTERM/SIGINT stop it as they stop the CLI; the
summary is printed to stdout as one JSON line. This script writes no file itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.test_watch_cameras import FrameContentDetector
from yolodefect.data.conveyor import ConveyorTruth
from yolodefect.stream.options import WatchOptions
from yolodefect.stream.watch import watch

FLUSH_TIMEOUT_S = 3.0  # a stopped broker keeps its events in the outbox; the test waits this long plus margin


def truth_path(video: Path) -> Path:
    return video.with_name(video.stem + ".truth.json")


def main(argv: list[str]) -> int:
    port, mqtt_url, out, fps_cap, *videos = argv
    out_dir = Path(out)
    truths = [ConveyorTruth.from_dict(json.loads(truth_path(Path(v)).read_text())) for v in videos]
    options = WatchOptions(
        cameras=tuple({"name": Path(v).stem, "source": v} for v in videos),
        serve=f"127.0.0.1:{port}",
        sinks=(mqtt_url, str(out_dir / "events.jsonl")),
        evidence_dir=out_dir / "evidence",
        outbox=out_dir / "outbox.sqlite",
        fps_cap=float(fps_cap),
        emit_pass=True,  # good parts keep sending after the broker stops: the outbox must keep those
        flush_timeout_s=FLUSH_TIMEOUT_S,
    )
    summary = watch(options, detector=FrameContentDetector(*truths), install_signal_handlers=True)
    print(json.dumps(summary.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

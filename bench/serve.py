"""What ``watch --serve`` and several cameras cost the station, on this machine's CPU.

    python bench/serve.py [--model weights/yolodefect-demo.pt] [--imgsz 320] [--frames 600] [--rounds 5]
                          [--name serve]

Rows (same model, same videos, same cores):

* serve: rounds of ``watch`` on one conveyor video, without ``--serve``; with ``--serve`` and one client
  reading the page's live streams (MJPEG view and server-sent events) as a browser on another device would;
  and with ``--serve`` and a headless Chromium (Debian's) on the page, running on the station's own 2 cores.
  Per round the ratio of each served run's fps (the station's own, over its frames' time) to the unserved
  one's; the judged figure is the median over rounds of the client ratio (target >= 0.97: what serving costs
  the station); the Chromium ratio adds the browser's own rendering, which a real line runs elsewhere.
  Rounds rotate which run goes first.
* cameras: two videos in one station (``--source a --source b``: one model loaded once, one thread per
  camera) against two separate stations (two processes, one video each) started together. Total parts
  decided per second of wall time (process start to exit, model loading included: that is what a second
  station costs) and p95 of the events' capture-to-outbox latency, over --rounds paired rounds.
* batching: the model on the frames of two cameras as one batch of 2 against two calls of 1 (median ms
  per pair over 50 pairs): what the station's SharedDetector gains by batching frames that wait together.

Prints a machine line and writes bench/results/NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, machine_line, median, write_result

ROOT = Path(__file__).resolve().parents[1]
TARGET_SERVE_FPS_RATIO = 0.97
BELT_LEAD_IN_FRAMES = 35  # the station learns the empty belt from its first 30 frames


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def video(path: Path, seed: int, frames: int) -> Path:
    from yolodefect.data.conveyor import write_conveyor_video

    # Parts 160 px wide with 160 px gaps at 8 px per frame: one part every 40 frames.
    parts = max(2, (frames - BELT_LEAD_IN_FRAMES) // 40)
    return write_conveyor_video(path, parts=parts, defective=0.3, seed=seed, lead_in_frames=BELT_LEAD_IN_FRAMES).path


def watch_args(model: Path, imgsz: int, folder: Path, sources: list[Path]) -> list[str]:
    args = [sys.executable, "-m", "yolodefect", "watch", "--model", str(model), "--imgsz", str(imgsz), "--emit-pass",
            "--sink", str(folder / "events.jsonl"), "--outbox", str(folder / "outbox.sqlite"),
            "--evidence", str(folder / "evidence"), "--json"]
    for source in sources:
        args += ["--source", str(source)]
    return args


def latencies(events_file: Path) -> list[float]:
    return [json.loads(line)["latency_ms"] for line in events_file.read_text().splitlines() if line.strip()]


def station_run(args: list[str], folder: Path) -> dict:
    """One ``yolodefect watch`` process: its JSON summary and wall time."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "2"})
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"watch failed ({done.returncode}): {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    return {"wall_s": wall_s, "parts": summary["parts"], "fps": summary["fps"], "frames": summary["frames"],
            "latency_ms": latencies(folder / "events.jsonl")}


def serve_round(model: Path, imgsz: int, clip: Path, work: Path, browser, order: list[str]) -> dict:
    """One station run per variant, in the given order: alone (no --serve), client (--serve and a client that
    takes the page's streams, MJPEG and server-sent events, as a browser elsewhere on the network would) and
    chromium (--serve and a headless Chromium on this machine, sharing the station's cores)."""
    from yolodefect.stream.options import WatchOptions
    from yolodefect.stream.watch import watch

    results = {}
    for variant in order:
        folder = Path(tempfile.mkdtemp(dir=work))
        port = free_port()
        options = WatchOptions(source=str(clip), model=model, imgsz=imgsz, emit_pass=True,
                               sinks=(str(folder / "events.jsonl"),), outbox=folder / "outbox.sqlite",
                               evidence_dir=folder / "evidence",
                               serve=None if variant == "alone" else f"127.0.0.1:{port}")
        watcher = None
        if variant == "chromium":
            # The page opens as soon as the server listens (it starts before the first frame).
            watcher = threading.Thread(target=open_page, args=(browser, port), daemon=True)
        elif variant == "client":
            watcher = threading.Thread(target=stream_client, args=(port, clip.stem), daemon=True)
        if watcher is not None:
            watcher.start()
        summary = watch(options)
        if watcher is not None:
            watcher.join(timeout=5)
        results[variant] = summary.stats.fps
        shutil.rmtree(folder, ignore_errors=True)
    return results


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    """Until the station's server takes connections (it starts before the first frame)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not listening(port):
        time.sleep(0.05)


def stream_client(port: int, camera: str) -> None:
    """What a page elsewhere costs the station: the live MJPEG and the server-sent events, read to the end."""
    import urllib.request

    def read(path: str) -> None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
                while response.read(65536):
                    pass
        except OSError:
            pass  # the station stopped and took the server with it

    wait_listening(port)
    readers = [threading.Thread(target=read, args=(path,), daemon=True)
               for path in (f"/api/cameras/{camera}/stream.mjpeg", "/api/stream")]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()


def open_page(browser, port: int) -> None:
    """Keep the page open (live view, SSE) while the station runs; it ends when the server goes away."""
    wait_listening(port)
    browser.put(port)


class PageDriver:
    """A headless Chromium on its own thread (Playwright's sync API stays on the thread that started it)."""

    def __init__(self):
        import queue

        self.ports: queue.Queue = queue.Queue()
        self.loaded: list[float] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def put(self, port: int) -> None:
        self.ports.put(port)

    def _run(self) -> None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                                 args=["--no-sandbox", "--disable-gpu"])
            while True:
                port = self.ports.get()
                if port is None:
                    break
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                started = time.perf_counter()
                try:
                    page.goto(f"http://127.0.0.1:{port}/", timeout=10_000)
                    self.loaded.append(time.perf_counter() - started)
                    # Stay on the page (MJPEG + SSE flowing) until the station stops and the server goes away.
                    while listening(port):
                        page.wait_for_timeout(250)
                except Exception as exc:  # a page that fails is reported, the station's numbers still count
                    print(f"page: {exc}", file=sys.stderr)
                finally:
                    page.close()
            browser.close()

    def close(self) -> None:
        self.ports.put(None)
        self.thread.join(timeout=10)


def batching(model: Path, imgsz: int, clip: Path, pairs: int = 50) -> dict:
    """Two frames as one batch against two calls, with the runner every command uses."""
    import cv2

    from yolodefect.inference.runner import PredictSettings, UltralyticsRunner

    runner = UltralyticsRunner(model, PredictSettings(conf=0.25), imgsz=imgsz)
    arguments = {**runner.settings.arguments(runner.imgsz), "batch": 2}
    capture = cv2.VideoCapture(str(clip))
    frames = []
    while len(frames) < 2 * pairs:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    for image in frames[:4]:
        runner.predict_frame(image)
    runner.yolo.predict(frames[:2], **arguments)
    single, batched = [], []
    for i in range(0, len(frames) - 1, 2):
        started = time.perf_counter()
        runner.predict_frame(frames[i])
        runner.predict_frame(frames[i + 1])
        single.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        runner.yolo.predict(frames[i:i + 2], **arguments)
        batched.append((time.perf_counter() - started) * 1000)
    return {"pairs": len(single), "two_calls_ms_median": median(single), "one_batch_of_2_ms_median": median(batched),
            "batch_speedup": median(single) / median(batched)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "weights" / "yolodefect-demo.pt")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--frames", type=int, default=600, help="frames per video")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip", nargs="*", default=[], choices=["serve", "cameras", "batching"])
    parser.add_argument("--name", default="serve")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    info = machine_info()
    print(machine_line(info))
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    clips = [video(work / "a.mp4", 7, args.frames), video(work / "b.mp4", 8, args.frames)]
    payload: dict = {"benchmark": "serve", "machine": info, "model": str(args.model), "imgsz": args.imgsz,
                     "frames_per_video": args.frames, "rounds": args.rounds}

    if "serve" not in args.skip:
        driver = PageDriver()
        rounds = []
        variants = ["alone", "client", "chromium"]
        for index in range(args.rounds):
            order = variants[index % 3:] + variants[:index % 3]  # each variant goes first in turn
            result = serve_round(args.model, args.imgsz, clips[0], work, driver, order)
            result["client_ratio"] = result["client"] / result["alone"]
            result["chromium_ratio"] = result["chromium"] / result["alone"]
            rounds.append(result)
            print(f"serve round {index + 1}: alone {result['alone']:.1f} fps, page client {result['client']:.1f} "
                  f"fps (ratio {result['client_ratio']:.3f}), chromium on the same cores {result['chromium']:.1f} "
                  f"fps (ratio {result['chromium_ratio']:.3f})", flush=True)
        driver.close()
        ratio = median([r["client_ratio"] for r in rounds])
        payload["serve"] = {"rounds": rounds, "fps_ratio_median": ratio,
                            "fps_ratio_chromium_same_cores_median": median([r["chromium_ratio"] for r in rounds]),
                            "fps_alone_median": median([r["alone"] for r in rounds]),
                            "fps_client_median": median([r["client"] for r in rounds]),
                            "fps_chromium_median": median([r["chromium"] for r in rounds]),
                            "page_loads": len(driver.loaded), "target": TARGET_SERVE_FPS_RATIO,
                            "target_met": ratio >= TARGET_SERVE_FPS_RATIO}

    if "cameras" not in args.skip:
        rounds = []
        for index in range(args.rounds):
            folder = Path(tempfile.mkdtemp(dir=work))
            one = station_run(watch_args(args.model, args.imgsz, folder / "one", clips), folder / "one")
            started = time.perf_counter()
            with subprocess.Popen(watch_args(args.model, args.imgsz, folder / "a", clips[:1]), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) as first, \
                    subprocess.Popen(watch_args(args.model, args.imgsz, folder / "b", clips[1:]),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as second:
                outs = [first.communicate(), second.communicate()]
            wall_s = time.perf_counter() - started
            if first.returncode or second.returncode:
                raise RuntimeError(f"separate stations failed: {outs[0][1][-1000:]} {outs[1][1][-1000:]}")
            separate_parts = sum(json.loads(out)["parts"] for out, _ in outs)
            separate_latency = latencies(folder / "a" / "events.jsonl") + latencies(folder / "b" / "events.jsonl")
            row = {"one_station": {"parts": one["parts"], "wall_s": one["wall_s"],
                                   "parts_per_s": one["parts"] / one["wall_s"],
                                   "event_latency_p95_ms": float(np.percentile(one["latency_ms"], 95))},
                   "two_stations": {"parts": separate_parts, "wall_s": wall_s, "parts_per_s": separate_parts / wall_s,
                                    "event_latency_p95_ms": float(np.percentile(separate_latency, 95))}}
            rounds.append(row)
            print(f"cameras round {index + 1}: one station {row['one_station']['parts_per_s']:.2f} parts/s "
                  f"p95 {row['one_station']['event_latency_p95_ms']:.0f} ms; two stations "
                  f"{row['two_stations']['parts_per_s']:.2f} parts/s p95 "
                  f"{row['two_stations']['event_latency_p95_ms']:.0f} ms", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
        payload["cameras"] = {
            "rounds": rounds,
            "one_station_parts_per_s_median": median([r["one_station"]["parts_per_s"] for r in rounds]),
            "two_stations_parts_per_s_median": median([r["two_stations"]["parts_per_s"] for r in rounds]),
            "one_station_p95_ms_median": median([r["one_station"]["event_latency_p95_ms"] for r in rounds]),
            "two_stations_p95_ms_median": median([r["two_stations"]["event_latency_p95_ms"] for r in rounds]),
            "throughput_ratio_median": median([r["one_station"]["parts_per_s"] / r["two_stations"]["parts_per_s"]
                                               for r in rounds]),
        }

    if "batching" not in args.skip:
        payload["batching"] = batching(args.model, args.imgsz, clips[0])
        print(f"batching: two calls {payload['batching']['two_calls_ms_median']:.1f} ms, one batch of 2 "
              f"{payload['batching']['one_batch_of_2_ms_median']:.1f} ms", flush=True)

    path = write_result(args.name, payload, args.output)
    line = {"benchmark": "serve", **{k: payload[k].get(m) for k, m in (
        ("serve", "fps_ratio_median"), ("cameras", "throughput_ratio_median"), ("batching", "batch_speedup"))
        if k in payload}}
    print(json.dumps(line))
    print(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

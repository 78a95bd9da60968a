"""Rich tables for the result objects the library returns (no logic, only presentation)."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing the results' modules would load matplotlib for every command
    from yolodefect.anomaly.evaluate import AnomalyEvalResult
    from yolodefect.data.check import CheckReport
    from yolodefect.data.convert import ConversionResult
    from yolodefect.data.review_merge import MergeResult
    from yolodefect.evaluate import EvalResult
    from yolodefect.evaluation.metrics import EvalMetrics
    from yolodefect.stream.stats import WatchStats, WatchSummary
    from yolodefect.train import TrainResult


def _notes_summary(console: Console, title: str, notes, colour: str, limit: int = 5,
                   listed_in: str = "conversion.json") -> None:
    if not notes:
        return
    console.print(f"[{colour}]{len(notes)} {title}[/{colour}] (all listed in {listed_in})")
    for note in notes[:limit]:
        console.print(f"  {note.message}" if note.message.startswith(note.path) else f"  {note.path}: {note.message}",
                      highlight=False, soft_wrap=True)
    if len(notes) > limit:
        console.print(f"  ... and {len(notes) - limit} more")


def render_conversion(result: ConversionResult, console: Console) -> None:
    detected = " (detected)" if result.format_detected else ""
    console.print(f"Read [bold]{result.images_read}[/bold] images and [bold]{result.boxes_read}[/bold] boxes "
                  f"from {result.source} as [bold]{result.format}[/bold]{detected}.", highlight=False)
    console.print(f"Split: {result.split_mode}.", highlight=False)
    # Classes as rows: defect datasets have more classes than splits, and names stay readable.
    table = Table(title=f"{result.out}", title_justify="left")
    table.add_column("")
    for split in result.splits:
        table.add_column(split, justify="right")
    splits = list(result.splits.values())
    table.add_row("images", *(str(s.images) for s in splits))
    table.add_row("defect-free images", *(str(s.backgrounds) for s in splits))
    table.add_row("boxes", *(str(s.boxes) for s in splits), end_section=True)
    for name in result.class_names:
        table.add_row(name, *(str(s.boxes_per_class.get(name, 0)) for s in splits))
    console.print(table)
    _notes_summary(console, "files skipped", result.skipped, "red")
    _notes_summary(console, "warnings", result.warnings, "yellow")
    if result.warning_counts:
        console.print("  counted: " + ", ".join(f"{count} {kind.replace('_', ' ')}"
                                                for kind, count in result.warning_counts.items()), highlight=False)
    _notes_summary(console, "groups of identical images kept in one split", result.duplicates, "cyan", limit=3)
    console.print(f"Wrote {result.images_written} images, {result.boxes_written} boxes in {result.seconds:.1f} s. "
                  f"Next: [bold]yolodefect check {result.out}[/bold] then "
                  f"[bold]yolodefect train {result.out}[/bold]", highlight=False)


def render_check(report: CheckReport, console: Console, *, limit: int = 15) -> None:
    table = Table(title=f"{report.data}", title_justify="left")
    table.add_column("")
    for split in report.splits:
        table.add_column(split, justify="right")
    stats = list(report.splits.values())
    table.add_row("images", *(str(s.images) for s in stats))
    table.add_row("defect-free images", *(f"{s.background_images} ({s.background_share:.0%})" for s in stats))
    table.add_row("boxes", *(str(s.instances) for s in stats), end_section=True)
    for name in report.class_names:
        table.add_row(name, *(str(s.class_instances.get(name, 0)) for s in stats))
    console.print(table)
    if report.imbalance_ratio is not None:
        ratio = "a class has no train boxes" if report.imbalance_ratio == float("inf") else f"{report.imbalance_ratio:.1f}:1"
        console.print(f"Class imbalance (train, most/fewest boxes): {ratio}", highlight=False)
    if report.box_sizes is not None and report.imgsz is not None:
        sizes, advice = report.box_sizes, report.imgsz
        console.print(f"Box side at native size: p10 {sizes.pixel_side['p10']:.0f} px, median {sizes.pixel_side['p50']:.0f} px "
                      f"(images about {sizes.native_long_side} px). Suggested imgsz: [bold]{advice.suggested_imgsz}[/bold]"
                      + (f"; small objects: consider `convert --tile {advice.tile}`" if advice.small_objects and advice.tile else ""),
                      highlight=False)
    if any(s.background_images == 0 for name, s in report.splits.items() if name != "train"):
        console.print("[yellow]No defect-free images in val/test: the false-reject rate cannot be measured. "
                      "Add good parts (for DeepPCB: convert --include-templates).[/yellow]")
    for problem in report.problems[:limit]:
        colour = "red" if problem.level == "error" else "yellow"
        console.print(f"[{colour}]{problem}[/{colour}]", highlight=False, soft_wrap=True)
    if len(report.problems) > limit:
        console.print(f"... and {len(report.problems) - limit} more (--json lists all)")
    verdict = "[red]errors found[/red]" if report.has_errors else "[green]no errors[/green]"
    console.print(f"{verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def render_metrics(metrics: EvalMetrics, console: Console, *, title: str) -> None:
    header, rows = metrics.table()
    table = Table(title=title, title_justify="left")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for index, row in enumerate(rows):
        table.add_row(*row, end_section=index == len(rows) - 2)
    console.print(table)
    d = metrics.decisions
    where = "".join([f", is at least {d.min_box_area_px:g} px²" if d.min_box_area_px > 0 else "",
                     f", has its centre in the ROI {d.roi_polygon}" if d.roi_polygon is not None else ""])
    console.print(f"Parts (one image = one part), rejected when a {', '.join(d.reject_classes)} detection passes its "
                  f"threshold{where}:", highlight=False)
    console.print(f"  escape rate [bold]{_rate(d.escape_rate)}[/bold] ({d.escapes} of {d.defective} defective parts accepted), "
                  f"false-reject rate [bold]{_rate(d.false_reject_rate)}[/bold] ({d.false_rejects} of {d.good} good parts rejected)",
                  highlight=False)
    for note in dict.fromkeys((*metrics.notes, *d.notes)):  # the same note can come from two stages
        console.print(f"  [yellow]{note}[/yellow]", highlight=False)
    coco = ("" if metrics.coco_map50 is None else
            f"; COCO-style mAP50 {metrics.coco_map50:.3f}, mAP50-95 {metrics.coco_map50_95:.3f}")
    console.print(f"  mAP by {metrics.implementation}{coco}; P/R/F1 and confusion matrix at IoU {metrics.match_iou}",
                  highlight=False)


def render_eval(result: EvalResult, console: Console) -> None:
    render_metrics(result.metrics, console, title=f"{result.model} on {result.data} ({result.split}, imgsz {result.imgsz})")
    console.print(f"Thresholds: {result.threshold_source}", highlight=False)
    if result.thresholds is not None and result.thresholds.target_recall is not None:
        t = result.thresholds
        reached = "reached" if t.target_reached else "[red]NOT reached[/red]"
        console.print(f"  target part recall {t.target_recall:.2%} {reached}: recall {_rate(t.recall)}, "
                      f"escape {_rate(t.escape_rate)}, false-reject {_rate(t.false_reject_rate)}", highlight=False)
    shown = {*result.metrics.notes, *result.metrics.decisions.notes}
    for note in dict.fromkeys(result.notes):
        if note not in shown:
            console.print(f"  [yellow]{note}[/yellow]", highlight=False)
    for name, path in result.files.items():
        console.print(f"  {name}: {path}", highlight=False)
    if result.promotion is not None:
        render_promotion(result.promotion, console)


def render_promotion(promotion, console: Console) -> None:
    """``eval --baseline``: the two models' part numbers side by side, class by class, and the verdict."""
    p = promotion
    table = Table(title=f"{p.candidate} (new) against {p.baseline} (baseline), same parts", title_justify="left")
    for index, name in enumerate(("", "parts", "baseline", "new", "")):
        table.add_column(name, justify="left" if index in (0, 4) else "right")

    def share(count: int, total: int) -> str:
        return f"{count} ({count / total:.1%})" if total else str(count)

    shown = [row for row in p.per_class if row.defective]  # a class without defective parts here compares nothing
    for index, row in enumerate(shown):
        table.add_row(f"escapes: {escape(row.name)}", str(row.defective), share(row.baseline_escapes, row.defective),
                      share(row.candidate_escapes, row.defective), "[red]worse[/red]" if row.worse else "ok",
                      end_section=index == len(shown) - 1)
    table.add_row("escapes: all", str(p.defective), share(p.baseline_escapes, p.defective),
                  share(p.candidate_escapes, p.defective),
                  "[red]worse[/red]" if p.candidate_escapes > p.baseline_escapes else "ok")
    table.add_row("false rejects", str(p.good), share(p.baseline_false_rejects, p.good),
                  share(p.candidate_false_rejects, p.good),
                  "[red]worse[/red]" if p.candidate_false_rejects > p.baseline_false_rejects else "ok")
    console.print(table)
    console.print(f"  baseline at {p.baseline_threshold_source}; new at the thresholds chosen for the baseline's "
                  "false-reject rate", highlight=False)
    verdict = ("[bold green]PROMOTE[/bold green]: the new model may replace the baseline" if p.promote
               else "[bold red]KEEP[/bold red] the baseline: the new model may not replace it")
    console.print(verdict, highlight=False)
    for reason in p.reasons:
        console.print(f"  {escape(reason)}", highlight=False)


def render_anomaly_eval(result: AnomalyEvalResult, console: Console) -> None:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    table = Table(title=f"{result.model} on {result.data} ({result.split}, anomaly model, imgsz {result.imgsz})",
                  title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("images", f"{result.defective} defective, {result.good} good"
                            + (f", {result.left_out} left out" if result.left_out else ""))
    table.add_row("image AUROC", number(result.image_auroc))
    table.add_row("pixel AUROC (boxes)", number(result.pixel_auroc))
    for point in result.at_false_reject_rate:
        table.add_row(f"escape at false-reject <= {point.max_false_reject_rate:.0%}",
                      _rate(point.escape_rate) + ("" if point.threshold_confidence is None
                                                  else f" (conf >= {point.threshold_confidence:.3f})"))
    console.print(table)
    r = result.rates
    console.print(f"Threshold: {result.threshold_source}: confidence {result.threshold_confidence:.4f} "
                  + ("(never rejects)" if result.threshold_score is None else f"(score {result.threshold_score:.4g})"),
                  highlight=False)
    console.print(f"  escape rate [bold]{_rate(r.escape_rate)}[/bold] ({r.escapes} of {r.defective} defective parts "
                  f"accepted), false-reject rate [bold]{_rate(r.false_reject_rate)}[/bold] ({r.false_rejects} of "
                  f"{r.good} good parts rejected)", highlight=False)
    if result.thresholds is not None and result.thresholds.target_recall is not None:
        reached = "reached" if result.thresholds.target_reached else "[red]NOT reached[/red]"
        console.print(f"  target part recall {result.thresholds.target_recall:.2%} {reached}", highlight=False)
    for note in dict.fromkeys(result.notes):
        console.print(f"  [yellow]{note}[/yellow]", highlight=False)
    for name, path in result.files.items():
        console.print(f"  {name}: {path}", highlight=False)


def render_train(result: TrainResult, console: Console) -> None:
    console.print(result.transfer_note, highlight=False)
    metrics = result.evaluation.metrics
    render_metrics(metrics, console, title=f"best model on val ({result.run_dir})")
    console.print(f"Trained in {result.seconds / 60:.1f} min. Best model: [bold]{result.best_model}[/bold]", highlight=False)
    data = result.arguments.get("data", "DATA")
    console.print("Next:", highlight=False)
    console.print(f"  yolodefect eval {result.best_model} {data} --split test --target-recall 0.99", highlight=False)
    console.print(f"  yolodefect export {result.best_model} --data {data} --int8", highlight=False)
    console.print(f"  yolodefect watch --model {result.best_model} --source VIDEO_OR_CAMERA", highlight=False)


def render_presets(presets, console: Console) -> None:
    table = Table(title="Training presets (each overridable, see --help)", title_justify="left")
    table.add_column("argument")
    table.add_column("value", justify="right")
    table.add_column("why")
    for preset in presets:
        table.add_row(preset.key, str(preset.value), preset.reason)
    console.print(table)


def watch_panel(stats: WatchStats):
    """The operator's terminal view of a running station."""
    from rich.panel import Panel

    table = Table.grid(padding=(0, 2))
    table.add_column(justify="right", style="bold")
    table.add_column()
    latency = "-" if stats.latency_p50_ms is None else f"p50 {stats.latency_p50_ms:.1f} ms, p95 {stats.latency_p95_ms:.1f} ms"
    table.add_row("frames", f"{stats.frames}  ({stats.fps:.1f} fps, {stats.elapsed_s:.0f} s)")
    table.add_row("latency", latency)
    if stats.anomaly_p50_ms is not None:
        table.add_row("anomaly model", f"p50 {stats.anomaly_p50_ms:.1f} ms per frame scored "
                                       f"({stats.anomaly_frames} of {stats.frames} frames)")
    table.add_row("dropped / skipped", f"{stats.dropped_frames} / {stats.skipped_frames}")
    if stats.open_attempts:
        table.add_row("capture", f"{stats.open_attempts} open attempts, {stats.open_failures} failed, "
                                 f"{stats.reconnects} reconnects")
    if stats.truncated:
        table.add_row("video", f"[yellow]{stats.truncation}[/yellow]")
    unreadable = f" ({stats.unreadable_parts} unreadable images)" if stats.unreadable_parts else ""
    table.add_row("parts", f"[red]{stats.rejects} rejected[/red], {stats.passes} passed, {stats.errors} errors{unreadable}")
    for kind, message in stats.active_alarms.items():  # drift and camera faults, while they last
        table.add_row(f"[bold red]ALARM {escape(kind)}[/bold red]", f"[red]{escape(message)}[/red]")
    if stats.drift_alarms or stats.camera_faults:
        table.add_row("alarms", f"{stats.drift_alarms} drift, {stats.camera_faults} camera fault(s) raised in this run")
    if stats.model_reloads or stats.reload_failures:  # watch --reload-on-change
        refused = f", [yellow]{stats.reload_failures} changed file(s) refused[/yellow]" if stats.reload_failures else ""
        table.add_row("model", f"{escape(str(stats.model.get('name')))} {str(stats.model.get('sha256'))[:12]}, "
                               f"{stats.model_reloads} reload(s){refused}")
    if stats.mode == "track":
        learning = f"learning the empty belt ({stats.belt_frames} frames), " if stats.belt_frames and not stats.parts else ""
        table.add_row("line", f"{learning}{stats.open_parts} part(s) in view; "
                              f"{stats.off_part_detections} detection(s) on the belt (not defects)")
    for sink, backlog in stats.sink_backlog.items():
        error = stats.sink_errors.get(sink)
        table.add_row(f"sink {sink}", f"backlog {backlog}" + (f"  [yellow]{error}[/yellow]" if error else ""))
    if stats.not_persisted_events:
        table.add_row("[red]outbox[/red]", f"[red]{stats.not_persisted_events} event(s) NOT stored (disk full?): "
                      "sent to the sinks directly, content on stderr[/red]")
    if stats.evidence_failures:
        table.add_row("evidence", f"[yellow]evidence failures {stats.evidence_failures}[/yellow]")
    if stats.evidence_cams or stats.evidence_cam_failures:
        cost = "" if stats.evidence_cam_p50_ms is None else f", p50 {stats.evidence_cam_p50_ms:.1f} ms per reject"
        failed = f", [yellow]{stats.evidence_cam_failures} failed[/yellow]" if stats.evidence_cam_failures else ""
        table.add_row("evidence CAM", f"{stats.evidence_cams} heatmap(s){cost}{failed}")
    if stats.review_saved or stats.review_rate_limited or stats.review_dropped or stats.review_failures:
        problems = [f"{n} {what}" for n, what in ((stats.review_rate_limited, "over the rate limit"),
                                                  (stats.review_dropped, "dropped"), (stats.review_failures, "failed"))
                    if n]
        table.add_row("review", f"{stats.review_saved} frame(s) saved for review"
                      + (f", [yellow]{', '.join(problems)}[/yellow]" if problems else ""))
    title = f"yolodefect watch: {stats.source} ({stats.mode}) with {stats.model.get('name', '?')} {stats.model.get('precision', '')}"
    return Panel(table, title=title, title_align="left")


def render_model_card(card: dict | None, console: Console) -> None:
    if not card:
        return
    metrics = card.get("metrics", {})
    shown = {key: card.get(key) for key in ("precision", "backend", "imgsz", "deployable") if key in card}
    backend = shown.get("backend")
    if isinstance(backend, dict):  # an export card: name the runtime, not every version
        shown["backend"] = backend.get("runtime") or backend.get("format") or "?"
        if backend.get("inference_precision"):  # what OpenVINO computed in when validated, e.g. bf16 on AMX CPUs
            shown["backend"] += f" computing in {backend['inference_precision']}"
    if card.get("purpose"):
        shown = {"name": card.get("name"), **shown}
    console.print(f"Model card: {', '.join(f'{k} {v}' for k, v in shown.items())}"
                  + (f"; {metrics}" if metrics and not isinstance(metrics, dict) else ""), highlight=False)
    for key in ("note", "purpose"):
        if card.get(key):
            console.print(f"  {card[key]}", highlight=False)


def render_watch_summary(summary: WatchSummary, console: Console) -> None:
    s = summary.stats
    console.print(watch_panel(s))
    for camera in summary.cameras:  # a station of several cameras: each one's own line
        c = camera.stats
        console.print(f"  camera {c.camera} ({c.source}): {c.frames} frames, {c.fps:.1f} fps, {c.rejects} reject(s), "
                      f"{c.passes} pass, {c.errors} error(s), {c.dropped_frames} dropped", highlight=False)
    console.print(f"Stopped by {summary.stopped_by}. {s.rejects} reject event(s), {s.passes} pass, {s.errors} error; "
                  + ("every event delivered." if summary.flushed else
                     f"[yellow]undelivered, kept in the outbox for the next run: {summary.undelivered}[/yellow]")
                  + (f" [yellow]evidence failures {s.evidence_failures}[/yellow]." if s.evidence_failures else ""),
                  highlight=False)
    if s.unreadable_parts:
        console.print(f"[yellow]{s.unreadable_parts} part image(s) could not be read or decoded: each got an error "
                      "event naming the file (see the log).[/yellow]", highlight=False)
    if s.truncated:
        console.print(f"[yellow]{s.truncation}[/yellow]", highlight=False, soft_wrap=True)
    render_not_persisted(summary, console)


def render_not_persisted(summary: WatchSummary, console: Console) -> None:
    """The red line naming the events the outbox could not store (nothing when there are none)."""
    from yolodefect.stream.delivery import NOT_PERSISTED_PREFIX

    ids = summary.not_persisted_event_ids
    if ids:
        console.print(f"[red]error:[/red] {len(ids)} event(s) NOT stored in the outbox (sent to the sinks directly; "
                      f"content in the stderr lines starting {NOT_PERSISTED_PREFIX.strip()!r}): {', '.join(ids)}",
                      highlight=False, soft_wrap=True)


def render_compare(result, console: Console) -> None:
    header, rows = result.table()
    table = Table(title=f"SSD vs YOLO on {result.data} ({result.split})", title_justify="left")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*map(str, row))
    console.print(table)
    console.print(f"[bold]{result.verdict}[/bold]", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]{note}[/yellow]", highlight=False)
    for name, path in result.files.items():
        console.print(f"  {name}: {path}", highlight=False)


def render_export(result, console: Console) -> None:
    console.print(result.headline(), highlight=False)
    header, rows = result.table()
    table = Table(title_justify="left")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*map(str, row))
    console.print(table)
    colour = "green" if result.gate.passed else "red"
    console.print(f"[{colour}]{result.gate.message}[/{colour}]", highlight=False)
    header, rows = result.candidate_table()
    if rows:  # an auto --int8 run: every candidate, the chosen one marked
        candidates = Table(title="Candidates (drop: mAP50 points lost vs FP32 ONNX; ms: median at batch 1, each "
                                 "timed alone in the same run)", title_justify="left", box=box.SIMPLE_HEAD)
        for index, name in enumerate(header):
            candidates.add_column(name, justify="left" if index < 2 else "right")
        for row in rows:
            candidates.add_row(*row, style="bold" if row[-1] else None)
        console.print(candidates)
        console.print(f"[{'green' if result.deployable else 'red'}]{result.choice}[/]", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]{note}[/yellow]", highlight=False)
    for name, path in result.files().items():
        console.print(f"  {name}: {path}", highlight=False)


def render_demo(result, console: Console) -> None:
    table = Table(title="yolodefect demo", title_justify="left")
    table.add_column("step")
    table.add_column("s", justify="right")
    table.add_column("outcome")
    for step in result.steps:
        table.add_row(step["title"], f"{step['seconds']:.0f}", step["outcome"])
    console.print(table)
    defective, rejected = result.defective_parts, result.rejected_parts
    verdict = "[green]every defective part rejected once, no good part rejected[/green]" \
        if not result.missed_parts and not result.false_rejects else \
        f"[yellow]missed {result.missed_parts or 'none'}, false rejects {result.false_rejects or 'none'}[/yellow]"
    console.print(f"Defective parts in the video: {defective}; rejected by the station: {rejected}: {verdict}",
                  highlight=False)
    if result.unseen_parts:
        caught = "[green]all caught[/green]" if not result.unseen_missed else \
            f"[yellow]missed {result.unseen_missed}[/yellow]"
        good = "no good part" if not result.anomaly_false_rejects else f"[yellow]good parts " \
            f"{result.anomaly_false_rejects}[/yellow]"
        console.print(f"Parts with contamination, a defect the detector was never taught: {result.unseen_parts}; "
                      f"rejected as 'anomaly' by the anomaly model: {result.unseen_caught}: {caught} "
                      f"({good} rejected as 'anomaly'; all parts rejected as 'anomaly': {result.anomaly_parts})",
                      highlight=False)
    console.print(f"Everything is in [bold]{result.out}[/bold] ({result.seconds:.0f} s):", highlight=False)
    for name, path in result.files.items():
        console.print(f"  {name:16} {path}", highlight=False)
    console.print("Next, on your own images:\n"
                  "  yolodefect convert my_labels/ my_data --format auto\n"
                  "  yolodefect train my_data --model path/to/checkpoint.pt\n"
                  "  yolodefect eval runs/train/weights/best.pt my_data --target-recall 0.99 --per-class\n"
                  "  yolodefect export runs/train/weights/best.pt --data my_data --int8\n"
                  "  yolodefect anomaly train good_parts/ --backbone runs/train/weights/best.pt --imgsz 128\n"
                  "  yolodefect watch --camera 0 --model runs/train/weights/best_int8.onnx "
                  "--thresholds runs/eval/best-val/thresholds.yaml --anomaly runs/anomaly/good_parts/anomaly.npz "
                  "--mqtt mqtt://broker:1883/line1/rejects",
                  highlight=False)


def render_calibration(result, console: Console) -> None:
    """The master-parts run: each part's decision against its truth, the rates, and what was written."""
    table = Table(title=f"{'Verification' if result.verify else 'Calibration'} run: {result.video} vs {result.truth}",
                  title_justify="left")
    for column in ("part", "truth", "station", "frames", ""):
        table.add_column(column)
    for part in result.parts:
        wrong = part.defective != part.rejected
        verdict = ("[red]ESCAPE[/red]" if part.defective and not part.rejected
                   else "[yellow]false reject[/yellow]" if wrong else "")
        table.add_row(part.truth_id, "defective" if part.defective else "good", part.decision,
                      str(part.frames) if part.frames else "", verdict)
    console.print(table)
    def interval(bounds) -> str:
        return "" if bounds is None else f" (95 % interval {_rate(bounds[0])}-{_rate(bounds[1])})"

    console.print(f"Parts found {result.parts_found} of {result.parts_expected}; escape rate {_rate(result.escape_rate)}"
                  f"{interval(result.escape_interval)}, false-reject rate {_rate(result.false_reject_rate)}"
                  f"{interval(result.false_reject_interval)}; rule: a class must reach its threshold on "
                  f"{result.min_frames} of a part's frames", highlight=False)
    expected = getattr(result, "expected", None)
    if expected:
        console.print(f"  [bold]promised on new parts[/bold]: escape {_rate(expected['escape_rate'])}"
                      f"{interval(expected.get('escape_rate_95'))}, false-reject {_rate(expected['false_reject_rate'])}"
                      f"{interval(expected.get('false_reject_rate_95'))} (cross-validated: this rule's thresholds chosen "
                      "on 4/5 of the parts, measured on the other fifth, in turn; the rates above are measured on the "
                      "very parts the thresholds were chosen on)", highlight=False)
    if result.search:
        rows = ", ".join(f"k={row['min_frames']}: held-out FRR {_rate(row.get('held_out_false_reject_rate'))}"
                         f" escape {_rate(row.get('held_out_escape_rate'))}" for row in result.search)
        console.print(f"  searched: {rows}", highlight=False)
    for note in result.notes:
        console.print(f"  [yellow]{note}[/yellow]", highlight=False)
    if result.thresholds_path is not None:
        console.print(f"Thresholds for this line: [bold]{result.thresholds_path}[/bold] "
                      f"(yolodefect watch --thresholds {result.thresholds_path})", highlight=False)
    if result.verify:
        if result.ok:
            console.print("[green]PASSED[/green]: every known bad part was rejected", highlight=False)
        else:
            console.print(f"[red]FAILED[/red]: missed known bad part(s) {', '.join(result.missed_parts) or '-'}; "
                          f"{result.parts_found} of {result.parts_expected} parts found", highlight=False)


def render_anomaly_training(result, console: Console) -> None:
    """What the anomaly model learned from, its size, and how it will be judged."""
    card = result.model.card
    backbone = card["backbone"]
    console.print(f"Anomaly model [bold]{result.model_path}[/bold]", highlight=False)
    console.print(f"  good images: {result.good_images} in the memory bank, {result.holdout_images} held out for the "
                  f"threshold; backbone {backbone['name']} ({backbone['kind']}, layers {', '.join(backbone['layers'])}); "
                  f"{card['imgsz']} px", highlight=False)
    console.print(f"  memory bank: {result.bank_size:,} patches x {card['feature_dim']} features = "
                  f"{result.bank_bytes / 1e6:.1f} MB (from a pool of {result.pool_size:,}); trained in {result.seconds:.0f} s",
                  highlight=False)
    console.print(f"  threshold: score {result.reference_score:.3g} (the most unusual held-out good image; choose one "
                  f"for a target recall with: yolodefect eval {result.model_path} DATA --target-recall 0.99)",
                  highlight=False)


def render_review_merge(result: MergeResult, console: Console) -> None:
    console.print(f"Read [bold]{result.items_found}[/bold] review queue items from {result.queue}: "
                  f"[bold]{len(result.added)}[/bold] added to train ({result.backgrounds_added} defect-free"
                  + (f", {result.accepted_unreviewed} unreviewed, accepted" if result.accepted_unreviewed else "")
                  + f"), {result.unreviewed_skipped} skipped as unreviewed, {len(result.duplicates)} already in the "
                  "dataset.", highlight=False)
    if result.unreviewed_skipped:
        more = result.unreviewed_skipped - len(result.unreviewed_examples)
        console.print("  unreviewed: " + ", ".join(result.unreviewed_examples) + (f" and {more} more" if more > 0 else "")
                      + " (tick 'reviewed' in LabelMe, or pass --accept-unreviewed)", highlight=False, soft_wrap=True)
    table = Table(title=f"{result.out} (from {result.base})", title_justify="left")
    table.add_column("")
    for split in result.images:
        table.add_column(split, justify="right")
    table.add_row("images before", *(str(result.base_images[split]) for split in result.images))
    table.add_row("images now", *(str(count) for count in result.images.values()))
    console.print(table)
    added = ", ".join(f"{count} {name}" for name, count in result.boxes_added_per_class.items() if count)
    console.print(f"Boxes added to train: {added or 'none'}.", highlight=False)
    _notes_summary(console, "duplicates skipped", result.duplicates, "cyan", limit=3, listed_in="merge.json")
    _notes_summary(console, "warnings", result.warnings, "yellow", listed_in="merge.json")
    console.print(f"Wrote a new dataset version in {result.seconds:.1f} s (changelog: {result.out}/CHANGELOG.md). "
                  f"Next: [bold]yolodefect check {result.out}[/bold] then [bold]yolodefect train {result.out}[/bold]",
                  highlight=False)

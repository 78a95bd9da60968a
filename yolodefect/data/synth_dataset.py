"""``yolodefect synth``: a seeded synthetic defect dataset in the same layout ``convert`` writes."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2

from yolodefect.data.convert import GENERATED, ConversionResult, ConvertOptions, build_dataset
from yolodefect.data.records import ImageRecord, SourceDataset
from yolodefect.data.staging import sigterm_as_interrupt
from yolodefect.data.synth import CLASS_NAMES, SYNTH_KINDS, generate_samples
from yolodefect.data.writer import check_output_folder
from yolodefect.errors import UsageError
from yolodefect.progress import ProgressCallback, no_progress


@dataclass(frozen=True)
class SynthOptions:
    kind: str = "steel"
    images: int = 200
    seed: int = 0
    size_wh: tuple[int, int] = (256, 256)
    background_fraction: float = 0.2
    max_defects: int = 3
    split: str = "0.8,0.1,0.1"
    force: bool = False


@sigterm_as_interrupt()  # SIGTERM cleans up the render folder as Ctrl-C does
def synthesize(out: Path, options: SynthOptions = SynthOptions(),
               progress: ProgressCallback | None = None) -> ConversionResult:
    """Render ``options.images`` parts, then split and write them like any converted source."""
    if options.kind not in SYNTH_KINDS:
        raise UsageError(f"--kind {options.kind!r}: choose one of {', '.join(SYNTH_KINDS)}")
    if options.images < 10:
        raise UsageError(f"--images {options.images}: at least 10 are needed for train/val/test splits")
    out = Path(out)
    check_output_folder(out, force=options.force)
    report = progress or no_progress
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = Path(tempfile.mkdtemp(prefix=f".{out.name}.render-", dir=out.parent))
    try:
        records = []
        samples = generate_samples(options.kind, options.images, seed=options.seed, size_wh=options.size_wh,
                                   background_fraction=options.background_fraction, max_defects=options.max_defects)
        for done, sample in enumerate(samples, start=1):
            path = raw / f"{sample.name}.png"  # PNG: lossless, so the boxes match the pixels exactly
            cv2.imwrite(str(path), sample.image)
            records.append(ImageRecord(path, list(sample.boxes)))
            if done % 25 == 0 or done == options.images:
                report("render", done, options.images)
        source = SourceDataset(GENERATED, records, list(CLASS_NAMES[options.kind]))
        convert_options = replace(ConvertOptions(), format=GENERATED, split=options.split, seed=options.seed, transfer="copy",
                                  force=options.force)
        label = f"the {options.kind} generator (seed {options.seed})"
        return build_dataset(source, out, convert_options, progress, source_label=label)
    finally:
        shutil.rmtree(raw, ignore_errors=True)

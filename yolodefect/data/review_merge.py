"""``yolodefect review merge``: fold a review queue's corrected LabelMe files into a new dataset version.

The queue (written by ``watch --review DIR``) holds one frame and one LabelMe JSON per item, the
JSON carrying the model's boxes as pre-annotations and a ``yolodefect`` provenance key. Only the
items a person reviewed are taken (``flags.reviewed`` ticked, or shapes that differ from the ones
``predictions_sha256`` hashes); untouched pre-annotations only when explicitly accepted.

The new version is a new folder beside DATA (``NAME-v2``, ``NAME-v3``...): DATA's images linked or
copied as they are, its label files copied byte for byte, the new frames always copied (the queue
drops its oldest items, so a link into it would break) into the train split only, so that val and
test, and the metrics measured on them, stay the same. DATA itself is only read.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from yolodefect import __version__
from yolodefect.data.classes import build_class_map
from yolodefect.data.convert import clean_boxes
from yolodefect.data.formats import labelme
from yolodefect.data.formats.base import BadFilePolicy, ReadOptions
from yolodefect.data.formats.labelme_writer import is_reviewed
from yolodefect.data.image_file import verify_image_bytes
from yolodefect.data.records import SPLITS, Box, ImageRecord, Note
from yolodefect.data.staging import sigterm_as_interrupt, staged_output
from yolodefect.data.writer import (
    OutputImage,
    Transfer,
    check_output_folder,
    prepare_split_folders,
    write_data_yaml,
    write_image,
    write_item,
)
from yolodefect.data.yolo_dataset import DataConfig, label_path_for, load_data_config
from yolodefect.errors import DatasetError, FormatError, UsageError
from yolodefect.option_checks import choice
from yolodefect.progress import ProgressCallback, no_progress

QUEUE_SUMMARY = "review_queue.json"  # the queue's own counters, not an item
PROVENANCE_KEY = "yolodefect"
CHANGES_JSON = "changes.json"
CHANGELOG_MD = "CHANGELOG.md"
MERGE_JSON = "merge.json"
CARRIED_FILES = ("conversion.json",)  # the base's own record, kept unchanged: where val/test came from
TARGET_SPLIT = "train"
EXAMPLES_SHOWN = 5
_VERSION_SUFFIX = re.compile(r"^(?P<name>.+)-v(?P<number>\d+)$")


@dataclass(frozen=True)
class MergeOptions:
    out: Path | None = None  # None: DATA's name + -v2, -v3... beside DATA, the next free one
    accept_unreviewed: bool = False
    transfer: Transfer = "link"  # DATA's images in the new version; the queue's frames are always copied

    def __post_init__(self) -> None:
        choice("--copy/--link", self.transfer, ("link", "copy"))


@dataclass
class MergedItem:
    """One queue item added to the new version's train split, and where it came from."""

    file: str  # in the new version, e.g. images/train/20250101T120000_123_1a2b3c4d.jpg
    queue_file: str  # the LabelMe JSON it was read from
    reviewed: bool  # False: an untouched pre-annotation taken with --accept-unreviewed
    boxes_per_class: dict[str, int]
    event_id: str | None
    part_id: Any
    source: str | None
    captured_at: str | None
    saved_at: str | None
    model_name: str | None
    model_sha256: str | None
    decision: str | None
    reasons: list[str]
    detail: str | None

    @property
    def boxes(self) -> int:
        return sum(self.boxes_per_class.values())


@dataclass
class MergeResult:
    queue: str
    base: str
    out: str
    class_names: list[str]
    items_found: int
    added: list[MergedItem]
    unreviewed_skipped: int
    unreviewed_examples: list[str]  # the first few queue files skipped as unreviewed
    duplicates: list[Note]  # items whose image is already in DATA (any split) or earlier in the queue
    warnings: list[Note]
    base_images: dict[str, int]  # per split, before
    images: dict[str, int]  # per split, in the new version
    options: dict
    merged_at: str
    seconds: float
    yolodefect_version: str = __version__

    @property
    def boxes_added_per_class(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for item in self.added:
            total.update(item.boxes_per_class)
        return {name: total.get(name, 0) for name in self.class_names}

    @property
    def backgrounds_added(self) -> int:
        return sum(1 for item in self.added if not item.boxes)

    @property
    def accepted_unreviewed(self) -> int:
        return sum(1 for item in self.added if not item.reviewed)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["images_added"] = len(self.added)
        data["boxes_added_per_class"] = self.boxes_added_per_class
        data["backgrounds_added"] = self.backgrounds_added
        data["accepted_unreviewed"] = self.accepted_unreviewed
        return data


@dataclass(frozen=True)
class _QueueItem:
    record: ImageRecord
    provenance: dict[str, Any]
    reviewed: bool


# --------------------------------------------------------------------------- reading the queue


def read_queue(queue_dir: Path, class_names: Sequence[str]) -> tuple[list[_QueueItem], list[Note]]:
    """Every complete queue item (frame + LabelMe JSON), read with the LabelMe reader, provenance checked."""
    if not queue_dir.is_dir():
        raise DatasetError(f"review queue {queue_dir} does not exist (give the folder of watch --review)")
    try:
        # skip_bad: the queue's counters file is JSON but no LabelMe file; any other bad file is raised below.
        source = labelme.read(queue_dir, ReadOptions(skip_bad=True))
    except DatasetError:
        raise DatasetError(f"no review queue items (LabelMe JSON files) in {queue_dir}") from None
    for note in source.skipped:
        if Path(note.path).name != QUEUE_SUMMARY:
            raise DatasetError(f"{note.message} (fix the file in LabelMe, or remove this item from the queue)")
    # The reader's summary would call frames without JSON "background images": here they are items still being written.
    warnings = [note for note in source.warnings if "have no LabelMe JSON" not in note.message]
    items = []
    for record in source.records:
        if record.annotation_path is None:
            warnings.append(Note(str(record.image_path), "frame without its LabelMe JSON (still being written?): "
                                                         "left out", "frames_without_json"))
            continue
        document = json.loads(record.annotation_path.read_text(encoding="utf-8"))  # the reader parsed it already
        provenance = _provenance(document, record.annotation_path, class_names)
        written = provenance.get("predictions_sha256")
        reviewed = is_reviewed(document, written if isinstance(written, str) else None)
        items.append(_QueueItem(record, provenance, reviewed))
    if not items:
        raise DatasetError(f"no review queue items (LabelMe JSON files) in {queue_dir}")
    return items, warnings


def _provenance(document: dict[str, Any], json_path: Path, class_names: Sequence[str]) -> dict[str, Any]:
    provenance = document.get(PROVENANCE_KEY)
    if not isinstance(provenance, dict) or not isinstance(provenance.get("class_names"), list):
        raise FormatError(json_path, f'no "{PROVENANCE_KEY}" provenance with the model\'s class_names: '
                                     "not an item written by watch --review")
    model_names = [str(name) for name in provenance["class_names"]]
    if model_names != list(class_names):
        raise UsageError(f"{json_path}: queued by a model with classes {model_names}, but the dataset has "
                         f"{list(class_names)} (the same names in the same order are needed): merge this queue "
                         "into the dataset that model was trained on")
    return provenance


def _check_labels(record: ImageRecord, class_names: Sequence[str], data: Path) -> None:
    for box in record.boxes:
        if box.class_name not in class_names:
            close = difflib.get_close_matches(box.class_name, class_names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FormatError(record.annotation_path or record.image_path,
                              f"label {box.class_name!r} is not a class of {data}{hint}; its classes are: "
                              f"{', '.join(class_names)}. Rename the shape in LabelMe")


# --------------------------------------------------------------------------- the base dataset


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _base_root(config: DataConfig) -> Path:
    return config.yaml_path.parent if config.yaml_path is not None else config.root


def next_version_folder(base: Path) -> Path:
    """``NAME-v2`` beside ``base`` (``NAME-vN+1`` when base is ``NAME-vN``), or the next one free."""
    match = _VERSION_SUFFIX.match(base.name)
    name, number = (match["name"], int(match["number"]) + 1) if match else (base.name, 2)
    while (base.parent / f"{name}-v{number}").exists():
        number += 1
    return base.parent / f"{name}-v{number}"


def _base_files(config: DataConfig) -> dict[str, list[tuple[Path, str]]]:
    """Per split: each image of DATA and its path relative to that split's image folder."""
    return {split: [(image, image.relative_to(config.split_dirs[split]).as_posix()) for image in config.images(split)]
            for split in config.split_dirs}


def _read_history(base_root: Path) -> list[dict]:
    path = base_root / CHANGES_JSON
    if not path.is_file():
        return []
    try:
        merges = json.loads(path.read_text(encoding="utf-8")).get("merges")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as error:
        raise FormatError(path, f"not the changes.json review merge writes: {error}") from None
    if not isinstance(merges, list):
        raise FormatError(path, '"merges" is not a list')
    return merges


# --------------------------------------------------------------------------- merging


def _free_name(name: str, taken: set[str]) -> str:
    base, suffix, index = Path(name).stem, Path(name).suffix, 1
    while name in taken:
        name, index = f"{base}_{index}{suffix}", index + 1
    taken.add(name)
    return name


def _merged_item(item: _QueueItem, file: str, boxes: Sequence[Box], queue_dir: Path) -> MergedItem:
    provenance = item.provenance
    model = provenance.get("model") if isinstance(provenance.get("model"), dict) else {}
    reasons = provenance.get("reasons")
    return MergedItem(
        file=file, queue_file=item.record.annotation_path.relative_to(queue_dir).as_posix(), reviewed=item.reviewed,
        boxes_per_class=dict(sorted(Counter(box.class_name for box in boxes).items())),
        event_id=provenance.get("event_id"), part_id=provenance.get("part_id"), source=provenance.get("source"),
        captured_at=provenance.get("captured_at"), saved_at=provenance.get("saved_at"),
        model_name=model.get("name"), model_sha256=model.get("sha256"), decision=provenance.get("decision"),
        reasons=[str(reason) for reason in reasons] if isinstance(reasons, list) else [],
        detail=provenance.get("detail"),
    )


@sigterm_as_interrupt()
def merge_review(queue_dir: Path | str, data: Path | str, options: MergeOptions = MergeOptions(),
                 progress: ProgressCallback | None = None) -> MergeResult:
    """Write a new version of ``data`` with the reviewed items of ``queue_dir`` added to its train split.

    ``data`` and ``queue_dir`` are never modified. The new folder appears complete or not at all.
    """
    started = time.perf_counter()
    queue_dir, report = Path(queue_dir), progress or no_progress
    config = load_data_config(data)
    base_root = _base_root(config)
    if TARGET_SPLIT not in config.split_dirs:
        raise DatasetError(f"dataset {base_root} has no {TARGET_SPLIT} split to add the reviewed frames to")
    out = Path(options.out) if options.out is not None else next_version_folder(base_root)
    check_output_folder(out, force=False, sources=[base_root, queue_dir])
    history = _read_history(base_root)

    items, warnings = read_queue(queue_dir, config.class_names)
    unreviewed = [item for item in items if not item.reviewed]
    taken = items if options.accept_unreviewed else [item for item in items if item.reviewed]

    base = _base_files(config)
    known: dict[str, str] = {}  # image sha256 -> where it already is
    for split, files in base.items():
        for image, relative in files:
            known.setdefault(_sha256(image), f"{split}/{relative}")
    policy = BadFilePolicy(skip_bad=False, warnings=warnings)
    class_map = build_class_map(config.class_names)
    names_taken = {relative for _, relative in base[TARGET_SPLIT]}
    planned: list[tuple[OutputImage, MergedItem]] = []
    duplicates: list[Note] = []
    for item in taken:
        record = item.record
        _check_labels(record, config.class_names, base_root)
        content = record.image_path.read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        if digest in known:
            duplicates.append(Note(str(record.image_path), f"same image as {known[digest]}: not added again"))
            continue
        facts = verify_image_bytes(record.image_path, content)
        if record.declared_size_wh and tuple(record.declared_size_wh) != facts.size_wh:
            policy.warn(record.annotation_path, f"LabelMe says {record.declared_size_wh[0]}x{record.declared_size_wh[1]} "
                        f"but the frame is {facts.size_wh[0]}x{facts.size_wh[1]}: using the frame's size",
                        kind="size_mismatches")
        boxes = clean_boxes(record, facts.size_wh, class_map, policy)
        file_name = _free_name(record.image_path.name, names_taken)
        known[digest] = f"{TARGET_SPLIT}/{file_name} (from the queue)"
        output = OutputImage(record.image_path, TARGET_SPLIT, file_name, boxes, facts.size_wh,
                             needs_reorientation=facts.needs_reorientation,
                             jpeg_trailing_bytes=facts.jpeg_trailing_bytes)
        planned.append((output, _merged_item(item, f"images/{TARGET_SPLIT}/{file_name}", boxes, queue_dir)))
    if not planned:
        raise DatasetError(
            f"nothing to merge from {queue_dir}: {len(items)} item(s), {len(unreviewed)} unreviewed"
            + ("" if options.accept_unreviewed else " (pass --accept-unreviewed to take them as the model drew them)")
            + f", {len(duplicates)} already in the dataset; no new version written")

    class_ids = {name: index for index, name in enumerate(config.class_names)}
    present = [split for split in SPLITS if split in base]
    total = sum(len(files) for files in base.values()) + len(planned)
    done = 0
    with staged_output(out) as staging:
        prepare_split_folders(staging, present)
        for split, files in base.items():
            for image, relative in files:
                _copy_base_item(staging, split, image, relative, options.transfer)
                done += 1
                if done % 50 == 0:
                    report("write", done, total)
        for output, _ in planned:
            write_item(staging, output, class_ids, "copy")  # the queue drops old items: never link into it
        report("write", total, total)
        write_data_yaml(staging, config.class_names, present)
        for name in CARRIED_FILES:
            if (base_root / name).is_file():
                shutil.copyfile(base_root / name, staging / name)
        result = MergeResult(
            queue=str(queue_dir), base=str(base_root), out=str(out), class_names=list(config.class_names),
            items_found=len(items), added=[merged for _, merged in planned],
            unreviewed_skipped=0 if options.accept_unreviewed else len(unreviewed),
            unreviewed_examples=[] if options.accept_unreviewed else
            [item.record.annotation_path.name for item in unreviewed[:EXAMPLES_SHOWN]],
            duplicates=duplicates, warnings=policy.warnings,
            base_images={split: len(files) for split, files in base.items()},
            images={split: len(files) + (len(planned) if split == TARGET_SPLIT else 0) for split, files in base.items()},
            options={"out": None if options.out is None else str(options.out),
                     "accept_unreviewed": options.accept_unreviewed, "transfer": options.transfer},
            merged_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seconds=round(time.perf_counter() - started, 3),
        )
        merges = history + [changes_entry(result)]
        (staging / CHANGES_JSON).write_text(json.dumps({"version": 1, "merges": merges}, indent=2), encoding="utf-8")
        (staging / CHANGELOG_MD).write_text(changelog_markdown(merges), encoding="utf-8")
        (staging / MERGE_JSON).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result


def _copy_base_item(staging: Path, split: str, image: Path, relative: str, transfer: Transfer) -> None:
    """One image of DATA into the new version as it is (linked or copied), its label file copied unchanged."""
    dest = staging / "images" / split / relative
    dest.parent.mkdir(parents=True, exist_ok=True)
    # convert already applied EXIF and dropped JPEG trailers: the bytes go as they are.
    write_image(OutputImage(image, split, relative, (), (0, 0)), dest, transfer)
    label = label_path_for(image)
    if label.is_file():
        label_dest = (staging / "labels" / split / relative).with_suffix(".txt")
        label_dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(label, label_dest)


# --------------------------------------------------------------------------- the changelog


def changes_entry(result: MergeResult) -> dict:
    """What changes.json records of one merge: the counts and, per item, what came from the line."""
    return {
        # absolute: the history outlives the folder the merge was run from
        "merged_at": result.merged_at, "yolodefect_version": result.yolodefect_version,
        "queue": os.path.abspath(result.queue), "base": os.path.abspath(result.base), "out": os.path.abspath(result.out), "images_added": len(result.added),
        "boxes_added_per_class": result.boxes_added_per_class, "backgrounds_added": result.backgrounds_added,
        "accepted_unreviewed": result.accepted_unreviewed, "unreviewed_skipped": result.unreviewed_skipped,
        "duplicates_skipped": len(result.duplicates), "items": [asdict(item) for item in result.added],
    }


def changelog_markdown(merges: Sequence[dict]) -> str:
    """CHANGELOG.md: every merge that led to this version, newest first, one line per item added."""
    lines = ["# Changelog", "", ("Frames from the line added to the train split by `yolodefect review merge` "
                                 "(val and test are unchanged). Details in changes.json."), ""]
    for merge in reversed(merges):
        per_class = ", ".join(f"{count} {name}" for name, count in merge["boxes_added_per_class"].items() if count)
        lines += [f"## {Path(merge['out']).name} ({merge['merged_at']})", "",
                  (f"From the review queue `{merge['queue']}` into a copy of `{merge['base']}`: "
                   f"{merge['images_added']} image(s) added to train ({merge['backgrounds_added']} defect-free), "
                   f"boxes: {per_class or 'none'}. Skipped: {merge['unreviewed_skipped']} unreviewed, "
                   f"{merge['duplicates_skipped']} already in the dataset; "
                   f"{merge['accepted_unreviewed']} taken unreviewed (--accept-unreviewed)."), "",
                  "| image | event | source | captured | model sha256 | decision | queued because | boxes added |",
                  "|---|---|---|---|---|---|---|---|"]
        for item in merge["items"]:
            boxes = ", ".join(f"+{count} {name}" for name, count in item["boxes_per_class"].items()) or "none (good part)"
            why = ", ".join(item["reasons"]) + (f" ({item['detail']})" if item.get("detail") else "")
            reviewed = "" if item["reviewed"] else " (unreviewed)"
            cells = [Path(item["file"]).name + reviewed, item["event_id"] or "-", item["source"] or "-",
                     item["captured_at"] or "-", (item["model_sha256"] or "-")[:12], item["decision"] or "-",
                     why or "-", boxes]
            lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
        lines.append("")
    return "\n".join(lines)

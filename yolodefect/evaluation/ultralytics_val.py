"""Predictions exactly as Ultralytics' validator makes them, for the headline mAP.

``yolo val`` (and the mAP in every Ultralytics training log) does not predict the way ``predict``
and the station do: it keeps every class above the confidence floor for a box (multi-label NMS) and,
for a .pt or a dynamic export, letterboxes batches to the stride plus half a stride of padding
(``rect``; a 320 px image runs on a 352 px canvas). Each changes mAP50 by about half a point, so
the headline AP is computed on the validator's own predictions, captured image by image in original
pixels; the operating point (P/R/F1, decisions, thresholds) keeps the station's predictions.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from yolodefect.data.yolo_dataset import DataConfig
from yolodefect.detections import Detections
from yolodefect.errors import UsageError
from yolodefect.inference.runner import ULTRALYTICS_IOU, ULTRALYTICS_MAX_DET, VALIDATION_CONF

logger = logging.getLogger(__name__)



def _capturing_validator(captured: dict[str, Detections]) -> type:
    from ultralytics.models.yolo.detect import DetectionValidator

    class CapturingValidator(DetectionValidator):
        """Ultralytics' own detection validator, keeping each image's predictions in original pixels."""

        def update_metrics(self, preds: list[dict[str, Any]], batch: dict[str, Any]) -> None:
            from ultralytics.utils import ops

            for index, pred in enumerate(preds):
                prepared = self._prepare_batch(index, batch)
                # The validator matches boxes on its canvas, where a box may run past the image edge; scaling as
                # centre and size keeps them unclipped (xyxy scaling clips), so IoU and AP equal the validator's.
                centre_size = ops.scale_boxes(prepared["imgsz"], ops.xyxy2xywh(pred["bboxes"].clone()),
                                              prepared["ori_shape"], ratio_pad=prepared["ratio_pad"], xywh=True)
                captured[os.path.abspath(prepared["im_file"])] = Detections(
                    ops.xywh2xyxy(centre_size).cpu().numpy(), pred["conf"].cpu().numpy(),
                    pred["cls"].cpu().numpy().astype(int))
            super().update_metrics(preds, batch)

    return CapturingValidator


def validator_predictions(
    yolo: Any, config: DataConfig, split: str, images: Sequence[Path], *, imgsz: Any, batch: int, device: str,
    rect: bool = True,
) -> list[Detections]:
    """One :class:`Detections` per image of ``images`` (the split's, in any order), made by ``yolo.val``, in
    original pixels and not clipped to the image (as the validator scores them).

    ``yolo`` is a loaded ``ultralytics.YOLO`` (any backend). ``rect`` is the validator's default (a .pt runs on
    the stride-padded canvas, a fixed-shape export on its square); False runs a .pt on the full ``imgsz``
    square too, so it sees exactly the inputs of its fixed-shape export (the export gate). Nothing is written beside the dataset except
    Ultralytics' label cache (as training writes it); the validator's own folder is temporary.
    """
    from ultralytics.utils import LOGGER

    captured: dict[str, Detections] = {}
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # its per-batch bar and summary would interleave with ours
    try:
        with tempfile.TemporaryDirectory(prefix="yolodefect-val-") as folder:
            # The split alone, in a data.yaml of its own: a dataset folder without one works too, and nothing
            # else in the user's data.yaml (a download script) is acted on.
            split_dir = str(config.split_dirs[split])
            data = Path(folder) / "data.yaml"
            data.write_text(yaml.safe_dump({"path": str(config.root), "train": split_dir, "val": split_dir,
                                            split: split_dir, "names": dict(enumerate(config.class_names))}),
                            encoding="utf-8")
            yolo.val(data=str(data), split=split, imgsz=imgsz, batch=batch, device=device, conf=VALIDATION_CONF,
                     iou=ULTRALYTICS_IOU, max_det=ULTRALYTICS_MAX_DET, rect=rect, plots=False, save_json=False,
                     save_txt=False, verbose=False,
                     project=folder, name="val", exist_ok=True, validator=_capturing_validator(captured))
    finally:
        LOGGER.setLevel(level)
    wanted = [os.path.abspath(image) for image in images]
    # The validator reports every image it read, with or without predictions; one it skipped is unreadable to it.
    skipped = [path for path in wanted if path not in captured]
    if skipped:
        raise UsageError(f"Ultralytics' validator skipped {len(skipped)} image(s) of the {split} split, e.g. "
                         f"{skipped[0]}; run `yolodefect check` on the dataset")
    return [captured[path] for path in wanted]

"""COCO-style average precision, computed by faster-coco-eval on in-memory COCO dicts.

We delegate AP to a trusted, widely used implementation (the C++ port of pycocotools that
Ultralytics itself calls for COCO json evaluation) rather than re-deriving it, so the numbers
mean the same for every backend and precision and can be compared with published COCO figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from yolodefect.detections import Detections
from yolodefect.evaluation.ground_truth import GroundTruth

logger = logging.getLogger(__name__)

# Ultralytics keeps up to 300 boxes per image after NMS; COCO's usual 100 would cut the tail of
# low-confidence predictions that mAP needs.
MAX_DETECTIONS = 300


@dataclass(frozen=True)
class CocoResult:
    """AP over the split. Per-class values are None for classes with no ground-truth box."""

    implementation: str
    map50: float | None
    map50_95: float | None
    ap50: list[float | None]
    ap50_95: list[float | None]
    recall_grid: np.ndarray  # (101,) recall points COCO interpolates precision at
    precision_at_50: np.ndarray  # (classes, 101) interpolated precision at IoU 0.5, NaN without ground truth


def implementation_name() -> str:
    import faster_coco_eval

    return f"faster-coco-eval {faster_coco_eval.__version__}"


def to_coco(
    ground_truth: list[GroundTruth], predictions: list[Detections], class_names: list[str]
) -> tuple[dict, list[dict]]:
    """COCO ground-truth dict and result list; image ids and category ids are 1-based.

    1-based because faster-coco-eval uses id 0 as its "unmatched" marker.
    """
    images, annotations, results = [], [], []
    for image_id, (truth, detections) in enumerate(zip(ground_truth, predictions), start=1):
        width, height = truth.image_size_wh
        images.append({"id": image_id, "width": width, "height": height, "file_name": str(truth.image_path)})
        for box, cls in zip(truth.xyxy.tolist(), truth.class_id.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": cls + 1,
                "bbox": [box[0], box[1], w, h],
                "area": w * h,
                "iscrowd": 0,
            })
        for box, score, cls in zip(
            detections.xyxy.tolist(), detections.confidence.tolist(), detections.class_id.tolist()
        ):
            results.append({
                "image_id": image_id,
                "category_id": cls + 1,
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                "score": score,
            })
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def coco_average_precision(
    ground_truth: list[GroundTruth], predictions: list[Detections], class_names: list[str]
) -> CocoResult:
    """mAP50, mAP50-95 and per-class AP with COCO's 101-point interpolation, area range 'all'."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt_dict, results = to_coco(ground_truth, predictions, class_names)
    quiet = logger.debug
    coco_gt = COCO(gt_dict, print_function=quiet)
    coco_dt = coco_gt.loadRes(results)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=quiet)
    params = evaluator.params
    params.catIds = list(range(1, len(class_names) + 1))
    params.imgIds = list(range(1, len(ground_truth) + 1))
    params.maxDets = [MAX_DETECTIONS]
    # Defects are judged on whole parts, so COCO's small/medium/large split adds nothing here.
    params.areaRng = [[0.0, 1e5**2]]
    params.areaRngLbl = ["all"]
    evaluator.evaluate()
    evaluator.accumulate()

    # precision: [IoU thresholds, recall points, classes, area ranges, max dets]; -1 marks "no ground truth".
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]
    iou50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    ap50, ap50_95 = [], []
    for k in range(len(class_names)):
        per_class = precision[:, :, k]
        valid = per_class > -1
        ap50_95.append(float(per_class[valid].mean()) if valid.any() else None)
        at50 = per_class[iou50]
        ap50.append(float(at50[at50 > -1].mean()) if (at50 > -1).any() else None)
    # COCO's summary: the mean over every valid (IoU, recall, class) cell, i.e. the class mean.
    all_valid = precision[precision > -1]
    at50_valid = precision[iou50][precision[iou50] > -1]
    curve = np.where(precision[iou50] > -1, precision[iou50], np.nan).T
    return CocoResult(
        implementation=implementation_name(),
        map50=float(at50_valid.mean()) if at50_valid.size else None,
        map50_95=float(all_valid.mean()) if all_valid.size else None,
        ap50=ap50,
        ap50_95=ap50_95,
        recall_grid=np.asarray(params.recThrs, dtype=np.float64),
        precision_at_50=curve,
    )

"""COCO-style average precision, computed by faster-coco-eval on in-memory COCO dicts.

The headline mAP is Ultralytics' (``average_precision``); this is the figure kept beside it, labelled
``coco_map50``/``coco_map50_95``, for comparison with COCO-style publications. It is delegated to a
widely used implementation (the C++ port of pycocotools that Ultralytics itself calls for COCO json
evaluation). COCO reads precision off its envelope in steps where Ultralytics interpolates linearly,
so on the same predictions it is usually a few tenths of a point higher.
"""

from __future__ import annotations

import logging
import numpy as np

from yolodefect.detections import Detections
from yolodefect.evaluation.ground_truth import GroundTruth
from yolodefect.inference.runner import ULTRALYTICS_MAX_DET

logger = logging.getLogger(__name__)



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
) -> tuple[float | None, float | None]:
    """mAP50 and mAP50-95 with COCO's 101-point interpolation, area range 'all' (None without ground truth)."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt_dict, results = to_coco(ground_truth, predictions, class_names)
    quiet = logger.debug
    coco_gt = COCO(gt_dict, print_function=quiet)
    coco_dt = coco_gt.loadRes(results)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=quiet)
    params = evaluator.params
    params.catIds = list(range(1, len(class_names) + 1))
    params.imgIds = list(range(1, len(ground_truth) + 1))
    # As many boxes as Ultralytics keeps after NMS: COCO's usual 100 would cut the low-confidence tail mAP needs.
    params.maxDets = [ULTRALYTICS_MAX_DET]
    # Defects are judged on whole parts, so COCO's small/medium/large split adds nothing here.
    params.areaRng = [[0.0, 1e5**2]]
    params.areaRngLbl = ["all"]
    evaluator.evaluate()
    evaluator.accumulate()

    # precision: [IoU thresholds, recall points, classes, area ranges, max dets]; -1 marks "no ground truth".
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]
    iou50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    # COCO's summary: the mean over every valid (IoU, recall, class) cell, i.e. the class mean.
    all_valid = precision[precision > -1]
    at50_valid = precision[iou50][precision[iou50] > -1]
    return (float(at50_valid.mean()) if at50_valid.size else None,
            float(all_valid.mean()) if all_valid.size else None)

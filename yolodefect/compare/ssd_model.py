"""torchvision SSD models for defect classes: the architecture table, the builder, the saved model file.

:func:`build_ssd` mirrors torchvision's ``ssdlite320_mobilenet_v3_large`` and ``ssd300_vgg16`` builders
line for line, with one difference: pretrained backbone weights come from a local file instead of a
download (these machines are offline). Without a file both builders train from scratch exactly as
torchvision's ``weights_backbone=None`` does (``tests/test_compare.py`` checks the layouts agree).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large, vgg16
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, _vgg_extractor
from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor, _normal_init

from yolodefect.errors import UsageError

logger = logging.getLogger(__name__)

MODEL_FILE_KIND = "yolodefect-ssd"


@dataclass(frozen=True)
class SSDArchitecture:
    """One SSD variant and the settings of torchvision's reference recipe for it."""

    name: str
    torchvision_name: str
    backbone: str
    native_size: int
    resizable: bool  # SSDLite's anchors follow the feature maps; SSD300's are fixed to 300 px
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    nms_thresh: float
    topk_candidates: int
    lr_per_image: float  # reference learning rate / reference total batch (linear scaling rule)
    weight_decay: float
    backbone_weights_url: str

    def fill_rgb(self) -> tuple[int, int, int]:
        """The uint8 pixel value that normalises to 0, used to fill zoomed-out canvases."""
        return tuple(round(m * 255) for m in self.image_mean)  # type: ignore[return-value]


ARCHITECTURES: dict[str, SSDArchitecture] = {
    "ssdlite320": SSDArchitecture(
        name="ssdlite320", torchvision_name="ssdlite320_mobilenet_v3_large", backbone="mobilenet_v3_large",
        native_size=320, resizable=True, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), nms_thresh=0.55,
        topk_candidates=300, lr_per_image=0.15 / 192, weight_decay=4e-5,
        backbone_weights_url="https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
    ),
    "ssd300": SSDArchitecture(
        name="ssd300", torchvision_name="ssd300_vgg16", backbone="vgg16", native_size=300, resizable=False,
        image_mean=(0.48235, 0.45882, 0.40784), image_std=(1.0 / 255.0,) * 3, nms_thresh=0.45,
        topk_candidates=400, lr_per_image=0.002 / 32, weight_decay=5e-4,
        backbone_weights_url="https://download.pytorch.org/models/vgg16_features-amdegroot-88682ab5.pth",
    ),
}

# Low score threshold and many boxes per image, like Ultralytics' validation (conf 0.001, 300 boxes):
# AP needs the whole ranking; operating thresholds are applied by the evaluator afterwards.
SCORE_THRESH = 0.001
DETECTIONS_PER_IMAGE = 300


def architecture(name: str) -> SSDArchitecture:
    if name not in ARCHITECTURES:
        raise UsageError(f"--ssd {name!r}: choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def input_size(arch: SSDArchitecture, image_size: int | None) -> int:
    """The square size the SSD resizes every image to; native unless a resizable SSD is given another."""
    if image_size is None or image_size == arch.native_size:
        return arch.native_size
    if not arch.resizable:
        raise UsageError(f"{arch.name} only runs at {arch.native_size} px (its anchors are fixed to that size); "
                         f"leave the SSD image size unset, or use ssdlite320, which runs at any multiple of 32")
    if image_size < 64 or image_size % 32:
        raise UsageError(f"SSD image size {image_size}: give a multiple of 32, at least 64 "
                         f"(native: {arch.native_size})")
    return image_size


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UsageError(f"SSD backbone weights {path} do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a checkpoint
        raise UsageError(f"cannot read SSD backbone weights {path} ({error}); give a torchvision .pth file") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a checkpoint of torchvision's reference scripts
    if not isinstance(state, dict):
        raise UsageError(f"{path} does not hold a state dict")
    return state


def _weights_help(arch: SSDArchitecture, path: Path, detail: str) -> UsageError:
    return UsageError(
        f"{path} does not fit the {arch.backbone} backbone of {arch.name} ({detail}). Give torchvision's ImageNet "
        f"weights ({arch.backbone_weights_url}, downloaded on a machine with internet) or a torchvision "
        f"{arch.torchvision_name} checkpoint"
    )


def _network(arch: SSDArchitecture, num_classes: int, size: int, *, pretrained_layout: bool,
             features_state: dict[str, torch.Tensor] | None = None, source: Path | None = None) -> SSD:
    """torchvision's builder body. ``pretrained_layout``: the layout torchvision uses with ImageNet weights."""
    if arch.name == "ssdlite320":
        norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        # torchvision reduces the tail of MobileNetV3 when no pretrained backbone is used (paper, Table 6).
        classifier = mobilenet_v3_large(weights=None, norm_layer=norm_layer, reduced_tail=not pretrained_layout)
        if features_state is not None:
            _load_features(classifier.features, features_state, arch, source)
        elif not pretrained_layout:
            _normal_init(classifier)
        backbone = _mobilenet_extractor(classifier, 6, norm_layer)
        anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
        out_channels = det_utils.retrieve_out_channels(backbone, (size, size))
        head = SSDLiteHead(out_channels, anchors.num_anchors_per_location(), num_classes, norm_layer)
        return SSD(backbone, anchors, (size, size), num_classes, head=head, **_detection_settings(arch))
    classifier = vgg16(weights=None)
    if features_state is not None:
        _load_features(classifier.features, features_state, arch, source)
    backbone = _vgg_extractor(classifier, False, 4 if pretrained_layout else 5)
    anchors = DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                                  scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], steps=[8, 16, 32, 64, 100, 300])
    return SSD(backbone, anchors, (size, size), num_classes, **_detection_settings(arch))


def _detection_settings(arch: SSDArchitecture) -> dict:
    return {
        "image_mean": list(arch.image_mean), "image_std": list(arch.image_std), "score_thresh": SCORE_THRESH,
        "nms_thresh": arch.nms_thresh, "detections_per_img": DETECTIONS_PER_IMAGE,
        "topk_candidates": arch.topk_candidates,
    }


def _load_features(features: nn.Module, state: dict[str, torch.Tensor], arch: SSDArchitecture,
                   path: Path | None) -> None:
    wanted = {key.removeprefix("features."): value for key, value in state.items() if key.startswith("features.")}
    try:
        features.load_state_dict(wanted, strict=True)
    except RuntimeError as error:
        raise _weights_help(arch, path or Path("?"), str(error).splitlines()[0]) from None


def build_ssd(
    *,
    architecture_name: str,
    class_names: Sequence[str],
    image_size: int | None = None,
    backbone_weights: Path | None = None,
) -> SSD:
    """An SSD for ``class_names`` (plus torchvision's background class 0).

    ``backbone_weights``: torchvision's ImageNet classification weights of the backbone (keys
    ``features.*``) or a torchvision SSD checkpoint (keys ``backbone.*``, its head is not used).
    None trains from scratch. ``image_size``: None for the native size.
    """
    arch = architecture(architecture_name)
    size = input_size(arch, image_size)
    num_classes = len(class_names) + 1
    if backbone_weights is None:
        return _network(arch, num_classes, size, pretrained_layout=False)
    path = Path(backbone_weights)
    state = _load_state_dict(path)
    if any(key.startswith("features.") for key in state):
        model = _network(arch, num_classes, size, pretrained_layout=True, features_state=state, source=path)
    elif any(key.startswith("backbone.") for key in state):
        model = _network(arch, num_classes, size, pretrained_layout=True)
        wanted = {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}
        try:
            model.backbone.load_state_dict(wanted, strict=True)
        except RuntimeError as error:
            raise _weights_help(arch, path, str(error).splitlines()[0]) from None
    else:
        raise _weights_help(arch, path, "no 'features.*' or 'backbone.*' keys")
    logger.info("%s backbone initialised from %s", arch.name, path)
    return model


class SSDNetwork(nn.Module):
    """Backbone and head of an SSD: normalised (B, 3, S, S) -> (class logits, box offsets) per anchor.

    What is timed and exported to ONNX: the network without resizing, normalisation, anchor
    decoding and NMS, like an Ultralytics YOLO ONNX export, which holds no NMS either.
    """

    def __init__(self, ssd: SSD):
        super().__init__()
        self.backbone = ssd.backbone
        self.head = ssd.head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(images)
        if isinstance(features, torch.Tensor):
            features = {"0": features}
        out = self.head(list(features.values()))
        return out["cls_logits"], out["bbox_regression"]


@dataclass(frozen=True)
class SSDModelInfo:
    """What a saved SSD model file says about itself."""

    architecture: str
    class_names: list[str]
    image_size: int
    pretrained_backbone: str | None  # the weights file it started from, None: from scratch
    epoch: int
    map50: float | None


def save_ssd_model(path: Path, model: SSD, info: SSDModelInfo) -> Path:
    """The deployable model: weights and what is needed to rebuild it (no optimizer state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kind": MODEL_FILE_KIND, "model": model.state_dict(), "architecture": info.architecture,
               "class_names": list(info.class_names), "image_size": info.image_size,
               "pretrained_backbone": info.pretrained_backbone, "epoch": info.epoch, "map50": info.map50}
    temporary = path.with_suffix(".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)  # never leave a half-written model behind a crash
    return path


def load_ssd_model(path: Path) -> tuple[SSD, SSDModelInfo]:
    """Rebuild a model written by :func:`save_ssd_model`, in eval mode."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("kind") != MODEL_FILE_KIND:
        raise UsageError(f"{path} is not an SSD model written by yolodefect compare")
    info = SSDModelInfo(payload["architecture"], list(payload["class_names"]), int(payload["image_size"]),
                        payload["pretrained_backbone"], int(payload["epoch"]), payload["map50"])
    arch = architecture(info.architecture)
    model = _network(arch, len(info.class_names) + 1, info.image_size,
                     pretrained_layout=info.pretrained_backbone is not None)
    model.load_state_dict(payload["model"])
    return model.eval(), info

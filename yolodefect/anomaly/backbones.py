"""The pretrained CNN an anomaly model takes its patch features from: an Ultralytics checkpoint or a torchvision ImageNet net.

Offline-first: any Ultralytics detection checkpoint works with no download (the user's own detector,
``weights/yolodefect-demo.pt``); its backbone layers are run up to the last layer at stride 16.
torchvision's ``resnet18`` / ``wide_resnet50_2`` (PatchCore's original backbone, ``layer2`` + ``layer3``)
need their ImageNet weights: downloaded by torchvision when online, or ``backbone_weights=PATH.pth``.

Why by hand rather than anomalib's ``TimmFeatureExtractor``: that one builds timm models, whose
weights come from the Hugging Face hub (unreachable offline) and has no way to take an Ultralytics
checkpoint's layers, which are the backbone every yolodefect user already has.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolodefect.errors import FormatError, UsageError
from yolodefect.inference.identity import file_sha256

TORCHVISION_BACKBONES = {"resnet18": "ResNet18_Weights", "wide_resnet50_2": "Wide_ResNet50_2_Weights"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_STRIDES = (8, 16)  # PatchCore's mid-level layers: local enough for small defects, deep enough to generalise


@dataclass(frozen=True)
class BackboneInfo:
    """What the model file records about its backbone, and what loading it again must match."""

    kind: str  # "ultralytics" or "torchvision"
    name: str  # checkpoint file name, or the torchvision model name
    sha256: str  # of the checkpoint / weights file; "" for torchvision's own download
    layers: tuple[str, ...]  # the feature layers, in stride order
    channels: int  # feature channels after concatenating the layers

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "sha256": self.sha256, "layers": list(self.layers),
                "channels": self.channels}


class FeatureBackbone:
    """Runs images through the backbone and returns the feature maps at strides 8 and 16."""

    def __init__(self, net: torch.nn.Module, info: BackboneInfo, run: Any, normalise: bool):
        self.net = net.eval()
        self.info = info
        self._run = run
        self._normalise = normalise
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @torch.inference_mode()
    def __call__(self, images_bgr: np.ndarray) -> list[torch.Tensor]:
        """``images_bgr`` (N, H, W, 3) uint8 -> [(N, C8, H/8, W/8), (N, C16, H/16, W/16)] float32."""
        batch = torch.from_numpy(np.ascontiguousarray(images_bgr[..., ::-1])).permute(0, 3, 1, 2).float() / 255.0
        if self._normalise:
            batch = (batch - self._mean) / self._std
        return [m.float() for m in self._run(batch)]


def load_backbone(spec: str | Path, weights: Path | str | None = None) -> FeatureBackbone:
    """A backbone from an Ultralytics checkpoint path or a torchvision name (``resnet18``, ``wide_resnet50_2``)."""
    name = str(spec)
    if name in TORCHVISION_BACKBONES:
        return _torchvision_backbone(name, Path(weights) if weights else None)
    if weights is not None:
        raise UsageError("--backbone-weights is for torchvision backbones (resnet18, wide_resnet50_2); "
                         f"{name} is an Ultralytics checkpoint and carries its own weights")
    path = Path(name)
    if path.suffix != ".pt":
        raise UsageError(f"backbone {name!r}: give an Ultralytics checkpoint (.pt, e.g. weights/yolodefect-demo.pt, "
                         f"or your own detector's best.pt) or one of {', '.join(TORCHVISION_BACKBONES)}")
    return _ultralytics_backbone(path)


def _ultralytics_backbone(path: Path) -> FeatureBackbone:
    from yolodefect.inference.model_file import load_yolo

    yolo = load_yolo(path, expected="an Ultralytics PyTorch checkpoint (.pt) to take backbone features from")
    layers = list(yolo.model.model)
    for layer in layers:
        layer.float()
    picked = _layers_at_strides(layers, path)
    last = max(picked)

    def run(batch: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[Any] = []
        x: Any = batch
        for index, layer in enumerate(layers[: last + 1]):
            if layer.f != -1:  # Ultralytics' routing: a layer may read earlier layers' outputs
                x = outputs[layer.f] if isinstance(layer.f, int) else [x if j == -1 else outputs[j] for j in layer.f]
            x = layer(x)
            outputs.append(x)
        return [outputs[i] for i in picked]

    net = torch.nn.ModuleList(layers[: last + 1])
    net.requires_grad_(False)
    probe = run(torch.zeros(1, 3, 64, 64))
    info = BackboneInfo("ultralytics", path.name, file_sha256(path), tuple(f"model.{i}" for i in picked),
                        sum(int(m.shape[1]) for m in probe))
    return FeatureBackbone(net, info, run, normalise=False)


@torch.inference_mode()
def _layers_at_strides(layers: list[torch.nn.Module], path: Path) -> list[int]:
    """Index of the last backbone layer at each of FEATURE_STRIDES, found by running a probe image.

    Only the sequential backbone counts: it ends at the neck's first Upsample (or the first layer
    that reads another layer's output), so a neck layer at the same stride is never picked.
    """
    size = 256
    x: Any = torch.zeros(1, 3, size, size)
    last_at: dict[int, int] = {}
    for index, layer in enumerate(layers):
        if layer.f != -1 or not isinstance(x, torch.Tensor) or type(layer).__name__ == "Upsample":
            break  # the neck starts here
        x = layer(x)
        if isinstance(x, torch.Tensor) and x.ndim == 4:
            last_at[size // x.shape[-1]] = index
    missing = [s for s in FEATURE_STRIDES if s not in last_at]
    if missing:
        raise FormatError(path, f"its backbone has no layer at stride {missing}; an anomaly model needs a "
                                "detection checkpoint (YOLOv8, YOLO11 ...) whose backbone downsamples by 8 and 16")
    return [last_at[s] for s in FEATURE_STRIDES]


def _torchvision_backbone(name: str, weights: Path | None) -> FeatureBackbone:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if weights is not None:
        if not weights.is_file():
            raise UsageError(f"--backbone-weights {weights} does not exist")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as error:  # torch raises assorted types for a wrong or corrupt file
            raise FormatError(weights, f"not {name}'s ImageNet weights ({type(error).__name__}: "
                                       f"{str(error).splitlines()[0][:160]})") from error
        sha256 = file_sha256(weights)
    else:
        enum = getattr(torchvision.models, TORCHVISION_BACKBONES[name])
        try:
            net.load_state_dict(enum.IMAGENET1K_V1.get_state_dict(progress=False))
        except Exception as error:  # URLError offline, HTTPError, a proxy's refusal
            raise UsageError(
                f"the ImageNet weights of {name} could not be downloaded ({type(error).__name__}); offline, "
                f"pass --backbone-weights PATH.pth (torchvision's {enum.IMAGENET1K_V1.url.rsplit('/', 1)[-1]}) "
                "or use an Ultralytics checkpoint as the backbone (weights/yolodefect-demo.pt, your detector's best.pt)"
            ) from error
        sha256 = ""
    net.requires_grad_(False)

    def run(batch: torch.Tensor) -> list[torch.Tensor]:
        x = net.maxpool(net.relu(net.bn1(net.conv1(batch))))
        stride8 = net.layer2(net.layer1(x))
        return [stride8, net.layer3(stride8)]

    channels = sum(int(m.shape[1]) for m in run(torch.zeros(1, 3, 64, 64).float()))
    return FeatureBackbone(net, BackboneInfo("torchvision", name, sha256, ("layer2", "layer3"), channels), run,
                           normalise=True)

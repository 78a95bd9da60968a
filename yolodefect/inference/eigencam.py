"""Where the detector looked: EigenCAM heatmaps for the station's reject evidence (``watch --evidence-cam``).

EigenCAM (Muhammad & Yeasin, 2020) needs no gradients and no class: the activations of one layer,
a (positions x channels) matrix, are projected on their first principal component; the projection,
ReLU'd, normalised to [0, 1] and upsampled to the image, is the heatmap. It is computed on the PyTorch
checkpoint (an ONNX or OpenVINO export exposes no inner layers), with a forward hook on one layer of
the Ultralytics model, and only for frames that become reject evidence, never on every frame.

The layer, unless given: the backbone's output, found from the model's structure rather than from
an index that differs between YOLO versions. The neck starts at the first ``Upsample`` or ``Concat``
(every Ultralytics detector's FPN/PAN begins by upsampling the deepest map and concatenating it with
a shallower one); of the layers before it, the last one with the largest stride (the coarsest map,
which carries the most semantic features) is taken: SPPF (index 9) in YOLOv8, C2PSA (index 10) in
YOLO11. The strides are measured with one forward pass on a small blank image at load time.

On tiles (``watch --tile``) each tile goes through the model as the detector sees it; the principal
component is taken over the activations of all tiles together, so every tile is projected on one
direction and the heat of two tiles is comparable; overlaps keep the hotter value.

What the heat says: EigenCAM is class-agnostic, and at stride 32 a cell covers 32 px. On the demo model
the heat lies on the part, not on the belt (mean heat in a defect box 3-5x the rest of the frame), and
only a little more on the defect than on the rest of the part (the same part with and without its defect:
+0.04 mean heat in the box, 12 of 16 seeds). It shows where the detector looked; the boxes say what it found.
Cost: one model pass (per tile) plus an SVD, about 70-100 ms per reject on 2 CPU cores for a 320 px frame.

Hand-written (a dozen lines of SVD) rather than taken from pytorch-grad-cam: that package adds its own
dependencies (scikit-learn, matplotlib, ttach), expects a model whose output is a tensor (an Ultralytics
detector returns a tuple, so it needs a wrapper anyway) and knows nothing of the letterbox or the tiles.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolodefect.errors import UsageError
from yolodefect.inference.identity import file_sha256
from yolodefect.inference.model_file import (
    CHECKPOINT,
    DEFAULT_IMGSZ,
    check_imgsz,
    load_yolo,
    read_model_file,
    resolve_imgsz,
)
from yolodefect.inference.tiles import check_tile_grid, tile_origins

logger = logging.getLogger(__name__)

_NECK_TYPES = ("Upsample", "Concat")  # the first of these starts the neck (FPN/PAN) of an Ultralytics detector
_LETTERBOX_GREY = 114  # Ultralytics' letterbox padding value
DEFAULT_ALPHA = 0.45  # heatmap weight in the overlay: the part stays readable under the colours


@dataclass(frozen=True)
class CamLayer:
    """The layer the heatmap is taken from: its index in the Ultralytics model, its type and stride."""

    index: int
    type_name: str
    stride: int

    def describe(self) -> str:
        return f"layer {self.index} ({self.type_name}, stride {self.stride})"


def checkpoint_for_cam(model: Path | None, cam_model: Path | None) -> Path:
    """The PyTorch checkpoint to compute heatmaps with for a station running ``model``.

    ``cam_model`` when given; else ``model`` itself when it is a .pt; else the source checkpoint the export's model
    card names (``yolodefect export`` writes its path and SHA-256), when that file is there and unchanged.
    Raises UsageError otherwise: an ONNX or OpenVINO export has no inner layers to look at.
    """
    if cam_model is not None:
        if Path(cam_model).suffix.lower() != ".pt":
            raise UsageError(f"--evidence-cam-model {cam_model} must be {CHECKPOINT}: the heatmap is taken "
                             "from the model's inner layers, which only the PyTorch checkpoint has")
        return Path(cam_model)
    if model is None:
        raise UsageError("--evidence-cam needs the detector's PyTorch checkpoint: give --model best.pt, or "
                         "--evidence-cam-model best.pt")
    if Path(model).suffix.lower() == ".pt":
        return Path(model)
    found, tried = _card_checkpoint(Path(model))
    if found is not None:
        return found
    why = f" ({tried})" if tried else ""
    raise UsageError(f"--evidence-cam needs the PyTorch checkpoint {Path(model).name} was exported from: the "
                     f"heatmap is taken from the model's inner layers, which an ONNX or OpenVINO export does not "
                     f"expose{why}; give --evidence-cam-model path/to/best.pt")


def _card_checkpoint(model: Path) -> tuple[Path | None, str]:
    """The card's source checkpoint if it exists with the SHA-256 the card recorded; else None and what was tried."""
    card = read_model_file(model).card or {}
    source = card.get("source_checkpoint") if isinstance(card.get("source_checkpoint"), dict) else None
    if not source or not isinstance(source.get("file"), str):
        return None, "its model card names no source checkpoint" if card else "it has no model card"
    named = Path(source["file"]).expanduser()
    # The card holds the path as given at export time: relative to that working folder, or next to the model.
    candidates = [named] if named.is_absolute() else [named, model.parent / named.name]
    for candidate in candidates:
        if candidate.is_file():
            if source.get("sha256") and file_sha256(candidate) != source["sha256"]:
                return None, f"{candidate}, named by its model card, has changed since the export (SHA-256 differs)"
            return candidate, ""
    return None, f"the source checkpoint its model card names, {named}, is not there"


def find_cam_layer(layers: Any, stride_of: dict[int, int]) -> CamLayer:
    """The backbone's output layer: of the layers before the first Upsample/Concat, the last at the largest stride.

    ``layers`` is the Ultralytics model's ``nn.Sequential``; ``stride_of`` maps layer index -> the stride of its
    output (layers whose output is no feature map are absent).
    """
    backbone = []
    for layer in layers:
        if type(layer).__name__ in _NECK_TYPES:
            break
        backbone.append(layer)
    if len(backbone) == len(layers):  # no neck (not a detector of the FPN kind): all but the head
        backbone = backbone[:-1]
    measured = [(stride_of[layer.i], layer.i, layer) for layer in backbone if layer.i in stride_of]
    if not measured:
        raise UsageError("no feature-map layer found for the heatmap in this model")
    deepest = max(stride for stride, _, _ in measured)
    index, layer = max((i, layer) for stride, i, layer in measured if stride == deepest)
    return CamLayer(index=int(index), type_name=type(layer).__name__, stride=int(deepest))


def principal_component(groups: Sequence[np.ndarray]) -> np.ndarray:
    """The first principal component of the activation vectors (rows: positions, columns: C channels) of one or more
    groups (an image's tiles), each group centred on its own mean.

    Centring per tile keeps what differs between whole tiles (a tile of empty belt against a tile with a part,
    whose context reaches every cell through SPPF and attention) out of the component, which then describes what
    varies within the tiles. The sign is arbitrary (SVD); it is chosen so that the projection grows with the
    activations' strength (their norm), so the heat goes where the layer responds, not to its complement.
    """
    centred = np.concatenate([g - g.mean(axis=0) for g in groups]).astype(np.float64)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    component = vt[0]
    norms = [np.linalg.norm(g.astype(np.float64), axis=1) for g in groups]
    strength = np.concatenate([n - n.mean() for n in norms])
    return -component if np.dot(centred @ component, strength) < 0 else component


def feature_strides(model: Any, probe_px: int = 128, device: Any = "cpu") -> dict[int, int]:
    """Layer index -> stride of its output, for the layers of an Ultralytics model (``model.model``, each layer with
    its index ``i``) whose output is a feature map; measured with one pass on a blank ``probe_px`` square, which
    must be a multiple of the model's largest stride."""
    import torch

    sizes: dict[int, int] = {}

    def record(module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1]:
            sizes[module.i] = int(output.shape[-1])

    hooks = [layer.register_forward_hook(record) for layer in model.model]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, probe_px, probe_px, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return {index: probe_px // size for index, size in sizes.items()}


def eigencam_projection(activations: np.ndarray) -> np.ndarray:
    """EigenCAM of (C, h, w) activations: every position projected on the first principal component of the h*w
    positions' C-channel vectors, as (h, w); not yet ReLU'd or normalised."""
    channels, height, width = activations.shape
    vectors = activations.reshape(channels, -1).T
    return ((vectors - vectors.mean(axis=0)) @ principal_component([vectors])).reshape(height, width).astype(np.float32)


def cam_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """``image`` (BGR or grey uint8) with ``heat`` ((H, W) in [0, 1]) blended over it in OpenCV's JET colours."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    colours = cv2.applyColorMap(np.clip(heat * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(colours, alpha, image, 1.0 - alpha, 0.0)


class EigenCam:
    """EigenCAM heatmaps of one PyTorch detection checkpoint, on whole frames or on the station's tiles.

    ``imgsz`` defaults to the size the checkpoint was trained at (else 640), rounded up to its stride;
    ``tile``/``overlap`` are the detector's tile grid (``watch --tile``); ``layer`` an index to override
    :func:`find_cam_layer`. Loading unpickles the checkpoint: only pass files the user named.
    """

    def __init__(self, checkpoint: Path | str, *, imgsz: int | None = None, device: str = "cpu",
                 tile: int | None = None, overlap: float = 0.2, layer: int | None = None):
        import torch
        from ultralytics.utils.torch_utils import select_device

        check_tile_grid(tile, overlap, tile_option="tile", overlap_option="tile_overlap")
        if imgsz is not None:
            check_imgsz(imgsz)
        self.checkpoint = Path(checkpoint)
        yolo = load_yolo(self.checkpoint, task="detect", expected=CHECKPOINT)
        model_file = read_model_file(self.checkpoint, loaded=yolo)
        self.class_names = dict(model_file.class_names)
        self.stride = model_file.stride
        size = imgsz if imgsz is not None else (model_file.imgsz if isinstance(model_file.imgsz, int)
                                                 else DEFAULT_IMGSZ)
        self.imgsz = int(resolve_imgsz(size, self.stride)[0])  # type: ignore[arg-type]
        self.tile = tile
        self.overlap = overlap
        self.device = select_device(device, verbose=False)
        self._torch = torch
        self.model = yolo.model.float().eval().to(self.device)
        layers = self.model.model
        self.layer = self._choose_layer(layers, layer)
        self._module = layers[self.layer.index]

    def check_classes(self, detector_names: Mapping[int, str]) -> None:
        """UsageError unless each class of the checkpoint is the detector's class of the same id: a heatmap from
        another model would show where that model looked, not the station's."""
        differing = [f"{i}: {name} vs {detector_names.get(i)}" for i, name in sorted(self.class_names.items())
                     if detector_names.get(i) != name]
        if differing:
            raise UsageError(f"the heatmap checkpoint {self.checkpoint} has other classes than the station's model "
                             f"({'; '.join(differing[:3])}): give the .pt the model was exported from "
                             "(--evidence-cam-model)")

    def _choose_layer(self, layers: Any, index: int | None) -> CamLayer:
        stride_of = feature_strides(self.model, 4 * self.stride, self.device)
        if index is None:
            return find_cam_layer(layers, stride_of)
        if index not in stride_of:
            raise UsageError(f"layer {index} has no feature map for the heatmap (feature-map layers: "
                             f"{', '.join(map(str, sorted(stride_of)))})")
        return CamLayer(index=index, type_name=type(layers[index]).__name__, stride=stride_of[index])

    def heatmap(self, image: np.ndarray) -> np.ndarray:
        """The heatmap of a BGR (or grey) uint8 image: float32 (H, W) in [0, 1], 1 where the layer responds most."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        height, width = image.shape[:2]
        tile = self.tile
        origins = tile_origins((width, height), (tile, tile), self.overlap) if tile else [(0, 0)]
        crops = [image[y:y + tile, x:x + tile] if tile else image for x, y in origins]
        maps, scaled = [], []
        captured: list[Any] = []
        hook = self._module.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
        try:
            with self._torch.inference_mode():
                for crop in crops:
                    tensor, size_hw = self._letterbox(crop)
                    self.model(tensor)
                    maps.append(captured.pop()[0].float().cpu().numpy())  # (C, h, w)
                    scaled.append(size_hw)
        finally:
            hook.remove()
        stride = self.layer.stride
        # One principal component for all tiles, so their heat is comparable, from the cells that see the image
        # (not only letterbox padding), each tile centred on its own mean (see principal_component).
        seen = [m[:, :-(-h // stride), :-(-w // stride)].reshape(m.shape[0], -1).T for m, (h, w) in zip(maps, scaled)]
        component = principal_component(seen)
        heat = np.full((height, width), -np.inf, dtype=np.float32)
        for (x, y), crop, feature, (h, w), cells in zip(origins, crops, maps, scaled, seen):
            centred = feature - cells.mean(axis=0)[:, None, None]
            projection = np.tensordot(component, centred, axes=1).astype(np.float32)
            # Cells -> the letterboxed input's pixels, the padding cut off, then back to the crop's own size.
            padded = cv2.resize(projection, (feature.shape[2] * stride, feature.shape[1] * stride),
                                interpolation=cv2.INTER_LINEAR)
            resized = cv2.resize(padded[:h, :w], (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
            region = heat[y:y + crop.shape[0], x:x + crop.shape[1]]
            np.maximum(region, resized, out=region)  # overlapping tiles: the hotter value
        heat = np.maximum(heat, 0.0)  # ReLU (no -inf is left: the tiles cover the frame)
        peak = float(heat.max())
        return heat / peak if peak > 0 else heat

    def _letterbox(self, crop: np.ndarray) -> tuple[Any, tuple[int, int]]:
        """The crop as the detector sees it (scaled to fit imgsz, padded to the stride; RGB /255) and its (h, w)
        there before the padding, which goes bottom and right so that the heatmap's crop of it is exact."""
        height, width = crop.shape[:2]
        scale = min(self.imgsz / height, self.imgsz / width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if scale != 1 else crop
        pad_h, pad_w = (-new_h) % self.stride, (-new_w) % self.stride
        padded = cv2.copyMakeBorder(resized, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                                    value=(_LETTERBOX_GREY,) * 3)
        rgb = np.ascontiguousarray(padded[:, :, ::-1].transpose(2, 0, 1))
        tensor = self._torch.from_numpy(rgb).to(self.device).float().div_(255.0)[None]
        return tensor, (new_h, new_w)

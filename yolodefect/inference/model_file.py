"""The model file, shared by train, eval, export, watch and compare.

* :func:`check_model_file`: a cheap look at the file's structure (nothing is unpickled or run), so a random,
  empty or truncated file is one clear :class:`ModelFileError` instead of whatever the loader trips on;
  :func:`load_yolo` turns a loader failure into the same error.
* :func:`fetch_ultralytics_weights`: Ultralytics' release weights (yolo26n.pt ...) from Ultralytics' weights
  folder or a fresh download into it, never from the working folder. Unpickling a checkpoint runs its code,
  so a file nobody named must not be loaded just because it lies where the command runs.
* :func:`resolve_imgsz`: the one image-size rule: a positive number of pixels, at most :data:`MAX_IMGSZ`,
  rounded up to a multiple of the model's stride (as Ultralytics does) with a note saying so.
* :class:`ModelFile` (made by :func:`read_model_file`): what a model file is and says about itself (format, class
  names, size, stride, SHA-256, precision, card); eval, export, watch and compare all read a model this way.
"""

from __future__ import annotations

import ast
import math
import numbers
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from yolodefect.errors import FormatError, UsageError
from yolodefect.inference.identity import file_sha256, guess_precision, load_model_card
from yolodefect.inference.names import names_dict

ImageSize = int | tuple[int, int]

ANY_MODEL = "a PyTorch .pt checkpoint saved by Ultralytics, an .onnx file or an OpenVINO folder"
CHECKPOINT = "a PyTorch .pt checkpoint saved by Ultralytics (e.g. runs/train/weights/best.pt)"

# Memory grows with the square of the size. Measured on CPU with a nano model: predicting 8 images (eval's batch)
# peaked at 1.6 GB at 1280 px, 7 GB at 2560 px and 24 GB at 4096 px; 10000 px ran a 23 GB machine out of memory.
# Larger images are better tiled (`convert --tile`, `watch --tile`) than shrunk into memory.
MAX_IMGSZ = 4096
DEFAULT_STRIDE = 32  # every P5 YOLO detector; P6 models say 64
DEFAULT_IMGSZ = 640  # Ultralytics' default, for a model that does not say its size

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = b"\x80"  # a legacy torch.save file starts with a pickle protocol marker
_DETAIL_CHARS = 160


class ModelFileError(FormatError):
    """A model file that cannot be read: names the file, what is wrong with it and what was expected."""

    def __init__(self, path: Path | str, detail: str, *, expected: str = ANY_MODEL):
        super().__init__(path, detail)
        self.expected = expected
        self.args = (f"{self.path} is not a readable model: {detail}; expected {expected}",)


def missing_model(path: Path | str, expected: str = ANY_MODEL) -> UsageError:
    return UsageError(f"model {path} does not exist (give {expected})")


def check_model_file(path: Path | str, *, expected: str = ANY_MODEL) -> Path:
    """``path`` if it is structurally a model file; UsageError when missing, :class:`ModelFileError` when unreadable.

    Reads only the file's structure (zip index, ONNX protobuf, OpenVINO XML): nothing is unpickled, so this is safe
    on any file and fast enough to run before minutes of other work.
    """
    path = Path(path)
    if not path.exists():
        raise missing_model(path, expected)
    if path.is_dir():
        _check_openvino_folder(path, expected)
        return path
    if path.stat().st_size == 0:
        raise ModelFileError(path, "the file is empty (0 bytes)", expected=expected)
    suffix = path.suffix.lower()
    if suffix == ".pt":
        _check_checkpoint(path, expected)
    elif suffix == ".onnx":
        _check_onnx(path, expected)
    return path


def _check_checkpoint(path: Path, expected: str) -> None:
    with open(path, "rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    if head.startswith(_PICKLE_PROTOCOL):
        return  # the legacy format (PyTorch < 1.6): only the loader can tell more
    if not head.startswith(_ZIP_MAGIC):
        raise ModelFileError(path, "it is not a PyTorch checkpoint (neither a zip archive nor a pickle)",
                             expected=expected)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        # A zip archive's index sits at its end: a file cut short has the start of a checkpoint and no index.
        raise ModelFileError(path, "the file is truncated: it starts like a PyTorch checkpoint but its end is "
                                   "missing (an interrupted copy or download?)", expected=expected) from None
    if not any(name.endswith("data.pkl") for name in names):
        raise ModelFileError(path, "it is a zip archive but not a PyTorch checkpoint (no data.pkl inside)",
                             expected=expected)


def _check_onnx(path: Path, expected: str) -> None:
    import onnx

    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError, onnx its own types, both for cut or foreign bytes
        raise ModelFileError(path, f"the file is truncated or corrupted (ONNX cannot parse it: {_short(error)})",
                             expected=expected) from None
    if not proto.graph.node or not proto.opset_import:
        raise ModelFileError(path, "the file is truncated or corrupted (it holds no complete ONNX graph)",
                             expected=expected)


def _check_openvino_folder(path: Path, expected: str) -> None:
    graphs = sorted(path.glob("*.xml"))
    if not graphs:
        raise ModelFileError(path, "the folder holds no OpenVINO model (an .xml graph and its .bin weights)",
                             expected=expected)
    for graph in graphs:
        weights = graph.with_suffix(".bin")
        if not weights.is_file() or weights.stat().st_size == 0:
            raise ModelFileError(path, f"{graph.name} has no weights file {weights.name} (or it is empty)",
                                 expected=expected)
        try:
            ElementTree.parse(graph)
        except ElementTree.ParseError as error:
            raise ModelFileError(path, f"{graph.name} is truncated or corrupted ({_short(error)})",
                                 expected=expected) from None


def _short(error: BaseException) -> str:
    """The first sentence of an error message, on one line and short: loaders write paragraphs."""
    text = " ".join(str(error).split())
    sentence = text.split(". ")[0]
    return sentence if len(sentence) <= _DETAIL_CHARS else sentence[:_DETAIL_CHARS - 3] + "..."


def load_yolo(path: Path | str, *, task: str | None = None, expected: str = ANY_MODEL) -> Any:
    """``ultralytics.YOLO`` for a checked, existing model file; a loader failure is a :class:`ModelFileError`.

    Loading a .pt unpickles it, which runs any code it holds: only pass files the user named or
    :func:`fetch_ultralytics_weights` returned.
    """
    from ultralytics import YOLO

    path = check_model_file(path, expected=expected)
    try:
        return YOLO(str(path), task=task) if task else YOLO(str(path))
    except Exception as error:  # Ultralytics wraps pickle, zip, protobuf and key errors in assorted types
        cause = error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise ModelFileError(path, f"Ultralytics cannot load it ({type(cause).__name__}: {_short(cause)})",
                             expected=expected) from error


def model_stride(yolo: Any) -> int:
    """The largest stride of a loaded ``ultralytics.YOLO`` (32 for P5 models, 64 for P6); image sizes are multiples."""
    stride = getattr(getattr(yolo, "model", None), "stride", None)
    try:
        return int(max(stride)) if stride is not None else DEFAULT_STRIDE
    except (TypeError, ValueError):
        return DEFAULT_STRIDE


def weights_dir(configured: str | Path | None = None) -> Path:
    """Ultralytics' weights folder (``yolo settings weights_dir``) as an absolute path.

    Ultralytics' default outside a git checkout is the relative ``weights``, a folder of whatever directory the
    command runs in: exactly where a planted file would sit. Then its per-user folder is used instead.
    """
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    folder = Path(SETTINGS["weights_dir"] if configured is None else configured).expanduser()
    return folder if folder.is_absolute() else Path(USER_CONFIG_DIR) / "weights"


def is_ultralytics_weights(name: str) -> bool:
    """``name`` is a bare file name of Ultralytics' released weights (yolo26n.pt, yolo11s.pt ...)."""
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    return Path(name).name == name and name in GITHUB_ASSETS_NAMES


def fetch_ultralytics_weights(name: str, folder: Path | None = None) -> Path:
    """Ultralytics' released weights ``name`` from :func:`weights_dir` (or ``folder``), downloaded there if missing.

    Never looks in the working folder. Raises ConnectionError when a download is needed and fails.
    """
    from ultralytics.utils.downloads import attempt_download_asset

    if not is_ultralytics_weights(name):
        raise UsageError(f"{name} is not one of Ultralytics' released weights (e.g. yolo26n.pt)")
    target = (folder or weights_dir()) / name
    # An absolute path: Ultralytics returns it when present, else downloads exactly there (not into the cwd).
    found = Path(attempt_download_asset(target))
    if not found.is_file():
        raise ConnectionError(f"{name} could not be downloaded into {target.parent}")
    return found


def check_imgsz(requested: ImageSize | list[int], *, option: str = "--imgsz", max_px: int = MAX_IMGSZ) -> None:
    """UsageError unless ``requested`` is a positive whole number of pixels (or an (h, w) pair) <= ``max_px``."""
    sizes = tuple(requested) if isinstance(requested, (tuple, list)) else (requested,)
    if not 1 <= len(sizes) <= 2 or any(isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0
                                       for size in sizes):
        raise UsageError(f"{option} must be a positive whole number of pixels, got {_show(requested)}")
    if max(sizes) > max_px:
        raise UsageError(f"{option} {_show(requested)} is above the limit of {max_px} px: memory grows with the "
                         f"square of the size (predicting 8 images at 4096 px already takes about 24 GB with a nano "
                         f"model); tile large images instead (`yolodefect convert --tile`, `watch --tile`)")


def resolve_imgsz(requested: ImageSize | list[int], stride: int, *, option: str = "--imgsz",
                  max_px: int = MAX_IMGSZ) -> tuple[ImageSize, str | None]:
    """The size a model really runs at for ``requested``, and a note when that differs.

    Rounded up to a multiple of the model's largest stride, as Ultralytics' own ``check_imgsz`` would do
    silently; the note makes the change visible and the caller reports the size used.
    """
    check_imgsz(requested, option=option, max_px=max_px)
    stride = max(int(stride), 1)
    pair = isinstance(requested, (tuple, list))
    sizes = tuple(int(size) for size in (requested if pair else (requested,)))
    rounded = tuple(math.ceil(size / stride) * stride for size in sizes)
    used: ImageSize = rounded if pair else rounded[0]
    if rounded == sizes:
        return used, None
    return used, f"{option} {_show(requested)} -> {_show(used)}, a multiple of the model stride {stride}"


def _show(size: Any) -> str:
    if isinstance(size, (tuple, list)):
        return str(tuple(size))
    return repr(size) if not isinstance(size, numbers.Integral) or isinstance(size, bool) else str(size)


@dataclass(frozen=True)
class ModelFile:
    """What a model file is and says about itself, read without running it.

    Its identity (``name``, ``sha256``, ``precision``) is what every station event records.
    """

    path: Path
    format: str  # "pt", or the export's suffix / "openvino" for a folder
    class_names: dict[int, str]  # {id: name}; empty when an export's metadata names no classes
    imgsz: ImageSize | None  # the size a .pt was trained at or an export was exported at, when it says
    fixed_shape: bool  # an export that only accepts ``imgsz`` (not exported with dynamic=True)
    stride: int  # the model's largest stride: image sizes are multiples of it
    sha256: str  # of the file, or of an export folder's files
    precision: str  # the card's, else guessed from the name ("int8" for *_int8*, else "fp32")
    card: dict[str, Any] | None = field(default=None, compare=False)  # the model card next to it, if any

    @property
    def name(self) -> str:
        return self.path.name


def read_model_file(path: Path | str, *, loaded: Any = None) -> ModelFile:
    """The :class:`ModelFile` of a .pt checkpoint or an Ultralytics export.

    ``loaded`` is an ``ultralytics.YOLO`` already made from ``path``, to avoid loading twice (a .pt is loaded to read
    its names and training size; an export's metadata is read without its runtime). Raises UsageError when the file
    is missing and :class:`ModelFileError` when it cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() == ".pt":
        model = loaded if loaded is not None else load_yolo(path, task="detect")
        # A checkpoint remembers its training arguments; imgsz is the size it learned at.
        return _model_file(path, "pt", names_dict(model.names), parse_imgsz(model.overrides.get("imgsz")),
                           fixed_shape=False, stride=model_stride(model))
    if loaded is None:
        check_model_file(path)  # a damaged export gets the same one message as a damaged .pt
    # Exports carry Ultralytics metadata; reading it needs no runtime (OpenVINO, TensorRT) installed.
    from ultralytics.nn.backends.base import BaseBackend

    try:
        metadata = BaseBackend.read_metadata(path) or {}
    except Exception as error:  # damaged metadata surfaces as YAML, Unicode or protobuf errors
        raise ModelFileError(path, f"its Ultralytics metadata is unreadable ({type(error).__name__})") from error
    kind = "openvino" if path.is_dir() and path.name.endswith("_openvino_model") else path.suffix.lstrip(".") or "dir"
    args = _literal(metadata.get("args")) or {}
    imgsz = parse_imgsz(metadata.get("imgsz"))
    dynamic = bool(args.get("dynamic", False)) if isinstance(args, dict) else False
    names = _names_or_empty(metadata.get("names"))
    if not names and loaded is not None:
        names = _names_or_empty(getattr(loaded, "names", None))
    return _model_file(path, kind, names, imgsz, fixed_shape=imgsz is not None and not dynamic,
                       stride=_stride(metadata.get("stride")))


def _model_file(path: Path, kind: str, names: dict[int, str], imgsz: ImageSize | None, *, fixed_shape: bool,
                stride: int) -> ModelFile:
    card = load_model_card(path)
    return ModelFile(path, kind, names, imgsz, fixed_shape, stride, sha256=file_sha256(path),
                     precision=guess_precision(path, card), card=card)


def _literal(value: Any) -> Any:
    """Ultralytics' ONNX metadata stores dicts and tuples as their repr."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None


def _names_or_empty(names: Any) -> dict[int, str]:
    try:
        return names_dict(names) if names is not None else {}
    except ValueError:
        return {}  # unreadable names in metadata: the loaded model's own, or none


def parse_imgsz(value: Any) -> ImageSize | None:
    """An image size as a model file states it (an int, an (h, w) pair, or their repr): a square pair is its side."""
    value = _literal(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0] if value[0] == value[1] else (int(value[0]), int(value[1]))
    return None


def _stride(value: Any) -> int:
    try:
        return int(value) if value is not None and int(value) > 0 else DEFAULT_STRIDE
    except (TypeError, ValueError):
        return DEFAULT_STRIDE

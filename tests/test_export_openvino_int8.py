"""OpenVINO INT8 by our NNCF call: model.1's convolution and the Detect head's decoding stay float, the rest is
quantized,
and NNCF's one-line-per-op log stays off the screen. Real OpenVINO and NNCF on a small IR built here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("openvino", reason="the openvino extra is not installed")
pytest.importorskip("nncf", reason="the openvino extra is not installed")

# A YOLO-shaped IR: convolutions named as Ultralytics' trace names them, a head scope ending in a Sigmoid.
LAYERS = ("__module.model.0.conv", "__module.model.1.conv", "__module.model.2.conv", "__module.model.3.cv3.0")


def tiny_ir(folder: Path) -> Path:
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    image = ops.parameter([1, 3, 32, 32], np.float32, name="images")
    x, channels = image, 3
    for name in LAYERS:
        weights = ops.constant(rng.normal(0, 0.3, (8, channels, 3, 3)).astype(np.float32))
        x = ops.convolution(x, weights, [1, 1], [1, 1], [1, 1], [1, 1])
        x.set_friendly_name(f"{name}/aten::_convolution/Convolution")
        channels = 8
    sigmoid = ops.sigmoid(x)
    sigmoid.set_friendly_name("__module.model.3/aten::sigmoid/Sigmoid")
    folder.mkdir(parents=True)
    ov.save_model(ov.Model([sigmoid], [image], "tiny"), folder / "best.xml", compress_to_fp16=False)
    (folder / "metadata.yaml").write_text("names: {0: scratch}\nimgsz: [32, 32]\n", encoding="utf-8")
    return folder


def calibration_images(folder: Path, count: int = 4) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def quantized_inputs(xml: Path) -> dict[str, bool]:
    """Per convolution: does a FakeQuantize feed its activation input (NNCF's mark of an INT8 op)?"""
    import openvino as ov

    model = ov.Core().read_model(xml)
    return {op.get_friendly_name().split("/")[0]: op.input_value(0).get_node().get_type_name() == "FakeQuantize"
            for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"}


def test_model_1_and_the_head_decoding_stay_float_the_rest_is_int8(tmp_path):
    from yolodefect.exporting.openvino_int8 import quantize_openvino

    fp32 = tiny_ir(tmp_path / "best_openvino_model")
    result = quantize_openvino(fp32, tmp_path / "best_int8_openvino_model", calibration_images(tmp_path / "c"), 32)
    assert quantized_inputs(result.path / "best.xml") == {
        "__module.model.0.conv": True, "__module.model.1.conv": False,  # the one NNCF's accuracy search reverted
        "__module.model.2.conv": True, "__module.model.3.cv3.0": True,  # the head's convolutions, as Ultralytics
    }
    # Float as in Ultralytics' rule: the head's own decoding ops (its top level: here the Sigmoid), plus model.1.
    assert result.float_ops == ["__module.model.1.conv/aten::_convolution/Convolution",
                                "__module.model.3/aten::sigmoid/Sigmoid"]
    assert (result.path / "metadata.yaml").read_text() == (fp32 / "metadata.yaml").read_text()
    assert quantized_inputs(fp32 / "best.xml") == dict.fromkeys(LAYERS, False)  # the FP32 IR is left alone


NNCF_CHILD = """
import sys
from pathlib import Path
import nncf  # sets NNCF's logger to INFO, as a first import does
from nncf.common.logging import nncf_logger

real_quantize = nncf.quantize

def quantize_logging_as_nncf_does(*args, **kwargs):
    nncf_logger.info("Not adding activation input quantizer for operation: 1 Concat")
    nncf_logger.warning("a real NNCF warning")
    return real_quantize(*args, **kwargs)

nncf.quantize = quantize_logging_as_nncf_does
from yolodefect.exporting.openvino_int8 import quantize_openvino
quantize_openvino(Path(sys.argv[1]), Path(sys.argv[2]), sorted(Path(sys.argv[3]).glob("*.png")), 32)
"""


def test_nncf_per_op_lines_stay_off_the_screen_its_warnings_do_not(tmp_path):
    """NNCF sets its logger to INFO when first imported and logs one line per op it leaves in float (a line is
    logged here the way NNCF logs it, from inside its quantize call). A fresh process."""
    fp32 = tiny_ir(tmp_path / "fp32")
    calibration_images(tmp_path / "c")
    child = subprocess.run([sys.executable, "-c", NNCF_CHILD, str(fp32), str(tmp_path / "int8"), str(tmp_path / "c")],
                           capture_output=True, text=True, timeout=180, check=False)
    assert child.returncode == 0, child.stderr
    output = child.stdout + child.stderr
    assert "a real NNCF warning" in output
    assert "Not adding activation input quantizer" not in output

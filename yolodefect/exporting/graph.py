"""ONNX graph surgery for detection exports: find the Detect head's float tail, speed up its Softmax.

Both work on any Ultralytics detection graph (YOLOv8/11 with DFL, YOLO26 without) by walking the
graph, never by node names, which change between Ultralytics versions and torch exporters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadTail:
    """The Detect head's last learned Conv layers and every node after them (box decoding, DFL, sigmoid, concat).

    ``last_convs`` produce the raw box distributions and class logits; ``tail`` turns them into the
    output tensor. Both stay in float in an INT8 export: one INT8 scale cannot span box pixels
    (0..imgsz) and class probabilities (0..1) at once.
    """

    last_convs: list[str]
    tail: list[str]

    @property
    def nodes(self) -> list[str]:
        return [*self.last_convs, *self.tail]


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def _is_dfl_conv(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    """DFL's fixed 1x1 Conv (weights 0, 1, ..., reg_max-1, no bias): part of the decoding, not a learned layer."""
    if node.op_type != "Conv" or len(node.input) > 2 or node.input[1] not in initializers:
        return False
    weight = numpy_helper.to_array(initializers[node.input[1]])
    return weight.shape[0] == 1 and weight.size > 1 and np.array_equal(weight.ravel(), np.arange(weight.size))


def find_head_tail(model: onnx.ModelProto) -> HeadTail:
    """The learned Conv layers nearest the outputs and the nodes after them.

    A node belongs to the tail when no learned Conv lies downstream of it; the last convs are the
    learned Convs with that property. Raises ValueError when the graph has no learned Conv.
    """
    nodes = list(model.graph.node)
    initializers = _initializers(model)
    learned = [node.op_type == "Conv" and not _is_dfl_conv(node, initializers) for node in nodes]
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    # ONNX graphs are topologically sorted: one backward pass sees every consumer before its producer.
    feeds_learned = [False] * len(nodes)
    for index in range(len(nodes) - 1, -1, -1):
        feeds_learned[index] = any(
            learned[c] or feeds_learned[c] for output in nodes[index].output for c in consumers.get(output, [])
        )
    last = [n.name for i, n in enumerate(nodes) if learned[i] and not feeds_learned[i]]
    if not last:
        raise ValueError("the graph has no Conv layer; is it an Ultralytics detection model?")
    tail = [n.name for i, n in enumerate(nodes) if not learned[i] and not feeds_learned[i]]
    return HeadTail(last_convs=last, tail=tail)


def opset_version(model: onnx.ModelProto) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {
        value.name: len(value.type.tensor_type.shape.dim)
        for value in values
        if value.type.tensor_type.HasField("shape")
    }


def decompose_inner_softmax(model: onnx.ModelProto) -> list[str]:
    """Rewrite each Softmax over a non-last axis as ``exp(x - max) / sum`` on that axis; returns their names.

    ONNX Runtime's CPU Softmax transposes the axis to the end and back: on DFL's (1, 16, 4, anchors)
    tensor that costs ~10x the decomposition (5.9 vs 0.6 ms at 640 px on 2 cores), about a tenth
    of YOLO11n's whole FP32 run. The result is the same to float rounding (max difference ~4e-7).
    Needs opset >= 13 (Softmax on one axis); older graphs are left as they are.
    """
    opset = opset_version(model)
    if opset < 13:
        return []
    ranks = _ranks(model)
    rewritten: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
        rank = ranks.get(node.input[0]) if node.op_type == "Softmax" else None
        if rank is None or axis % rank == rank - 1:
            new_nodes.append(node)
            continue
        axis %= rank
        prefix, x, y = node.name or f"softmax_{len(rewritten)}", node.input[0], node.output[0]
        axes = f"{prefix}/axes"
        model.graph.initializer.append(numpy_helper.from_array(np.array([axis], dtype=np.int64), axes))
        if opset >= 18:
            reduce_max = helper.make_node("ReduceMax", [x, axes], [f"{prefix}/max"], f"{prefix}/ReduceMax", keepdims=1)
        else:
            reduce_max = helper.make_node("ReduceMax", [x], [f"{prefix}/max"], f"{prefix}/ReduceMax", axes=[axis], keepdims=1)
        new_nodes += [
            reduce_max,
            helper.make_node("Sub", [x, f"{prefix}/max"], [f"{prefix}/shifted"], f"{prefix}/Sub"),
            helper.make_node("Exp", [f"{prefix}/shifted"], [f"{prefix}/exp"], f"{prefix}/Exp"),
            helper.make_node("ReduceSum", [f"{prefix}/exp", axes], [f"{prefix}/sum"], f"{prefix}/ReduceSum", keepdims=1),
            helper.make_node("Div", [f"{prefix}/exp", f"{prefix}/sum"], [y], f"{prefix}/Div"),
        ]
        rewritten.append(node.name)
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        logger.debug("decomposed %d Softmax node(s) over an inner axis: %s", len(rewritten), rewritten)
    return rewritten


def node_counts(model: onnx.ModelProto, op_types: Iterable[str] | None = None) -> dict[str, int]:
    """How many nodes of each op type (or of the given ones) the graph holds."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if op_types is None or node.op_type in op_types:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts

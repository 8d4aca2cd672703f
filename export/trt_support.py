"""Which ONNX nodes TensorRT's ONNX parser accepts, and a checker for an exported graph.

The table is written from the ONNX-TensorRT operator support matrix shipped with TensorRT 10.15
(onnx-tensorrt `docs/operators.md`: "TensorRT 10.15 supports operators in the inclusive range of opset 9 to
opset 24"), as facts: the operators marked supported, the data types listed for each, and the restrictions that
can be checked on a graph without TensorRT (attributes, inputs that must be build-time constants). TensorRT itself
cannot be installed on the development machines, so this check is what keeps the exported graph parseable.
"""

from __future__ import annotations

from dataclasses import dataclass

from boxseg.export.errors import ExportError

TENSORRT_VERSION = "10.15"
OPSET_MIN, OPSET_MAX = 9, 24

# Short names for ONNX TensorProto element types.
_DT = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16", 11: "DOUBLE", 16: "BF16",
       4: "UINT16", 5: "INT16", 8: "STRING", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128"}

F = "FP32 FP16 BF16"
FI = "FP32 FP16 BF16 INT32 INT64"
FIB = "FP32 FP16 BF16 INT32 INT64 BOOL"

# Operator -> data types of its data input, as listed in the support matrix (all rows marked "Y").
SUPPORTED: dict[str, str] = {
    "Abs": FI, "Acos": F, "Acosh": F, "Add": FI, "And": "BOOL", "ArgMax": FI, "ArgMin": FI, "Asin": F,
    "Asinh": F, "Atan": F, "Atanh": F, "Attention": F + " INT8 FP8", "AveragePool": F, "BatchNormalization": F,
    "BlackmanWindow": "FP32 FP16", "Cast": FIB + " UINT8", "CastLike": FIB + " UINT8", "Ceil": F, "Celu": F,
    "Clip": F, "Concat": FIB, "Constant": FIB + " FP8 FP4 INT4", "ConstantOfShape": FIB + " FP8 FP4 INT4",
    "Conv": F, "ConvTranspose": F, "Cos": F, "Cosh": F, "CumSum": F, "DeformConv": "FP32 FP16",
    "DepthToSpace": FI, "DequantizeLinear": "INT8 FP8 FP4 INT4", "Div": FI, "Dropout": F, "Einsum": F, "Elu": F,
    "Equal": FI, "Erf": F, "Exp": F, "Expand": FIB, "EyeLike": FIB, "Flatten": FIB, "Floor": F, "Gather": FIB,
    "GatherElements": FIB, "GatherND": FIB, "Gelu": FI + " INT8", "Gemm": F, "GlobalAveragePool": F,
    "GlobalLpPool": F, "GlobalMaxPool": F, "Greater": FI, "GreaterOrEqual": FI, "GridSample": "FP32 FP16",
    "GroupNormalization": F, "GRU": F, "HammingWindow": "FP32 FP16", "HannWindow": "FP32 FP16",
    "HardSigmoid": F, "HardSwish": F, "Hardmax": F, "Identity": FIB, "If": FIB, "ImageScaler": F,
    "InstanceNormalization": F, "IsInf": F, "IsNaN": FI, "LayerNormalization": F, "LeakyRelu": F, "Less": FI,
    "LessOrEqual": FI, "Log": F, "LogSoftmax": F, "Loop": FIB, "LRN": F, "LSTM": F, "LpNormalization": F,
    "LpPool": F, "MatMul": F, "Max": FI, "MaxPool": F, "Mean": FI + " FP8", "MeanVarianceNormalization": F,
    "Min": FI, "Mish": "FP32 FP16", "Mod": FI, "Mul": FI, "Neg": FI, "NonMaxSuppression": "FP32 FP16",
    "NonZero": "FP32 FP16", "Not": "BOOL", "OneHot": FIB, "Or": "BOOL", "Pad": FI, "ParametricSoftplus": F,
    "Pow": FI, "PRelu": F, "QuantizeLinear": F, "RandomNormal": F, "RandomNormalLike": F, "RandomUniform": F,
    "RandomUniformLike": F, "Range": FI, "Reciprocal": F, "ReduceL1": FI, "ReduceL2": FI, "ReduceLogSum": FI,
    "ReduceLogSumExp": FI, "ReduceMax": FI, "ReduceMean": FI, "ReduceMin": FI, "ReduceProd": FI,
    "ReduceSum": FI, "ReduceSumSquare": FI, "Relu": FI, "Reshape": FIB, "Resize": F, "ReverseSequence": FIB,
    "RMSNormalization": F, "RNN": F, "RoiAlign": "FP32 FP16", "RotaryEmbedding": F, "Round": F, "STFT": "FP32",
    "ScaledTanh": F, "Scan": F, "Scatter": FI, "ScatterElements": FI, "ScatterND": FI, "Selu": F, "Shape": FIB,
    "Shrink": FI, "Sigmoid": F, "Sign": FI, "Sin": F, "Sinh": F, "Size": FIB, "Slice": FIB, "Softmax": F,
    "Softplus": F, "Softsign": F, "SpaceToDepth": FI, "Split": FIB, "Sqrt": F, "Squeeze": FIB, "Sub": FI,
    "Sum": FI, "Tan": F, "Tanh": F, "TensorScatter": "FP32 FP16 BF16 INT32", "ThresholdedRelu": F, "Tile": FIB,
    "TopK": FI, "Transpose": FIB, "Trilu": FIB, "Unsqueeze": FIB, "Upsample": F, "Where": FIB, "Xor": "BOOL",
}

# Rows marked "N" in the matrix.
UNSUPPORTED: frozenset[str] = frozenset((
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Col2Im",
    "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det",
    "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix",
    "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement",
    "QLinearConv", "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty",
    "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
    "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique",
))

# Which input carries the data whose type the matrix lists (default: input 0).
_DATA_INPUT = {"Where": 1}
# Ops whose listed types describe the output (no data input).
_OUTPUT_TYPED = {"Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "EyeLike", "Range"}

_RESIZE_COORD = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_MODE = {"nearest", "linear"}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
TOPK_MAX_K = 3840  # "K input must be less than 3840"
_REDUCE = {op for op in SUPPORTED if op.startswith("Reduce")}
# Ops a TopK's K may flow through on its way from a bounded Min (shape arithmetic in exported graphs).
_PASS_THROUGH = {"Reshape", "Cast", "Squeeze", "Unsqueeze", "Identity", "Concat"}


@dataclass(frozen=True)
class Problem:
    node: str
    op_type: str
    message: str

    def __str__(self) -> str:
        return f"{self.op_type} node {self.node!r}: {self.message}"


class _Graph:
    """Lookup helpers over one onnx.GraphProto (constants, producers, value types)."""

    def __init__(self, graph, value_types: dict[str, int]) -> None:
        import onnx.numpy_helper as nh

        self.graph = graph
        self.types = value_types
        self.consts = {t.name: nh.to_array(t) for t in graph.initializer}
        self.producer = {}
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            if node.op_type == "Constant" and node.attribute:
                attr = node.attribute[0]
                if attr.name == "value":
                    self.consts[node.output[0]] = nh.to_array(attr.t)
                elif attr.name in ("value_int", "value_ints", "value_float", "value_floats"):
                    import numpy as np

                    self.consts[node.output[0]] = np.array(
                        {"value_int": attr.i, "value_float": attr.f, "value_ints": list(attr.ints),
                         "value_floats": list(attr.floats)}[attr.name])

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def upper_bound(self, name: str, depth: int = 0) -> float | None:
        """A constant upper bound of an integer tensor when provable from Min/constant producers, else None."""
        if name in self.consts:
            return float(self.consts[name].max()) if self.consts[name].size else None
        node = self.producer.get(name)
        if node is None or depth > 16:
            return None
        if node.op_type == "Min":
            bounds = [b for b in (self.upper_bound(i, depth + 1) for i in node.input) if b is not None]
            return min(bounds) if bounds else None
        if node.op_type in _PASS_THROUGH:
            bounds = [self.upper_bound(i, depth + 1) for i in node.input[:1 if node.op_type != "Concat" else None]]
            return None if any(b is None for b in bounds) or not bounds else max(bounds)
        return None


def _attrs(node) -> dict:
    import onnx.helper as oh

    return {a.name: oh.get_attribute_value(a) for a in node.attribute}


def _as_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_node(node, g: _Graph) -> list[str]:
    """Restrictions from the matrix's "Restrictions" column that apply to this node."""
    op, a, msgs = node.op_type, _attrs(node), []
    if op in ("AveragePool", "MaxPool", "LpPool"):
        if len(a.get("kernel_shape", [])) not in (2, 3):
            msgs.append("only 2D or 3D pooling is supported")
        if any(d != 1 for d in a.get("dilations", [])):
            msgs.append("dilations must be empty or all ones")
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            msgs.append("the Indices output is unsupported")
    elif op in ("CumSum",) and len(node.input) > 1 and not g.is_const(node.input[1]):
        msgs.append("axis must be a build-time constant")
    elif op == "OneHot" and len(node.input) > 1 and not g.is_const(node.input[1]):
        msgs.append("depth must be a build-time constant")
    elif op in _REDUCE and len(node.input) > 1 and node.input[1] and not g.is_const(node.input[1]):
        msgs.append("axes must be an initializer")
    elif op in ("Squeeze", "Unsqueeze") and len(node.input) > 1 and node.input[1] and not g.is_const(node.input[1]):
        msgs.append("axes must be resolvable to a constant")
    elif op == "ScatterND" and _as_str(a.get("reduction", "none")) != "none":
        msgs.append("reduction other than 'none' is not supported")
    elif op == "Resize":
        if _as_str(a.get("coordinate_transformation_mode", "half_pixel")) not in _RESIZE_COORD:
            msgs.append(f"coordinate_transformation_mode must be one of {sorted(_RESIZE_COORD)}")
        if _as_str(a.get("mode", "nearest")) not in _RESIZE_MODE:
            msgs.append(f"mode must be one of {sorted(_RESIZE_MODE)}")
        if _as_str(a.get("nearest_mode", "round_prefer_floor")) not in _RESIZE_NEAREST:
            msgs.append(f"nearest_mode must be one of {sorted(_RESIZE_NEAREST)}")
        if _as_str(a.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
            msgs.append("keep_aspect_ratio_policy must be 'stretch'")
        if a.get("antialias", 0):
            msgs.append("antialiasing is not supported")
        if "axes" in a and list(a["axes"]) != list(range(len(a["axes"]))):
            msgs.append("axes must be an iota vector of length rank(input)")
    elif op == "TopK":
        if a.get("sorted", 1) != 1:
            msgs.append("sorted must be 1")
        bound = g.upper_bound(node.input[1])
        if bound is None:
            msgs.append(f"K must be provably less than {TOPK_MAX_K} (no constant bound found)")
        elif bound >= TOPK_MAX_K:
            msgs.append(f"K must be less than {TOPK_MAX_K}, got up to {bound:g}")
    elif op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        zp = g.consts.get(node.input[2])
        if zp is None or zp.any():
            msgs.append("the zero point must be a constant zero")
    elif op == "Dropout" and len(node.input) > 2 and node.input[2]:
        flag = g.consts.get(node.input[2])
        if flag is None or bool(flag):
            msgs.append("is_training must be an initializer that evaluates to False")
    elif op == "LayerNormalization" and any(node.output[1:]):
        msgs.append("only the first output Y is supported")
    elif op == "LSTM" and (a.get("input_forget", 0) != 0 or a.get("layout", 0) != 0):
        msgs.append("input_forget and layout must be 0")
    elif op == "Constant" and any(x.name in ("sparse_value", "value_string", "value_strings") for x in node.attribute):
        msgs.append("sparse_value, value_string and value_strings attributes are unsupported")
    return msgs


def _value_types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {}
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:  # Constant outputs are not always in value_info
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def _subgraph_nodes(graph) -> list:
    import onnx

    found = []
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                found += [*sub.node, *_subgraph_nodes(sub)]
    return found


def check_tensorrt_support(model) -> list[Problem]:
    """Every node of `model` (an onnx.ModelProto) against the table: domain, opset, op type, data type and the
    checkable restrictions. An empty list means TensorRT 10.15's ONNX parser supports the whole graph."""
    problems: list[Problem] = []
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    version = opsets.get("ai.onnx")
    if version is None or not OPSET_MIN <= version <= OPSET_MAX:
        problems.append(Problem("<model>", "opset", f"ai.onnx opset {version} is outside TensorRT "
                                f"{TENSORRT_VERSION}'s range {OPSET_MIN}..{OPSET_MAX}"))
    types = _value_types(model)
    graph = _Graph(model.graph, types)
    io_names = {v.name for v in [*model.graph.input, *model.graph.output]}
    # Nodes inside subgraphs (If/Loop bodies) and model-local functions: operator and domain checks only.
    for node in [*_subgraph_nodes(model.graph), *(n for f in model.functions for n in f.node)]:
        if node.domain not in ("", "ai.onnx") or node.op_type in UNSUPPORTED or node.op_type not in SUPPORTED:
            problems.append(Problem(node.name or "?", node.op_type, "operator (in a subgraph or function) is not "
                                    "supported by the TensorRT ONNX parser"))
    for node in model.graph.node:
        name = node.name or (node.output[0] if node.output else "?")
        if node.domain not in ("", "ai.onnx"):
            problems.append(Problem(name, node.op_type, f"custom domain {node.domain!r} needs a TensorRT plugin"))
            continue
        if node.op_type in UNSUPPORTED or node.op_type not in SUPPORTED:
            problems.append(Problem(name, node.op_type, "operator is not supported by the TensorRT ONNX parser"))
            continue
        if node.op_type in _OUTPUT_TYPED:
            tensor = node.output[0]
        else:
            index = _DATA_INPUT.get(node.op_type, 0)
            tensor = node.input[index] if len(node.input) > index else ""
        dtype = types.get(tensor)
        allowed = SUPPORTED[node.op_type].split()
        if dtype is not None and _DT.get(dtype, str(dtype)) not in allowed:
            problems.append(Problem(name, node.op_type, f"data type {_DT.get(dtype, dtype)} of {tensor!r} is not "
                                    f"in the supported types {allowed}"))
        for value in [*node.input, *node.output]:
            dtype = types.get(value)
            if dtype is None or not value:
                continue
            kind = _DT.get(dtype, str(dtype))
            if kind == "UINT8" and value not in io_names and node.op_type != "Cast":
                problems.append(Problem(name, node.op_type, f"UINT8 tensor {value!r} is only supported as a "
                                        "network input or output"))
            elif kind not in ("FP32", "FP16", "BF16", "INT32", "INT64", "INT8", "BOOL", "UINT8", "DOUBLE"):
                problems.append(Problem(name, node.op_type, f"tensor {value!r} has type {kind}, which TensorRT "
                                        "does not support"))
        problems.extend(Problem(name, node.op_type, m) for m in _check_node(node, graph))
    return problems


def assert_tensorrt_supported(model) -> None:
    problems = check_tensorrt_support(model)
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ExportError(f"the exported graph has {len(problems)} node(s) TensorRT {TENSORRT_VERSION}'s ONNX "
                          f"parser does not support:\n  {listing}{more}")

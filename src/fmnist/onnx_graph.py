"""A fmnist Keras model as an ONNX graph, written layer by layer with the ``onnx`` package's helpers.

The graph takes what the Keras model takes, raw pixels: input ``pixels`` uint8 [N, 28, 28],
cast to float32 inside, then every layer in order (the Rescaling and a standardizing
Normalization included, so the normalisation travels with the file), output
``probabilities`` float32 [N, 10]. The batch size is dynamic.

Test-time views (fmnist.augment.VIEWS) can be baked in: each view of the batch is made with
Slice (a flip is a slice with step -1) and Pad (a 1 px shift pads with the background 0 and
slices the shifted window), the views are stacked along the batch, run through the network
once, and the probabilities averaged over views, as ``engine.predict_proba`` does.

Keras keeps images channels-last (NHWC); ONNX's Conv and MaxPool are channels-first (NCHW).
The writer tracks the layout and transposes only where it changes: before the first conv and
before a Flatten, so the flattened order is Keras' own.

A layer kind not listed in ``_LAYERS``, or a layer computing in another dtype than float32 (a
run trained with ``--precision bf16``), raises a ModelError naming it: nothing half-made is
returned. Only ``onnx`` and numpy are needed here (no Keras import beyond the model given).
"""

from __future__ import annotations

import math

import numpy as np

from fmnist.errors import ModelError

OPSET = 17  # ONNX Runtime (every platform) and onnxruntime-web run every op used here at this opset
INPUT = "pixels"
OUTPUT = "probabilities"
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805  # Keras' (and ONNX's) SELU constants


class _Graph:
    """Nodes and constants being collected, with a counter for fresh tensor names."""

    def __init__(self):
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, hint: str = "c", dtype=np.float32) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        from onnx import helper

        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


class _Tensor:
    """A tensor in the graph: its name, its Keras shape without the batch (channels last), and whether
    it is currently stored channels-first for ONNX's convs."""

    def __init__(self, name: str, shape: tuple[int, ...], nchw: bool = False):
        self.name, self.shape, self.nchw = name, tuple(shape), nchw


# --------------------------------------------------------------------------- layouts
def _to_nchw(g: _Graph, t: _Tensor) -> _Tensor:
    if len(t.shape) != 3 or t.nchw:
        return t
    return _Tensor(g.op("Transpose", [t.name], "to_nchw", perm=[0, 3, 1, 2]), t.shape, nchw=True)


def _to_keras_layout(g: _Graph, t: _Tensor) -> _Tensor:
    if not t.nchw:
        return t
    return _Tensor(g.op("Transpose", [t.name], "to_nhwc", perm=[0, 2, 3, 1]), t.shape, nchw=False)


# --------------------------------------------------------------------------- activations
def _activation(g: _Graph, name: str, x: str) -> str:
    if name == "linear":
        return x
    if name in ("relu", "tanh", "sigmoid", "elu"):
        return g.op({"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "elu": "Elu"}[name], [x], name)
    if name == "selu":
        return g.op("Selu", [x], "selu", alpha=SELU_ALPHA, gamma=SELU_SCALE)
    if name in ("swish", "silu"):
        return g.op("Mul", [x, g.op("Sigmoid", [x])], "swish")
    if name == "gelu":  # Keras' default, the exact form: x/2 * (1 + erf(x / sqrt 2))
        erf = g.op("Erf", [g.op("Mul", [x, g.const(1 / math.sqrt(2))])])
        return g.op("Mul", [g.op("Mul", [x, g.const(0.5)]), g.op("Add", [erf, g.const(1.0)])], "gelu")
    if name == "softmax":
        return g.op("Softmax", [x], "softmax", axis=-1)
    raise ModelError(f"cannot export the activation {name!r} to ONNX (exportable: relu, gelu, tanh, sigmoid, "
                     "elu, selu, swish, linear, softmax).")  # fmt: skip


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", str(fn))


# --------------------------------------------------------------------------- layers
def _numpy(variable) -> np.ndarray:
    from fmnist._backend import keras

    return np.asarray(keras.ops.convert_to_numpy(variable), np.float32)


def _rescaling(g, layer, t):
    x = g.op("Mul", [t.name, g.const(layer.scale)], "rescale")
    if np.any(np.asarray(layer.offset) != 0):
        x = g.op("Add", [x, g.const(layer.offset)])
    return _Tensor(x, t.shape, t.nchw)


def _normalization(g, layer, t):
    """Keras' Normalization: (x - mean) / max(sqrt(variance), epsilon), with the stored statistics."""
    from fmnist._backend import keras

    if t.nchw or layer.invert:
        raise ModelError(f"cannot export the Normalization layer {layer.name!r} in this position to ONNX.")
    mean = _numpy(layer.mean)
    std = np.maximum(np.sqrt(_numpy(layer.variance)), np.float32(keras.backend.epsilon()))
    mean, std = mean.reshape(mean.shape[1:]), std.reshape(std.shape[1:])  # without the batch axis of 1
    x = g.op("Div", [g.op("Sub", [t.name, g.const(mean, "mean")]), g.const(std, "std")], "standardize")
    return _Tensor(x, t.shape)


def _reshape(g, layer, t):
    t = _to_keras_layout(g, t)
    shape = tuple(layer.target_shape)
    return _Tensor(g.op("Reshape", [t.name, g.const([-1, *shape], "shape", np.int64)], "reshape"), shape)


def _flatten(g, layer, t):
    t = _to_keras_layout(g, t)
    size = int(np.prod(t.shape))
    return _Tensor(g.op("Reshape", [t.name, g.const([-1, size], "shape", np.int64)], "flatten"), (size,))


def _dense(g, layer, t):
    t = _to_keras_layout(g, t)
    kernel, *bias = (np.asarray(w, np.float32) for w in layer.get_weights())
    x = g.op("MatMul", [t.name, g.const(kernel, f"{layer.name}_kernel")], layer.name)
    if bias:
        x = g.op("Add", [x, g.const(bias[0], f"{layer.name}_bias")])
    x = _activation(g, _activation_name(layer.activation), x)
    return _Tensor(x, (*t.shape[:-1], kernel.shape[1]))


def _same_pads(size: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int]) -> list[int]:
    """Explicit pads for Keras' (XLA's) 'same': the odd pixel goes last. ONNX order: begins, then ends."""
    begins, ends = [], []
    for n, k, s in zip(size, kernel, strides, strict=True):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def _out_size(size, kernel, strides, padding):
    if padding == "same":
        return tuple(math.ceil(n / s) for n, s in zip(size, strides, strict=True))
    return tuple((n - k) // s + 1 for n, k, s in zip(size, kernel, strides, strict=True))


def _check_2d(layer, t, what: str) -> None:
    if len(t.shape) != 3 or getattr(layer, "data_format", "channels_last") != "channels_last":
        raise ModelError(f"cannot export the {what} layer {layer.name!r} to ONNX: it needs channels-last images.")


def _conv2d(g, layer, t):
    _check_2d(layer, t, "Conv2D")
    if tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1:
        raise ModelError(f"cannot export the Conv2D layer {layer.name!r} to ONNX: no dilation or groups supported.")
    t = _to_nchw(g, t)
    kernel, *bias = (np.asarray(w, np.float32) for w in layer.get_weights())
    k, strides = tuple(layer.kernel_size), tuple(layer.strides)
    pads = _same_pads(t.shape[:2], k, strides) if layer.padding == "same" else [0, 0, 0, 0]
    inputs = [t.name, g.const(kernel.transpose(3, 2, 0, 1), f"{layer.name}_kernel")]  # HWIO -> OIHW
    if bias:
        inputs.append(g.const(bias[0], f"{layer.name}_bias"))
    x = g.op("Conv", inputs, layer.name, kernel_shape=list(k), strides=list(strides), pads=pads)
    x = _activation(g, _activation_name(layer.activation), x)
    return _Tensor(x, (*_out_size(t.shape[:2], k, strides, layer.padding), kernel.shape[-1]), nchw=True)


def _max_pooling2d(g, layer, t):
    _check_2d(layer, t, "MaxPooling2D")
    t = _to_nchw(g, t)
    k, strides = tuple(layer.pool_size), tuple(layer.strides)
    pads = _same_pads(t.shape[:2], k, strides) if layer.padding == "same" else [0, 0, 0, 0]
    x = g.op("MaxPool", [t.name], layer.name, kernel_shape=list(k), strides=list(strides), pads=pads)
    return _Tensor(x, (*_out_size(t.shape[:2], k, strides, layer.padding), t.shape[2]), nchw=True)


def _global_max_pooling2d(g, layer, t):
    _check_2d(layer, t, "GlobalMaxPooling2D")
    if layer.keepdims:
        raise ModelError(f"cannot export the GlobalMaxPooling2D layer {layer.name!r} with keepdims to ONNX.")
    t = _to_nchw(g, t)
    return _Tensor(g.op("ReduceMax", [t.name], layer.name, axes=[2, 3], keepdims=0), (t.shape[2],))


def _batch_normalization(g, layer, t):
    """Inference form, (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta, on the channel axis."""
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    if axis not in (-1, len(t.shape)):
        raise ModelError(f"cannot export the BatchNormalization layer {layer.name!r} (axis {axis}) to ONNX.")
    channels = t.shape[-1]
    gamma = _numpy(layer.gamma) if layer.scale else np.ones(channels, np.float32)
    beta = _numpy(layer.beta) if layer.center else np.zeros(channels, np.float32)
    mean, var = _numpy(layer.moving_mean), _numpy(layer.moving_variance)
    if len(t.shape) == 3:
        t = _to_nchw(g, t)  # ONNX's BatchNormalization normalises axis 1
    elif len(t.shape) != 1:
        raise ModelError(f"cannot export the BatchNormalization layer {layer.name!r} on a rank-{len(t.shape)} input.")
    names = [
        g.const(v, f"{layer.name}_{n}") for n, v in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))
    ]
    x = g.op("BatchNormalization", [t.name, *names], layer.name, epsilon=float(layer.epsilon))
    return _Tensor(x, t.shape, t.nchw)


def _activation_layer(g, layer, t):
    return _Tensor(_activation(g, _activation_name(layer.activation), t.name), t.shape, t.nchw)


def _identity(g, layer, t):  # Dropout: nothing at inference
    return t


_LAYERS = {
    "Rescaling": _rescaling,
    "Normalization": _normalization,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Dense": _dense,
    "Conv2D": _conv2d,
    "MaxPooling2D": _max_pooling2d,
    "GlobalMaxPooling2D": _global_max_pooling2d,
    "BatchNormalization": _batch_normalization,
    "Activation": _activation_layer,
    "ReLU": lambda g, layer, t: _Tensor(_activation(g, "relu", t.name), t.shape, t.nchw),
    "Dropout": _identity,
    "InputLayer": _identity,
}


# --------------------------------------------------------------------------- models
def _sequential(g: _Graph, model, t: _Tensor) -> _Tensor:
    for layer in model.layers:
        kind = type(layer).__name__
        compute = str(getattr(layer, "compute_dtype", "float32"))
        if compute != "float32":  # a run trained with --precision bf16 (Keras' mixed_bfloat16 policy)
            raise ModelError(
                f"cannot export {model.name!r} to ONNX: exported graphs compute in float32; this model computes "
                f"in {compute} (layer {layer.name!r}, trained with --precision bf16), so the graph's "
                "probabilities would not be the run's."
            )
        if kind not in _LAYERS:
            raise ModelError(
                f"cannot export layer {layer.name!r} of kind {kind} to ONNX: fmnist exports "
                f"{', '.join(sorted(k for k in _LAYERS if k != 'InputLayer'))} (and ensembles of such nets)."
            )
        t = _LAYERS[kind](g, layer, t)
    return _to_keras_layout(g, t)


def _network(g: _Graph, model, t: _Tensor) -> _Tensor:
    """The model's forward pass on ``t``: a Sequential, or an ensemble's mean of its Sequential members."""
    from fmnist._backend import keras
    from fmnist.models import ensemble_members

    members = ensemble_members(model)
    if members is not None:
        outs = [_network(g, m, t) for m in members]
        return _Tensor(g.op("Mean", [o.name for o in outs], "ensemble_mean"), outs[0].shape)
    if isinstance(model, keras.Sequential):
        return _sequential(g, model, t)
    raise ModelError(
        f"cannot export model {model.name!r} to ONNX: fmnist exports the Sequential nets it builds and their "
        "ensembles, not other functional graphs."
    )


def _views(g: _Graph, x: str, views: tuple[str, ...]) -> str:
    """The views of float images ``x`` [N, 28, 28], stacked along the batch: [V*N, 28, 28] (see augment.view).

    The flipped batch and each source's padded batch are made once and shared by the views using them.
    """
    from fmnist.augment import FLIPPED, SHIFTS

    def ints(*values):
        return [g.const(v, "s", np.int64) for v in values]

    made: dict[str, str] = {"identity": x}
    if any(v == "flip" or v.startswith(FLIPPED) for v in views):
        made["flip"] = g.op("Slice", [x, *ints([-1], [-(2**62)], [2], [-1])], "flip")  # reversed columns
    padded: dict[str, str] = {}
    for v in views:
        if v in made:
            continue
        source = "flip" if v.startswith(FLIPPED) else "identity"
        if source not in padded:  # 1 px of background 0 around each image
            padded[source] = g.op("Pad", [made[source], *ints([0, 1, 1, 0, 1, 1])], "pad")
        dy, dx = SHIFTS[v.removeprefix(FLIPPED)]
        starts = [1 - dy, 1 - dx]  # out[i, j] = x[i - dy, j - dx], as augment.translate
        made[v] = g.op("Slice", [padded[source], *ints(starts, [s + 28 for s in starts], [1, 2])], v.replace("-", "_"))
    out = [made[v] for v in views]
    return out[0] if len(out) == 1 else g.op("Concat", out, "views", axis=0)


def build_graph(model, views: tuple[str, ...] = ("identity",), image_shape=(28, 28)):
    """An ``onnx.ModelProto`` computing ``predict_proba(model, pixels, views)`` from uint8 ``pixels``.

    Raises ModelError (naming the layer) for a model it cannot write; builds nothing then.
    """
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    x = g.op("Cast", [INPUT], "to_float", to=TensorProto.FLOAT)
    stacked = _views(g, x, tuple(views))
    out = _network(g, model, _Tensor(stacked, image_shape))
    if len(out.shape) != 1:
        raise ModelError(f"cannot export model {model.name!r}: its output has shape {out.shape}, not a row per image.")
    probs = out.name
    if len(views) > 1:  # [V*N, C] -> [V, N, C] -> mean over views
        grouped = g.op("Reshape", [probs, g.const([len(views), -1, out.shape[0]], "shape", np.int64)], "by_view")
        probs = g.op("ReduceMean", [grouped], "view_mean", axes=[0], keepdims=0)
    g.nodes.append(helper.make_node("Identity", [probs], [OUTPUT], name=OUTPUT))
    graph = helper.make_graph(
        g.nodes,
        model.name,
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", *image_shape])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", out.shape[0]])],
        initializer=g.initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fmnist")
    proto.ir_version = min(proto.ir_version, 8)  # IR 8 goes with opset 17: older runtimes open it too
    onnx.checker.check_model(proto, full_check=True)
    return proto

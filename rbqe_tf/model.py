"""The RBQE multi-exit nested U-Net (docs/method.md, "Network") as a Keras 3 functional model.

Node ``x[i, j]`` sits on resolution level ``i`` (0 = full size) in column ``j``
(0 = encoder). Step ``k`` computes ``x[k, 0]``, the diagonal ``x[k-1, 1] … x[0, k]``
and exit ``k``; later steps reuse everything earlier ones computed. The same layer
objects build the monolithic model (all exits as outputs) and the five stage
models used for staged early exit, so both always share weights.

:class:`GraphBuilder` takes the Keras layers module and the ECA class as parameters,
so the same code also builds the tf-keras twin that quantization-aware training
needs (``rbqe_tf.qat_model``); weights move between the two by layer name.

Layer names are deterministic: ``enc_2_conv1``, ``dec_1_3_sep1_dw``,
``dec_1_3_eca_low``, ``exit_4_pw``; the exit outputs are the layers ``exit_1`` …
"""
import dataclasses
import hashlib
import os

import numpy as np
import keras
from keras import layers, ops

from rbqe_tf.config import RBQEConfig, get_config
from rbqe_tf.model_file import FILE_FORMAT, WeightsError, check_file


@keras.saving.register_keras_serializable(package="rbqe_tf")
class ECA(layers.Layer):
    """Efficient channel attention: global mean → 1-D conv (k=3, no bias) across
    channels → sigmoid → channel scale.

    The 1-D conv is applied as a 1×1 conv with a banded C×C kernel built from the
    three weights (a constant after conversion), so TFLite sees MEAN, CONV_2D,
    LOGISTIC and MUL only. Weight order matches PyTorch ``Conv1d(1, 1, 3, padding=1)``:
    ``out[c] = w0·x[c-1] + w1·x[c] + w2·x[c+1]``.
    """

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(3,), initializer="glorot_uniform")
        self._bands = eca_bands(input_shape[-1])

    def call(self, x):
        band = ops.tensordot(ops.cast(self.kernel, x.dtype), ops.cast(self._bands, x.dtype), 1)
        pooled = ops.mean(x, axis=(1, 2), keepdims=True)
        attention = ops.sigmoid(ops.conv(pooled, band[None, None], padding="valid"))
        return x * attention

    def compute_output_shape(self, input_shape):
        return input_shape


def eca_bands(channels):
    """[3, C, C] band matrices: ``kernel @ bands`` is ECA's banded C×C 1×1-conv kernel."""
    c = channels
    return np.stack([np.eye(c, k=1), np.eye(c), np.eye(c, k=-1)]).astype("float32")


def node_keys(step):
    """Keys (i, j) of the nodes that step ``step`` creates: x[step, 0] then the diagonal."""
    return [(step - j, j) for j in range(step + 1)]


def stage_feature_keys(cfg, k):
    """Keys of the features stage ``k`` creates and passes on (none from the last)."""
    if k == cfg.num_exits:
        return []
    return ([(0, 0)] if k == 1 else []) + node_keys(k)


def stage_input_keys(cfg, k):
    """Keys of the features stage ``k`` consumes: all that stages < k passed on."""
    return [key for s in range(1, k) for key in stage_feature_keys(cfg, s)]


def feature_name(key):
    """Tensor name ``x_i_j`` of feature node x[i, j] (stage models' inputs and outputs)."""
    return f"x_{key[0]}_{key[1]}"


class GraphBuilder:
    """Builds the RBQE graph step by step with named layers.

    ``get_layer(name, factory)`` returns the layer called ``name``, creating it with
    ``factory()`` the first time; the monolithic model creates layers, stage models
    fetch the same ones. ``layers_module`` (``keras.layers`` or ``tf_keras.layers``)
    and ``eca`` (a layer class with :class:`ECA`'s weights and maths) pick the Keras.
    """

    def __init__(self, cfg, get_layer, layers_module=layers, eca=None):
        self.cfg = cfg
        self.get = get_layer
        self.layers = layers_module
        self.eca_class = eca or ECA

    def exits(self, y):
        """All exits of the monolithic graph on input ``y``."""
        nodes = {}
        return [self.first_step(nodes, y)] + [self.step(k, nodes, y)
                                              for k in range(2, self.cfg.num_exits + 1)]

    def stage(self, k, y, features):
        """Stage ``k`` on ``y`` and the ``stage_input_keys`` ``features`` →
        ``[exit_k, *features of stage_feature_keys]``."""
        nodes = dict(zip(stage_input_keys(self.cfg, k), features))
        exit_k = self.first_step(nodes, y) if k == 1 else self.step(k, nodes, y)
        return [exit_k] + [nodes[key] for key in stage_feature_keys(self.cfg, k)]

    def conv(self, name, x, filters, relu=True, strides=1):
        act = "relu" if relu else None
        if strides == 2:  # PyTorch padding=1 on all sides; Keras "same" pads bottom/right only
            x = self.get(f"{name}_pad", lambda: self.layers.ZeroPadding2D(
                1, name=f"{name}_pad"))(x)
            return self.get(name, lambda: self.layers.Conv2D(
                filters, 3, strides=2, padding="valid", activation=act, name=name))(x)
        return self.get(name, lambda: self.layers.Conv2D(
            filters, 3, padding="same", activation=act, name=name))(x)

    def sep_conv(self, name, x, filters, relu=True):
        """Depthwise 3×3 then pointwise 1×1, each with a bias (or a plain 3×3 conv)."""
        if not self.cfg.separable_decoder:
            return self.conv(name, x, filters, relu)
        x = self.get(f"{name}_dw", lambda: self.layers.DepthwiseConv2D(
            3, padding="same", name=f"{name}_dw"))(x)
        return self.get(f"{name}_pw", lambda: self.layers.Conv2D(
            filters, 1, activation="relu" if relu else None, name=f"{name}_pw"))(x)

    def eca(self, name, x, enabled=True):
        if not (self.cfg.eca and enabled):
            return x
        return self.get(name, lambda: self.eca_class(name=name))(x)

    def encoder(self, level, nodes, y):
        f = self.cfg.features
        if level == 0:
            x = self.conv("enc_0_conv1", y, f)
            return self.conv("enc_0_conv2", x, f)
        x = self.eca(f"enc_{level}_eca", nodes[(level - 1, 0)])
        x = self.conv(f"enc_{level}_conv1", x, f)
        x = self.conv(f"enc_{level}_conv2", x, f)
        return self.conv(f"enc_{level}_down", x, f, strides=2)

    def decoder(self, i, j, nodes, eca_low):
        f, name = self.cfg.features, f"dec_{i}_{j}"
        same = [self.eca(f"{name}_eca_{m}", nodes[(i, m)]) for m in range(j)]
        low = self.eca(f"{name}_eca_low", nodes[(i + 1, j - 1)], eca_low)
        low = self.get(f"{name}_up", lambda: self.layers.Conv2DTranspose(
            f, 2, strides=2, activation="relu", name=f"{name}_up"))(low)
        x = self.get(f"{name}_concat", lambda: self.layers.Concatenate(name=f"{name}_concat"))(
            same + [low])
        x = self.sep_conv(f"{name}_sep1", x, f)
        return self.sep_conv(f"{name}_sep2", x, f)

    def exit(self, k, x, y, eca):
        x = self.eca(f"exit_{k}_eca", x, eca)
        x = self.sep_conv(f"exit_{k}", x, self.cfg.channels, relu=False)
        return self.get(f"exit_{k}", lambda: self.layers.Add(name=f"exit_{k}"))([x, y])

    def step(self, k, nodes, y):
        """Adds step ``k``'s nodes to ``nodes`` and returns exit ``k``."""
        full_eca = self.cfg.eca_last_step or k < self.cfg.num_exits
        nodes[(k, 0)] = self.encoder(k, nodes, y)
        for i, j in node_keys(k)[1:]:
            nodes[(i, j)] = self.decoder(i, j, nodes, full_eca)
        return self.exit(k, nodes[(0, k)], y, full_eca)

    def first_step(self, nodes, y):
        nodes[(0, 0)] = self.encoder(0, nodes, y)
        return self.step(1, nodes, y)


def feature_input(keras_module, cfg, key, input_size):
    """``keras_module.Input`` for feature node x[i, j] of a stage model (:func:`feature_name`)."""
    i, _ = key
    h, w = input_size
    size = (None if h is None else h >> i, None if w is None else w >> i)
    return keras_module.Input((*size, cfg.features), name=feature_name(key))


@keras.saving.register_keras_serializable(package="rbqe_tf")
class RBQE(keras.Model):
    """Multi-exit RBQE network: input ``y`` [N, H, W, C] in [0, 1] → list of exits.

    H and W must be multiples of ``config.size_multiple`` (32 for six levels).
    ``input_size=(H, W)`` fixes the spatial shape (for MAC counting and fixed-shape
    export); ``None`` entries stay dynamic.
    """

    def __init__(self, channels=1, features=32, num_levels=6, separable_decoder=True,
                 eca=True, eca_last_step=False, input_size=(None, None), name="rbqe", **kwargs):
        cfg = RBQEConfig(channels=channels, features=features, num_levels=num_levels,
                         separable_decoder=separable_decoder, eca=eca,
                         eca_last_step=eca_last_step)
        input_size = tuple(input_size)
        created = {}

        def create(layer_name, factory):
            if layer_name not in created:
                created[layer_name] = factory()
            return created[layer_name]

        y = keras.Input((*input_size, cfg.channels), name="y")
        exits = GraphBuilder(cfg, create).exits(y)
        super().__init__(inputs=y, outputs=exits, name=name, **kwargs)
        self.rbqe_config = cfg
        self.input_size = input_size

    def get_config(self):
        return {**self.rbqe_config.to_dict(), "input_size": list(self.input_size),
                "name": self.name, "trainable": self.trainable,
                "format": FILE_FORMAT, "weights_digest": weights_digest(self)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("format", None)
        digest = config.pop("weights_digest", None)
        model = cls(**config)
        model.saved_weights_digest = digest
        return model

    def exit_model(self, k):
        """Monolithic sub-model from ``y`` to exit ``k`` (1-based)."""
        return keras.Model(self.input, self.outputs[k - 1], name=f"{self.name}_exit_{k}")

    def stage_feature_keys(self, k):
        """Keys of the features stage ``k`` creates and passes on (none from the last)."""
        return stage_feature_keys(self.rbqe_config, k)

    def stage_input_keys(self, k):
        """Keys of the features stage ``k`` consumes: all that stages < k passed on."""
        return stage_input_keys(self.rbqe_config, k)

    def stage_models(self):
        """Five (num_exits) models sharing this model's layers.

        Stage ``k`` takes ``[y, *features of stage_input_keys(k)]`` and returns
        ``[exit_k, *features of stage_feature_keys(k)]``.
        """
        cfg = self.rbqe_config
        graph = GraphBuilder(cfg, lambda layer_name, factory: self.get_layer(layer_name))
        stages = []
        for k in range(1, cfg.num_exits + 1):
            y = keras.Input((*self.input_size, cfg.channels), name="y")
            features = [feature_input(keras, cfg, key, self.input_size)
                        for key in self.stage_input_keys(k)]
            stages.append(keras.Model([y] + features, graph.stage(k, y, features),
                                      name=f"stage_{k}"))
        return stages


def build_model(variant="rbqe", input_size=(None, None), **overrides):
    """Builds the named variant (``rbqe``, ``tiny``) with config ``overrides``."""
    cfg = get_config(variant, **overrides)
    return RBQE(**cfg.to_dict(), input_size=input_size, name=variant)


def iterate_stages(stages, y):
    """Runs ``stages`` in order on ``y``, yielding each exit; stop iterating to exit early."""
    y = ops.convert_to_tensor(y)
    features = []
    for stage in stages:
        out = stage([y] + features)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        features += out[1:]
        yield out[0]


def run_stages(stages, y):
    """All exits of the staged model, as a list."""
    return list(iterate_stages(stages, y))


WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
DEFAULT_WEIGHTS = {"jpeg": "rbqe_jpeg.keras"}


def default_weights(codec):
    """Path of the model shipped for ``codec``; WeightsError where none ships."""
    name = DEFAULT_WEIGHTS.get(codec)
    path = name and os.path.join(WEIGHTS_DIR, name)
    if not path or not os.path.isfile(path):
        raise WeightsError(f"no trained {codec} model ships with this version; "
                           "pass --weights MODEL.keras")
    return path


_MISMATCH = "its weights do not match its architecture (a mixed or damaged file, or one " \
            "from another rbqe_tf version)"


def weights_digest(model):
    """sha256 over every weight (name and values), in name order."""
    digest = hashlib.sha256()
    for variable in sorted(model.weights, key=lambda v: v.path):
        digest.update(variable.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(variable)).tobytes())
    return digest.hexdigest()


def _differences(found, expected):
    return ", ".join(f"{f.name} {getattr(found, f.name)} (expected {f.name} "
                     f"{getattr(expected, f.name)})" for f in dataclasses.fields(RBQEConfig)
                     if getattr(found, f.name) != getattr(expected, f.name))


def load_model(path, expect=None):
    """Loads a ``.keras`` RBQE model saved by training.

    ``model_file.check_file`` vets the file before Keras reads it; Keras then loads in
    safe mode (no code execution) and without compiling (training settings are not part
    of a model). Damaged, foreign or mismatched files raise a one-line WeightsError;
    files that carry a weights digest are checked against it; ``expect`` (an
    RBQEConfig) refuses any other architecture.
    """
    path = str(path)
    cfg = check_file(path)
    if expect is not None and cfg != expect:
        raise WeightsError(f"{path}: architecture differs: {_differences(cfg, expect)}")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for foreign or damaged files
        first = str(e).splitlines()[0] if str(e) else "unknown error"
        if "could not be loaded" in first:
            raise WeightsError(f"{path}: cannot load model: {_MISMATCH}") from None
        raise WeightsError(f"{path}: cannot load model ({type(e).__name__}: {first})") from None
    saved = getattr(model, "saved_weights_digest", None)
    if saved is not None and saved != weights_digest(model):
        raise WeightsError(f"{path}: {_MISMATCH}")
    model.source_path = path  # what is calibrated beside the file travels with the model
    return model

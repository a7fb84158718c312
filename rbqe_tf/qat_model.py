"""The tf-keras twin of the RBQE graph and its fake-quantized (QAT) version.

tensorflow-model-optimization 0.8 quantizes only tf-keras models, and importing it
sets ``TF_USE_LEGACY_KERAS=1`` for the process (PITFALLS), so this module is imported
only by the QAT entry points (``python -m rbqe_tf.qat``, ``export.tflite --from-qat``),
which run in their own process. The graph comes from :class:`rbqe_tf.model.GraphBuilder`
(one source of truth) with ``tf_keras.layers`` and the tf-keras :class:`ECA` below;
weights move between the Keras 3 model and the twin by layer name.

Quantization follows tfmot's default 8-bit scheme (per-channel symmetric conv kernels,
asymmetric activations), plus :class:`ECAQuantizeConfig` and
:class:`TransposeConvQuantizeConfig` where the registry misses a tensor that TFLite
quantizes; :func:`calibrate` sets the activation ranges before fine-tuning, and
:func:`exit_models` and :func:`stage_models` are what ``export.tflite --from-qat``
converts (``rbqe_tf.conversion.graphs.qat_graphs``; docs/qat.md).
"""
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras
from tensorflow_model_optimization.python.core.keras.utils import smart_cond
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit\
    .default_8bit_quantize_registry import Default8BitConvTransposeQuantizeConfig
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (
    QuantizeLayer)

from rbqe_tf.model import GraphBuilder, eca_bands, feature_input, stage_input_keys

quantizers = tfmot.quantization.keras.quantizers


class ECA(tf_keras.layers.Layer):
    """tf-keras twin of :class:`rbqe_tf.model.ECA` (same weight, same maths).

    The mean and the sigmoid are applied through the activation attributes
    ``pool_activation`` (linear) and ``attention_activation`` (sigmoid), which tfmot
    wraps to fake-quantize the pooled mean and the logits. With ``quantized=True``
    the banded C×C kernel is fake-quantized per output channel, as TFLite stores it
    (quantizing the three weights instead would leave a runtime DEQUANTIZE and
    kernel arithmetic in the converted model).
    """

    def __init__(self, quantized=False, **kwargs):
        super().__init__(**kwargs)
        self.quantized = quantized
        self.pool_activation = tf_keras.activations.get("linear")
        self.attention_activation = tf_keras.activations.get("sigmoid")

    def build(self, input_shape):
        c = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(3,), initializer="glorot_uniform")
        self._bands = tf.constant(eca_bands(c))
        if self.quantized:
            self._band_quantizer = quantizers.LastValueQuantizer(
                num_bits=8, per_axis=True, symmetric=True, narrow_range=True)
            self._band_vars = self._band_quantizer.build((1, 1, c, c), "band", self)
        super().build(input_shape)

    def call(self, x, training=None):
        band = tf.tensordot(self.kernel, self._bands, 1)[None, None]
        if self.quantized:
            if training is None:
                training = tf_keras.backend.learning_phase()
            band = smart_cond(
                training, lambda: self._band_quantizer(band, True, weights=self._band_vars),
                lambda: self._band_quantizer(band, False, weights=self._band_vars))
        pooled = self.pool_activation(tf.reduce_mean(x, axis=(1, 2), keepdims=True))
        logits = tf.nn.conv2d(pooled, band, 1, "VALID")
        return x * self.attention_activation(logits)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "quantized": self.quantized}


class ECAQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Fake quantization of :class:`ECA` (built with ``quantized=True``, which handles
    its kernel): the pooled mean, the logits and the output."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return [(getattr(layer, name), quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False))
            for name in ("pool_activation", "attention_activation")]

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        layer.pool_activation, layer.attention_activation = quantize_activations

    def get_output_quantizers(self, layer):
        return [quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


class _PreQuantized:
    """Fake-quantizes its input, then applies ``activation`` (a QuantizeAwareActivation,
    whose ``training`` flag the wrapper sets before each call)."""

    def __init__(self, activation, quantizer, variables):
        self.activation, self.quantizer, self.variables = activation, quantizer, variables

    def __call__(self, x):
        x = smart_cond(self.activation.training,
                       lambda: self.quantizer(x, True, weights=self.variables),
                       lambda: self.quantizer(x, False, weights=self.variables))
        return self.activation(x)


class TransposeConvQuantizeConfig(Default8BitConvTransposeQuantizeConfig):
    """tfmot's Conv2DTranspose config plus a fake quantization before the ReLU.

    TFLite's int8 TRANSPOSE_CONV does not fuse the ReLU, so its pre-ReLU output
    needs a range too; without one the converter leaves the op in float."""

    def __init__(self):
        super().__init__(["kernel"], ["activation"], False)
        self.pre_quantizer = quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)

    def get_activations_and_quantizers(self, layer):
        if not hasattr(layer, "pre_relu_vars"):
            layer.pre_relu_vars = self.pre_quantizer.build(None, "pre_relu", layer)
        return super().get_activations_and_quantizers(layer)

    def set_quantize_activations(self, layer, quantize_activations):
        layer.activation = _PreQuantized(quantize_activations[0], self.pre_quantizer,
                                         layer.pre_relu_vars)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls()


CUSTOM_OBJECTS = {"ECA": ECA, "ECAQuantizeConfig": ECAQuantizeConfig,
                  "TransposeConvQuantizeConfig": TransposeConvQuantizeConfig}


def _creator():
    created = {}

    def create(name, factory):
        if name not in created:
            created[name] = factory()
        return created[name]
    return create


def build_twin(cfg, input_size=(None, None)):
    """Float tf-keras model of ``cfg`` (an :class:`RBQEConfig`): ``y`` → all exits."""
    y = tf_keras.Input((*input_size, cfg.channels), name="y")
    exits = GraphBuilder(cfg, _creator(), tf_keras.layers, ECA).exits(y)
    return tf_keras.Model(y, exits, name="rbqe_twin")


def layer_weights(model):
    """{original layer name: its trainable variables} of the layers of ``model`` that
    have some (quantizer ranges are not trainable).

    tfmot's QuantizeWrapper re-assigns its layer's weight attributes, so a wrapped
    layer's variables are found on the wrapper by their ``<layer name>/`` prefix
    (its own quantizer variables carry the wrapper's name)."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, QuantizeLayer):  # the input's fake quantization
            continue
        inner = getattr(layer, "layer", None)  # the wrapped layer
        own = layer.trainable_weights if inner is None else [
            w for w in layer.trainable_weights if w.name.startswith(inner.name + "/")]
        if own:
            found[layer.name if inner is None else inner.name] = own
    return found


def copy_weights(source, target):
    """Copies the weights of every layer of ``source`` into the same-named layer of
    ``target`` (Keras 3 or tf-keras, float or quantized); ValueError if they differ."""
    src, dst = layer_weights(source), layer_weights(target)
    if set(src) != set(dst):
        raise ValueError(f"layer names differ: {sorted(set(src) ^ set(dst))[:5]}")
    for name, variables in src.items():
        if [tuple(v.shape) for v in variables] != [tuple(v.shape) for v in dst[name]]:
            raise ValueError(f"{name}: weight shapes differ")
        for v, w in zip(dst[name], variables):
            v.assign(np.asarray(w))


def quantize(twin):
    """Fake-quantized (QAT) copy of a float twin (weights copied; ECA via its config)."""
    annotate = tfmot.quantization.keras.quantize_annotate_layer

    def annotated(layer):
        if isinstance(layer, ECA):
            return annotate(ECA(**{**layer.get_config(), "quantized": True}),
                            ECAQuantizeConfig())
        clone = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, tf_keras.layers.Conv2DTranspose):
            return annotate(clone, TransposeConvQuantizeConfig())
        return annotate(clone)

    with tfmot.quantization.keras.quantize_scope(CUSTOM_OBJECTS):
        marked = tf_keras.models.clone_model(twin, clone_function=annotated)
        qat = tfmot.quantization.keras.quantize_apply(marked)
    copy_weights(twin, qat)
    low, high = _input_range(qat)
    low.assign(0.0)  # the input quantizer only widens its range: [0, 1] holds every
    high.assign(1.0)  # 8-bit pixel exactly (scale 1/255)
    return qat


def build_qat(cfg):
    """Fake-quantized model of ``cfg`` (dynamic H, W) with fresh weights."""
    return quantize(build_twin(cfg))


def _input_range(qat):
    layer = qat.get_layer("quantize_layer")
    return layer.quantizer_vars["min_var"], layer.quantizer_vars["max_var"]


def _wrapper(qat, name):
    """The quantized model's layer for original layer ``name``."""
    for candidate in (f"quant_{name}", name):
        try:
            return qat.get_layer(candidate)
        except ValueError:
            pass
    raise ValueError(f"no layer {name} in the quantized model")


def feature_producer(cfg, key):
    """Name of the layer whose output is feature node x[i, j]."""
    i, j = key
    if j == 0:
        return "enc_0_conv2" if i == 0 else f"enc_{i}_down"
    return f"dec_{i}_{j}_sep2" + ("_pw" if cfg.separable_decoder else "")


class FeatureQuant(tf_keras.layers.Layer):
    """Fake quantization of a stage's feature input with the range its producer
    learned, so a feature crosses the stage boundary exactly as inside the model."""

    def __init__(self, producer, **kwargs):
        super().__init__(trainable=False, **kwargs)
        variables = producer._quantize_activations[0]._post_activation_vars
        self.low, self.high = variables["min_var"], variables["max_var"]

    def call(self, x):
        return tf.quantization.fake_quant_with_min_max_vars(x, self.low, self.high, num_bits=8)


def stage_models(qat, cfg):
    """Stage models of the quantized model, sharing its layers (as
    :meth:`rbqe_tf.model.RBQE.stage_models`): stage k takes ``[y, *features]``."""
    graph = GraphBuilder(cfg, lambda name, factory: _wrapper(qat, name), tf_keras.layers, ECA)
    stages = []
    for k in range(1, cfg.num_exits + 1):
        y = tf_keras.Input((None, None, cfg.channels), name="y")
        features = [feature_input(tf_keras, cfg, key, (None, None))
                    for key in stage_input_keys(cfg, k)]
        quantized = [FeatureQuant(_wrapper(qat, feature_producer(cfg, key)),
                                  name=f"fq_{k}_{key[0]}_{key[1]}")(f)
                     for key, f in zip(stage_input_keys(cfg, k), features)]
        outputs = graph.stage(k, qat.get_layer("quantize_layer")(y), quantized)
        stages.append(tf_keras.Model([y] + features, outputs, name=f"stage_{k}"))
    return stages


def exit_models(qat, cfg):
    """Exit models of the quantized model (``y`` → exit k, k = 1..K), sharing its layers."""
    return [tf_keras.Model(qat.input, qat.outputs[k - 1]) for k in range(1, cfg.num_exits + 1)]


EMA_SUFFIXES = ("post_activation", "pre_activation", "output", "pre_relu")
EMA_DECAY = 0.999  # tfmot's MovingAverageQuantizer (fixed)
MIN_RANGE = 1e-3  # a calibrated range at least this wide: an empty one (a dead
# feature map) would make the fake quantization divide by a zero scale


def _ema_ranges(qat):
    """(min, max) variable pairs of every moving-average activation quantizer."""
    pairs = []
    for v in qat.non_trainable_variables:
        stem = v.name.split(":")[0]
        if stem.endswith("_min") and stem.rsplit("/", 1)[-1][:-4] in EMA_SUFFIXES:
            partner = next(w for w in qat.non_trainable_variables
                           if w.name.split(":")[0] == stem[:-4] + "_max")
            pairs.append((v, partner))
    return pairs


def calibrate(qat, batches):
    """Sets the activation ranges to the min/max seen on ``batches`` (input arrays).

    tfmot starts every range at [-6, 6] and moves it by an EMA with decay 0.999, far
    too slowly for a short fine-tune. Each batch here runs one training-mode forward
    from the current estimates, and the batch's own range is recovered exactly from
    the EMA update; the estimates are the running min/max, as post-training
    calibration would set them (widened to at least :data:`MIN_RANGE`).
    """
    pairs = _ema_ranges(qat)
    estimates = None
    for batch in batches:
        before = [(lo.numpy(), hi.numpy()) for lo, hi in pairs]
        qat(batch, training=True)
        seen = [((lo.numpy() - EMA_DECAY * b_lo) / (1 - EMA_DECAY),
                 (hi.numpy() - EMA_DECAY * b_hi) / (1 - EMA_DECAY))
                for (lo, hi), (b_lo, b_hi) in zip(pairs, before)]
        estimates = seen if estimates is None else [
            (np.minimum(e_lo, s_lo), np.maximum(e_hi, s_hi))
            for (e_lo, e_hi), (s_lo, s_hi) in zip(estimates, seen)]
        for (lo, hi), (e_lo, e_hi) in zip(pairs, estimates):
            lo.assign(e_lo)
            hi.assign(np.maximum(e_hi, e_lo + MIN_RANGE))
    return len(pairs)

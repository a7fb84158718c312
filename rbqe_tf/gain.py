"""Exit 0 and the gain decision: predict what each exit gains before running any (NumPy only).

The published score judges an exit's *output* and depends on image content as much as
on compression; it cannot say "leave this image alone". This predictor looks once at
the *input* and predicts each exit's ΔPSNR over it (dB), so the rule reads in the same
units on every image (docs/decision.md):

- **exit 0** (the input, unchanged) when no exit is predicted to gain ``margin`` dB;
- else the cheapest exit predicted within ``tolerance`` dB of the best predicted exit.

Features (cheap: one 8×8 block DCT, ~64 MACs per pixel, plus a few elementwise ops per
coefficient), pooled over all whole 8×8 blocks on the image's own grid:

- per frequency: mean log(1 + |c|) (content energy) and mean exp(−c²) (share of
  coefficients quantized to zero), c in grey levels;
- per frequency band and lattice step q: how strongly the coefficients sit on multiples
  of q (Σ w·cos(2πc/q) / Σ w with w = 1 − exp(−(c/q)²)): JPEG's quantization leaves
  coefficients on such lattices, an uncompressed image does not. A band of only
  near-zero coefficients also scores near 1 — what heavy JPEG does to high frequencies,
  and what smooth content shows too; the energy features tell the two apart.

The head is a two-layer perceptron on the standardised features (weights in
``<model>.gain.npz``, trained by ``python -m rbqe_tf.gain_fit``). NumPy only, so the
Keras ``Enhancer``, the evaluator and the TensorFlow-free runner take the same decision
from the same numbers, whatever precision the stages run in.
"""
import math
from pathlib import Path

import numpy as np

from rbqe_tf import color

BLOCK = 8
LATTICE_STEPS = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
# Frequency bands by u + v of the 8×8 DCT (a zig-zag grouping): 0 | 1 | 2–3 | 4–6 | 7–9 | 10–14.
BAND_EDGES = (0, 1, 2, 4, 7, 10, 15)
WINDOW_BLOCKS = 16  # rows of blocks per chunk: bounds memory at any image size
MAX_BLOCKS = 4096  # blocks averaged at most (a 512² image): larger images are sampled
NUM_FEATURES = 2 * BLOCK * BLOCK + (len(BAND_EDGES) - 1) * len(LATTICE_STEPS)
OPS_PER_PIXEL = 128  # DCT (64 MACs) and the per-coefficient statistics, counted by hand
LABEL_FLOOR_DB = -2.0  # gains below this are all "much worse"; training clips labels here


def _dct_matrix(n=BLOCK):
    k = np.arange(n)
    d = np.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


_D = _dct_matrix()
_DCT2 = np.kron(_D, _D)  # [64, 64]: c[8u + v] = Σ D[u, x] D[v, y] block[x, y]
_BAND = np.add.outer(np.arange(BLOCK), np.arange(BLOCK)).ravel()
_BAND_INDEX = np.digitize(_BAND, BAND_EDGES[1:-1])  # band of each of the 64 frequencies
_BAND_MATRIX = np.eye(len(BAND_EDGES) - 1)[_BAND_INDEX]  # [64, bands]


def _lattice_sums(c, base):
    """({q: (Σ w·cos(2πc/q), Σ w)} over blocks for q = base, base/2, base/4, base/8, with
    w = 1 − exp(−(c/q)²); exp(−(c/q)²) per coefficient for the smallest q). Angle doubling
    and repeated fourth powers need two transcendental calls per coefficient, not eight."""
    turns = c / base
    cos = np.cos((2 * math.pi) * (turns - np.round(turns))).astype(np.float32)
    gauss = np.exp(-np.square(turns)).astype(np.float32)
    sums = {}
    for power in range(4):
        if power:
            cos = 2 * np.square(cos) - 1
            gauss = np.square(np.square(gauss))
        weight = 1 - gauss
        sums[base / 2 ** power] = ((weight * cos).sum(0, np.float64), weight.sum(0, np.float64))
    return sums, gauss


def _block_sums(y):
    """Sums over whole 8×8 blocks of Y (grey levels, [H, W]) → ([F'] sums, blocks).

    Images of more than MAX_BLOCKS blocks use an evenly strided subset of block rows
    and columns (the features are means), so the cost is bounded at any size."""
    h, w = (s // BLOCK for s in y.shape)
    if h == 0 or w == 0:
        return None, 0
    stride = max(1, math.ceil(math.sqrt(h * w / MAX_BLOCKS)))
    rows, cols = np.arange(0, h, stride), np.arange(0, w, stride)
    energy, zero = np.zeros(BLOCK * BLOCK), np.zeros(BLOCK * BLOCK)
    on = {q: 0.0 for q in LATTICE_STEPS}
    total = {q: 0.0 for q in LATTICE_STEPS}
    for start in range(0, len(rows), WINDOW_BLOCKS):
        r = rows[start:start + WINDOW_BLOCKS]
        if stride == 1:
            blocks = y[r[0] * BLOCK:(r[-1] + 1) * BLOCK, :w * BLOCK].reshape(
                len(r), BLOCK, w, BLOCK)
        else:
            blocks = y[(r[:, None] * BLOCK + np.arange(BLOCK))[:, :, None, None],
                       (cols[:, None] * BLOCK + np.arange(BLOCK))[None, None]]
        c = blocks.transpose(0, 2, 1, 3).reshape(-1, BLOCK * BLOCK) @ _DCT2.T
        energy += np.log1p(np.abs(c)).sum(0)
        for base in (24.0, 16.0):
            sums, gauss = _lattice_sums(c, base)
            for q, (a, b) in sums.items():
                on[q] = on[q] + a
                total[q] = total[q] + b
        zero += np.square(np.square(gauss)).sum(0, np.float64)  # exp(−c²): q = 2 → 1
    bands = [np.stack([v[q] for q in LATTICE_STEPS], 1).T @ _BAND_MATRIX for v in (on, total)]
    return (np.concatenate([energy, zero, bands[0].T.ravel(), bands[1].T.ravel()]),
            len(rows) * len(cols))


def features(y, colour=False):
    """The predictor's [NUM_FEATURES] features of Y ([H, W], uint8 or float in [0, 1]);
    None when the image holds no whole 8×8 block.

    ``colour``: ``y`` is the BT.601 studio-range Y of a colour image
    (:func:`rbqe_tf.color.luma`); it is mapped back to the full-range luma that JPEG
    codes (Y' = 0.299 R + 0.587 G + 0.114 B = (Y − 16)·255/219), so the quantization
    lattices sit where the encoder put them."""
    y = np.asarray(y)
    y = y.astype(np.float64) if y.dtype == np.uint8 else np.asarray(y, np.float64) * 255.0
    if colour:
        y = (y - 16.0) * (255.0 / 219.0)
    sums, blocks = _block_sums(y)
    if blocks == 0:
        return None
    n = BLOCK * BLOCK
    return np.concatenate([sums[:2 * n] / blocks, _lattice_ratios(sums, blocks, 0.0)])


def _lattice_ratios(sums, blocks, prior):
    """Σ w·cos / (Σ w + prior·n·blocks) per band and step, n the band's coefficient count."""
    n = BLOCK * BLOCK
    cells = (len(BAND_EDGES) - 1) * len(LATTICE_STEPS)
    on, weight = sums[2 * n:2 * n + cells], sums[2 * n + cells:]
    counts = np.repeat(_BAND_MATRIX.sum(0), len(LATTICE_STEPS))
    return on / np.maximum(weight + prior * blocks * counts, 1e-6)


def gate_gmacs(height, width):
    """The predictor's cost in G operations for an image (sampled above MAX_BLOCKS)."""
    return OPS_PER_PIXEL * min(height * width, MAX_BLOCKS * BLOCK * BLOCK) / 1e9


JPEG_DERIVED_PRIOR = 0.1
JPEG_DERIVED_LATTICE = 0.15
"""A "lossless" image whose strongest lattice statistic (with a prior of 0.1 per
coefficient, so that bands of only near-zero coefficients score near 0) exceeds this was
JPEG-coded once: on their Y, Set14's coastguard, foreman, ppt3, zebra and Set5's woman
reach 0.19-0.52, the other validation images at most 0.10."""


def jpeg_derived(y):
    """Whether uint8 Y plane ``y`` still carries JPEG's quantization lattices (see above)."""
    sums, blocks = _block_sums(np.asarray(y, np.float64))
    return blocks > 0 and float(_lattice_ratios(sums, blocks, JPEG_DERIVED_PRIOR).max()) \
        > JPEG_DERIVED_LATTICE


HEADS = {"gain": "", "gate": "gate_"}
"""The predictor's two heads and their weight-name prefixes in the ``.gain.npz`` file."""
GAIN_AGREEMENT_DB = 0.2
"""The gate opens only where the gain head, too, predicts at least this much: on inputs
unlike any training crop (a smooth gradient, a flat colour) the strongly regularised
gate drifts towards its mean (+0.6 dB) while the gain head sees nothing to gain."""
FLAT_ENERGY = 1e-3
"""Below this mean log-energy at every AC frequency an image has no texture, hence no
artefacts: exit 0 whatever the heads say (a flat colour is otherwise enhanced into a
few grey levels of border noise)."""


class GainPredictor:
    """Predicted ΔPSNR (dB) of each exit over the input, from :func:`features`, by two
    heads on the same standardised features: ``gain`` ranks the exits (which one to
    take), ``gate`` answers exit 0's question (does any exit gain enough?). The gate is
    fitted to labels floored at a small loss and with a strong weight penalty
    (:mod:`rbqe_tf.gain_fit`): it is calmer on light inputs, where a ranking head's
    over-predictions cost a safe image, while it would rank heavy inputs' exits too
    close together. A file with one head uses it for both."""

    def __init__(self, weights):
        self.mean, self.scale = weights["mean"], weights["scale"]
        self.heads = {}
        for head, prefix in HEADS.items():
            if head == "gain" or f"{prefix}w0" in weights:
                self.heads[head] = [(weights[f"{prefix}w{i}"], weights[f"{prefix}b{i}"])
                                    for i in range(2)]
        self.heads.setdefault("gate", self.heads["gain"])

    @property
    def num_exits(self):
        return self.heads["gain"][-1][1].shape[0]

    def predict_features(self, f, head="gain"):
        """[N, NUM_FEATURES] → [N, exits] gains predicted by ``head``."""
        x = (np.asarray(f, np.float64) - self.mean) / self.scale
        (w0, b0), (w1, b1) = self.heads[head]
        return np.maximum(x @ w0 + b0, 0.0) @ w1 + b1

    def __call__(self, y, colour=False):
        """(predicted gains [exits], the gate's best predicted gain) for Y plane ``y``
        (see :func:`features`); None without a whole 8×8 block. The gate is −inf for a
        textureless image and at most the gain head's best where that is below
        :data:`GAIN_AGREEMENT_DB`."""
        f = features(y, colour)
        return None if f is None else self.predict(f)

    def predict(self, f):
        """(gains [exits], gate) for one image's features ``f`` [NUM_FEATURES] (see
        :meth:`__call__`)."""
        gains = self.predict_features(f[None])[0]
        gate = float(self.predict_features(f[None], "gate").max())
        if f[1:BLOCK * BLOCK].max() < FLAT_ENERGY:
            gate = -np.inf
        elif gains.max() < GAIN_AGREEMENT_DB:
            gate = min(gate, float(gains.max()))
        return gains, gate

    def save(self, path):
        np.savez(path, mean=self.mean, scale=self.scale, **{
            f"{HEADS[head]}{k}{i}": v for head, layers in self.heads.items()
            for i, layer in enumerate(layers) for k, v in zip("wb", layer)})


def predictor_path(weights_path):
    """``<weights without .keras>.gain.npz`` next to the weights."""
    path = Path(weights_path)
    stem = path.name[:-len(".keras")] if path.name.endswith(".keras") else path.name
    return path.with_name(stem + ".gain.npz")


def load_predictor(weights_path):
    """The gain predictor stored beside ``weights_path``; None if there is none.

    Raises ValueError naming the file if it exists but is not a predictor."""
    path = predictor_path(weights_path)
    return read_predictor(path) if path.is_file() else None


def read_predictor(path):
    """The gain predictor in file ``path``; ValueError naming the file if it is not one."""
    try:
        with np.load(path) as data:
            weights = {k: data[k].astype(np.float64) for k in data.files}
        predictor = GainPredictor(weights)
        if predictor.mean.shape != (NUM_FEATURES,):
            raise ValueError(f"expects {predictor.mean.shape} features, not {NUM_FEATURES}")
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a gain predictor ({e})") from None
    return predictor


def choose_exits(gains, margin, tolerance, gate=None):
    """Exit per row of predicted gains [N, E]: 0 if the gate's best gain (``gate`` [N];
    default the row's own best) is below ``margin`` dB, else the first exit within
    ``tolerance`` dB of the row's best."""
    gains = np.asarray(gains, np.float64)
    best = gains.max(1, keepdims=True)
    gate = best[:, 0] if gate is None else np.asarray(gate, np.float64)
    first = np.argmax(gains >= best - tolerance, 1) + 1
    return np.where(gate >= margin, first, 0)


def decide(predictor, rule, image):
    """(exit, predicted gains) of the gain rule ``rule`` {"margin", "tolerance"} for an
    image array (gray, RGB or RGBA, as :func:`rbqe_tf.color.luma` takes); exit 0 and no
    gains when the image holds no whole 8×8 block."""
    colour = np.ndim(image) == 3 and np.shape(image)[2] in (3, 4)
    predicted = predictor(color.luma(image), colour=colour)
    if predicted is None:
        return 0, []
    gains, gate = predicted
    k = choose_exits(gains[None], rule["margin"], rule["tolerance"], [gate])[0]
    return int(k), [float(g) for g in gains]

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
import contextlib
import ctypes
import glob
import math
import os
from pathlib import Path

import numpy as np

from rbqe_tf import color

BLOCK = 8
LATTICE_STEPS = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
# Frequency bands by u + v of the 8×8 DCT (a zig-zag grouping): 0 | 1 | 2–3 | 4–6 | 7–9 | 10–14.
BAND_EDGES = (0, 1, 2, 4, 7, 10, 15)
WINDOW_BLOCKS = 16  # rows of blocks per DCT product: bounds memory at any image size
CHUNK_BLOCKS = 256  # blocks per statistics pass: its float64 temporaries stay in cache
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
_BASES = (24.0, 16.0)  # lattice steps base / 2**p, p = 0..3, by angle doubling
_PIO2_HI, _PIO2_LO = math.pi / 2, 6.123233995736766e-17  # π/2 = HI + LO
_SIN_TAYLOR = [(-1) ** k / math.factorial(2 * k + 1) for k in range(1, 11)]  # r³ … r²¹


def _cos(a):
    """cos of float64 ``a`` in [−π, π], in place, as sin(π/2 − |a|) by its Taylor series
    to r²¹ (float64 rounding, so the float32 casts after it round as NumPy's cos would):
    NumPy's float64 cos is a scalar loop, and was most of the features' cost."""
    r = np.abs(a, out=a)
    np.subtract(_PIO2_HI, r, out=r)
    r += _PIO2_LO
    z = np.square(r)
    p = z * _SIN_TAYLOR[-1]
    for coefficient in _SIN_TAYLOR[-2::-1]:
        p += coefficient
        p *= z
    p *= r
    return np.add(p, r, out=r)


def _add_sums(c, energy, zero, lattice):
    """Adds one chunk's statistics (coefficients ``c`` [n, 64]) to the running sums over
    blocks: ``energy``, ``zero`` [64] and ``lattice`` [4 powers, 2 (Σ w·cos, Σ w), 2 bases,
    64], w = 1 − exp(−(c/q)²), q = base / 2**power. cos and exp once per base, then angle
    doubling and repeated fourth powers in float32 for the smaller steps; float64 sums."""
    magnitude = np.abs(c)
    energy += np.log1p(magnitude, out=magnitude).sum(0)
    turns = c[:, None, :] / np.array(_BASES)[:, None]  # [n, bases, 64]
    angle = np.round(turns)
    np.subtract(turns, angle, out=angle)
    angle *= 2 * math.pi
    cos = _cos(angle).astype(np.float32)
    gauss = np.exp(np.negative(np.square(turns, out=turns), out=turns), out=turns)
    gauss = gauss.astype(np.float32)
    weight = np.empty_like(gauss)
    pair = np.empty((len(c), 2) + gauss.shape[1:])
    for power in range(4):
        if power:
            np.square(cos, out=cos)
            cos *= 2
            cos -= 1
            np.square(np.square(gauss, out=gauss), out=gauss)
        np.subtract(1, gauss, out=weight)
        np.multiply(weight, cos, out=pair[:, 0], dtype=np.float32)  # rounded as float32
        pair[:, 1] = weight
        lattice[power] += pair.sum(0)
    small = np.square(gauss[:, 1])  # exp(−c²): q = 2 → 1
    zero += np.square(small, out=small).sum(0, np.float64)


def _sample(a):
    """The pixels of the whole 8×8 blocks the features average ([8·rows, 8·cols, ...] of
    ``a``, a view when all are); None without a whole block.

    Images of more than MAX_BLOCKS blocks use an evenly strided subset of block rows
    and columns (the features are means), so the cost is bounded at any size; taking
    them first converts no more of a large photo than the features read."""
    h, w = a.shape[0] // BLOCK, a.shape[1] // BLOCK
    if h == 0 or w == 0:
        return None
    stride = max(1, math.ceil(math.sqrt(h * w / MAX_BLOCKS)))
    if stride == 1:
        return a[:h * BLOCK, :w * BLOCK]

    def pixels(n):
        return (np.arange(0, n, stride)[:, None] * BLOCK + np.arange(BLOCK)).ravel()
    return a[np.ix_(pixels(h), pixels(w))]


def _block_sums(pixels, grey):
    """Sums over all 8×8 blocks of ``pixels`` (from :func:`_sample`) → ([F'] sums,
    blocks); ``grey`` maps pixels to float64 grey levels, one window at a time."""
    w = pixels.shape[1] // BLOCK
    energy, zero = np.zeros(BLOCK * BLOCK), np.zeros(BLOCK * BLOCK)
    lattice = np.zeros((4, 2, len(_BASES), BLOCK * BLOCK))
    for start in range(0, pixels.shape[0], WINDOW_BLOCKS * BLOCK):
        window = grey(pixels[start:start + WINDOW_BLOCKS * BLOCK])
        c = window.reshape(-1, BLOCK, w, BLOCK).transpose(0, 2, 1, 3).reshape(
            -1, BLOCK * BLOCK) @ _DCT2.T
        for i in range(0, len(c), CHUNK_BLOCKS):
            _add_sums(c[i:i + CHUNK_BLOCKS], energy, zero, lattice)
    steps = {base / 2 ** p: lattice[p, :, b] for p in range(4) for b, base in enumerate(_BASES)}
    bands = np.stack([steps[q] for q in LATTICE_STEPS], 1) @ _BAND_MATRIX  # [2, steps, bands]
    return (np.concatenate([energy, zero, bands[0].T.ravel(), bands[1].T.ravel()]),
            pixels.shape[0] // BLOCK * w)


def features(y, colour=False):
    """The predictor's [NUM_FEATURES] features of Y ([H, W], uint8 or float in [0, 1]);
    None when the image holds no whole 8×8 block.

    ``colour``: ``y`` is the BT.601 studio-range Y of a colour image
    (:func:`rbqe_tf.color.luma`); it is mapped back to the full-range luma that JPEG
    codes (Y' = 0.299 R + 0.587 G + 0.114 B = (Y − 16)·255/219), so the quantization
    lattices sit where the encoder put them."""
    y = np.asarray(y)
    if y.ndim != 2:
        raise ValueError(f"expected a Y plane [H, W], got shape {y.shape}")
    return _features(_sample(y), colour)


def _features(pixels, colour):
    """:func:`features` of the pixels :func:`_sample` took."""
    if pixels is None:
        return None

    def grey(y):
        y = y.astype(np.float64) if y.dtype == np.uint8 else np.asarray(y, np.float64) * 255.0
        return (y - 16.0) * (255.0 / 219.0) if colour else y
    sums, blocks = _block_sums(pixels, grey)
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
    pixels = _sample(np.asarray(y))
    if pixels is None:
        return False
    sums, blocks = _block_sums(pixels, lambda p: np.asarray(p, np.float64))
    return float(_lattice_ratios(sums, blocks, JPEG_DERIVED_PRIOR).max()) > JPEG_DERIVED_LATTICE


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


def _openblas():
    """(get, set) of the thread count of the OpenBLAS that NumPy's wheel bundles, or None
    (another BLAS, or none found: the decision then runs as NumPy is set up)."""
    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(np.__file__)),
                                  "numpy.libs", "*openblas*"))
    for path in libs:
        lib = ctypes.CDLL(path)  # the library NumPy already loaded (dlopen shares it)
        for get, set_ in (("scipy_openblas_get_num_threads64_",
                           "scipy_openblas_set_num_threads64_"),
                          ("openblas_get_num_threads", "openblas_set_num_threads")):
            if hasattr(lib, get) and hasattr(lib, set_):
                return getattr(lib, get), getattr(lib, set_)
    return None


_OPENBLAS = _openblas()


@contextlib.contextmanager
def one_blas_thread():
    """NumPy's BLAS on one thread for the block. The gain decision's matrix products are
    small (a 64-point DCT per 8×8 block); OpenBLAS splits them over every core, and on
    a busy CPU its threads' hand-off costs far more than the product (measured in
    docs/benchmarks.md)."""
    if _OPENBLAS is None:
        yield
        return
    get, set_ = _OPENBLAS
    threads = get()
    set_(1)
    try:
        yield
    finally:
        set_(threads)


def decide(predictor, rule, image, one_thread=True):
    """(exit, predicted gains) of the gain rule ``rule`` {"margin", "tolerance"} for an
    image array (gray, RGB or RGBA, as :func:`rbqe_tf.color.luma` takes); exit 0 and no
    gains when the image holds no whole 8×8 block. ``one_thread``: NumPy's BLAS on one
    thread meanwhile (:func:`one_blas_thread`), else on its own setting."""
    image = np.asarray(image)
    colour = image.ndim == 3 and image.shape[2] in (3, 4)
    y = _sampled_luma(image)
    with one_blas_thread() if one_thread else contextlib.nullcontext():
        f = _features(y, colour)
        if f is None:
            return 0, []
        gains, gate = predictor.predict(f)
    k = choose_exits(gains[None], rule["margin"], rule["tolerance"], [gate])[0]
    return int(k), [float(g) for g in gains]


def _sampled_luma(image):
    """:func:`rbqe_tf.color.luma` of the pixels :func:`_sample` takes; None without a
    whole block. Luma is per pixel, so taking the pixels first gives the same numbers
    without converting the rest of a large photo; float images (a NaN anywhere is an
    error), shapes luma refuses and images without a whole block go to luma whole."""
    plain = image.dtype in (np.uint8, np.uint16) and (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)))
    pixels = _sample(image) if plain else None
    return _sample(color.luma(image)) if pixels is None else color.luma(pixels)

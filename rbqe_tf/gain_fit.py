"""``python -m rbqe_tf.gain_fit``: train the gain predictor of a JPEG model (exit 0 and the gain decision).

    python -m rbqe_tf.gain_fit --weights rbqe_tf/weights/rbqe_jpeg.keras \\
        --data ../shared/data/train --run_dir runs/gain [--crops 1200] [--variants 5]

Labels: crops of the training images (8-aligned, so the JPEG grid is the crop's; colour
images stay colour and are coded as OpenCV's 4:2:0 colour JPEG, as cameras do) are made
into inputs a blind tool meets — JPEG at a quality factor drawn from 10..100, a re-saved
JPEG (a second pass at 50..100) or the uncompressed crop — and the network runs all its
exits on their Y (:func:`rbqe_tf.color.luma`, as the ``Enhancer`` sees it); each exit's label is its ΔPSNR over the input (8-bit outputs,
clipped below at ``gain.LABEL_FLOOR_DB``: an uncompressed input has no finite PSNR).
``--graphics N`` more crops are synthetic screen content — text, lines and boxes in flat
colours on flat or gradient backgrounds, as screenshots and UI captures are — which no
training photo resembles and which a blind tool must not smear when it is uncompressed.
They are kept only as light inputs (uncompressed, QF ≥ GRAPHICS_MIN_QF): their heavy-QF
labels are noisy and pulled the photos' predictions off (docs/decision.md).
Features are :func:`rbqe_tf.gain.features`. The head (standardisation, one hidden layer)
is fitted by full-batch Adam on MSE; a held-out tenth of the crops reports its error
before the final fit on all of them. Labels are cached in the run folder (``labels.npz``),
so a re-fit does not re-run the network. Writes ``<weights>.gain.npz`` beside the weights
(``--out`` elsewhere) and ``report.json`` in the run folder.
"""
import json
import os
import sys
import time

import numpy as np

from rbqe_tf.cli import fail, import_tensorflow_quietly

CROP_SIZES = (192, 128)  # the largest that fits the image
HIDDEN = 64
QF_RANGE = (10, 100)
RESAVE_QF = (50, 100)
KINDS = {"jpeg": 0.75, "resaved": 0.15, "uncompressed": 0.10}
GRAPHICS_MIN_QF = 70
GATE_FLOOR_DB, GATE_L2 = -0.5, 1e-2
"""The gate head's labels are floored here (how much worse a light input would get does
not matter, only whether a gain reaches the margin) and its weight penalty is strong:
the fit is then nearly seed-independent (docs/decision.md)."""


def jpeg(image, quality):
    """OpenCV JPEG round trip of a gray or RGB uint8 image (colour: 4:2:0, OpenCV's default)."""
    import cv2
    bgr = image[..., ::-1] if image.ndim == 3 else image
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    return decoded[..., ::-1] if image.ndim == 3 else decoded


def draw_inputs(gt, rng, variants):
    """``variants`` inputs made from crop ``gt`` (gray or RGB) → [(kind, level, uint8 input)]."""
    out = []
    for kind in rng.choice(list(KINDS), variants, p=list(KINDS.values())):
        if kind == "uncompressed":
            out.append((kind, 0, gt))
            continue
        qf = int(rng.integers(QF_RANGE[0], QF_RANGE[1] + 1))
        image = jpeg(gt, qf)
        if kind == "resaved":
            image = jpeg(image, int(rng.integers(RESAVE_QF[0], RESAVE_QF[1] + 1)))
        out.append((kind, qf, image))
    return out


def crops(data_dirs, count, rng):
    """``count`` 8-aligned ground-truth crops (uint8 gray or RGB), images drawn by area."""
    from rbqe_tf.image_io import read_image
    from rbqe_tf.sources import list_sources
    planes = [read_image(p) for d in data_dirs for p in list_sources(d)]
    planes = [p[..., :3] if p.ndim == 3 else p for p in planes
              if p.dtype == np.uint8 and min(p.shape[:2]) >= CROP_SIZES[-1]]
    if not planes:
        raise ValueError(f"no image of at least {CROP_SIZES[-1]}² pixels in {', '.join(data_dirs)}")
    area = np.array([p.shape[0] * p.shape[1] for p in planes], np.float64)
    for i in rng.choice(len(planes), count, p=area / area.sum()):
        plane = planes[i]
        size = next(s for s in CROP_SIZES if min(plane.shape[:2]) >= s)
        y0, x0 = (8 * rng.integers(0, (n - size) // 8 + 1) for n in plane.shape[:2])
        yield plane[y0:y0 + size, x0:x0 + size]


def graphics(rng, size):
    """A synthetic screen-content crop (uint8, RGB or gray): text, lines, boxes."""
    import cv2
    colour = rng.random() < 0.7
    base = rng.integers(0, 256, 3 if colour else 1)
    image = np.empty((size, size, len(base)), np.uint8)
    if rng.random() < 0.3:  # a gradient background
        ramp = np.linspace(0, 1, size)[:, None, None] * rng.integers(-80, 81, len(base))
        image[:] = np.clip(base + ramp, 0, 255).astype(np.uint8)
    else:
        image[:] = base
    for _ in range(int(rng.integers(2, 9))):
        ink = tuple(int(v) for v in rng.integers(0, 256, len(base)))
        x0, y0 = (int(v) for v in rng.integers(0, size, 2))
        kind = rng.random()
        if kind < 0.6:
            text = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyzABCDEFGH0123456789 .,:"),
                                      int(rng.integers(4, 30))))
            cv2.putText(image, text, (x0 - size // 3, y0), int(rng.integers(0, 8)),
                        float(rng.uniform(0.3, 1.5)), ink, int(rng.integers(1, 3)),
                        cv2.LINE_AA if rng.random() < 0.6 else cv2.LINE_8)
        elif kind < 0.8:
            x1, y1 = (int(v) for v in rng.integers(0, size, 2))
            cv2.line(image, (x0, y0), (x1, y1), ink, int(rng.integers(1, 4)))
        else:
            x1, y1 = (int(v) for v in rng.integers(0, size, 2))
            cv2.rectangle(image, (x0, y0), (x1, y1), ink, int(rng.choice([-1, 1, 2])))
    return image if colour else image[..., 0]


def label(model, planes, gt):
    """ΔPSNR [len(planes), exits] of every exit over each input Y plane (float [0, 1], all
    one size) against ground-truth Y ``gt`` (uint8); ``model``: float32 [B, H, W, 1] → exits."""
    from rbqe_tf import metrics
    from rbqe_tf.evaluation import PSNR_CAP_DB
    from rbqe_tf.gain import LABEL_FLOOR_DB
    from rbqe_tf.metrics import to_uint8
    exits = [np.asarray(e)[..., 0] for e in model(np.stack(planes)[..., None].astype(np.float32))]
    rows = []
    for i, y in enumerate(planes):
        base = min(metrics.psnr(gt, to_uint8(y)), PSNR_CAP_DB)
        rows.append([min(metrics.psnr(gt, to_uint8(e[i])), PSNR_CAP_DB) - base for e in exits])
    return np.maximum(np.array(rows), LABEL_FLOOR_DB)


def make_labels(model, data_dirs, count, variants, seed, progress=True, synthetic=False):
    """(features [N, F], labels [N, E], meta [N, 3]: crop, kind, QF). ``model`` None: no
    labels (the same inputs are drawn; :func:`main`'s ``--refeature``); ``synthetic``:
    ``count`` :func:`graphics` crops instead of crops of ``data_dirs``."""
    from tqdm import tqdm
    from rbqe_tf.color import luma
    from rbqe_tf.metrics import to_uint8
    from rbqe_tf.gain import features
    if model is not None:
        import tensorflow as tf
        run = tf.function(lambda b: model(b, training=False), reduce_retracing=True)
    rng = np.random.default_rng(seed)
    feats, labels, meta = [], [], []
    drawn_crops = ([graphics(rng, CROP_SIZES[0]) for _ in range(count)] if synthetic
                   else list(crops(data_dirs, count, rng)))
    for n, gt in enumerate(tqdm(drawn_crops, unit="crop", disable=not progress)):
        drawn = draw_inputs(gt, rng, variants)
        planes = [luma(x) for _, _, x in drawn]
        if model is not None:
            labels.append(label(run, planes, to_uint8(luma(gt))))
        feats += [features(y, colour=gt.ndim == 3) for y in planes]
        meta += [(n, ["jpeg", "resaved", "uncompressed"].index(k), q) for k, q, _ in drawn]
    return np.array(feats), np.concatenate(labels) if labels else None, np.array(meta)


def fit_predictor(x, y, seed):
    """The :class:`rbqe_tf.gain.GainPredictor` for features ``x`` [N, F] and gains
    ``y`` [N, E]: its gain head on the labels, its gate head on labels floored at
    :data:`GATE_FLOOR_DB` with weight penalty :data:`GATE_L2`."""
    from rbqe_tf.gain import HEADS, GainPredictor
    weights = fit_head(x, y, seed)
    gate = fit_head(x, np.maximum(y, GATE_FLOOR_DB), seed, l2=GATE_L2)
    weights.update({HEADS["gate"] + k: v for k, v in gate.items() if k[0] in "wb"})
    return GainPredictor(weights)


def fit_head(x, y, seed, steps=4000, lr=3e-3, l2=1e-4):
    """One head's weights (w0, b0, w1, b1, and the feature mean/scale) fitted to features
    ``x`` [N, F] and gains ``y`` [N, E]: full-batch Adam on MSE + ``l2``·‖W‖² (NumPy; a
    few minutes on this CPU). (A pinball loss at the 0.3 quantile, tried to err towards
    exit 0, left more heavy images alone on Set14 and Classic5 than it saved light ones:
    model card.)"""
    rng = np.random.default_rng(seed)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    params = [rng.normal(0, np.sqrt(2 / z.shape[1]), (z.shape[1], HIDDEN)), np.zeros(HIDDEN),
              rng.normal(0, np.sqrt(1 / HIDDEN), (HIDDEN, y.shape[1])), np.zeros(y.shape[1])]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        w0, b0, w1, b1 = params
        h = np.maximum(z @ w0 + b0, 0)
        d = 2 * (h @ w1 + b1 - y) / y.size
        dh = (d @ w1.T) * (h > 0)
        grads = [z.T @ dh + 2 * l2 * w0, dh.sum(0), h.T @ d + 2 * l2 * w1, d.sum(0)]
        for i, g in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            params[i] = params[i] - lr * (m[i] / (1 - 0.9 ** t)) / (
                np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
    return dict(zip(["w0", "b0", "w1", "b1"], params), mean=mean, scale=scale)


def error_report(predictor, x, y, meta):
    """Mean absolute error (dB) and Spearman ρ of predicted vs measured gains, per input kind /
    QF decade (QF 100 with the 90s)."""
    from rbqe_tf.evaluation import spearman
    pred = predictor.predict_features(x)
    groups = {}
    for i, (_, kind, qf) in enumerate(meta):
        name = ["jpeg", "resaved", "uncompressed"][kind % 3] + (" graphics" if kind >= 3 else "")
        key = name if name.startswith("uncompressed") else f"{name} QF {min(qf, 99) // 10 * 10}s"
        groups.setdefault(key, []).append(i)
    return {key: {"n": len(ix), "mae_db": float(np.abs(pred[ix] - y[ix]).mean()),
                  "spearman": spearman(pred[ix].ravel(), y[ix].ravel())}
            for key, ix in sorted(groups.items())}


def cached_labels(path, make, model, relabel=False, refeature=False):
    """(features, labels, meta) cached in ``path``: made by ``make(model)`` when the file
    is missing or ``relabel``; with ``refeature``, the cached labels keep and
    ``make(None)`` redraws the same inputs for new features (no network run)."""
    if not os.path.exists(path) or relabel:
        x, y, meta = make(model)
    else:
        with np.load(path) as d:
            x, y, meta = d["x"], d["y"], d["meta"]
        print(f"labels from {path} ({len(x)} inputs)")
        if not refeature:
            return x, y, meta
        x, _, again = make(None)
        if not np.array_equal(again, meta):
            raise ValueError(f"{path}: made with other --crops/--graphics/--variants/--seed")
    np.savez(path, x=x, y=y, meta=meta)
    return x, y, meta


def main(argv):
    from absl import flags
    f = flags.FLAGS
    if not f.weights or not f.data or not f.run_dir:
        return fail("--weights, --data and --run_dir are required")
    if f.crops < 10 or not 1 <= f.variants <= 20:
        return fail("--crops must be >= 10 and --variants in 1..20")
    import_tensorflow_quietly()
    from rbqe_tf.gain import predictor_path
    from rbqe_tf.model import WeightsError, load_model
    os.makedirs(f.run_dir, exist_ok=True)
    cache = os.path.join(f.run_dir, "labels.npz")
    started = time.time()
    try:
        model = load_model(f.weights)
        x, y, meta = cached_labels(cache, lambda m: make_labels(
            m, f.data, f.crops, f.variants, f.seed), model, f.relabel, f.refeature)
        if f.graphics:
            gx, gy, gmeta = cached_labels(
                os.path.join(f.run_dir, "labels_graphics.npz"), lambda m: make_labels(
                    m, None, f.graphics, f.variants, f.seed + 1, synthetic=True),
                model, f.relabel, f.refeature)
            light = (gmeta[:, 1] == 2) | (gmeta[:, 2] >= GRAPHICS_MIN_QF)
            gmeta = gmeta[light] + [len(meta), 3, 0]  # kinds 3..5: graphics
            x, y = np.concatenate([x, gx[light]]), np.concatenate([y, gy[light]])
            meta = np.concatenate([meta, gmeta])
    except (WeightsError, ValueError, OSError) as e:
        return fail(str(e).splitlines()[0])
    held = meta[:, 0] % 10 == 0
    check = fit_predictor(x[~held], y[~held], f.seed)
    report = {"weights": f.weights, "inputs": len(x), "exits": int(y.shape[1]),
              "held_out": error_report(check, x[held], y[held], meta[held])}
    predictor = fit_predictor(x, y, f.seed)
    out = f.out or str(predictor_path(f.weights))
    predictor.save(out)
    report["seconds"] = round(time.time() - started, 1)
    with open(os.path.join(f.run_dir, "report.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    for key, r in report["held_out"].items():
        rho = "-" if r["spearman"] is None else f"{r['spearman']:.3f}"
        print(f"held out {key:22s} n={r['n']:4d}  MAE {r['mae_db']:.3f} dB  ρ {rho}")
    print(f"wrote {out}")
    return 0


def _define_flags():
    from absl import flags
    flags.DEFINE_string("weights", None, "The network (.keras) whose exits are predicted.")
    flags.DEFINE_list("data", None, "Folders of lossless training images.")
    flags.DEFINE_string("run_dir", None, "Folder for labels.npz and report.json.")
    flags.DEFINE_string("out", None, "Predictor file (default: <weights>.gain.npz).")
    flags.DEFINE_integer("crops", 1200, "Ground-truth crops to label.")
    flags.DEFINE_integer("variants", 5, "Inputs made from each crop.")
    flags.DEFINE_integer("graphics", 0, "Synthetic screen-content crops (text, lines, boxes).")
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_bool("relabel", False, "Re-run the network even if labels.npz exists.")
    flags.DEFINE_bool("refeature", False, "Recompute the features of the cached labels' inputs "
                      "(after a change to rbqe_tf.gain.features; no network run).")


if __name__ == "__main__":
    from absl import app
    from rbqe_tf.cli import parse_flags
    _define_flags()
    sys.exit(app.run(main, flags_parser=parse_flags))

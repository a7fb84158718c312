"""Checks that fail an export, and the accuracy figures it reports.

- Parity: every exit and stage file against Keras on a real compressed crop and on
  uniform noise (fp32/fp16: max abs error ≤ ``FLOAT_TOLERANCE`` × max(1, max |Keras
  value|), i.e. absolute for exits in [0, 1] and relative for larger feature maps,
  whose float32 round-off grows with their magnitude and the tile size; int8: the
  exit's PSNR against Keras ≥ ``MIN_INT8_PSNR``).
- Chain: the stage files run in order (as the runner runs them, int8 features passed
  on as int8) give the same exits as the monolithic exit files (same thresholds).
- Score: each score model + :mod:`rbqe_tf.score_pooling` gives ``iqa.quality_score``'s Q
  (|ΔQ| ≤ ``SCORE_TOLERANCE``).
- Reported, not enforced: per exit, the mean PSNR of the staged TFLite exits against
  the float exits and the mean ΔPSNR (float − TFLite, both against the ground truth)
  on the validation pairs; the same for the monolithic exit files, which the runner
  runs when the exit is known before the network (the gain decision, a forced exit).
"""
import numpy as np

from rbqe_tf import iqa
from rbqe_tf.conversion.representative import stage_inputs
from rbqe_tf.litert.interpreter import Value
from rbqe_tf.litert.stages import iterate_stages
from rbqe_tf.score_pooling import patch_sums, score_from_sums

FLOAT_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
MIN_INT8_PSNR = 30.0
SCORE_TOLERANCE = 1e-4


def psnr(a, b):
    """PSNR (dB, at most 100) of ``a`` against ``b``, both clipped to [0, 1]."""
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2, dtype=np.float64))
    return min(100.0, 10 * np.log10(1 / max(mse, 1e-30)))


def _run(model, graph, inputs):
    outs = model.run({n: Value(x) for n, x in zip(graph.input_names, inputs)})
    return [outs[n].float() for n in graph.output_names]


class Checker:
    """Compares values under the mode's rule; collects failures."""

    def __init__(self, mode):
        self.mode, self.failures = mode, []

    def compare(self, what, actual, expected):
        """Max abs error (float modes) or PSNR (int8); records a failure past the limit."""
        if self.mode in FLOAT_TOLERANCE:
            value = float(np.abs(actual - expected).max())
            limit = FLOAT_TOLERANCE[self.mode] * max(1.0, float(np.abs(expected).max()))
            if not value <= limit:
                self.failures.append(f"{what}: max abs error {value:.2e} > {limit:.2e}")
        else:
            value = psnr(actual, expected)
            if not value >= MIN_INT8_PSNR:
                self.failures.append(f"{what}: PSNR {value:.1f} dB < {MIN_INT8_PSNR} dB")
        return value


def parity(graphs, models, stages, checker, probes):
    """{file: worst figure over ``probes``} for exits, stages and stage chains."""
    worst = {}

    def keep(name, value):
        better = max if checker.mode in FLOAT_TOLERANCE else min
        worst[name] = better(worst.get(name, value), value)

    for p, y in enumerate(probes):
        monolithic = []
        for k in range(1, len(stages) + 1):
            g = graphs[f"exit_{k}"]
            monolithic.append(_run(models[g.name], g, [y])[0])
            keep(g.name, checker.compare(f"{g.name} vs float (probe {p})",
                                         monolithic[-1], g.reference([y])[0]))
            g = graphs[f"stage_{k}"]
            inputs = next(stage_inputs(graphs, k, y))
            outputs = _run(models[g.name], g, inputs)
            expected = g.reference(inputs)
            names = g.output_names if checker.mode in FLOAT_TOLERANCE else g.output_names[:1]
            for name, a, e in zip(names, outputs, expected):
                keep(g.name, checker.compare(f"{g.name} {name} vs float (probe {p})", a, e))
        for k, out in enumerate(iterate_stages(stages, y), 1):
            keep(f"chain_{k}", checker.compare(f"stages 1..{k} vs exit_{k}.tflite (probe {p})",
                                               out.float(), monolithic[k - 1]))
    return worst


def score_parity(models, codecs, ys, failures):
    """{codec: max |ΔQ|} of the score models against ``iqa.quality_score`` on ``ys``."""
    result = {}
    for codec in codecs:
        model = models[f"score_{codec}"]
        lite = [score_from_sums(patch_sums(model.run({"exit": Value(y[None])})["patches"].float()))
                for y in ys]
        error = float(np.abs(np.array(lite) - iqa.quality_score(ys, codec).numpy()).max())
        if not error <= SCORE_TOLERANCE:
            failures.append(f"score_{codec}: |ΔQ| {error:.2e} > {SCORE_TOLERANCE:.0e}")
        result[codec] = error
    return result


# Float reference batches hold about this many pixels: every stage's features of a batch
# stay in memory at once (52 MB per 256² tile in fp32), so 4 tiles at 256² but 1 at 512²
# (the reference runs one tile at a time whatever the batch: the figures do not change).
REFERENCE_BATCH_PIXELS = 4 * 256 * 256


def accuracy(graphs, stages, gt, comp, exit_model=None):
    """Per exit: mean PSNR of staged TFLite vs float exits, mean ΔPSNR lost to TFLite;
    with ``exit_model`` (k → the exit_k model, asked for once per exit, so the caller can
    hold one exit file at a time) the same for them (``…_monolithic``)."""
    num_exits = len(stages)
    batch = max(1, REFERENCE_BATCH_PIXELS // (comp.shape[1] * comp.shape[2]))
    floats = [[] for _ in range(num_exits)]
    for start in range(0, len(comp), batch):
        values = {"y": comp[start:start + batch]}
        for k in range(1, num_exits + 1):
            g = graphs[f"stage_{k}"]
            outs = g.reference([values[n] for n in g.input_names])
            values.update(zip(g.output_names[1:], outs[1:]))
            floats[k - 1].append(outs[0])
    floats = [np.concatenate(f) for f in floats]
    vs_float, lost = np.zeros((2, 2, num_exits, len(comp)))

    def record(kind, k, n, lite):
        ref = floats[k - 1][n]
        vs_float[kind, k - 1, n] = psnr(lite, ref)
        lost[kind, k - 1, n] = psnr(ref, gt[n]) - psnr(lite, gt[n])

    for n, y in enumerate(comp):
        for k, out in enumerate(iterate_stages(stages, y[None]), 1):
            record(0, k, n, out.float()[0])
    for k in range(1, num_exits + 1) if exit_model else ():
        model = exit_model(k)
        for n, y in enumerate(comp):
            record(1, k, n, model.run({"y": Value(y[None])})["exit"].float()[0])
    report = {"psnr_vs_float": [float(np.mean(v)) for v in vs_float[0]],
              "delta_psnr_lost": [float(np.mean(v)) for v in lost[0]], "pairs": len(comp)}
    if exit_model:
        report.update(psnr_vs_float_monolithic=[float(np.mean(v)) for v in vs_float[1]],
                      delta_psnr_lost_monolithic=[float(np.mean(v)) for v in lost[1]])
    return report

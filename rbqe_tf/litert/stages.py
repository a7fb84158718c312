"""Running exported stage models in order without recomputation (NumPy + LiteRT)."""
import numpy as np

from rbqe_tf.litert.interpreter import Value


class _Features:
    """One tile's values between stages, by logical name.

    A stage's outputs stay views of its interpreter's buffers (no copy out) until the
    stage file is about to run for another tile, which calls :meth:`release` to copy
    them out first; so a lone tile passes every feature on with one copy (into the
    reading stage's input), and tiles kept between exits still keep their own values.
    """

    def __init__(self, y):
        self.values = {"y": Value(np.asarray(y, np.float32))}
        self.views = {}  # id(model) → names of its outputs held as views

    def run(self, stage):
        out = stage.run_views({name: self.values[name] for name in stage.inputs}, self)
        self.views[id(stage)] = list(out)
        self.values.update(out)

    def exit(self):
        """A copy of the latest exit (no view escapes to the caller)."""
        value = self.values["exit"]
        return Value(value.data.copy(), value.quant)

    def release(self, stage):
        for name in self.views.pop(id(stage), ()):
            value = self.values[name]
            self.values[name] = Value(value.data.copy(), value.quant)


def iterate_stages(stages, y):
    """Runs :class:`TFLiteModel` stages in order on a float32 Y tile [1, T, T, 1].

    Yields each stage's exit as a :class:`Value` (a copy, the caller's to keep); the
    features each stage passes on stay in this generator (int8 ones stay int8), so
    pausing it keeps a tile's state and closing it frees that state.
    """
    features = _Features(y)
    for stage in stages:
        features.run(stage)
        yield features.exit()

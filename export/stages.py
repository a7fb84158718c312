"""Running exported stage models in order without recomputation (NumPy + LiteRT)."""
import numpy as np

from export.litert_model import Value


def iterate_stages(stages, y):
    """Runs :class:`TFLiteModel` stages in order on a float32 Y tile [1, T, T, 1].

    Yields each stage's exit as a :class:`Value`; the features each stage passes on
    stay in this generator (int8 ones stay int8), so pausing it keeps a tile's state
    and closing it frees that state.
    """
    values = {"y": Value(np.asarray(y, np.float32))}
    for stage in stages:
        out = stage.run({name: values[name] for name in stage.inputs})
        values.update(out)
        yield out["exit"]

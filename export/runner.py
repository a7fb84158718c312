"""Staged early-exit enhancement with exported TFLite models (ai-edge-litert + NumPy only).

The image's Y plane is mirror-padded and cut into overlapping tiles of the exported
size; stages run tile by tile and exit by exit under the rule of
:func:`rbqe_tf.tiling.early_exit` (shared with the Keras ``Enhancer``):

- ``decision="image"`` (default): one exit per image, chosen on the pooled score of
  all tiles' owned patches (the stitched image's score except for patches that
  straddle a seam). When the image pads to exactly one tile this is the Keras
  ``Enhancer``'s computation. Tiles keep their features between exits while they
  fit in ``cache_mb`` (int8 exports keep them int8: 13 MB per 256² tile, fp32
  52 MB); the rest are re-run from stage 1, so memory stays bounded at any size
  and only time grows.
- ``decision="tile"``: each tile exits on its own score; memory is one tile's
  features and nothing is re-run; seams may join different exits.
- ``decision="gain"`` (the default where the export carries a gain predictor): the
  float gain predictor (:mod:`rbqe_tf.gain`, NumPy) picks the exit — 0 leaves the image
  as it is — before any stage runs, so int8 and float exports take the same exit.

Colour images are enhanced on BT.601 Y with chroma and alpha kept
(:func:`rbqe_tf.color.enhance_through_y`, NumPy only); 8/16-bit and float samples
come back in their own type, as with ``rbqe_tf.enhancer``.
"""
import dataclasses
import time

import numpy as np
from ai_edge_litert.interpreter import load_delegate

from export.litert_model import Value, open_model
from export.manifest import ManifestError, checked_entry, read_manifest
from export.stages import iterate_stages
from rbqe_tf import color, tiling
from rbqe_tf.gain import decide, read_predictor

DECISIONS = ("gain", "image", "tile")


@dataclasses.dataclass
class RunResult:
    """An enhanced image; per decision group: the exit taken and the scores checked."""

    image: np.ndarray
    exits: list
    scores: list
    ms: float
    gains: list = dataclasses.field(default_factory=list)  # predicted ΔPSNR per exit

    @property
    def exit(self):
        """The image's exit (the deepest one taken by any group)."""
        return max(self.exits)


def _load_delegates(path):
    return () if path is None else (load_delegate(path),)


class Runner:
    """Loads an export folder (checking every file's sha256) and enhances images."""

    def __init__(self, folder, codec=None, threshold=None, num_threads=2, xnnpack=True,
                 delegate=None, overlap=None, decision=None, cache_mb=1024):
        manifest = read_manifest(folder)
        self.codec = codec or manifest["codecs"][0]
        if self.codec not in manifest["codecs"]:
            raise ManifestError(f"{folder}: exported for {', '.join(manifest['codecs'])}, "
                                f"not {self.codec}")
        self.gain = manifest.get("gain", {}).get(self.codec)
        decision = decision or ("gain" if self.gain else "image")
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        if decision == "gain" and not self.gain:
            raise ManifestError(f"{folder}: no gain predictor for {self.codec} in this export")
        self.decision = decision
        self.tile, self.num_exits = manifest["tile"], manifest["num_exits"]
        self.predictor = self.gain and read_predictor(checked_entry(folder, self.gain))
        if self.predictor and self.predictor.num_exits != self.num_exits:
            raise ManifestError(f"{folder}: gain predictor {self.gain['path']} predicts "
                                f"{self.predictor.num_exits} exits, the export has "
                                f"{self.num_exits}")
        self.threshold = manifest["thresholds"][self.codec] if threshold is None else threshold
        self.block = manifest["block_size"][self.codec]
        self.overlap = max(8, self.tile // 64 * 8) if overlap is None else overlap
        if self.overlap % 8 or not 8 <= self.overlap < self.tile // 2:
            raise ValueError(f"overlap must be a multiple of 8 in 8..{self.tile // 2 - 8}, "
                             f"got {self.overlap}")
        if not cache_mb >= 0:
            raise ValueError(f"cache_mb must be >= 0, got {cache_mb}")
        self.keep = int(cache_mb * 2 ** 20 // _feature_bytes(manifest))
        self.stages = [open_model(folder, manifest, f"stage_{k}", num_threads, xnnpack,
                                  _load_delegates(delegate))
                       for k in range(1, self.num_exits + 1)]
        self.score = open_model(folder, manifest, f"score_{self.codec}", num_threads, xnnpack)

    def _maps(self, exit_tile):
        return self.score.run({"exit": Value(exit_tile[None, :, :, None])})["patches"].float()[0]

    def _stages(self, exit):
        def run(tile):
            for value in iterate_stages(self.stages[:exit], tile[None, :, :, None]):
                yield value.float()[0, :, :, 0]
        return run

    def enhance_y(self, y, exit=None):
        """Y plane [H, W] float in [0, 1] → (Y out clipped, exits per group, scores per group)."""
        rows, cols = (tiling.layout(y.shape[0], self.tile, self.overlap),
                      tiling.layout(y.shape[1], self.tile, self.overlap))
        out, exits, scores = tiling.early_exit(
            y, rows, cols, self._stages(exit), self._maps, self.block, self.threshold,
            self.num_exits, exit, per_tile=self.decision == "tile", keep=self.keep)
        return np.clip(out, 0.0, 1.0, out=out), exits, scores

    def __call__(self, image, exit=None):
        """Enhances an image array (gray, RGB or RGBA; uint8, uint16 or float in [0, 1]);
        ``exit`` 0 leaves it as it is."""
        if exit is not None and not 0 <= exit <= self.num_exits:
            raise ValueError(f"exit must be in 0..{self.num_exits}, got {exit}")
        start = time.perf_counter()
        gains = []
        if exit is None and self.decision == "gain":
            exit, gains = decide(self.predictor, self.gain, image)
        if exit == 0:
            out, exits, scores = color.unchanged(image), [0], [[]]
        else:
            out, exits, scores = color.enhance_through_y(image, lambda y: self.enhance_y(y, exit))
        return RunResult(out, exits, scores, (time.perf_counter() - start) * 1e3, gains)


def _feature_bytes(manifest):
    """Bytes of the features one tile keeps between stages (every stage output but the exits)."""
    return sum(int(np.prod(o["shape"])) * np.dtype(o["dtype"]).itemsize
               for name, entry in manifest["files"].items() if name.startswith("stage_")
               for o in entry["outputs"] if o["name"] != "exit")

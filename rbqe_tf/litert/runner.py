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

An exit known before the network runs (the gain decision's, or a forced one) is run as
the monolithic ``exit_k`` file: no score is needed between exits, so staging would only
add the hand-over of features. Interpreters are opened when first needed (a gain-routed
batch never opens the stage or score files), from bytes whose sha256 was checked when
the runner was made. Each open exit file holds XNNPACK's workspace and indirection
buffers (hundreds of MB at a 512² tile), so with ``models_mb`` the exit files a batch
takes are kept open only while their measured footprint fits it: the least recently
used is closed (and reopened when needed again), so images taking every exit never hold
every file.

Colour images are enhanced on BT.601 Y with chroma and alpha kept
(:func:`rbqe_tf.color.enhance_through_y`, NumPy only); 8/16-bit and float samples
come back in their own type, as with ``rbqe_tf.enhancer``.
"""
import dataclasses
import os
import time

import numpy as np
from ai_edge_litert.interpreter import load_delegate

from rbqe_tf import color, tiling
from rbqe_tf.gain import decide, read_predictor
from rbqe_tf.litert.interpreter import Value, open_model, return_freed_memory
from rbqe_tf.litert.manifest import ManifestError, checked_bytes, checked_entry, read_manifest
from rbqe_tf.litert.stages import iterate_stages

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


def resident_bytes():
    """This process's resident memory (Linux ``/proc``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class Runner:
    """Loads an export folder (checking every file's sha256) and enhances images."""

    def __init__(self, folder, codec=None, threshold=None, num_threads=2, xnnpack=True,
                 delegate=None, overlap=None, decision=None, cache_mb=1024, models_mb=None):
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
        if models_mb is not None and not models_mb >= 0:
            raise ValueError(f"models_mb must be >= 0, got {models_mb}")
        self.models_mb = models_mb  # None: every exit file opened stays open
        self.footprints = {}  # file name → resident bytes its opening added (when measured)
        self.folder, self.manifest = folder, manifest
        self.settings = (num_threads, xnnpack, delegate)
        _load_delegates(delegate)  # a bad library fails here, not at the first image
        stage_names = [f"stage_{k}" for k in range(1, self.num_exits + 1)]
        exit_names = [f"exit_{k}" for k in range(1, self.num_exits + 1)]
        # Known exits run exit_k.tflite (False: staged, as exports trimmed to their
        # stages must; the benchmarks set it to compare the two).
        self.monolithic = all(name in manifest["files"] for name in exit_names)
        names = (stage_names + [f"score_{self.codec}"]
                 + (exit_names if self.monolithic else []))
        self._content = {name: checked_bytes(folder, manifest, name) for name in names}
        self._models = {}
        # LiteRT prints its delegate line once per process, when the first interpreter
        # is made: make one now, where a command line mutes native stderr, not mid-batch.
        # Not kept: the gain decision never needs the score model (12 MB at 512²).
        score = f"score_{self.codec}"
        open_model(folder, manifest, score, num_threads, xnnpack, (), self._content[score])

    def model(self, name):
        """The :class:`rbqe_tf.litert.interpreter.TFLiteModel` of ``name`` (any file of the
        export), opened on first use with the runner's threads and delegate (the
        delegate goes to exit and stage files; score files stay on the CPU)."""
        if name in self._models:
            self._models[name] = self._models.pop(name)  # most recently used last
            return self._models[name]
        if name.startswith("exit_") and self.models_mb is not None:
            self._make_room(name)
        threads, xnnpack, delegate = self.settings
        before = resident_bytes()
        self._models[name] = open_model(
            self.folder, self.manifest, name, threads, xnnpack,
            () if name.startswith("score_") else _load_delegates(delegate),
            self._content.get(name))
        after = resident_bytes()
        if before is not None and after is not None:  # at least 1: reused memory reads 0
            self.footprints[name] = max(after - before, 1)
        return self._models[name]

    def _estimate(self, name):
        """Bytes ``name`` (an exit file) will take: as measured when it was last open, else
        scaled by MACs from the exit file measured last (XNNPACK's buffers grow with the
        work), else None."""
        if name in self.footprints:
            return self.footprints[name]
        known = [n for n in self.footprints if n.startswith("exit_")]
        if not known:
            return None
        macs = self.manifest["macs"]["per_exit"]
        k, j = int(name.split("_")[1]), int(known[-1].split("_")[1])
        return self.footprints[known[-1]] * macs[k - 1] / max(macs[j - 1], 1)

    def _make_room(self, name):
        """Closes the least recently used open exit files until ``name`` fits in
        ``models_mb`` with them (all of them when a size cannot be known)."""
        budget, need = self.models_mb * 2 ** 20, self._estimate(name)
        open_exits = [n for n in self._models if n.startswith("exit_")]
        while open_exits and (need is None or any(n not in self.footprints for n in open_exits)
                              or sum(self.footprints[n] for n in open_exits) + need > budget):
            del self._models[open_exits.pop(0)]
            return_freed_memory()

    @property
    def stages(self):
        """Every stage model, in order (opened now if not yet)."""
        return [self.model(f"stage_{k}") for k in range(1, self.num_exits + 1)]

    @property
    def score(self):
        """The score model of the runner's codec."""
        return self.model(f"score_{self.codec}")

    def _maps(self, exit_tile):
        return self.score.run({"exit": Value(exit_tile[None, :, :, None])})["patches"].float()[0]

    def _stages(self, exit):
        if exit is not None and self.monolithic:
            model = self.model(f"exit_{exit}")

            def run(tile):
                # tiling.early_exit reads a forced exit as the exit-th value it draws
                yield from [None] * (exit - 1)
                yield model.run({"y": Value(tile[None, :, :, None])})["exit"].float()[0, :, :, 0]
            return run
        stages = [self.model(f"stage_{k}") for k in range(1, (exit or self.num_exits) + 1)]

        def run(tile):
            for value in iterate_stages(stages, tile[None, :, :, None]):
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
            out, exits, scores = color.enhance_through_y(
                image, lambda y: self.enhance_y(y, exit))
        return RunResult(out, exits, scores, (time.perf_counter() - start) * 1e3, gains)


def _feature_bytes(manifest):
    """Bytes of the features one tile keeps between stages (every stage output but the exits)."""
    return sum(int(np.prod(o["shape"])) * np.dtype(o["dtype"]).itemsize
               for name, entry in manifest["files"].items() if name.startswith("stage_")
               for o in entry["outputs"] if o["name"] != "exit")

"""Staged early-exit enhancement with exported TFLite models (ai-edge-litert + NumPy only).

The image's Y plane is mirror-padded and cut into overlapping tiles of the exported
size (:mod:`export.tiling`). Stages run in order on every tile of a *decision group*;
after exits 1..K−1 the group's score pools the per-patch score maps of the patches
each tile owns (those inside the image), and the group stops at the first exit whose
score ≥ the threshold (else exit K). Each tile's owned region of that exit is
stitched in.

- ``decision="image"`` (default): one group per image, one exit per image. When the
  image pads to exactly one tile this is the Keras ``Enhancer``'s computation; with
  several tiles the pooled score is the score of the stitched image except for the
  few patches that straddle a seam. Every tile's features stay in memory until the
  image's decision (int8 exports keep them int8).
- ``decision="tile"``: one group per tile, each tile exits on its own score; memory
  is one tile's features, whatever the image size.

Colour images are enhanced on BT.601 Y with chroma and alpha kept; 8/16-bit and
float samples come back in their own type, as with ``rbqe_tf.enhancer``.
"""
import dataclasses
import time

import numpy as np
from ai_edge_litert.interpreter import load_delegate

from export import tiling, ycbcr
from export.litert_model import open_model
from export.manifest import ManifestError, read_manifest
from export.scoring import patch_sums, score_from_sums
from export.stages import iterate_stages

DECISIONS = ("image", "tile")


@dataclasses.dataclass
class RunResult:
    """An enhanced image; per decision group: the exit taken and the scores checked."""

    image: np.ndarray
    exits: list
    scores: list
    ms: float

    @property
    def exit(self):
        """The image's exit (the deepest one taken by any group)."""
        return max(self.exits)


def _load_delegates(path):
    return () if path is None else (load_delegate(path),)


class Runner:
    """Loads an export folder (checking every file's sha256) and enhances images."""

    def __init__(self, folder, codec=None, threshold=None, num_threads=2, xnnpack=True,
                 delegate=None, overlap=None, decision="image"):
        manifest = read_manifest(folder)
        self.codec = codec or manifest["codecs"][0]
        if self.codec not in manifest["codecs"]:
            raise ManifestError(f"{folder}: exported for {', '.join(manifest['codecs'])}, "
                                f"not {self.codec}")
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        self.decision = decision
        self.threshold = manifest["thresholds"][self.codec] if threshold is None else threshold
        self.tile, self.num_exits = manifest["tile"], manifest["num_exits"]
        self.block = manifest["block_size"][self.codec]
        self.overlap = max(8, self.tile // 64 * 8) if overlap is None else overlap
        if self.overlap % 8 or not 8 <= self.overlap < self.tile // 2:
            raise ValueError(f"overlap must be a multiple of 8 in 8..{self.tile // 2 - 8}, "
                             f"got {self.overlap}")
        self.stages = [open_model(folder, manifest, f"stage_{k}", num_threads, xnnpack,
                                  _load_delegates(delegate))
                       for k in range(1, self.num_exits + 1)]
        self.score = open_model(folder, manifest, f"score_{self.codec}", num_threads, xnnpack)

    def _sums(self, out, rows, cols, i, j):
        maps = self.score.run({"exit": out})["patches"].float()[0]
        (r0, r1), (c0, c1) = (tiling.owned_patches(rows, i, self.block),
                              tiling.owned_patches(cols, j, self.block))
        return patch_sums(maps[r0:r1, c0:c1])

    def enhance_y(self, y, exit=None):
        """Y plane [H, W] float in [0, 1] → (Y out clipped, exits per group, scores per group)."""
        h, w = y.shape
        rows, cols = (tiling.layout(h, self.tile, self.overlap),
                      tiling.layout(w, self.tile, self.overlap))
        padded = np.pad(y, ((0, rows.padded - h), (0, cols.padded - w)), "symmetric")
        padded = padded.astype(np.float32)
        tiles = [(i, j) for i in range(len(rows.origins)) for j in range(len(cols.origins))]
        groups = [tiles] if self.decision == "image" else [[t] for t in tiles]
        out = np.empty_like(padded)
        exits, all_scores = [], []
        for group in groups:
            runs = {(i, j): iterate_stages(self.stages[:exit], padded[
                None, rows.origins[i]:rows.origins[i] + self.tile,
                cols.origins[j]:cols.origins[j] + self.tile, None]) for i, j in group}
            scores = []
            for k in range(1, (exit or self.num_exits) + 1):
                outs = {t: next(run) for t, run in runs.items()}
                if exit is None and k < self.num_exits:
                    sums = sum(self._sums(outs[t], rows, cols, *t) for t in group)
                    scores.append(score_from_sums(sums))
                    if scores[-1] >= self.threshold:
                        break
            for (i, j), value in outs.items():
                (r0, r1), (c0, c1) = rows.owned[i], cols.owned[j]
                r, c = rows.origins[i], cols.origins[j]
                out[r0:r1, c0:c1] = value.float()[0, r0 - r:r1 - r, c0 - c:c1 - c, 0]
            exits.append(k)
            all_scores.append(scores)
        return np.clip(out[:h, :w], 0.0, 1.0), exits, all_scores

    def __call__(self, image, exit=None):
        """Enhances an image array (gray, RGB or RGBA; uint8, uint16 or float in [0, 1])."""
        if exit is not None and not 1 <= exit <= self.num_exits:
            raise ValueError(f"exit must be in 1..{self.num_exits}, got {exit}")
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise ValueError(f"unsupported image shape {image.shape} "
                             "(expected gray, RGB or RGBA)")
        scale = _sample_scale(image.dtype)
        planes = image.astype(np.float64) / scale
        start = time.perf_counter()
        if image.ndim == 2:
            out, exits, scores = self.enhance_y(planes, exit)
        else:
            yuv = ycbcr.rgb_to_ycbcr(planes[:, :, :3])
            yuv[:, :, 0], exits, scores = self.enhance_y(yuv[:, :, 0], exit)
            out = np.concatenate([ycbcr.ycbcr_to_rgb(yuv), planes[:, :, 3:]], axis=2)
        ms = (time.perf_counter() - start) * 1e3
        out = np.clip(out, 0.0, 1.0)
        if np.issubdtype(image.dtype, np.integer):
            out = np.round(out * scale).astype(image.dtype)
        else:
            out = out.astype(image.dtype)
        return RunResult(out, exits, scores, ms)


def _sample_scale(dtype):
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise ValueError(f"unsupported sample type {dtype} (need uint8, uint16 or float)")

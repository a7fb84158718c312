"""Compress-then-decode of one 8-bit Y plane: JPEG (OpenCV) and intra HEVC (x265 via ffmpeg).

Each ``compress_*`` returns ``(decoded uint8 [H, W], n_bytes)``, where n_bytes is
the size of the compressed bitstream. Safe to call from several threads.

HEVC is coded as true 4:0:0 (``-pix_fmt gray``; an RExt-profile stream that
ffmpeg decodes): it codes exactly the Y plane, without inventing chroma, and
accepts odd sizes (x265 pads to its minimum CU internally and signals a
conformance window; 4:2:0 would need even sizes). The
paper coded Y of 4:2:0 with HM; luma coding is the same process, and we only
use Y. x265 settings, chosen to be close to HM's all-intra coding:
``-preset slow`` (rd=4 full RDO), ``qp=Q:keyint=1:ipratio=1`` (every frame
intra at exactly QP Q; without ipratio=1 x265 codes I frames at QP−3),
``psy-rd=0:psy-rdoq=0`` (pure MSE rate-distortion like HM; AQ and cu-tree are
already off in constant-QP mode), ``wpp=0:pools=none:frame-threads=1`` (one
thread, no wavefront entropy sync, like HM's default; the output does not
depend on the machine's core count) and ``info=0`` (no x265 version SEI in the
bitstream, so n_bytes counts only the coded picture and parameter sets).
Every encode is checked against x265's own report ("frame I: 1, Avg QP:Q").
"""
import re
import shutil
import subprocess

import cv2
import numpy as np

from rbqe_tf.levels import UNCOMPRESSED, check_codec

HEVC_QP_RANGE = (0, 51)
JPEG_QUALITY_RANGE = (1, 100)
LEVEL_RANGE = {"jpeg": JPEG_QUALITY_RANGE, "hevc": HEVC_QP_RANGE}
X265_PRESET = "slow"
X265_PARAMS = ("keyint=1:ipratio=1:psy-rd=0:psy-rdoq=0:wpp=0:pools=none:frame-threads=1"
               ":info=0:log-level=info")
INSTALL_HINT = "install it with: apt-get install ffmpeg"
_AVG_QP = re.compile(r"frame I:\s*(\d+), Avg QP:\s*([0-9.]+)")


class CodecError(Exception):
    """A one-line, user-facing codec failure."""



def parse_levels(codec, levels, uncompressed=False):
    """Levels as given (strings or ints) → sorted unique ints in the codec's range
    (ValueError otherwise); with ``uncompressed``, "none" is the uncompressed input
    (``UNCOMPRESSED``). The one reading of a ``--levels`` list."""
    lo, hi = LEVEL_RANGE[check_codec(codec)]
    parsed = set()
    for level in levels:
        if uncompressed and (str(level).strip().lower() == "none" or level == UNCOMPRESSED):
            parsed.add(UNCOMPRESSED)
            continue
        try:
            value = int(str(level).strip())
        except ValueError:
            raise ValueError(f"{codec} level {level!r} is not an integer") from None
        if not lo <= value <= hi:
            raise ValueError(f"{codec} level {value} is outside {lo}..{hi}")
        parsed.add(value)
    return sorted(parsed)

def _check_y(y):
    y = np.asarray(y)
    if y.dtype != np.uint8 or y.ndim != 2 or y.size == 0:
        raise ValueError(f"need a non-empty uint8 [H, W] Y plane, got {y.dtype} {y.shape}")
    return np.ascontiguousarray(y)


def _check_level(name, value, bounds):
    if not (isinstance(value, (int, np.integer)) and bounds[0] <= value <= bounds[1]):
        raise ValueError(f"{name} must be an integer in {bounds[0]}..{bounds[1]}, got {value!r}")
    return int(value)


def compress_jpeg(y, quality):
    """Grayscale baseline JPEG at ``quality`` with OpenCV's libjpeg → (decoded, n_bytes)."""
    y = _check_y(y)
    quality = _check_level("JPEG quality", quality, JPEG_QUALITY_RANGE)
    ok, data = cv2.imencode(".jpg", y, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CodecError(f"OpenCV could not JPEG-encode a {y.shape} image")
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.shape != y.shape or decoded.dtype != np.uint8:
        raise CodecError("OpenCV could not decode its own JPEG")
    return decoded, int(data.size)


def ffmpeg_problem():
    """None if ffmpeg with libx265 is usable, else a one-line explanation with the fix."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return f"HEVC needs ffmpeg with libx265, but ffmpeg is not on PATH; {INSTALL_HINT}"
    try:
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot run {exe} ({e}); {INSTALL_HINT}"
    if not re.search(r"^\s*V\S*\s+libx265\b", out, re.MULTILINE):
        return f"{exe} has no libx265 encoder; {INSTALL_HINT}"
    return None


def _ffmpeg(args, data):
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise CodecError(f"ffmpeg is not on PATH; {INSTALL_HINT}")
    proc = subprocess.run([exe, "-hide_banner", "-nostdin", "-loglevel", "error", *args],
                          input=data, capture_output=True)
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        last = stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise CodecError(f"ffmpeg failed (exit {proc.returncode}): {last[0]}")
    return proc.stdout, stderr


def encode_hevc(y, qp):
    """Intra-codes ``y`` with x265 at ``qp`` → (Annex-B bitstream bytes, x265's Avg QP)."""
    y = _check_y(y)
    qp = _check_level("HEVC QP", qp, HEVC_QP_RANGE)
    h, w = y.shape
    stream, log = _ffmpeg(
        ["-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{w}x{h}", "-i", "-",
         "-frames:v", "1", "-c:v", "libx265", "-preset", X265_PRESET,
         "-x265-params", f"qp={qp}:{X265_PARAMS}", "-pix_fmt", "gray", "-f", "hevc", "-"],
        y.tobytes())
    match = _AVG_QP.search(log)
    if match is None or int(match.group(1)) != 1:
        raise CodecError("x265 did not report one intra frame (no 'frame I: 1, Avg QP' line)")
    return stream, float(match.group(2))


def decode_hevc(stream, height, width):
    """Decodes a one-picture 4:0:0 HEVC bitstream to uint8 [height, width]."""
    raw, _ = _ffmpeg(["-threads", "1", "-f", "hevc", "-i", "-",
                      "-f", "rawvideo", "-pix_fmt", "gray", "-"], stream)
    if len(raw) != height * width:
        raise CodecError(f"HEVC decoder returned {len(raw)} bytes, expected {height}×{width}")
    return np.frombuffer(raw, np.uint8).reshape(height, width).copy()


def compress_hevc(y, qp):
    """Intra HEVC at exactly ``qp`` (verified from x265's report) → (decoded, n_bytes)."""
    stream, avg_qp = encode_hevc(y, qp)
    if avg_qp != qp:
        raise CodecError(f"x265 coded at average QP {avg_qp:g}, not the requested {qp}")
    return decode_hevc(stream, *np.shape(y)), len(stream)


def compress(codec, y, level):
    """``compress_jpeg`` or ``compress_hevc`` by codec name ('jpeg' | 'hevc')."""
    if codec == "jpeg":
        return compress_jpeg(y, level)
    if codec == "hevc":
        return compress_hevc(y, level)
    raise ValueError(f"unknown codec {codec!r} (expected jpeg or hevc)")

"""Reading and safely writing images; every problem becomes a one-line ImageError.

Images are NumPy arrays in RGB order: [H, W] (gray), [H, W, 3] (RGB) or
[H, W, 4] (RGBA), dtype uint8 or uint16. NumPy, OpenCV and Pillow only (imported when
a file is read or written), so the TFLite runner uses this module too.

Reading checks the pixel count from the header before anything is decoded (the pixel
budget), turns the picture upright as its EXIF orientation says, and keeps the colour
profile, EXIF (orientation reset) and XMP, so an output written with them looks as
the input did in every viewer.
"""
import dataclasses
import io
import os
import stat
import struct

import numpy as np

from rbqe_tf.files import write_atomically

DEFAULT_MAX_MEGAPIXELS = 200
"""The pixel budget unless a CLI's ``--max_megapixels`` (or :func:`set_pixel_budget`)
says otherwise: a 200-megapixel RGB image already needs ~2.4 GB of float planes."""
MAX_MEGAPIXELS_HELP = ("Largest image to decode, in megapixels, checked from the file "
                       f"header before decoding (default {DEFAULT_MAX_MEGAPIXELS}).")
_budget = {"megapixels": DEFAULT_MAX_MEGAPIXELS}
_BYTES_PER_PIXEL = 8  # the largest sample a readable file can hold: 16-bit RGBA


def set_pixel_budget(megapixels):
    """Sets the largest image (in megapixels) that :func:`read_image` will decode."""
    if not megapixels > 0:
        raise ValueError(f"pixel budget must be positive, got {megapixels}")
    _budget["megapixels"] = float(megapixels)


def pixel_budget():
    """The current pixel budget in megapixels."""
    return _budget["megapixels"]


class ImageError(Exception):
    """A user-facing problem with one image file (message names the file)."""


def opencv():
    """The cv2 module, or ImportError with the install command."""
    try:
        import cv2
    except ImportError:
        raise ImportError("reading and writing image files needs OpenCV: "
                          "pip install opencv-python-headless") from None
    return cv2


def quiet_opencv():
    """Silences OpenCV's own warnings (e.g. on a truncated PNG): the command lines report
    unreadable files themselves, in one line each. ImportError as :func:`opencv`."""
    cv2 = opencv()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


@dataclasses.dataclass(frozen=True)
class Metadata:
    """What an output carries over from its input: ICC colour profile, EXIF (with the
    orientation reset to upright, as the pixels now are) and XMP, as raw bytes."""

    icc: bytes = None
    exif: bytes = None
    xmp: bytes = None


def read_image(path):
    """Decodes ``path`` to an upright RGB(A)/gray uint8 or uint16 array, or raises
    ImageError (also for an image over the pixel budget, checked before decoding)."""
    return read_image_with_metadata(path)[0]


def read_image_with_metadata(path):
    """As :func:`read_image` → (image, :class:`Metadata`)."""
    path = os.fspath(path)
    return decode_image(_read_bytes(path), path)


def decode_image(data, path):
    """The bytes of an image file (a uint8 array or bytes) → (image, :class:`Metadata`) as
    :func:`read_image_with_metadata` gives them; ``path`` names the file in errors. For
    files read by other means (``python -m rbqe_tf.pipeline`` reads through Beam's file
    systems), after :func:`check_file_size`."""
    cv2 = opencv()
    data = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    if is_heif(data):
        return _read_heif(path, data)
    width, height = _header_size(path, data)
    _check_pixel_count(path, width, height)
    try:
        image, kinds, chunks = cv2.imdecodeWithMetadata(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise ImageError(f"{path}: {UNREADABLE}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: unsupported sample type {image.dtype} (need 8- or 16-bit)")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        if image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
        else:
            raise ImageError(f"{path}: unsupported channel count {image.shape[2]}")
    chunks = {int(k): np.asarray(c, np.uint8).tobytes() for k, c in zip(kinds, chunks)}
    orientation, exif = upright_exif(chunks.get(cv2.IMAGE_METADATA_EXIF))
    return (np.ascontiguousarray(orient(image, orientation)),
            Metadata(chunks.get(cv2.IMAGE_METADATA_ICCP), exif,
                     chunks.get(cv2.IMAGE_METADATA_XMP)))


def _read_bytes(path):
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{path}: is a directory, not an image")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        raise ImageError(f"{path}: not a regular file")
    check_file_size(path, info.st_size)
    try:
        return np.fromfile(path, np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None


UNREADABLE = "not a readable image (corrupt, truncated or unknown format)"


def check_file_size(path, size):
    """Refuses an empty file, or one larger than an image within the pixel budget can be
    (8 bytes per pixel, plus 1 MiB of metadata), before it is read."""
    if size == 0:
        raise ImageError(f"{path}: empty file")
    limit = int(pixel_budget() * 1e6 * _BYTES_PER_PIXEL) + (1 << 20)
    if size > limit:
        raise ImageError(f"{path}: {size / 2 ** 20:.0f} MB is more than an image "
                         f"within the pixel budget of {pixel_budget():g} MP can take "
                         "(--max_megapixels to change)")


def _header_size(path, data):
    """(width, height) from the file's header, read by Pillow without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # Pillow's own bomb check would apply its budget, not ours
    try:
        with Image.open(io.BytesIO(data.tobytes())) as header:
            return header.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error):
        raise ImageError(f"{path}: {UNREADABLE}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _check_pixel_count(path, width, height):
    """Refuses an image whose header declares more pixels than the budget, before any
    decoder allocates them (a small file can declare gigapixels)."""
    if width * height > pixel_budget() * 1e6:
        raise ImageError(f"{path}: {width}x{height} is {width * height / 1e6:.0f} MP, over "
                         f"the pixel budget of {pixel_budget():g} MP (--max_megapixels to "
                         "change)")


HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
"""``ftyp`` brands of HEIF still images (the HEIC photos of phones), read with pillow-heif."""


def is_heif(data):
    """Whether the file bytes ``data`` are a HEIF/HEIC image (by its ``ftyp`` box)."""
    return bytes(data[4:8]) == b"ftyp" and bytes(data[8:12]) in HEIF_BRANDS


def _read_heif(path, data):
    """A HEIC/HEIF file → (image, Metadata) through pillow-heif (libde265): 8-bit as
    uint8, 10/12-bit as uint16 (full 16-bit scale). libheif applies the file's rotation
    and mirroring itself, so the EXIF orientation is only reset, never applied again."""
    try:
        import pillow_heif
    except ImportError:
        raise ImageError(f"{path}: reading HEIC/HEIF needs pillow-heif: "
                         "pip install pillow-heif") from None
    try:
        heif = pillow_heif.open_heif(io.BytesIO(data.tobytes()), convert_hdr_to_8bit=False)
        _check_pixel_count(path, *heif.size)
        image = np.asarray(heif)
    except (ValueError, RuntimeError, OSError, EOFError):
        raise ImageError(f"{path}: {UNREADABLE}") from None
    if image.dtype not in (np.uint8, np.uint16) or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(f"{path}: unsupported HEIF image ({heif.mode})")
    info = heif.info
    return (np.ascontiguousarray(image),
            Metadata(info.get("icc_profile") or None, upright_exif(info.get("exif"))[1],
                     info.get("xmp") or None))


_ORIENTATION_TAG = 0x0112


def upright_exif(exif):
    """Raw EXIF (TIFF-structured, as OpenCV gives it) → (orientation 1..8, the same EXIF
    with orientation set to 1). The tag is patched in place, so maker notes and other
    offsets stay valid. Unreadable EXIF → (1, None): dropped rather than carried wrong."""
    if not exif:
        return 1, None
    body = exif[6:] if exif.startswith(b"Exif\0\0") else exif
    try:
        order = {b"II": "<", b"MM": ">"}[body[:2]]
        (first,) = struct.unpack_from(order + "I", body, 4)
        (count,) = struct.unpack_from(order + "H", body, first)
        for n in range(count):
            at = first + 2 + 12 * n
            tag, kind, values = struct.unpack_from(order + "HHI", body, at)
            if tag == _ORIENTATION_TAG and kind == 3 and values == 1:
                (value,) = struct.unpack_from(order + "H", body, at + 8)
                patched = bytearray(body)
                struct.pack_into(order + "H", patched, at + 8, 1)
                return (value if 1 <= value <= 8 else 1), bytes(patched)
    except (KeyError, struct.error):
        return 1, None
    return 1, body


def orient(image, orientation):
    """``image`` as stored → as viewers show it, for EXIF orientation 1..8 (TIFF 6.0:
    where row 0 and column 0 of the stored image lie on the displayed one)."""
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transposed: 5 as is, 6/7/8 flipped below
    flips = {2: (False, True), 3: (True, True), 4: (True, False), 6: (False, True),
             7: (True, True), 8: (True, False)}.get(orientation, (False, False))
    if flips[0]:
        image = image[::-1]
    if flips[1]:
        image = image[:, ::-1]
    return image


LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")
DEFAULT_QUALITY = 95
"""JPEG/WebP quality when none is given (OpenCV's own default: JPEG 95, WebP lossless)."""


def encoding_problem(image, ext):
    """Why an image of this shape and type cannot be stored as ``ext`` without loss of
    samples or channels (None if it can): JPEG holds 8-bit gray or RGB, WebP and BMP
    8-bit samples, the PNM family no alpha (OpenCV would quietly drop or reduce them)."""
    ext = ext.lower()
    alpha = image.ndim == 3 and image.shape[2] == 4
    if image.dtype != np.uint8 and ext in (".jpg", ".jpeg", ".webp", ".bmp"):
        return f"{ext[1:]} holds 8-bit samples only, this image has {image.dtype.itemsize * 8}"
    if alpha and ext in (".jpg", ".jpeg", ".ppm", ".pgm", ".pnm"):
        return f"{ext[1:]} has no alpha channel"
    if ext in HEIF_EXTENSIONS and image.ndim != 3:
        return f"{ext[1:]} is written here for RGB(A) images only"
    return None


def write_image(path, image, overwrite=False, quality=None, metadata=None):
    """Writes ``image`` (RGB(A)/gray, uint8/uint16) atomically: temp file, then rename.

    The format follows the extension (PNG without one); ``quality`` (1..100, default
    :data:`DEFAULT_QUALITY`) applies to JPEG, WebP and HEIC; ``metadata`` (a
    :class:`Metadata`) is embedded where the format holds it (PNG, JPEG, WebP, HEIC;
    OpenCV's TIFF writer cannot). Refuses to replace an existing file unless
    ``overwrite``; a crash never leaves a half-written file at ``path``
    (:func:`rbqe_tf.files.write_atomically`).
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise ImageError(f"{path}: exists (use --overwrite to replace it)")
    ext = os.path.splitext(path)[1].lower() or ".png"
    problem = encoding_problem(image, ext)
    if problem:
        raise ImageError(f"{path}: cannot write: {problem}")
    quality = DEFAULT_QUALITY if quality is None else int(quality)
    encoded = (_encode_heif(path, image, quality, metadata) if ext in HEIF_EXTENSIONS
               else _encode(path, ext, image, quality, metadata))
    try:
        write_atomically(path, lambda tmp: encoded.tofile(tmp), overwrite)
    except FileExistsError:
        raise ImageError(f"{path}: exists (use --overwrite to replace it)") from None
    except OSError as e:
        raise ImageError(f"{path}: cannot write ({e.strerror or e})") from None


def _encode(path, ext, image, quality, metadata):
    cv2 = opencv()
    params = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    kinds, chunks = _metadata_chunks(metadata if ext in METADATA_EXTENSIONS else None)
    try:
        ok, encoded = cv2.imencodeWithMetadata(ext, image, kinds, chunks, params)
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError(f"{path}: cannot encode image as {ext}")
    return encoded


HEIF_EXTENSIONS = (".heic", ".heif")


def _encode_heif(path, image, quality, metadata):
    """HEIC bytes (x265 through pillow-heif) of an RGB(A) uint8/uint16 image; 16-bit
    samples are stored at 10 bits."""
    try:
        import pillow_heif
    except ImportError:
        raise ImageError(f"{path}: writing HEIC needs pillow-heif: pip install pillow-heif") \
            from None
    mode = ("RGB", "RGBA")[image.shape[2] - 3] + (";16" if image.dtype == np.uint16 else "")
    heif = pillow_heif.from_bytes(mode, (image.shape[1], image.shape[0]),
                                  np.ascontiguousarray(image).tobytes())
    extra = {} if metadata is None else {
        k: v for k, v in (("icc_profile", metadata.icc), ("exif", metadata.exif),
                          ("xmp", metadata.xmp)) if v}
    out = io.BytesIO()
    try:
        heif.save(out, quality=quality, **extra)
    except (ValueError, RuntimeError, OSError) as e:
        raise ImageError(f"{path}: cannot encode image as HEIC ({e})") from None
    return np.frombuffer(out.getvalue(), np.uint8)


METADATA_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".heic", ".heif")
"""Output formats that carry :class:`Metadata` (OpenCV writes none into TIFF)."""


def _metadata_chunks(metadata):
    cv2 = opencv()
    if metadata is None:
        return [], []
    pairs = [(cv2.IMAGE_METADATA_ICCP, metadata.icc), (cv2.IMAGE_METADATA_EXIF, metadata.exif),
             (cv2.IMAGE_METADATA_XMP, metadata.xmp)]
    pairs = [(k, np.frombuffer(v, np.uint8)) for k, v in pairs if v]
    return [k for k, _ in pairs], [v for _, v in pairs]

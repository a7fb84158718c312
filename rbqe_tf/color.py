"""BT.601 studio-range YCbCr, the colour convention of the image-restoration literature,
and enhancing an image array through its Y plane (NumPy only: the TFLite runner uses it).

For 8-bit R, G, B: ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` (and the
matching Cb, Cr). Float functions work on values in [0, 1] (Y in [16/255, 235/255]).
"""
import numpy as np

_RGB_TO_YCBCR = np.array(
    [[65.481, 128.553, 24.966],
     [-37.797, -74.203, 112.0],
     [112.0, -93.786, -18.214]]) / 255.0
_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
STRIP_PIXELS = 1 << 20  # colour put back this many pixels at a time (enhance_through_y)


def rgb_to_ycbcr(rgb):
    """[..., 3] RGB in [0, 1] → [..., 3] YCbCr in [0, 1] (float64)."""
    return np.asarray(rgb, np.float64) @ _RGB_TO_YCBCR.T + _OFFSET


def rgb_to_y_uint8(rgb):
    """8-bit RGB [..., 3] → rounded 8-bit studio-range Y [...] (the literature's Y)."""
    y = rgb_to_ycbcr(np.asarray(rgb, np.float64) / 255.0)[..., 0] * 255.0
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def sample_scale(dtype):
    """The sample value of white: 255 (uint8), 65535 (uint16), 1.0 (float); else ValueError."""
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise ValueError(f"unsupported sample type {dtype} (need uint8, uint16 or float)")


def enhance_through_y(image, enhance_y):
    """Applies ``enhance_y`` to an image's Y plane → (image out, whatever else it returned).

    ``image``: gray [H, W] (or [H, W, 1]), RGB or RGBA; uint8, uint16 or float
    (clipped to [0, 1]; NaN or ±inf is a ValueError). ``enhance_y(y)`` gets float32
    Y [H, W] in [0, 1] and returns ``(y_out, *extra)``. Colour keeps Cb, Cr and
    alpha: RGB out = RGB + ΔY · (column Y of the inverse transform), the same as
    converting to YCbCr, replacing Y and converting back, but in float32, one channel
    and one strip of STRIP_PIXELS at a time (whole-image float planes of ΔY and a
    channel were most of a large photo's memory; every step is per pixel). The output
    has the input's shape and dtype (integers rounded).
    """
    image, shape, scale, channel = _planes(image)
    y = _luma(image, channel)
    y_out, *extra = enhance_y(y)
    out = np.empty_like(image)
    if image.ndim == 2:
        _store(out, y_out, scale)
        return out.reshape(shape), *extra
    y_out = np.asarray(y_out, np.float32)
    step = max(1, STRIP_PIXELS // image.shape[1])
    for start in range(0, image.shape[0], step):
        rows = slice(start, start + step)
        delta = y_out[rows] - y[rows]
        for c in range(3):
            _store(out[rows, :, c],
                   channel(c, rows) + np.float32(_YCBCR_TO_RGB[c, 0]) * delta, scale)
    out[:, :, 3:] = image[:, :, 3:]
    return out, *extra


def luma(image):
    """The float32 Y [H, W] in [0, 1] that :func:`enhance_through_y` hands to ``enhance_y``."""
    image, _, _, channel = _planes(image)
    return _luma(image, channel)


def unchanged(image):
    """A copy of ``image`` after the checks :func:`enhance_through_y` makes (an image left
    as it is, exit 0, is refused exactly when an enhanced one would be)."""
    _planes(image)
    return np.array(image, copy=True)


def _planes(image):
    """Checked image → (image as 2-D or [H, W, 3|4], original shape, white value,
    ``channel(c, rows)``: float32 plane c in [0, 1], or the gray plane for ``c=None``,
    of ``rows`` (a slice; all by default))."""
    image = np.asarray(image)
    shape = image.shape
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"unsupported image shape {image.shape} (expected gray, RGB or RGBA)")
    if 0 in image.shape:
        raise ValueError(f"empty image (shape {image.shape})")
    scale = sample_scale(image.dtype)
    floats = np.issubdtype(image.dtype, np.floating)
    if floats and not np.isfinite(image).all():
        raise ValueError("image has NaN or infinite samples")

    def channel(c=None, rows=slice(None)):
        plane = image[rows] if c is None else image[rows, :, c]
        plane = plane.astype(np.float32) / np.float32(scale)
        return np.clip(plane, 0.0, 1.0, out=plane) if floats else plane

    return image, shape, scale, channel


def _luma(image, channel):
    if image.ndim == 2:
        return channel()
    y = np.full(image.shape[:2], _OFFSET[0], np.float32)
    for c in range(3):
        y += np.float32(_RGB_TO_YCBCR[0, c]) * channel(c)
    return y


def _store(target, plane, scale):
    plane = np.clip(plane, 0.0, 1.0)
    if np.issubdtype(target.dtype, np.integer):
        plane = np.round(plane * np.float32(scale))
    target[...] = plane

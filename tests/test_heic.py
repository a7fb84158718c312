"""HEIC/HEIF photos (the default format of current phones): read through pillow-heif at
8 and 10 bits, upright as libheif shows them (the EXIF orientation is reset, never
applied a second time), colour profile and EXIF carried to the outputs, and written back
as HEIC."""
import functools

import numpy as np
import pillow_heif
import pytest
from PIL import Image, ImageCms

from rbqe_tf.image_io import ImageError, is_heif, read_image, read_image_with_metadata, write_image


@functools.cache
def _icc():
    """One profile per run: LittleCMS stamps a new one with the current second, so a
    photo written in one second and compared in the next differed (a loaded machine)."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _gradient(h, w, dtype=np.uint8):
    y, x = np.mgrid[0:h, 0:w]
    top = 255 if dtype == np.uint8 else 65535
    return np.stack([x * top // w, y * top // h, (x + y) * top // (h + w)], -1).astype(dtype)


@pytest.fixture
def phone_photo(tmp_path):
    """A portrait phone photo: stored landscape, EXIF orientation 6 (turned by pillow-heif
    into the HEIF rotation box), an ICC profile and a maker tag."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "PhoneMaker"
    path = tmp_path / "IMG_0001.HEIC"
    pillow_heif.from_pillow(Image.fromarray(_gradient(48, 64))).save(
        path, quality=90, exif=exif.tobytes(), icc_profile=_icc())
    return path


def test_heic_reads_as_libheif_shows_it(phone_photo):
    image, metadata = read_image_with_metadata(phone_photo)
    reference = np.asarray(pillow_heif.open_heif(phone_photo))
    assert image.shape == (64, 48, 3) and np.array_equal(image, reference)
    assert metadata.icc == _icc()
    exif = Image.Exif()
    exif.load(metadata.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == "PhoneMaker"


def test_ten_bit_heic_reads_as_16_bit(tmp_path):
    stored = _gradient(32, 40, np.uint16) & 0xFFC0
    path = tmp_path / "hdr.heif"
    pillow_heif.from_bytes("RGB;16", (40, 32), stored.tobytes()).save(path, quality=100)
    image = read_image(path)
    assert image.dtype == np.uint16 and image.shape == (32, 40, 3)
    assert image.max() > 60000  # full 16-bit scale, not 10-bit codes or 8-bit values
    assert np.abs(image.astype(int) - stored).mean() < 10 * 64  # a few 10-bit levels (4:2:0)


@pytest.mark.parametrize("ext", [".png", ".heic"])
def test_heic_metadata_reaches_the_output(phone_photo, tmp_path, ext):
    image, metadata = read_image_with_metadata(phone_photo)
    out = tmp_path / f"out{ext}"
    write_image(out, image, metadata=metadata)
    back, kept = read_image_with_metadata(out)
    assert back.shape == image.shape and kept.icc == _icc()
    exif = Image.Exif()
    exif.load(kept.exif)
    assert exif[0x0112] == 1 and exif[0x010F] == "PhoneMaker"
    if ext == ".png":
        assert np.array_equal(back, image)


def test_heif_is_recognised_by_its_box_not_its_name(phone_photo, tmp_path):
    assert is_heif(np.frombuffer(phone_photo.read_bytes(), np.uint8))
    renamed = tmp_path / "photo.jpg"
    renamed.write_bytes(phone_photo.read_bytes())
    assert read_image(renamed).shape == (64, 48, 3)


def test_truncated_heic_is_a_one_line_error(phone_photo, tmp_path):
    path = tmp_path / "cut.heic"
    path.write_bytes(phone_photo.read_bytes()[:300])
    with pytest.raises(ImageError) as e:
        read_image(path)
    assert str(e.value) == f"{path}: not a readable image (corrupt, truncated or unknown format)"

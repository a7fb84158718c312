"""Hostile and odd input files: non-finite network outputs, pixel bombs, phone-photo
orientation and colour profiles, FIFOs, killed runs' temporary files, control characters
in names, progress through a pipe, and the user's umask on outputs."""
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from rbqe_tf import tiling
from rbqe_tf import batch, image_io
from rbqe_tf.files import TEMP_PREFIX, remove_orphan_temps, write_atomically
from rbqe_tf.image_io import ImageError, read_image, read_image_with_metadata, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Identity:
    """A stand-in enhancer: returns the image as it came (what the batch writes is then
    exactly what the reader produced)."""

    def __call__(self, image):
        return type("Result", (), {"image": image, "exit": 1, "ms": 0.0})()


def _describe(result):
    return f"exit {result.exit}"


def _png_declaring(width, height):
    """A small, valid-looking PNG whose header declares ``width`` × ``height`` gray pixels."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                             0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _jpeg_declaring(width, height):
    import cv2
    ok, data = cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))
    data = bytearray(data.tobytes())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


# -- 1. non-finite outputs --------------------------------------------------------------

def test_non_finite_exit_is_refused_naming_the_exit():
    def stages(tile):
        yield np.full(tile.shape, np.nan, np.float32)
        yield np.zeros(tile.shape, np.float32)
    rows = cols = tiling.layout(16, 16, 0)
    maps = lambda t: np.zeros((1, 1, 3))  # noqa: E731
    with pytest.raises(tiling.NonFiniteOutput, match="exit 1 produced NaN"):
        tiling.early_exit(np.zeros((16, 16), np.float32), rows, cols, stages, maps, 8, 0.5, 2,
                          exit=1)
    out, exits, _ = tiling.early_exit(np.zeros((16, 16), np.float32), rows, cols, stages, maps,
                                      8, 0.5, 2, exit=2)
    assert exits == [2] and np.isfinite(out).all()


def test_a_model_that_outputs_nan_fails_the_file_and_writes_nothing(tmp_path, capsys):
    from rbqe_tf.enhancer import Enhancer
    from rbqe_tf.model import build_model
    model = build_model("tiny")
    for k in range(1, 6):  # every exit's last layer (a NaN inside may meet a ReLU)
        layer = model.get_layer(f"exit_{k}_pw")
        layer.set_weights([np.full_like(w, np.nan) for w in layer.get_weights()])
    write_image(tmp_path / "a.png", np.full((32, 32), 128, np.uint8))
    failures = batch.enhance_files([str(tmp_path / "a.png")], str(tmp_path / "out"),
                                   Enhancer(model, "jpeg", tile=32, overlap=0), _describe)
    err = capsys.readouterr().err.strip().splitlines()
    assert failures == 1 and not (tmp_path / "out" / "a.png").exists()
    assert len(err) == 1 and "produced NaN or infinite values" in err[0] and "exit " in err[0]


# -- 2. pixel budget ---------------------------------------------------------------------

@pytest.mark.parametrize("make, size", [(_png_declaring, "16384x16384 is 268 MP"),
                                        (_jpeg_declaring, "20000x20000 is 400 MP")])
def test_pixel_bombs_are_refused_from_the_header(tmp_path, make, size):
    side = 16384 if make is _png_declaring else 20000
    path = tmp_path / "bomb.img"
    path.write_bytes(make(side, side))
    start = time.perf_counter()
    with pytest.raises(ImageError) as e:
        read_image(path)
    assert time.perf_counter() - start < 5  # no gigapixel decode happened
    assert str(e.value) == (f"{path}: {size}, over the pixel budget of 200 MP "
                            "(--max_megapixels to change)")


def test_pixel_budget_is_a_setting(tmp_path, monkeypatch):
    monkeypatch.setitem(image_io._budget, "megapixels", image_io.DEFAULT_MAX_MEGAPIXELS)
    path = tmp_path / "a.png"
    write_image(path, np.zeros((100, 120), np.uint8))
    image_io.set_pixel_budget(0.012)
    assert read_image(path).shape == (100, 120)
    image_io.set_pixel_budget(0.011)
    with pytest.raises(ImageError, match="100 is 0 MP, over the pixel budget of 0.011 MP"):
        read_image(path)
    with pytest.raises(ValueError):
        image_io.set_pixel_budget(0)


def test_enhance_cli_refuses_a_bomb_in_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bomb.png").write_bytes(_png_declaring(16384, 16384))
    write_image(tmp_path / "in" / "ok.png", np.full((8, 8), 99, np.uint8))
    proc = subprocess.run([sys.executable, "-m", "rbqe_tf.enhance", str(tmp_path / "in"),
                           "--out", str(tmp_path / "out"), "--exit", "0",
                           "--max_megapixels", "100"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"[1/2] {tmp_path / 'in' / 'bomb.png'}: error: 16384x16384 is 268 MP, over the "
        "pixel budget of 100 MP (--max_megapixels to change)"]
    assert proc.stdout.strip().splitlines()[-1] == "1 enhanced, 1 failed"


# -- 4. orientation and metadata -----------------------------------------------------------

def _icc():
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 255, (5, 7, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert np.array_equal(read_image(path), expected)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_phone_photo_comes_out_upright_with_its_profile_and_exif(tmp_path, ext):
    stored = np.random.default_rng(0).integers(0, 255, (24, 40, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "PhoneMaker"  # rotate 90° clockwise to view
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / f"photo{ext}"
    Image.fromarray(stored).save(source, exif=exif.tobytes(), icc_profile=_icc(), quality=95)
    viewed = np.asarray(ImageOps.exif_transpose(Image.open(source)))
    assert batch.enhance_files([str(source)], str(tmp_path / "out"), Identity(), _describe,
                               out_format="same") == 0
    with Image.open(tmp_path / "out" / f"photo{ext}") as out:
        assert out.size == (24, 40)  # upright: portrait, as every viewer shows the input
        assert out.getexif().get(0x0112) == 1 and out.getexif().get(0x010F) == "PhoneMaker"
        assert out.info.get("icc_profile") == _icc()
        if ext == ".png":  # lossless: the very pixels a viewer shows for the input
            assert np.array_equal(np.asarray(out), viewed)


def test_unreadable_exif_is_dropped_not_carried():
    assert image_io.upright_exif(b"garbage!") == (1, None)
    assert image_io.upright_exif(None) == (1, None)


# -- 5. files, names, signals, progress, modes -----------------------------------------------

def test_a_fifo_in_a_folder_is_skipped_and_a_named_fifo_is_an_error(tmp_path):
    os.mkfifo(tmp_path / "a.png")
    write_image(tmp_path / "b.png", np.zeros((8, 8), np.uint8))
    inputs = batch.expand_inputs([str(tmp_path)])
    assert [i.path for i in inputs.files] == [str(tmp_path / "b.png")]
    assert inputs.skipped == [(str(tmp_path / "a.png"), batch.NOT_A_FILE)]
    with pytest.raises(ImageError, match="a.png: not a regular file"):
        read_image(tmp_path / "a.png")


def test_a_killed_runs_temporary_files_are_removed_live_ones_kept(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    out = tmp_path / "out"
    out.mkdir()
    orphan, live, foreign = (out / f"{TEMP_PREFIX}{dead}-x.png",
                             out / f"{TEMP_PREFIX}{os.getpid()}-y.png", out / ".tmp-notes.txt")
    for path in (orphan, live, foreign):
        path.write_bytes(b"partial")
    write_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    batch.enhance_files([str(tmp_path / "a.png")], str(out), Identity(), _describe)
    assert "removed 1 temporary file(s)" in capsys.readouterr().out
    assert not orphan.exists() and live.exists() and foreign.exists()
    assert remove_orphan_temps(out) == []


def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path):
    code = ("import sys, time; from rbqe_tf.cli import exit_on_sigterm; "
            "from rbqe_tf.files import write_atomically; exit_on_sigterm(); "
            "write_atomically(sys.argv[1], lambda tmp: (open(tmp, 'w').write('x'), "
            "print('writing', flush=True), time.sleep(60)))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out.png")],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "writing"
    assert any(n.startswith(TEMP_PREFIX) for n in os.listdir(tmp_path))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert os.listdir(tmp_path) == []


def test_control_characters_in_names_are_printed_escaped(tmp_path, capsys):
    name = "evil\x1b[2J\nname.png"
    write_image(tmp_path / name, np.zeros((8, 8), np.uint8))
    batch.enhance_files([str(tmp_path / name)], str(tmp_path / "out"), Identity(), _describe)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "evil\\x1b[2J\\nname.png" in out
    assert len(out.strip().splitlines()) == 2  # the file's line and the summary


def test_progress_lines_reach_a_pipe_one_by_one(tmp_path):
    """The second image waits until the parent has read the first image's line: without
    a flush per line the parent would wait for the whole batch (timeout)."""
    for name in ("a", "b"):
        write_image(tmp_path / f"{name}.png", np.zeros((8, 8), np.uint8))
    go = tmp_path / "go"
    code = f"""
import os, sys, time
from rbqe_tf import batch
class Slow:
    def __call__(self, image):
        if os.path.exists({str(tmp_path / 'out' / 'a.png')!r}):
            deadline = time.time() + 60
            while not os.path.exists({str(go)!r}) and time.time() < deadline:
                time.sleep(0.05)
        return type("R", (), {{"image": image, "ms": 0.0}})()
batch.enhance_files(sys.argv[1:], {str(tmp_path / 'out')!r}, Slow(), lambda r: "exit 1")
"""
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "a.png"),
                             str(tmp_path / "b.png")], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    start = time.perf_counter()
    assert proc.stdout.readline().startswith("[1/2]")
    assert time.perf_counter() - start < 50
    go.touch()
    assert proc.stdout.readline().startswith("[2/2]")
    proc.wait(timeout=30)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_get_the_users_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
        write_atomically(tmp_path / "b.json", lambda tmp: open(tmp, "w").write("{}"))
    finally:
        os.umask(previous)
    for name in ("a.png", "b.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask


def test_metadata_of_a_file_without_any_is_empty(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    assert read_image_with_metadata(tmp_path / "a.png")[1] == image_io.Metadata()

"""Folder inputs and output formats of both command lines (rbqe_tf.batch), with a stand-in
for the network: ``--recursive``, the skipped-entries line, ``--format``/``--quality``,
and an output folder that appears only when there is something to write."""
import os
import types

import cv2
import numpy as np
import pytest

from rbqe_tf.batch import (A_FOLDER, NOT_AN_IMAGE, enhance_files, expand_inputs,
                           output_extension)
from rbqe_tf.image_io import read_image, write_image


def _identity(image):
    return types.SimpleNamespace(image=image, ms=1.0, exit=1)


def _describe(result):
    return f"exit {result.exit}"


def _smooth(shape, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.random((8, 8)), shape[1::-1], interpolation=cv2.INTER_CUBIC)
    image = np.clip(base, 0, 1)
    if len(shape) == 3:
        image = np.stack([np.roll(image, 3 * c, 1) for c in range(shape[2])], -1)
    return np.round(image * np.iinfo(dtype).max).astype(dtype)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    write_image(root / "a.png", _smooth((40, 30, 3)))
    write_image(root / "b.jpg", _smooth((32, 32)))
    write_image(root / "sub" / "a.png", _smooth((20, 24)))
    write_image(root / "sub" / "deeper" / "c.tif", _smooth((16, 16, 4)))
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "README").write_text("")
    return root


def test_folder_without_recursive_lists_what_it_skipped(tree):
    inputs = expand_inputs([str(tree)])
    assert [(os.path.basename(i.path), i.name) for i in inputs.files] == [("a.png", "a"),
                                                                         ("b.jpg", "b")]
    assert inputs.skipped == [(f"{tree}/sub/", A_FOLDER), (f"{tree}/notes.txt", NOT_AN_IMAGE)]
    assert inputs.skipped_line() == (f"skipped 2: {tree}/sub/ (a folder: add --recursive to "
                                     f"enter it); {tree}/notes.txt (not an image file)")


def test_recursive_keeps_the_subfolders_below_out(tree, tmp_path, capsys):
    inputs = expand_inputs([str(tree)], recursive=True)
    assert [i.name for i in inputs.files] == ["a", "b", "sub/a", "sub/deeper/c"]
    assert sorted(reason for _, reason in inputs.skipped) == [NOT_AN_IMAGE] * 2
    out = tmp_path / "out"
    assert enhance_files(inputs.files, str(out), _identity, _describe) == 0
    for name in ["a.png", "b.png", "sub/a.png", "sub/deeper/c.png"]:
        assert (out / name).is_file(), name
    np.testing.assert_array_equal(read_image(out / "sub/deeper/c.png"),
                                  read_image(tree / "sub/deeper/c.tif"))
    assert "4 enhanced, 0 failed" in capsys.readouterr().out


def test_the_output_folder_inside_the_input_is_not_entered(tree):
    out = tree / "sub" / "enhanced"
    out.mkdir()
    write_image(out / "a.png", _smooth((8, 8)))
    inputs = expand_inputs([str(tree)], recursive=True, exclude=str(out))
    assert all("enhanced" not in i.path for i in inputs.files)
    assert (f"{out}/", "the output folder") in inputs.skipped


def test_empty_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    inputs = expand_inputs([str(tmp_path / "empty"), str(tmp_path / "x.png")])
    assert inputs.empty == [str(tmp_path / "empty")] and len(inputs.files) == 1


def test_formats_and_their_costs(tmp_path, capsys):
    image = _smooth((64, 80, 3))
    src = tmp_path / "photo.jpg"
    write_image(src, image, quality=90)
    sizes = {}
    for fmt, ext in [("png", ".png"), ("tiff", ".tiff"), ("jpg", ".jpg"), ("webp", ".webp"),
                     ("same", ".jpg")]:
        out = tmp_path / fmt
        assert enhance_files([str(src)], str(out), _identity, _describe, out_format=fmt) == 0
        written = out / f"photo{ext}"
        sizes[fmt] = written.stat().st_size
        decoded = read_image(written)
        if fmt in ("png", "tiff"):  # lossless
            np.testing.assert_array_equal(decoded, read_image(src))
        else:
            assert np.abs(decoded.astype(int) - read_image(src)).mean() < 2
    assert sizes["jpg"] < sizes["png"] and sizes["webp"] < sizes["png"]
    low = tmp_path / "low"
    enhance_files([str(src)], str(low), _identity, _describe, out_format="jpg", quality=30)
    assert (low / "photo.jpg").stat().st_size < sizes["jpg"]
    assert output_extension("x/y.JPEG", "same") == ".jpeg"
    assert output_extension("x/y.webp", "same") == ".webp"


def test_formats_that_cannot_hold_the_image_are_one_line_errors(tmp_path, capsys):
    write_image(tmp_path / "deep.png", _smooth((16, 16), np.uint16))
    write_image(tmp_path / "alpha.png", _smooth((16, 16, 4)))
    out = tmp_path / "out"
    files = [str(tmp_path / "deep.png"), str(tmp_path / "alpha.png")]
    assert enhance_files(files, str(out), _identity, _describe, out_format="jpg") == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert "deep.png: error: cannot write jpg: jpg holds 8-bit samples only, this image " \
           "has 16 (choose --format png or tiff)" in errors[0]
    assert "alpha.png: error: cannot write jpg: jpg has no alpha channel" in errors[1]
    assert not out.exists()  # nothing was written, so no folder either
    assert enhance_files(files, str(out), _identity, _describe, out_format="webp") == 1
    assert (out / "alpha.webp").is_file() and read_image(out / "alpha.webp").shape[2] == 4
    assert enhance_files(files, str(out), _identity, _describe, out_format="tiff") == 0
    np.testing.assert_array_equal(read_image(out / "deep.tiff"), read_image(files[0]))


def test_missing_input_creates_no_output_folder(tmp_path, capsys):
    out = tmp_path / "out"
    assert enhance_files([str(tmp_path / "nope.png")], str(out), _identity, _describe) == 1
    assert "no such file" in capsys.readouterr().err and not out.exists()

"""Tests of the training patches and validation images (rbqe_tf.data) on small hand-built
fixtures."""
import json
import logging

import cv2
import numpy as np
import pytest

from rbqe_tf import data
from rbqe_tf.color import rgb_to_y_uint8
from rbqe_tf.compression import compress_jpeg
from rbqe_tf.levels import EXIT_WEIGHTS, LIGHT_EXIT_WEIGHTS, exit_weights, severity

P = 32
OFFSETS = {("jpeg", 10): 11, ("jpeg", 30): 33, ("jpeg", 50): 55, ("hevc", 22): 77, ("hevc", 42): 99}


def _noise(rng, h, w, smooth=0.0):
    y = rng.integers(0, 256, (h, w)).astype(np.float32)
    if smooth:
        y = cv2.GaussianBlur(y, (0, 0), smooth) * 3 - 256
    return np.clip(y, 0, 255).astype(np.uint8)


def _write_built(out, gts, pairs, compress):
    """Writes a datasets.build-style folder: gt/, <codec>/<level>/, manifest.jsonl."""
    (out / "gt").mkdir(parents=True)
    lines = []
    for stem, gt in gts.items():
        cv2.imwrite(str(out / "gt" / f"{stem}.png"), gt)
        for codec, level in pairs:
            rel = f"{codec}/{level}/{stem}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / rel), compress(gt, codec, level))
            lines.append(json.dumps({
                "stem": stem, "source": f"src/{stem}.png", "codec": codec, "level": level,
                "gt": f"gt/{stem}.png", "path": rel, "height": gt.shape[0],
                "width": gt.shape[1], "bytes": 0, "bpp": 0.0, "psnr": 0.0, "ssim": 0.0}))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return out


def _offset(gt, codec, level):
    """A fake 'compressed' image: GT plus a known per-level offset (mod 256)."""
    return ((gt.astype(np.int32) + OFFSETS[codec, level]) % 256).astype(np.uint8)


@pytest.fixture
def built(tmp_path):
    rng = np.random.default_rng(0)
    gts = {"a": _noise(rng, 64, 96), "b": _noise(rng, 80, 48), "tiny": _noise(rng, 24, 40)}
    pairs = [("jpeg", 10), ("jpeg", 30), ("jpeg", 50), ("hevc", 22), ("hevc", 42)]
    return _write_built(tmp_path / "built", gts, pairs, _offset), gts


@pytest.fixture
def src_dir(tmp_path):
    rng = np.random.default_rng(1)
    d = tmp_path / "src"
    (d / "sub").mkdir(parents=True)
    rgb = np.stack([_noise(rng, 72, 88, 2.0) for _ in range(3)], -1)
    cv2.imwrite(str(d / "colour.png"), rgb[..., ::-1])
    cv2.imwrite(str(d / "sub" / "gray.png"), _noise(rng, 96, 64, 2.0))
    (d / "broken.png").write_bytes(b"not a png")
    (d / "notes.txt").write_text("ignored")
    return d, {"colour": rgb_to_y_uint8(rgb), "sub/gray": cv2.imread(str(d / "sub/gray.png"), 0)}


def _patches(sampler, n):
    """The patches of batches 0..n-1, with their codec and level."""
    return [sampler.patch_at(i, b) for i in range(n) for b in range(sampler.batch)]


def _u8(x):
    return np.round(x[..., 0] * 255).astype(np.int32)


DIHEDRAL = [lambda x, t=t: np.flip(x.T if t >= 4 else x, [a for a, b in ((0, 1), (1, 2)) if t & b])
            for t in range(8)]


def _locate(patch, images, step=1):
    """(name, y0, x0, t) such that DIHEDRAL[t](patch) is the crop at (y0, x0), or None."""
    for name, img in images.items():
        windows = np.lib.stride_tricks.sliding_window_view(img, (P, P))[::step, ::step]
        for t, f in enumerate(DIHEDRAL):
            hits = np.argwhere((windows == f(patch)).all((2, 3)))
            if len(hits):
                return name, hits[0][0] * step, hits[0][1] * step, t
    return None


def test_built_shapes_alignment_weights(built, caplog):
    out, gts = built
    with caplog.at_level(logging.WARNING):
        sampler = data.PatchSampler(data.from_built(out, codecs=("jpeg",)), P, 8, augment=False)
    assert "skipping 1 image(s) smaller than 32x32: tiny" in caplog.text
    x, y, w = sampler(0)
    assert x.shape == y.shape == (8, P, P, 1) and w.shape == (8, 5)
    assert x.dtype == y.dtype == w.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1 and 0 <= y.min() and y.max() <= 1
    for b in range(8):  # the batch is its patches, scaled to [0, 1]
        p = sampler.patch_at(0, b)
        np.testing.assert_array_equal(_u8(x[b:b + 1])[0], p.compressed)
        np.testing.assert_array_equal(w[b], exit_weights(severity("jpeg", p.level)))
    seen = set()
    for p in _patches(sampler, 4):
        name, y0, x0, t = _locate(p.target, gts)
        assert t == 0 and name != "tiny" and y0 % 8 == 0 and x0 % 8 == 0  # JPEG grid
        # same place in the compressed image of that level: GT + the level's offset
        np.testing.assert_array_equal(p.compressed,
                                      (p.target.astype(int) + OFFSETS["jpeg", p.level]) % 256)
        seen.add(p.level)
    assert seen == {10, 30, 50}


def test_augmentation_same_for_both_and_all_eight(built):
    out, gts = built
    sampler = data.PatchSampler(data.from_built(out, levels=[30]), P, 16, seed=5)
    transforms = set()
    for p in _patches(sampler, 4):
        np.testing.assert_array_equal(p.compressed, (p.target.astype(int) + OFFSETS["jpeg", 30])
                                      % 256)  # the same transform
        transforms.add(_locate(p.target, gts, step=8)[3])
    assert transforms == set(range(8))


def test_grid_alignment_can_be_disabled(built):
    out, gts = built
    src = data.from_built(out, levels=[50], grid_aligned=False)
    offsets = [_locate(p.target, gts)[1:3] for p in _patches(data.PatchSampler(src, P, 16,
                                                                               augment=False), 1)]
    assert any(y % 8 or x % 8 for y, x in offsets)


def test_mixed_codecs_share_the_exit_weight_table(built):
    out, _ = built
    src = data.from_built(out, codecs=("jpeg", "hevc"), levels={"jpeg": [10, 50]})
    assert sorted({(r.codec, r.level) for r in src.records}) == [
        ("hevc", 22), ("hevc", 42), ("jpeg", 10), ("jpeg", 50)]
    table = EXIT_WEIGHTS * 3  # a custom table is used as given
    by_row = {}
    for p in _patches(data.PatchSampler(src, P, 16, table=table, augment=False), 4):
        row = int(np.flatnonzero((table == p.weights).all(1))[0])
        by_row.setdefault(row, set()).add((int(p.compressed[0, 0]) - int(p.target[0, 0])) % 256)
    # row 0 = JPEG QF 50 and HEVC QP 22; row 4 = QF 10 and QP 42
    assert by_row == {0: {55, 77}, 4: {11, 99}}


def test_batches_are_a_function_of_seed_and_step(built):
    out, _ = built
    make = lambda seed: data.PatchSampler(data.from_built(out), P, 4, seed=seed)  # noqa: E731
    a, b = make(3), make(3)
    for n in (0, 1, 7):
        for u, v in zip(a(n), b(n)):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a(0)[1], make(4)(0)[1])
    for u, v in zip(a.reseeded(4)(0), make(4)(0)):  # another stream, without a reload
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a(0)[1], b(0)[1])  # the original keeps its seed
    assert not np.array_equal(a(0)[1], a(1)[1])
    stream = data.batches(a, start=5, workers=2)  # a resumed run starts at its step
    for n in (5, 6, 7):
        np.testing.assert_array_equal(next(stream)[1], b(n)[1])


def test_on_the_fly_jpeg_matches_opencv(src_dir, caplog):
    d, ys = src_dir
    with caplog.at_level(logging.WARNING):
        src = data.on_the_fly_jpeg([d])
    assert "skipped 1 unreadable image(s)" in caplog.text and "broken.png" in caplog.text
    assert src.names == ("colour", "sub/gray") and len(src.skipped) == 1
    np.testing.assert_array_equal(src.records[0].gt, ys["colour"])  # BT.601 Y of the RGB file
    qfs = set()
    for p in _patches(data.PatchSampler(src, P, 16, augment=False), 2):
        assert _locate(p.target, ys) is not None  # a crop of the Y plane
        np.testing.assert_array_equal(p.weights, np.float32(exit_weights(severity("jpeg",
                                                                                  p.level))))
        ok, enc = cv2.imencode(".jpg", p.target, [cv2.IMWRITE_JPEG_QUALITY, p.level])
        np.testing.assert_array_equal(p.compressed, cv2.imdecode(enc, cv2.IMREAD_UNCHANGED))
        qfs.add(p.level)
    assert len(qfs) > 10 and min(qfs) >= 10 and max(qfs) <= 50


def test_16bit_colour_ground_truth_is_rounded_once(tmp_path):
    """16-bit RGB → Y in one rounding from full precision, as datasets.build does (BT.601
    studio range written out here), not via an 8-bit intermediate."""
    rgb = np.random.default_rng(3).integers(0, 65536, (40, 48, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), rgb[..., ::-1])
    r, g, b = np.moveaxis(rgb / 65535.0, -1, 0)
    expected = np.round(16 + 65.481 * r + 128.553 * g + 24.966 * b).astype(np.uint8)
    via_8bit = rgb_to_y_uint8(np.round(rgb / 257.0).astype(np.uint8))
    assert (via_8bit != expected).any()  # the two roundings really differ on this image
    np.testing.assert_array_equal(data.on_the_fly_jpeg([tmp_path]).records[0].gt, expected)


def test_low_qf_share_draws_qf_10_to_20(src_dir):
    d, _ = src_dir
    src = data.on_the_fly_jpeg([d])

    def qfs(low_qf):
        return np.array([p.level for p in _patches(
            data.PatchSampler(src, P, 16, seed=3, low_qf=low_qf), 4)])

    assert qfs(1.0).max() <= 20 and len(set(qfs(1.0))) > 5
    half, plain = qfs(0.5), qfs(0.0)
    assert half.max() > 20 and 0.45 < np.mean(half <= 20) < 0.85  # expected 0.63
    assert np.mean(plain <= 20) < 0.45  # expected 11/41 = 0.27
    with pytest.raises(ValueError, match="low_qf"):
        data.PatchSampler(src, P, 16, low_qf=1.5)


def test_light_patches_are_left_alone_by_their_weights(src_dir):
    d, ys = src_dir
    sampler = data.PatchSampler(data.on_the_fly_jpeg([d]), P, 16, augment=False, light=1.0)
    kinds = set()
    for p in _patches(sampler, 4):
        if p.level == -1:  # uncompressed: the target itself
            np.testing.assert_array_equal(p.compressed, p.target)
        assert p.level == -1 or 51 <= p.level <= 100
        kinds.add("none" if p.level == -1 else "light")
        if (p.weights == LIGHT_EXIT_WEIGHTS).all():
            continue
        assert p.level >= 51  # re-saved after a heavy first pass keeps its heavy weights
        kinds.add("re-saved heavy")
    assert kinds == {"none", "light", "re-saved heavy"}
    off = data.PatchSampler(data.on_the_fly_jpeg([d]), P, 16, augment=False)
    on = data.PatchSampler(data.on_the_fly_jpeg([d]), P, 16, augment=False, light=1e-9)
    assert not np.array_equal(off(0)[0], on(0)[0])  # the light draw changes the stream
    np.testing.assert_array_equal(off(0)[0], data.PatchSampler(
        data.on_the_fly_jpeg([d]), P, 16, augment=False, light=0.0)(0)[0])


def _damage(path, how):
    if how == "truncate":
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    else:  # another image of a different size, swapped in by rename
        tmp = path.with_name(".swap.png")
        cv2.imwrite(str(tmp), np.zeros((40, 40), np.uint8))
        tmp.replace(path)


def test_unreadable_built_files_are_skipped_counted_and_named_once(built, caplog):
    out, gts = built
    _damage(out / "gt" / "b.png", "garbage")  # drops all three b records
    _damage(out / "jpeg" / "30" / "a.png", "truncate")
    _damage(out / "jpeg" / "50" / "tiny.png", "resize")
    with caplog.at_level(logging.WARNING):
        src = data.from_built(out, codecs=("jpeg",))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith("skipped 3 unreadable image(s)")
    for name in ("b.png", "30/a.png", "50/tiny.png"):
        assert warnings[0].count(name) == 1, name
    assert "differs from its ground truth" in warnings[0] and len(src.skipped) == 3
    assert [(r.name, r.level) for r in src.records] == [("a", 10), ("tiny", 10), ("tiny", 30),
                                                        ("a", 50)]
    for p in _patches(data.PatchSampler(src, P, 8, augment=False), 2):
        assert _locate(p.target, gts)[0] == "a"  # b is gone, tiny is smaller than a patch
        np.testing.assert_array_equal(p.compressed,
                                      (p.target.astype(int) + OFFSETS["jpeg", p.level]) % 256)
    for f in (out / "gt" / "a.png", out / "gt" / "tiny.png"):
        _damage(f, "garbage")
    with pytest.raises(ValueError, match="no readable pairs"):
        data.from_built(out, codecs=("jpeg",))


def test_image_damaged_mid_run_keeps_the_stream_and_is_skipped_on_reload(src_dir, caplog):
    d, ys = src_dir  # broken.png is corrupt from the start
    src = data.on_the_fly_jpeg([d])
    make = lambda s: data.PatchSampler(s, P, 8, seed=1)  # noqa: E731
    reference = [make(src)(n) for n in range(4)]
    running = data.batches(make(src))
    first = [next(running) for _ in range(2)]
    _damage(d / "sub" / "gray.png", "truncate")  # while the run goes on
    rest = [next(running) for _ in range(2)]
    for got, want in zip(first + rest, reference):
        for u, v in zip(got, want):
            np.testing.assert_array_equal(u, v)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        reloaded = data.on_the_fly_jpeg([d])  # what a resumed run reads
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and warnings[0].startswith("skipped 2 unreadable image(s)")
    assert warnings[0].count("broken.png") == 1 and warnings[0].count("gray.png") == 1
    assert reloaded.names == ("colour",) and len(reloaded.skipped) == 2
    for p in _patches(make(reloaded), 2):
        assert _locate(p.target, ys)[0] == "colour"


def test_bad_arguments(built, tmp_path):
    out, _ = built
    src = data.from_built(out)
    for size in (0, 100, -32, 32.0):
        with pytest.raises(ValueError, match="multiple of 32"):
            data.PatchSampler(src, size)
    with pytest.raises(ValueError, match="no image is at least 128x128"):
        data.PatchSampler(src, 128)
    with pytest.raises(ValueError, match="batch size"):
        data.PatchSampler(src, P, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable images"):
        data.on_the_fly_jpeg(tmp_path / "empty")
    with pytest.raises(ValueError, match="no manifest.jsonl"):
        data.from_built(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"level\(s\) \[20\]"):
        data.from_built(out, levels=[20, 30])
    with pytest.raises(ValueError, match="no hevc training data"):
        data.load_training_set([tmp_path / "empty"], ("hevc",))


def test_validation_order_and_crop(tmp_path):
    rng = np.random.default_rng(2)
    gts = {"b": _noise(rng, 100, 75, 1.5), "a": _noise(rng, 70, 140, 1.5)}
    src = tmp_path / "val"
    src.mkdir()
    for stem, y in gts.items():
        cv2.imwrite(str(src / f"{stem}.png"), y)
    built = _write_built(tmp_path / "built", gts, [("jpeg", 50), ("jpeg", 20)],
                         lambda y, codec, q: compress_jpeg(y, q)[0])

    whole = data.validation_images(built, "jpeg")
    assert [(v.level, v.name) for v in whole] == [(20, "a"), (20, "b"), (50, "a"), (50, "b")]
    np.testing.assert_array_equal(whole[1].gt, gts["b"])
    assert [(v.level, v.name) for v in data.validation_images(built, "jpeg")] == \
        [(v.level, v.name) for v in whole]

    cropped = data.validation_images(built, "jpeg", crop=64)
    # 100x75 → 64x64 at (16, 0): offsets rounded down to the 8-pixel JPEG grid
    np.testing.assert_array_equal(cropped[1].gt, gts["b"][16:80, 0:64])
    assert cropped[0].gt.shape == (64, 64)
    # the crop of a built image equals compressing the crop (grid-aligned offset)
    on_the_fly = data.validation_images(src, "jpeg", levels=[50, 20], crop=64)
    assert [(v.level, v.name) for v in on_the_fly] == [(v.level, v.name) for v in cropped]
    for x, y in zip(on_the_fly, cropped):
        np.testing.assert_array_equal(x.compressed, y.compressed)
        np.testing.assert_array_equal(x.gt, y.gt)

    with pytest.raises(ValueError, match="needs a built set"):
        data.validation_images(src, "hevc")
    with pytest.raises(ValueError, match="multiple of 32"):
        data.validation_images(src, "jpeg", crop=50)


def test_real_data_smoke(shared_data):
    comp, gt, weights = data.PatchSampler(data.on_the_fly_jpeg(shared_data / "train" / "t91"),
                                          128, 4)(0)
    assert comp.shape == gt.shape == (4, 128, 128, 1) and weights.shape == (4, 5)
    val = data.validation_images(shared_data / "val" / "classic5", "jpeg", levels=[10])
    assert len(val) == 5
    psnr = [cv2.PSNR(v.gt, v.compressed) for v in val]
    assert np.mean(psnr) == pytest.approx(27.82, abs=0.01)  # data/README sanity figure

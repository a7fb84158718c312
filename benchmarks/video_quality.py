"""Video enhancement measured without downloads: clips made from lossless photos, coded by
x264 and x265, enhanced through :func:`rbqe_tf.video.enhance_video`, scored on Y against
the uncompressed frames.

Clips: each of ``--images`` photos of ``--src`` (evenly spaced in name order; use the
training photos: tuning on validation images would flatter the figures) gives one clip of
``--frames`` frames at 30 fps and ``--size`` pixels: even-numbered photos a pan from one
corner to the other, odd-numbered ones a centred zoom-in to 1.5×, both rendered with
cubic interpolation and converted to yuv420p by swscale (BT.601 studio range, the
network's convention). The uncompressed frames are kept lossless (``ffv1``), and the
clip is coded by libx264 at every ``--x264_crf`` and by libx265 at every ``--x265_qp``
(the encoders PyAV bundles; default presets, one GOP). Clips already in ``--clips`` are
used as they are, so re-runs and other settings compare the same files.

Each coded clip goes through ``enhance_video`` as ``python -m rbqe_tf.enhance`` runs it
(model from the stream, lossless output into ``--out``); per frame, ΔPSNR =
PSNR(output Y, uncompressed Y) − PSNR(decoded Y, uncompressed Y), 8-bit, whole frame.
fps is frames over the call's own seconds (decode, decision, network, encode; the model
loaded before). ``--oracle_every N`` also runs every Nth frame at each exit 1..5: the
best exit's ΔPSNR beside the decision's shows what a frame left at exit 0 forgoes.
``--decide_every 1,10`` runs each setting on every clip, interleaved (the order turns
from clip to clip), for the cross-frame reuse of decisions; ``--exit`` forces one exit
(e.g. 5, for the always-exit-5 throughput). ``--models DIR`` uses the TFLite runner
(``rbqe_tf.litert.runner.Runner``) instead of Keras. ``--video_codec``/``--crf`` code the
enhanced clips as the CLI's flags do: ΔPSNR is then measured after that coding, and
each row gives the output's size.

Prints a table per (codec, level, setting) and writes every clip's per-frame figures to
``--json``.

    python -m benchmarks.video_quality --src ../shared/data/train/bsd200 --clips video_clips \\
        --out video_out --json video_quality.json --oracle_every 10
"""
import argparse
import json
import os
import platform
import time

import numpy as np

PAN, ZOOM = "pan", "zoom"
MAX_ZOOM = 1.5
RATE = 30


def _parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks.video_quality",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="folder of lossless photos (training data)")
    p.add_argument("--clips", required=True, help="folder for the generated clips (reused)")
    p.add_argument("--out", help="folder for the enhanced clips (required unless --make_only)")
    p.add_argument("--json", help="write the per-clip, per-frame figures here")
    p.add_argument("--images", type=int, default=4, help="photos used (one clip each)")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--size", default="320x240", help="WIDTHxHEIGHT (even numbers)")
    p.add_argument("--x264_crf", default="18,24,30,36,40", help="CRFs, comma-separated")
    p.add_argument("--x265_qp", default="27,32,37,42", help="QPs, comma-separated")
    p.add_argument("--weights", help="force this .keras model for every stream")
    p.add_argument("--codec", choices=("jpeg", "hevc"), help="with --weights or --models: "
                   "the codec family (default jpeg)")
    p.add_argument("--decision", choices=("gain", "score"), help="Keras decision "
                   "(default: gain where the weights have a predictor)")
    p.add_argument("--models", help="TFLite export folder: use rbqe_tf.litert.runner.Runner")
    p.add_argument("--threads", type=int, default=2, help="runner threads")
    p.add_argument("--exit", type=int, help="force this exit on every frame")
    p.add_argument("--video_codec", default="ffv1", help="the enhanced clips' codec "
                   "(ffv1, libx264, libx265): ΔPSNR after it, and its size")
    p.add_argument("--crf", type=int, default=18, help="with libx264/libx265")
    p.add_argument("--decide_every", default="1", help="settings of enhance_video's "
                   "decide_every, comma-separated (interleaved)")
    p.add_argument("--oracle_every", type=int, default=0,
                   help="run every Nth frame at every exit too (0: never)")
    p.add_argument("--make_only", action="store_true", help="write the clips, evaluate none "
                   "(e.g. a 1080p clip for a memory check through the command line)")
    p.add_argument("--only", help="comma-separated substrings: evaluate only the clips "
                   "whose name holds one")
    return p


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def _frames(image, count, size, motion):
    """``count`` RGB frames [h, w, 3] uint8 of a pan or zoom over ``image`` (first scaled
    up to 1.25× the frame where it is smaller, so that large frames have room to pan)."""
    import cv2
    w, h = size
    grow = max(1.25 * w / image.shape[1], 1.25 * h / image.shape[0])
    if grow > 1:
        image = cv2.resize(image, None, fx=grow, fy=grow, interpolation=cv2.INTER_CUBIC)
    height, width = image.shape[:2]
    for i in range(count):
        t = i / max(count - 1, 1)
        if motion == PAN:
            m = [[1.0, 0.0, -t * (width - w)], [0.0, 1.0, -t * (height - h)]]
        else:
            s = 1.0 + (MAX_ZOOM - 1.0) * t
            m = [[s, 0.0, w / 2 - s * width / 2], [0.0, s, h / 2 - s * height / 2]]
        yield cv2.warpAffine(image, np.float32(m), (w, h), flags=cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REFLECT)


def _write(path, frames, codec, options):
    """Encodes yuv420p ``frames`` (PyAV VideoFrames) into ``path`` at 30 fps."""
    import av
    tmp = path + ".part" + os.path.splitext(path)[1]
    with av.open(tmp, "w") as out:
        stream = out.add_stream(codec, rate=RATE, options=options)
        stream.width, stream.height = frames[0].width, frames[0].height
        stream.pix_fmt = "yuv420p"
        for i, frame in enumerate(frames):
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    os.replace(tmp, path)


def make_clips(args):
    """Writes the reference and coded clips missing from ``--clips`` → [(clip name,
    reference path, coded path, codec, level)]."""
    import av
    import cv2
    size = tuple(int(v) for v in args.size.split("x"))
    if not os.path.isdir(args.src):
        raise SystemExit(f"error: {args.src}: no such folder")
    names = sorted(n for n in os.listdir(args.src) if n.lower().endswith(".png"))
    if not names:
        raise SystemExit(f"error: {args.src}: no PNG photos")
    step = max(len(names) // args.images, 1)
    chosen = names[::step][:args.images]
    os.makedirs(args.clips, exist_ok=True)
    clips = []
    for k, name in enumerate(chosen):
        motion = PAN if k % 2 == 0 else ZOOM
        stem = f"{os.path.splitext(name)[0]}_{motion}"
        reference = os.path.join(args.clips, f"{stem}.ref.mkv")
        coded = ([("libx264", "crf", v, {"crf": str(v)}) for v in _ints(args.x264_crf)]
                 + [("libx265", "qp", v, {"x265-params": f"qp={v}:log-level=error"})
                    for v in _ints(args.x265_qp)])
        paths = {(c, v): os.path.join(args.clips, f"{stem}.{c[3:]}_{kind}{v}.mp4")
                 for c, kind, v, _ in coded}
        if not all(os.path.exists(p) for p in [reference, *paths.values()]):
            image = cv2.cvtColor(cv2.imread(os.path.join(args.src, name), cv2.IMREAD_COLOR),
                                 cv2.COLOR_BGR2RGB)
            frames = [av.VideoFrame.from_ndarray(f, "rgb24").reformat(format="yuv420p")
                      for f in _frames(image, args.frames, size, motion)]
            _write(reference, frames, "ffv1", {})
            for codec, _, value, options in coded:
                _write(paths[codec, value], frames, codec, options)
        clips += [(stem, reference, paths[c, v], c, f"{kind} {v}") for c, kind, v, _ in coded]
    return clips


def _y_planes(path):
    """Decoded Y planes of a clip's first video stream (8-bit planar YUV, as made here)."""
    import av
    with av.open(path) as container:
        return [np.frombuffer(f.planes[0], np.uint8).reshape(
                    f.planes[0].height, f.planes[0].line_size)[:, :f.width].copy()
                for f in container.decode(video=0)]


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _enhancers(args):
    """stream codec → (enhance(y, exit=None), description), building each model once."""
    from rbqe_tf.cli import import_tensorflow_quietly
    built = {}

    def make(codec):
        if args.models:
            from rbqe_tf.litert.runner import Runner
            return Runner(args.models, codec, num_threads=args.threads)
        import_tensorflow_quietly()
        from rbqe_tf.enhancer import Enhancer
        return Enhancer.from_weights(args.weights, codec, decision=args.decision)

    def enhance_for(stream_codec):
        from rbqe_tf.video import model_for_stream
        codec, note = args.codec or "jpeg", None
        if not (args.weights or args.models or args.codec):
            import_tensorflow_quietly()
            from rbqe_tf.model import DEFAULT_WEIGHTS
            codec, note = model_for_stream(stream_codec, DEFAULT_WEIGHTS)
        if codec not in built:
            built[codec] = make(codec)
        chosen = built[codec]

        def enhance(y, exit=None):
            return chosen(y, args.exit if args.exit is not None else exit)
        return enhance, f"{codec} model" + (f", {note}" if note else "")
    return enhance_for


def evaluate(clip, enhance_for, decide_every, args):
    """One coded clip through enhance_video → its row (per-frame figures included)."""
    from rbqe_tf.video import enhance_video
    stem, reference, coded, codec, level = clip
    target = os.path.join(args.out, f"{os.path.basename(coded)}.every{decide_every}.mkv")
    report = enhance_video(coded, target, enhance_for, args.video_codec, args.crf,
                           overwrite=True, progress_every=0, decide_every=decide_every)
    ref, before, after = _y_planes(reference), _y_planes(coded), _y_planes(target)
    if not len(ref) == len(before) == len(after) == report["frames"]:
        raise SystemExit(f"error: {coded}: frame counts differ (reference {len(ref)}, "
                         f"decoded {len(before)}, enhanced {len(after)})")
    psnr_in = [_psnr(b, r) for b, r in zip(before, ref)]
    delta = [_psnr(a, r) - p for a, r, p in zip(after, ref, psnr_in)]
    row = {"clip": stem, "file": os.path.basename(coded), "codec": codec, "level": level,
           "decide_every": decide_every, "kbps": round(os.path.getsize(coded) * 8 * RATE
                                                       / len(ref) / 1000, 1),
           "output": args.video_codec + (f" crf {args.crf}" if args.video_codec != "ffv1"
                                         else ""),
           "output_kb": round(os.path.getsize(target) / 1000, 1),
           "frames": report["frames"], "seconds": report["seconds"],
           "fps": round(report["frames"] / report["seconds"], 2), "model": report["model"],
           "exit_histogram": report["exit_histogram"],
           "decisions": sum(report["decided"]),
           "mean_psnr_in": round(float(np.mean(psnr_in)), 4),
           "mean_delta_psnr": round(float(np.mean(delta)), 4),
           "delta_psnr": [round(d, 4) for d in delta], "exits": report["exits"]}
    if args.oracle_every and decide_every == _ints(args.decide_every)[0]:
        enhance, _ = enhance_for(report["stream_codec"])
        oracle = {}
        for i in range(0, len(before), args.oracle_every):
            y = before[i].astype(np.float32) / 255
            oracle[i] = [round(_psnr(np.round(np.asarray(enhance(y, exit=k).image) * 255)
                                     .clip(0, 255).astype(np.uint8), ref[i]) - psnr_in[i], 4)
                         for k in range(1, 6)]
        row["oracle"] = oracle
    os.remove(target)
    os.remove(target + ".json")
    return row


def table(rows):
    """Markdown rows per (codec, level, decide_every): over clips. The oracle columns
    are over the frames run at every exit: each exit's mean ΔPSNR, the best exit's
    (0 where none gains), and what the decision gave on those frames."""
    groups = {}
    for r in rows:
        groups.setdefault((r["codec"], r["level"], r["decide_every"]), []).append(r)
    lines = ["| codec | level | every | clips | kbps | PSNR in | ΔPSNR mean | worst clip | "
             "fps | exits 0-5 | oracle: exits 1-5 | best | decision |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (codec, level, every), group in groups.items():
        hist = np.sum([np.pad(r["exit_histogram"], (0, 6 - len(r["exit_histogram"])))
                       for r in group], 0)
        frames = sum(r["frames"] for r in group)
        gains = [(g, r["delta_psnr"][int(i)]) for r in group
                 for i, g in r.get("oracle", {}).items()]
        oracle = ("-", "-", "-")
        if gains:
            each = np.mean([g for g, _ in gains], 0)
            oracle = (" ".join(f"{v:+.2f}" for v in each),
                      f"{np.mean([max(0.0, *g) for g, _ in gains]):+.3f}",
                      f"{np.mean([d for _, d in gains]):+.3f}")
        lines.append(
            f"| {codec} | {level} | {every} | {len(group)} | "
            f"{np.mean([r['kbps'] for r in group]):.0f} | "
            f"{np.mean([r['mean_psnr_in'] for r in group]):.2f} | "
            f"{np.mean([r['mean_delta_psnr'] for r in group]):+.3f} | "
            f"{min(r['mean_delta_psnr'] for r in group):+.3f} | "
            f"{frames / sum(r['seconds'] for r in group):.1f} | "
            f"{' '.join(str(int(n)) for n in hist)} | {' | '.join(oracle)} |")
    return lines


def reuse_summary(rows):
    """Lines per decide_every setting over all clips: fps, mean ΔPSNR, and the largest
    per-clip change of mean ΔPSNR from the first setting's."""
    settings = sorted({r["decide_every"] for r in rows})
    first = {r["file"]: r["mean_delta_psnr"] for r in rows if r["decide_every"] == settings[0]}
    lines = []
    for every in settings:
        group = [r for r in rows if r["decide_every"] == every]
        moved = max(abs(r["mean_delta_psnr"] - first[r["file"]]) for r in group
                    if r["file"] in first)
        lines.append(f"decide_every {every}: {len(group)} clips, "
                     f"{sum(r['frames'] for r in group) / sum(r['seconds'] for r in group):.1f}"
                     f" fps, {sum(r['seconds'] for r in group):.1f} s, mean ΔPSNR "
                     f"{np.mean([r['mean_delta_psnr'] for r in group]):+.4f} dB, "
                     f"{sum(r['decisions'] for r in group)} decisions, largest clip change "
                     f"{moved:.4f} dB")
    return lines


def main(argv=None):
    args = _parser().parse_args(argv)
    settings = _ints(args.decide_every)
    if not (args.out or args.make_only):
        raise SystemExit("error: --out is required")
    clips = make_clips(args)
    if args.make_only:
        print("\n".join(c[2] for c in clips))
        return
    if args.only:
        clips = [c for c in clips if any(s in os.path.basename(c[2])
                                         for s in args.only.split(","))]
    os.makedirs(args.out, exist_ok=True)
    enhance_for = _enhancers(args)
    enhance_for("h264")  # models load before any clip is timed
    rows, start = [], time.time()
    load = [os.getloadavg()]
    for n, clip in enumerate(clips):
        turn = n % len(settings)
        for every in settings[turn:] + settings[:turn]:
            row = evaluate(clip, enhance_for, every, args)
            rows.append(row)
            print(f"{row['file']} every {every}: ΔPSNR {row['mean_delta_psnr']:+.3f} dB, "
                  f"{row['fps']:.1f} fps, exits {row['exit_histogram']}", flush=True)
        load.append(os.getloadavg())
    rows.sort(key=lambda r: (r["codec"], int(r["level"].split()[1]), r["decide_every"]))
    print("\n".join(table(rows)))
    if len(settings) > 1:
        print("\n".join(reuse_summary(rows)))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "machine": platform.platform(),
                       "cpus": os.cpu_count(), "load_average_1_5_15": load,
                       "seconds": round(time.time() - start, 1), "rows": rows}, f)
            f.write("\n")


if __name__ == "__main__":
    main()

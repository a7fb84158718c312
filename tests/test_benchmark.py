"""The on-device benchmark harness on a tiny-variant export (JSON fields and sanity,
not timings), the battery energy reader on a fake sysfs, benchmark_model command
lines and log parsing (a partial or failed GPU delegation is never a GPU result)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from export import benchmark
from rbqe_tf.harness import bench, benchmark_model
from rbqe_tf.harness.energy import EnergyMeter, batteries
from rbqe_tf.image_io import write_image
from rbqe_tf.litert.manifest import read_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check_stats(stats, runs):
    assert stats["runs"] == runs
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]


@pytest.fixture(scope="module")
def generated_run(tmp_path_factory, export_tiny):
    """The harness on the tiny fp32 export and the generated image set: (JSON, markdown)."""
    folder, tmp = export_tiny("fp32"), tmp_path_factory.mktemp("bench")
    out, md = tmp / "b.json", tmp / "b.md"
    assert benchmark.main(["--models", folder, "--runs", "3", "--warmup", "1", "--threads", "1",
                           "--op_profile", "exit_1", "--json", str(out),
                           "--markdown", str(md)]) == 0
    return json.loads(out.read_text()), md.read_text()


@pytest.mark.slow
def test_harness_json_on_generated_images(generated_run, export_tiny):
    manifest = read_manifest(export_tiny("fp32"))
    result, md = generated_run
    assert set(result["models"]) == set(manifest["files"])
    for name, stats in result["models"].items():
        _check_stats(stats, 3)
        kind, _, k = name.partition("_")
        expected = {"exit": manifest["macs"]["per_exit"], "stage": manifest["macs"]["per_stage"]}
        assert stats["macs"] == (expected[kind][int(k) - 1] if kind in expected else 0)
    assert [r["exit"] for r in result["exits"]] == [1, 2, 3, 4, 5]
    for r in result["exits"]:
        _check_stats(r["monolithic"], 3)
        _check_stats(r["staged"], 3)
        _check_stats(r["stage_invokes"], 3)
        assert r["invokes_ratio"] == pytest.approx(
            r["stage_invokes"]["median_ms"] / r["monolithic"]["median_ms"])
        assert r["ratio"] == pytest.approx(r["staged"]["median_ms"] / r["monolithic"]["median_ms"])
    score = result["score"]
    assert score["model"] == "score_jpeg" and score["ratio"] == pytest.approx(
        result["models"]["score_jpeg"]["median_ms"] / result["models"]["exit_5"]["median_ms"])

    ee = result["early_exit"]
    assert ee["source"] == "generated" and ee["count"] == len(ee["images"]) == 18
    assert sum(ee["histogram"].values()) == 18 and set(ee["histogram"]) == set("012345")
    per_exit = manifest["macs"]["per_exit"]
    for image in ee["images"]:
        assert image["shape"] == [manifest["tile"]] * 2 and image["tiles"] == 1
        assert image["macs"] == (per_exit[image["exit"] - 1] if image["exit"] else 0)
        assert len(image["scores"]) == min(image["exit"], 4)
        assert image["early_ms"] > 0 and image["always_last_ms"] > 0
        assert ee["histogram"][str(image["exit"])] >= 1
    assert ee["macs_per_image"] == pytest.approx(
        np.mean([per_exit[i["exit"] - 1] if i["exit"] else 0 for i in ee["images"]]))
    assert ee["always_last_macs_per_image"] == per_exit[-1]
    assert ee["ratio"] == pytest.approx(ee["mean_ms"] / ee["always_last_mean_ms"])
    # The generated set must exercise the decision: not every image at one exit.
    assert max(ee["histogram"].values()) < 18

    assert result["energy"]["available"] is False
    assert result["energy"]["proxy"]["macs_per_image"] == ee["macs_per_image"]
    assert result["memory"]["peak_rss_mb"] > 10
    conv_macs = sum(v["macs"] for v in result["ops"]["exit_5"].values())
    assert conv_macs == pytest.approx(per_exit[-1], rel=1e-4)  # independent of rbqe_tf.macs
    assert set(result["targets"]) == set(bench.TARGETS)
    assert result["settings"]["threads"] == 1 and result["export"]["quantize"] == "fp32"
    assert "| exit | monolithic ms | stages 1..k ms | ratio |" in md
    profile = result["op_profile"]["exit_1"]
    assert set(result["op_profile"]) == {"exit_1"} and profile["file"] == "exit_1.tflite"
    assert {k: v["count"] for k, v in profile["by_type"].items()} == \
        manifest["files"]["exit_1"]["ops"]
    assert "Op-level profile: `exit_1.tflite`" in md


@pytest.mark.slow
def test_edge_figures_page_from_harness_runs(generated_run):
    from benchmarks import edge_figures
    result = generated_run[0]
    summary = edge_figures._summary(result)
    assert summary["exit_ms"] == [r["monolithic"]["median_ms"] for r in result["exits"]]
    assert sum(map(int, summary["histogram"].split("/"))) == result["early_exit"]["count"]
    res = {"command": "python -m benchmarks.edge_figures --tile 64", "date": "today",
           "cpu": "cpu", "cpus": 2, "load_average": 1.0, "weights": "w.keras", "tile": 64,
           "runs": 3, "warmup": 1, "peak_gmacs": 115.0, "num_exits": 5,
           "issue_setup": False, "model_config": {"features": 4}, "seconds": 9.0,
           "export_seconds": 1.0,
           "macs_per_exit": [r["macs"] for r in result["exits"]],
           "configs": {"fp32 t1": summary}, "raw": {"fp32_t1": result},
           "targets": {"config": "fp32, 1 threads", "key": "fp32_t1",
                       "values": {**result["targets"], **edge_figures.extra_targets(
                           {"exits": [{"runner_own_ms": 0.5, "monolithic": {"median_ms": 50.0}},
                                      {"runner_own_ms": 0.5, "monolithic": {"median_ms": 25.0}}]},
                           [{"shape": [512, 512, 3], "peak_rss_mb": 450.0}])}},
           "profile": {"config": "fp32, 1 threads", **edge_figures.harness_profile(result)}}
    page = edge_figures.markdown(res)
    assert "| runner with the exit known (gain decision): (exit k + the runner's own work) " \
        "/ exit k, worst k | 1.020 | ≤ 1.05 | yes |" in page
    assert "| runner peak RSS at 512² (MiB), worst exit | 450.0 | ≤ 400 | no |" in page
    assert f"Early exit: 18 images from `generated` ({result['early_exit']['decision']}" in page
    assert "## Op-level profile of exit_1 (fp32, 1 threads; one-op models" in page
    assert "| CONV_2D | " in page
    assert "python -m benchmarks.edge_figures --tile 64" in page and "115 GMAC/s" in page
    g = summary["gmacs_per_s"]  # a float configuration: % of the float peak
    assert f"| {g:.1f} ({100 * g / 115:.1f} %) |" in page
    assert "**Not the issue's setup**" in page and "features 4, tile 64" in page
    row = next(line for line in page.splitlines() if line.startswith("| 5 |"))
    assert f"{summary['exit_ms'][-1]:.1f}" in row


def test_edge_figures_keep_the_sections_below_the_marker(tmp_path):
    from benchmarks import edge_figures
    page = tmp_path / "b.md"
    assert edge_figures.kept_sections(str(page)) == "\n" + edge_figures.KEPT_MARKER + "\n"
    page.write_text("# old figures\n\n" + edge_figures.KEPT_MARKER + "\n\n## Notes\nkept\n")
    assert edge_figures.kept_sections(str(page)) == (
        "\n" + edge_figures.KEPT_MARKER + "\n\n## Notes\nkept\n")


@pytest.mark.slow
def test_harness_on_an_image_folder_counts_tiles(tmp_path, export_tiny):
    folder = export_tiny("fp32")
    per_exit = read_manifest(folder)["macs"]["per_exit"]
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    write_image(images / "a.png", rng.integers(0, 256, (100, 90, 3), dtype=np.uint8))
    write_image(images / "b.png", rng.integers(0, 256, (40, 64), dtype=np.uint8))
    out = tmp_path / "b.json"
    assert benchmark.main(["--models", folder, "--images", str(images), "--runs", "1",
                           "--warmup", "0", "--json", str(out)]) == 0
    ee = json.loads(out.read_text())["early_exit"]
    # 64-pixel tiles overlapping by 2×8: 100 and 90 pixels need 2 tiles each.
    assert [(i["image"], i["tiles"]) for i in ee["images"]] == [("a.png", 4), ("b.png", 1)]
    assert ee["always_last_macs_per_image"] == (4 + 1) / 2 * per_exit[-1]


def test_edge_figures_before_after_table_from_a_baseline_run():
    from benchmarks import edge_figures
    base = {"folder": "old", "models": {"exit_5": {"median_ms": 90.0, "baseline_median_ms": 120.0,
                                                   "ratio": 0.75}}}
    res = {"targets": {"config": "int8, 2 threads", "key": "int8_t2"},
           "raw": {"int8_t2": {"baseline": base}}}
    lines = edge_figures.baseline_lines(res)
    assert "| exit_5 | 90.0 | 120.0 | 0.750 |" in lines
    assert any(line.startswith("## Before / after (int8, 2 threads; `--baseline old`")
               for line in lines)
    res["raw"]["int8_t2"]["baseline"] = None  # export.benchmark without --baseline
    assert edge_figures.baseline_lines(res) == []


@pytest.mark.slow
def test_mixed_set_with_a_baseline_export(tmp_path, export_tiny):
    folder = export_tiny("fp32")
    photos = tmp_path / "photos" / "sub"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(1)
    write_image(photos / "a.png", rng.integers(0, 256, (80, 100, 3), dtype=np.uint8))
    write_image(photos.parent / "b.png", rng.integers(0, 256, (50, 40), dtype=np.uint8))
    out = tmp_path / "b.json"
    assert benchmark.main(["--models", folder, "--baseline", folder, "--mixed",
                           str(tmp_path / "photos"), "--runs", "1", "--warmup", "0",
                           "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    ee = result["early_exit"]
    assert ee["count"] == 2 * 11 and ee["source"] == str(tmp_path / "photos")
    shapes = {i["image"].rsplit("_", 1)[0]: i["shape"] for i in ee["images"]}
    assert shapes == {"b": [50, 40], "sub_a": [64, 64]}  # Y crops of at most the tile
    assert {i["image"].rsplit("_", 1)[1] for i in ee["images"]} == {
        "none", *(f"q{q}" for q in (10, 20, 30, 40, 50, 60, 70, 80, 90, 95))}
    assert ee["one_exit"] == (sum(n > 0 for n in ee["histogram"].values()) == 1)
    base = result["baseline"]
    assert set(base["models"]) == set(result["models"])
    for m in base["models"].values():
        assert m["ratio"] == pytest.approx(m["median_ms"] / m["baseline_median_ms"])
    assert base["early_exit"]["same_exits"] == 22  # the same export routes the same way
    assert base["early_exit"]["early_ratio"] == pytest.approx(
        ee["mean_ms"] / base["early_exit"]["mean_ms"])


def test_kernel_profile_on_the_tiny_export(tmp_path, export_tiny):
    """Fields of the JSON and the MAC bookkeeping (timings are not checked); the
    per-op MACs must add up to the manifest's, counted on the Keras graph, once ECA's
    1-D conv (3 MACs per channel there) is read off its dense C×C CONV_2D here."""
    from benchmarks import kernel_profile
    from rbqe_tf.litert.flatbuffer import op_counts
    folder = export_tiny("int8_full_int8_io")
    out = tmp_path / "k.json"
    assert kernel_profile.main(["--models", folder, "--exits", "exit_5,exit_1", "--runs", "1",
                                "--warmup", "0", "--perf_seconds", "0", "--roof_tile", "16",
                                "--bandwidth_mb", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["threads"] == [1, 2] and result["load_start"] >= 0 and result["load_end"] >= 0
    assert set(result["roof"]["macs_per_s"]) == {"int8", "fp32"}
    assert all(set(r) == {"1", "2"} and min(r.values()) > 0
               for r in result["roof"]["macs_per_s"].values())
    assert {(b["mb"], b["threads"]) for b in result["roof"]["bandwidth"]} == {(1, 1), (1, 2)}
    assert [f["name"] for f in result["files"]] == ["exit_5", "exit_1"]
    for f in result["files"]:
        data = open(os.path.join(folder, f"{f['name']}.tflite"), "rb").read()
        assert {k: v["count"] for k, v in f["by_type"].items()} == op_counts(data)
        assert f["not_timed"] == [] and "perf" not in f
        eca = [r for r in f["ops"] if r["op"] == "CONV_2D" and r["out_shape"][1:3] == [1, 1]]
        assert eca and all(r["macs"] == r["out_shape"][3] ** 2 for r in eca)
        keras_convention = sum(r["macs"] for r in f["ops"]) - sum(
            r["macs"] - 3 * r["out_shape"][3] for r in eca)
        assert keras_convention == f["manifest_macs"] > 0
        assert f["macs"] == sum(t["macs"] for t in f["by_type"].values())
        for r in f["ops"]:
            assert set(r["bytes"]) == {"in", "weights", "out"} and r["bytes"]["out"] > 0
            assert r["speedup"] == pytest.approx(r["per_threads"]["1"]["ms"]
                                                 / r["per_threads"]["2"]["ms"])
            for p in r["per_threads"].values():
                assert p["bound"] in ("compute", "memory") and p["roof_fraction"] > 0
                assert 0 < p["min_ms"] <= p["ms"] and p["roof_ms"] > 0
        conv = f["by_type"]["CONV_2D"]
        assert conv["per_threads"]["2"]["gmacs_per_s"] > 0 and conv["macs_per_byte"] > 0
        assert sum(t["per_threads"]["2"]["share"] for t in f["by_type"].values()) == \
            pytest.approx(1.0)


def test_kernel_groups_name_the_vnni_and_isa_of_xnnpack_symbols():
    from benchmarks.kernel_profile import isa_of, kernel_group
    vnni = "xnn_qs8_qc8w_igemm_minmax_fp32_ukernel_7x16c8__avx512vnni_prfm"
    dw = "xnn_qs8_qc8w_dwconv_minmax_fp32_ukernel_9p32c__avx512skx_mul32"
    assert kernel_group(vnni) == "gemm/igemm, VNNI" and isa_of(vnni) == "avx512vnni_prfm"
    assert kernel_group("xnn_qs8_qc8w_gemm_minmax_fp32_ukernel_4x16c8__avx512skx_prfm") == \
        "gemm/igemm, int8 without VNNI"
    assert kernel_group(dw) == "depthwise conv (dwconv)" and isa_of(dw) == "avx512skx_mul32"
    assert kernel_group("xnn_qs8_vmul_minmax_fp32_ukernel__avx_mul16_ld64_u16") == \
        "multiply (vmul/vmulc)"
    assert kernel_group("__memmove_avx512_unaligned_erms").startswith("copy")
    assert kernel_group("PyEval_EvalFrameDefault").startswith("other") and isa_of("memcpy") is None


@pytest.mark.slow
def test_stage_handover_and_decision_cost_commands(tmp_path, export_tiny, with_gain):
    from benchmarks import decision_cost, stage_handover
    folder = export_tiny("int8_full_int8_io")
    out = tmp_path / "h.json"
    assert stage_handover.main(["--models", folder, "--runs", "2", "--warmup", "0",
                                "--threads", "1", "--op_types", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = result["exits"]
    files = read_manifest(folder)["files"]  # op counts as the exporter read them
    for side, names in (("exit", ["exit_5"]), ("stages", [f"stage_{s}" for s in range(1, 6)])):
        counts = {}
        for name in names:
            for op, n in files[name]["ops"].items():
                counts[op] = counts.get(op, 0) + n
        assert {op: t["count"] for op, t in result["op_types"][side].items()} == counts
    assert [r["exit"] for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:
        for name in ("copies", "views", "invokes", "runner", "runner_staged"):
            assert r[f"{name}_ratio"] == pytest.approx(
                r[name]["median_ms"] / r["monolithic"]["median_ms"])
        assert 0 < r["runner_own_ms"] < r["runner"]["median_ms"]
    gain_folder = with_gain(folder, tmp_path / "g", [0.1] * 5, {"margin": 0.1, "tolerance": 0})
    out = tmp_path / "d.json"
    assert decision_cost.main(["--models", gain_folder, "--sizes", "64,96", "--runs", "2",
                               "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["size"] for r in rows] == [64, 96]
    assert all(r["ratio"] == pytest.approx(r["one_thread"]["median_ms"]
                                           / r["default"]["median_ms"]) for r in rows)


def test_a_saving_with_every_image_at_one_exit_is_flagged():
    result = {"exits": [{"ratio": 1.0}], "score": {"ratio": 0.01},
              "export": {"tile": 512}, "models": {"exit_5": {"median_ms": 90.0},
                                                  "exit_1": {"median_ms": 50.0}},
              "early_exit": {"ratio": 0.2, "one_exit": True}}
    targets = bench.targets(result)
    assert targets["early_exit_over_always_last"]["met"] is None
    assert "one exit" in targets["early_exit_over_always_last"]["flag"]
    assert targets["exit_5_ms"]["met"] and not targets["exit_1_ms"]["met"]
    result["early_exit"]["one_exit"] = False
    assert bench.targets(result)["early_exit_over_always_last"]["met"]


def test_bad_input_is_one_error_line(tmp_path, capsys, export_tiny):
    assert benchmark.main(["--json", "x.json"]) == 2
    assert capsys.readouterr().err.startswith("error: --models is required")
    assert benchmark.main(["--models", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "manifest.json: no such file" in err
    assert len(err.strip().splitlines()) == 1
    assert benchmark.main(["--models", export_tiny("fp32"),
                           "--op_profile", "exit_9"]) == 2
    err = capsys.readouterr().err
    assert "--op_profile" in err and "no model exit_9" in err and len(err.splitlines()) == 1
    assert benchmark.main(["--parse_logs", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_image_set_without_opencv_says_how_to_install_it():
    code = ("import sys; sys.modules['cv2'] = None\n"
            "from rbqe_tf.harness.images import generated_set\n"
            "generated_set(64)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert "pip install opencv-python-headless" in proc.stderr.strip().splitlines()[-1]


# --- energy -------------------------------------------------------------------------

def _supply(root, name, **files):
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in files.items():
        (folder / key).write_text(f"{value}\n")
    return folder


def test_energy_from_energy_now(tmp_path):
    _supply(tmp_path, "AC", type="Mains", online=1)
    bat = _supply(tmp_path, "BAT0", type="Battery", status="Discharging", energy_now=5_000_000,
                  charge_counter=3_000_000, voltage_now=4_000_000)
    assert batteries(tmp_path) == [str(bat)]
    meter = EnergyMeter(tmp_path)
    meter.start(background=False)
    (bat / "energy_now").write_text("4999000\n")  # 1000 µWh = 3.6 J
    reading = meter.stop()
    assert reading["method"] == "energy_now" and reading["joules"] == pytest.approx(3.6)


def test_energy_from_charge_counter_and_voltage(tmp_path):
    bat = _supply(tmp_path, "battery", type="Battery", status="Discharging",
                  charge_counter=3_000_000, voltage_now=4_000_000, current_now=-500_000)
    meter = EnergyMeter(tmp_path)
    meter.start(background=False)
    (bat / "charge_counter").write_text("2999000\n")  # 1 mAh = 3.6 C
    (bat / "voltage_now").write_text("3800000\n")  # mean 3.9 V
    reading = meter.stop()
    assert reading["method"] == "charge_counter x voltage_now"
    assert reading["joules"] == pytest.approx(3.6 * 3.9)


def test_energy_from_sampled_current_and_voltage(tmp_path):
    _supply(tmp_path, "battery", type="Battery", status="Discharging",
            current_now=-500_000, voltage_now=4_000_000)  # 2 W
    now = [0.0]
    meter = EnergyMeter(tmp_path, clock=lambda: now[0])
    meter.start(background=False)
    for t in (1.0, 2.0, 3.0):
        now[0] = t
        meter.sample()
    now[0] = 3.5
    reading = meter.stop()
    assert reading["method"] == "current_now x voltage_now"
    assert reading["joules"] == pytest.approx(2.0 * 3.5)


def test_energy_not_available(tmp_path):
    assert EnergyMeter(tmp_path / "missing").stop()["reason"].startswith("no battery under")
    bat = _supply(tmp_path, "BAT0", type="Battery", status="Charging", energy_now=5_000_000)
    meter = EnergyMeter(tmp_path)
    meter.start(background=False)
    (bat / "energy_now").write_text("5001000\n")
    assert meter.stop()["joules"] is None
    (bat / "status").write_text("Discharging\n")
    meter.start(background=False)
    reading = meter.stop()  # the counter did not move
    assert reading["joules"] is None and "did not change" in reading["reason"]


# --- benchmark_model ----------------------------------------------------------------

CPU_LOG = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [20]
INFO: Num threads: [2]
INFO: Min warmup runs: [3]
INFO: Graph: [/data/local/tmp/rbqe/exit_5.tflite]
INFO: Enable op profiling: [1]
INFO: #threads used for CPU inference: [2]
INFO: Use xnnpack: [1]
INFO: Loaded model /data/local/tmp/rbqe/exit_5.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 179 out of 179 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions for subgraph 0.
INFO: The input model file size (MB): 1.23
INFO: Initialized session in 41.7ms.
INFO: Running benchmark for at least 3 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=4 first=201342 curr=150211 min=149870 max=201342 avg=163103 std=22050 p5=149870 median=150211 p95=201342

INFO: Running benchmark for at least 20 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=20 first=150998 curr=149001 min=147342 max=158110 avg=150432 std=2411 p5=147342 median=149876 p95=157002

INFO: Inference timings in us: Init: 41700, First inference: 201342, Warmup (avg): 163103, Inference (avg): 150432
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=12.5 overall=61.25
INFO: Overall peak memory footprint (MB) via periodic monitoring: 70.5
INFO: Profiling Info for Benchmark Initialization:
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t ModifyGraphWithDelegate\t        1\t    30.100\t    90.000%\t    90.000%\t     0.000\t        1
\t         AllocateTensors\t        1\t     3.300\t    10.000%\t   100.000%\t     0.000\t        2

INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t       DEPTHWISE_CONV_2D\t       31\t    61.200\t    41.000%\t    41.000%\t     0.000\t       31
\t                 CONV_2D\t       98\t    55.100\t    36.900%\t    77.900%\t     0.000\t       98
\t          TRANSPOSE_CONV\t       15\t    20.400\t    13.700%\t    91.600%\t     0.000\t       15
\t                     MUL\t       50\t    12.600\t     8.400%\t   100.000%\t     0.000\t       50

Timings (microseconds): count=20 first=150100 curr=149000 min=147000 max=158000 avg=149300 std=2400
Memory (bytes): count=0
194 nodes observed
"""

GPU_HEAD = """\
INFO: STARTING!
INFO: Graph: [/data/local/tmp/rbqe/stage_2.tflite]
INFO: Use gpu: [1]
INFO: Loaded model /data/local/tmp/rbqe/stage_2.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for GPU.
"""
GPU_TAIL = """\
INFO: Initialized session in 812.4ms.
INFO: Running benchmark for at least 3 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=14 first=98000 curr=30100 min=29800 max=98000 avg=35000 std=17000 p5=29800 median=30200 p95=98000

INFO: Running benchmark for at least 20 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=33 first=30500 curr=30011 min=29700 max=31900 avg=30300.5 std=480 p5=29750 median=30200 p95=31500

INFO: Inference timings in us: Init: 812400, First inference: 98000, Warmup (avg): 35000, Inference (avg): 30300.5
"""
GPU_FULL = GPU_HEAD + """\
VERBOSE: Replacing 52 out of 52 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions for the whole graph.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
INFO: Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.
""" + GPU_TAIL
GPU_PARTIAL = GPU_HEAD + """\
VERBOSE: Replacing 40 out of 52 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 3 partitions for the whole graph.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate w/ 1 delegate kernels.
""" + GPU_TAIL
GPU_FAILED = GPU_HEAD + """\
VERBOSE: Replacing 52 out of 52 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions for the whole graph.
ERROR: TfLiteGpuDelegate Init: TRANSPOSE_CONV: Unsupported op version
INFO: Created 0 GPU delegate kernels.
ERROR: TfLiteGpuDelegate Prepare: delegate is not initialized
ERROR: Node number 52 (TfLiteGpuDelegateV2) failed to prepare.
ERROR: Restored original execution plan after delegate application failure.
""" + GPU_TAIL
GPU_NO_DELEGATE = GPU_HEAD.replace("INFO: Created TensorFlow Lite delegate for GPU.\n",
                                   "ERROR: Failed to create GPU delegate.\n") + GPU_TAIL


def test_cpu_log_is_parsed():
    rec = benchmark_model.parse_log(CPU_LOG, "cpu_t2")
    assert rec["accepted"] and rec["backend"] == "cpu" and rec["threads"] == 2
    assert rec["graph"] == "/data/local/tmp/rbqe/exit_5.tflite"
    assert rec["mean_ms"] == pytest.approx(150.432) and rec["init_ms"] == pytest.approx(41.7)
    assert rec["first_ms"] == pytest.approx(201.342)
    assert rec["warmup_mean_ms"] == pytest.approx(163.103)
    assert (rec["runs"], rec["min_ms"], rec["median_ms"], rec["p95_ms"]) == (
        20, pytest.approx(147.342), pytest.approx(149.876), pytest.approx(157.002))
    assert rec["delta_overall_mb"] == 61.25 and rec["monitored_peak_mb"] == 70.5
    assert rec["delegation"] == [{"delegate": "TfLiteXNNPackDelegate", "nodes": 179, "of": 179,
                                  "partitions": 1}]
    assert [r["op"] for r in rec["op_profile"]] == ["DEPTHWISE_CONV_2D", "CONV_2D",
                                                    "TRANSPOSE_CONV", "MUL"]
    assert rec["op_profile"][0] == {"op": "DEPTHWISE_CONV_2D", "count": 31, "avg_ms": 61.2,
                                    "percent": 41.0}


def test_gpu_result_needs_every_node_delegated():
    full = benchmark_model.parse_log(GPU_FULL, "gpu")
    assert full["accepted"] and full["backend"] == "gpu"
    assert full["mean_ms"] == pytest.approx(30.3005)
    partial = benchmark_model.parse_log(GPU_PARTIAL, "gpu")
    assert not partial["accepted"] and "replaced 40 of 52 nodes" in partial["reason"]
    failed = benchmark_model.parse_log(GPU_FAILED, "gpu")
    assert not failed["accepted"] and "CPU fallback" in failed["reason"]
    none = benchmark_model.parse_log(GPU_NO_DELEGATE, None)  # "Use gpu: [1]" in the log
    assert none["backend"] == "gpu" and not none["accepted"]
    assert "ran on the CPU" in none["reason"]
    crashed = benchmark_model.parse_log(GPU_FULL.split("INFO: Initialized session")[0], "gpu")
    assert not crashed["accepted"] and "run failed" in crashed["reason"]


def test_parse_logs_cli_keeps_rejected_logs_out_of_results(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "exit_5__cpu_t2.log").write_text(CPU_LOG)
    (logs / "stage_2__gpu.log").write_text(GPU_PARTIAL)
    (logs / "stage_3__gpu.log").write_text(GPU_FULL.replace("stage_2", "stage_3"))
    out = tmp_path / "logs.json"
    assert benchmark.main(["--parse_logs", str(logs), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["configs"]) == {"cpu_t2", "gpu"}
    assert set(result["configs"]["gpu"]["models"]) == {"stage_3"}
    assert result["configs"]["cpu_t2"]["models"]["exit_5"]["mean_ms"] == pytest.approx(150.432)
    assert [(r["log"], r["model"]) for r in result["rejected"]] == [("stage_2__gpu.log",
                                                                     "stage_2")]


def test_command_lines_cover_every_model_and_config():
    manifest = {"files": {n: {"path": f"{n}.tflite"} for n in
                          ("exit_1", "stage_1", "score_jpeg")}}
    cfg = benchmark_model.configs((1, 2), gpu=True)
    lines = benchmark_model.command_lines(manifest, "/data/local/tmp/m/", "/data/local/tmp/logs",
                                          "/data/local/tmp/benchmark_model", cfg, runs=7,
                                          warmup=2, profile=True)
    assert lines[0] == "mkdir -p /data/local/tmp/logs"
    assert len(lines) == 1 + 3 + 3 + 2  # score models get no GPU line
    gpu = [line for line in lines if "__gpu.log" in line]
    assert [line.split("--graph=")[1].split()[0] for line in gpu] == [
        "/data/local/tmp/m/exit_1.tflite", "/data/local/tmp/m/stage_1.tflite"]
    line = next(line for line in lines if "exit_1__cpu_t2.log" in line)
    assert line.split() == ["/data/local/tmp/benchmark_model",
                            "--graph=/data/local/tmp/m/exit_1.tflite", "--num_threads=2",
                            "--use_xnnpack=true", "--use_gpu=false", "--enable_op_profiling=true",
                            "--num_runs=7", "--warmup_runs=2", ">",
                            "/data/local/tmp/logs/exit_1__cpu_t2.log", "2>&1"]
    assert "--use_gpu=true" in gpu[0] and "--use_xnnpack=false" in gpu[0]
    # The names the command lines give the logs are the names parse_logs reads back.
    assert benchmark_model.parse_log(GPU_FULL, "gpu")["accepted"]


def test_print_commands_cli(capsys, export_tiny):
    folder = export_tiny("fp32")
    assert benchmark.main(["--models", folder, "--print-commands", "--gpu",
                           "--device_dir", "/data/local/tmp/rbqe"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = read_manifest(folder)["files"]
    assert len(lines) == 1 + 2 * len(names) + (len(names) - 2)
    assert all(line.startswith("benchmark_model --graph=/data/local/tmp/rbqe/")
               for line in lines[1:])

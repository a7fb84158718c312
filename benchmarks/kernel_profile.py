"""Where an exit file's time goes: each op type against this CPU's measured roofline,
1 → 2 threads, and the XNNPACK microkernels that run it.

    python -m benchmarks.kernel_profile --models runs/edge/int8_512,runs/edge/fp32_256 \\
        --tile 512 --exits exit_5,exit_1 --json kernel_profile.json

- Every op of each file runs alone as a one-op model (``rbqe_tf.harness.op_profile``)
  at each ``--threads`` count, all counts round-robin in the same rounds; medians.
  MACs come from ``rbqe_tf.harness.op_macs``, bytes moved (activations read + weights
  + activations written) from the tensors' shapes and dtypes in the flatbuffer.
- The roof is measured here, not taken from a data sheet: the MAC rate of a large
  3×3 / 1×1 CONV_2D one-op model built in this script (int8 and fp32, through XNNPACK)
  and the bandwidth of NumPy copies (one thread, or two threads copying halves) at a
  few sizes; an op's roof time is max(MACs / peak, bytes / bandwidth at the size
  nearest its bytes), its "% of roof" that time over the measured one.
- ``perf record`` of a process invoking the file (when perf is present and allowed)
  attributes samples to XNNPACK microkernels, grouped by kind and ISA (VNNI or not),
  and ``nm`` lists which ISA variants of those kernels this LiteRT build contains.

``--tile`` re-shapes a smaller-tile export (``rbqe_tf.conversion.retile``: the same
weights and quantization, spatial sizes multiplied), so fp32 can be profiled at 512²
without a 512² fp32 export (~11.6 GB, docs/benchmarks.md). TensorFlow-free.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import ai_edge_litert
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from rbqe_tf.conversion.retile import retile
from rbqe_tf.files import write_text
from rbqe_tf.harness.latency import cpu_info, time_round_robin
from rbqe_tf.harness.op_macs import bytes_of
from rbqe_tf.harness.op_profile import time_ops
from rbqe_tf.litert.flatbuffer import operators, pack
from rbqe_tf.litert.interpreter import make_interpreter
from rbqe_tf.litert.manifest import read_manifest


# --- the roof ---------------------------------------------------------------------

def conv_model(dtype, hw, cin, cout, k):
    """A one-op CONV_2D .tflite (SAME padding, stride 1; int8 per-channel or fp32),
    built from the schema so the roof needs no TensorFlow."""
    rng = np.random.default_rng(0)
    int8 = dtype == "int8"

    def buffer(array=None):
        b = schema.BufferT()
        if array is not None:
            b.data = np.ascontiguousarray(array).view(np.uint8).ravel()
        return b

    def quant(scale, zero_point=None):
        q = schema.QuantizationParametersT()
        q.scale = [float(s) for s in scale]
        q.zeroPoint = [0] * len(scale) if zero_point is None else zero_point
        return q

    def tensor(name, shape, ttype, buf, q=None):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = name, shape, ttype, buf, q
        return t

    act = schema.TensorType.INT8 if int8 else schema.TensorType.FLOAT32
    w_scale = np.full(cout, 0.01)
    if int8:
        weights = rng.integers(-127, 128, (cout, k, k, cin)).astype(np.int8)
        bias = np.zeros(cout, np.int32)
    else:
        weights = rng.standard_normal((cout, k, k, cin)).astype(np.float32) * 0.05
        bias = np.zeros(cout, np.float32)
    sg = schema.SubGraphT()
    sg.tensors = [
        tensor("x", [1, hw, hw, cin], act, 0, quant([0.05]) if int8 else None),
        tensor("w", [cout, k, k, cin], act, 1, quant(w_scale) if int8 else None),
        tensor("b", [cout], schema.TensorType.INT32 if int8 else act, 2,
               quant(0.05 * w_scale) if int8 else None),
        tensor("y", [1, hw, hw, cout], act, 0, quant([0.1]) if int8 else None)]
    options = schema.Conv2DOptionsT()
    options.padding, options.strideW, options.strideH = schema.Padding.SAME, 1, 1
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.Conv2DOptions, options
    sg.operators, sg.inputs, sg.outputs = [op], [0], [3]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CONV_2D
    code.version = 3 if int8 else 1
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [sg]
    model.buffers = [buffer(), buffer(weights), buffer(bias)]
    return pack(model), hw * hw * cout * k * k * cin


# (k, Cin, Cout): the network's own width and GEMMs wide enough to fill the units
ROOF_CONVS = ((3, 32, 32), (3, 64, 64), (3, 128, 128), (1, 256, 256))


def measure_roof(threads, roof_tile, bandwidth_mb, runs):
    """{"macs_per_s": {dtype: {threads: rate}}, "convs": [...], "bandwidth": [...]}. A roof
    bounds what the machine can do, so each is the best round of the best shape (on a
    shared machine a median roof fell below ops' own medians); medians are kept too."""
    calls, macs = {}, {}
    for dtype in ("int8", "fp32"):
        for k, cin, cout in ROOF_CONVS:
            data, n = conv_model(dtype, roof_tile, cin, cout, k)
            for t in threads:
                it = make_interpreter(None, t, content=data)
                x = it.get_input_details()[0]
                it.set_tensor(x["index"], np.ones(x["shape"], x["dtype"]))
                calls[(dtype, k, cin, cout, t)] = it.invoke
            macs[(dtype, k, cin, cout)] = n
    stats = time_round_robin(calls, runs, 2)
    convs, peak = [], {}
    for (dtype, k, cin, cout, t), s in stats.items():
        rate = macs[(dtype, k, cin, cout)] / (s["min_ms"] / 1e3)
        convs.append({"dtype": dtype, "kernel": k, "cin": cin, "cout": cout, "tile": roof_tile,
                      "threads": t, "median_ms": s["median_ms"], "best_gmacs_per_s": rate / 1e9,
                      "median_gmacs_per_s": macs[(dtype, k, cin, cout)] / s["median_ms"] / 1e6})
        best = peak.setdefault(dtype, {})
        best[t] = max(best.get(t, 0.0), rate)
    pool = ThreadPoolExecutor(max(threads))
    copies, arrays = {}, []
    for mb in bandwidth_mb:
        n = int(mb * 2**20)
        src, dst = np.ones(n, np.uint8), np.zeros(n, np.uint8)
        arrays.append((src, dst))
        for t in threads:
            parts = [slice(i * n // t, (i + 1) * n // t) for i in range(t)]
            copies[(mb, t)] = (lambda s=src, d=dst, p=parts: list(pool.map(
                lambda part: np.copyto(d[part], s[part]), p)))
    stats = time_round_robin(copies, runs, 2)
    pool.shutdown()
    bandwidth = [{"mb": mb, "threads": t, "median_ms": s["median_ms"],  # read + write:
                  "gb_per_s": 2 * mb * 2**20 / (s["min_ms"] / 1e3) / 1e9,
                  "median_gb_per_s": 2 * mb * 2**20 / (s["median_ms"] / 1e3) / 1e9}
                 for (mb, t), s in stats.items()]
    return {"macs_per_s": peak, "convs": convs, "bandwidth": bandwidth}


def _bandwidth(roof, threads, nbytes):
    """Copy bandwidth (bytes/s) at ``threads`` measured at the size nearest ``nbytes`` moved."""
    rows = [b for b in roof["bandwidth"] if b["threads"] == threads]
    best = min(rows, key=lambda b: abs(np.log(max(nbytes, 1) / (2 * b["mb"] * 2**20))))
    return best["gb_per_s"] * 1e9


def roof_time(roof, dtype, threads, macs, nbytes):
    """(seconds at the roof, "compute" or "memory")."""
    t_mac = macs / roof["macs_per_s"][dtype][threads]
    t_mem = nbytes / _bandwidth(roof, threads, nbytes)
    return max(t_mac, t_mem), "compute" if t_mac > t_mem else "memory"


# --- per-op profile ------------------------------------------------------------------

def profile_file(path, threads, runs, warmup, roof, max_live_mb):
    with open(path, "rb") as f:
        data = f.read()
    model, ops = operators(data)
    sg = model.subgraphs[0]
    whole_s, timed, failed = time_ops(path, threads, runs, warmup, max_live_mb=max_live_mb)
    rows = []
    for o in timed:
        _, op, _ = ops[o["index"]]
        moved = bytes_of(model, op, sg)
        out = sg.tensors[op.outputs[0]]
        row = {"index": o["index"], "op": o["op"], "macs": o["macs"], "bytes": moved,
               "out_shape": [int(v) for v in out.shape],
               "dtype": "int8" if out.type == schema.TensorType.INT8 else "fp32"}
        row["per_threads"] = {t: _rates(roof, row, t, o["seconds"][t]) for t in threads}
        rows.append(row)
    lo, hi = threads[0], threads[-1]
    by_type = {}
    for r in rows:
        t = by_type.setdefault(r["op"], {"count": 0, "macs": 0, "bytes": 0, "dtype": r["dtype"],
                                         "s": {n: 0.0 for n in threads},
                                         "roof_s": {n: 0.0 for n in threads}})
        t["count"] += 1
        t["macs"] += r["macs"]
        t["bytes"] += sum(r["bytes"].values())
        for n in threads:
            t["s"][n] += r["per_threads"][n]["ms"] / 1e3
            t["roof_s"][n] += r["per_threads"][n]["roof_ms"] / 1e3
    totals = {n: sum(t["s"][n] for t in by_type.values()) for n in threads}
    types = {}
    for name, t in sorted(by_type.items(), key=lambda kv: -kv[1]["s"][hi]):
        types[name] = {"count": t["count"], "macs": t["macs"], "bytes": t["bytes"],
                       "macs_per_byte": t["macs"] / t["bytes"] if t["bytes"] else None,
                       "bound": roof_time(roof, t["dtype"], hi, t["macs"], t["bytes"])[1],
                       "speedup": t["s"][lo] / t["s"][hi] if t["s"][hi] else None,
                       "per_threads": {n: {
                           "ms": 1e3 * t["s"][n], "share": t["s"][n] / totals[n],
                           "gmacs_per_s": t["macs"] / t["s"][n] / 1e9 if t["macs"] else None,
                           "gb_per_s": t["bytes"] / t["s"][n] / 1e9,
                           "roof_fraction": t["roof_s"][n] / t["s"][n]} for n in threads}}
    for r in rows:
        r["speedup"] = r["per_threads"][lo]["ms"] / r["per_threads"][hi]["ms"]
    return {"file": path, "whole_median_ms": {n: 1e3 * float(np.median(whole_s[n]))
                                              for n in threads},
            "ops_sum_ms": {n: 1e3 * totals[n] for n in threads},
            "macs": sum(r["macs"] for r in rows), "by_type": types,
            "ops": sorted(rows, key=lambda r: -r["per_threads"][hi]["ms"]), "not_timed": failed}


def _rates(roof, row, threads, times):
    seconds, nbytes = float(np.median(times)), sum(row["bytes"].values())
    t_roof, bound = roof_time(roof, row["dtype"], threads, row["macs"], nbytes)
    return {"ms": 1e3 * seconds, "min_ms": 1e3 * min(times),
            "gmacs_per_s": row["macs"] / seconds / 1e9 if row["macs"] else None,
            "gb_per_s": nbytes / seconds / 1e9,
            "macs_per_byte": row["macs"] / nbytes if nbytes else None,
            "bound": bound, "roof_ms": 1e3 * t_roof, "roof_fraction": t_roof / seconds}


# --- kernels: perf samples and the build's ISA variants -------------------------------

_GROUPS = (  # (group, pattern on the symbol); first match wins
    ("depthwise conv (dwconv)", r"dwconv"),
    ("gemm/igemm, VNNI", r"q[a-z0-9]*8.*gemm.*vnni"),
    ("gemm/igemm, int8 without VNNI", r"q[a-z0-9]*8.*gemm"),
    ("gemm/igemm, fp32", r"f32.*gemm|f32.*ppmm"),
    ("multiply (vmul/vmulc)", r"vmul"),
    ("add (vadd)", r"vadd"),
    ("sigmoid", r"sigmoid"),
    ("reduce (MEAN)", r"rsum|rdsum|reduce|gavgpool|mean"),
    ("quantize/requantize/convert", r"vcvt|requant|quantize"),
    ("transpose-conv / deconvolution setup", r"deconv|subconv|transpose"),
    ("pad/fill", r"_pad|_fill|xx_pad|xx_fill"),
    ("copy/concatenate (memcpy, copy kernels)", r"memcpy|memmove|copy|concat"),
    ("packing weights", r"packw|pack_"),
    ("threadpool (dispatch, spin)", r"pthreadpool|thread_main|futex|sched_yield"),
    ("other XNNPACK/LiteRT", r"^xnn_|tflite|litert"),
)


def kernel_group(symbol):
    for group, pattern in _GROUPS:
        if re.search(pattern, symbol, re.IGNORECASE):
            return group
    return "other (Python, libc, kernel)"


def isa_of(symbol):
    """The ISA suffix of an XNNPACK microkernel name (``…ukernel_9p32c__avx512skx_mul32``)."""
    m = re.search(r"__([a-z0-9_]+)$", symbol)
    return m.group(1) if m and symbol.startswith("xnn_") else None


_PERF_CHILD = r"""
import os, sys, time
import numpy as np
from rbqe_tf.litert.interpreter import make_interpreter
path, threads, seconds, ctl, ack = sys.argv[1:6]
threads, seconds = int(threads), float(seconds)
it = make_interpreter(path, threads)
rng = np.random.default_rng(0)
for d in it.get_input_details():
    x = (rng.integers(-128, 128, d["shape"]) if d["dtype"] == np.int8 else rng.random(d["shape"]))
    it.set_tensor(d["index"], x.astype(d["dtype"]))
it.invoke()
def control(word):
    if ctl != "-":
        with open(ctl, "w") as f:
            f.write(word + "\n")
        with open(ack) as f:
            f.readline()
control("enable")
n, end = 0, time.perf_counter() + seconds
while time.perf_counter() < end:
    it.invoke()
    n += 1
control("disable")
print(n)
"""


def perf_kernels(path, threads, seconds):
    """Samples per microkernel symbol of a process invoking ``path`` for ``seconds``
    (``perf record -g``, counted from the first timed invoke with perf's control fifo),
    grouped by :func:`kernel_group`; {"status": why} when perf cannot run."""
    perf = shutil.which("perf")
    if perf is None:
        return {"status": "skipped: perf not found"}
    with tempfile.TemporaryDirectory() as tmp:
        data, ctl, ack = (os.path.join(tmp, n) for n in ("perf.data", "ctl", "ack"))
        os.mkfifo(ctl)
        os.mkfifo(ack)
        cmd = [perf, "record", "-g", "-o", data, "--control", f"fifo:{ctl},{ack}", "-D", "-1",
               "--", sys.executable, "-c", _PERF_CHILD, path, str(threads), str(seconds), ctl, ack]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            return {"status": "skipped: perf record failed: "
                    + (run.stderr.strip().splitlines() or ["?"])[-1]}
        invokes = int(run.stdout.split()[-1])
        rep = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-children",
                              "--sort", "symbol", "-g", "none", "--percent-limit", "0"],
                             capture_output=True, text=True)
    if rep.returncode != 0:
        return {"status": "skipped: perf report failed: " + rep.stderr.strip()[-200:]}
    samples = re.search(r"# Samples: (\S+)", rep.stdout)
    symbols = []
    for line in rep.stdout.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+\[(.)\]\s+(.+?)(?:\s+-\s+-)?\s*$", line)
        if m:
            symbols.append({"symbol": m.group(3), "share": float(m.group(1)) / 100,
                            "kernel": m.group(2) == "k"})
    symbols.sort(key=lambda s: -s["share"])
    groups = {}
    for s in symbols:
        g = groups.setdefault(kernel_group(s["symbol"]) if not s["kernel"]
                              else "other (Python, libc, kernel)", {"share": 0.0, "symbols": []})
        g["share"] += s["share"]
        g["symbols"].append({"symbol": s["symbol"], "share": s["share"],
                             "isa": isa_of(s["symbol"])})
    for g in groups.values():
        g["symbols"] = g["symbols"][:4]
    return {"status": "ok", "threads": threads, "seconds": seconds, "invokes": invokes,
            "samples": samples.group(1) if samples else None,
            "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1]["share"])),
            "top": [{**s, "isa": isa_of(s["symbol"])} for s in symbols[:15]]}


_FAMILIES = {"qs8 depthwise conv": r"xnn_qs8_qc8w_dwconv_\w+", "qs8 gemm": r"xnn_qs8_qc8w_gemm_\w+",
             "qs8 igemm": r"xnn_qs8_qc8w_igemm_\w+", "qs8 multiply": r"xnn_qs8_vmulc?_\w+",
             "qs8 add": r"xnn_qs8_vaddc?_\w+", "f32 depthwise conv": r"xnn_f32_dwconv_\w+",
             "f32 multiply": r"xnn_f32_vmulc?_\w+"}


def build_kernels():
    """ISA variants of the relevant microkernels that this LiteRT build contains (``nm``)."""
    nm = shutil.which("nm")
    lib = os.path.join(os.path.dirname(ai_edge_litert.__file__), "libpywrap_litert_common.so")
    if nm is None or not os.path.exists(lib):
        return {"status": "skipped: nm or " + lib + " not found"}
    out = subprocess.run([nm, lib], capture_output=True, text=True).stdout
    names = set(re.findall(r"xnn_\w+ukernel\w*", out))
    families = {}
    for family, pattern in _FAMILIES.items():
        isas = sorted({isa_of(n) for n in names if re.fullmatch(pattern, n) and isa_of(n)})
        families[family] = {"isas": isas, "vnni": any("vnni" in i for i in isas)}
    return {"status": "ok", "library": lib, "families": families}


# --- command -------------------------------------------------------------------------

def _load_file(folder, name, tile, tmp):
    """(path to profile, manifest, note) — re-shaped to ``tile`` when asked."""
    manifest = read_manifest(folder)
    path = os.path.join(folder, f"{name}.tflite")
    if not os.path.exists(path):
        raise SystemExit(f"--exits: {folder} has no {name}.tflite")
    if tile is None or tile == manifest["tile"]:
        return path, manifest, None
    if tile % manifest["tile"]:
        raise SystemExit(f"--tile {tile} is not a multiple of {folder}'s tile {manifest['tile']}")
    factor = tile // manifest["tile"]
    out = os.path.join(tmp, f"{os.path.basename(os.path.normpath(folder))}_{name}_{tile}.tflite")
    with open(path, "rb") as f:
        data = retile(f.read(), factor)
    with open(out, "wb") as f:
        f.write(data)
    return out, manifest, (f"re-shaped from {manifest['tile']}² to {tile}² "
                           "(rbqe_tf.conversion.retile)")


def _f(value, spec=".1f"):
    return "–" if value is None else format(value, spec)


def markdown(result, top=10):
    th = result["threads"]
    lo, hi = th[0], th[-1]
    roof = result["roof"]
    lines = [f"Load average (1 min) {result['load_start']:.1f} at the start, "
             f"{result['load_end']:.1f} at the end; {result['cpu'].get('model')}, "
             f"flags {', '.join(result['cpu'].get('flags', []))}."
             + (" The load was at or above the CPU count: the threads compete with other "
                "jobs, so the 1→2-thread speed-ups say more about the load than the kernels."
                if max(result["load_start"], result["load_end"]) >= (result["cpu"].get("cpus")
                                                                     or 1) else ""), "",
             "Roof (measured, best round): " + "; ".join(
                 f"{d} {', '.join(f'{v / 1e9:.0f}' for v in r.values())} GMAC/s "
                 f"({'/'.join(str(t) for t in r)} threads)" for d, r in roof["macs_per_s"].items())
             + "; copy " + ", ".join(f"{b['mb']:g} MiB × {b['threads']}t {b['gb_per_s']:.1f} GB/s"
                                     for b in roof["bandwidth"]) + ".", ""]
    for f in result["files"]:
        w, s = f["whole_median_ms"], f["ops_sum_ms"]
        lines += [f"**{f['label']}** ({f['macs'] / 1e9:.2f} GMAC"
                  + (f"; {f['note']}" if f.get("note") else "") + f"): whole file "
                  f"{w[lo]:.1f} ms at {lo} thread(s), {w[hi]:.1f} at {hi} "
                  f"(×{w[lo] / w[hi]:.2f}); one-op models sum to {s[lo]:.1f} / {s[hi]:.1f} ms.",
                  "",
                  f"| op | n | ms {lo}t | ms {hi}t | {lo}→{hi}t | % ({hi}t) | GMAC | MB moved | "
                  f"MAC/B | GMAC/s {hi}t | GB/s {hi}t | bound | % of roof {hi}t |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, t in f["by_type"].items():
            p, q = t["per_threads"][lo], t["per_threads"][hi]
            lines.append(f"| {name} | {t['count']} | {p['ms']:.1f} | {q['ms']:.1f} | "
                         f"{_f(t['speedup'], '.2f')} | {100 * q['share']:.1f} | "
                         f"{t['macs'] / 1e9:.3f} | {t['bytes'] / 1e6:.0f} | "
                         f"{_f(t['macs_per_byte'])} | {_f(q['gmacs_per_s'])} | "
                         f"{q['gb_per_s']:.1f} | {t['bound']} | {100 * q['roof_fraction']:.0f} |")
        lines += ["", f"Slowest single ops ({hi} threads):", "",
                  f"| # | op | output | ms {lo}t | ms {hi}t | {lo}→{hi}t | GMAC/s | GB/s | "
                  "MAC/B | bound | % of roof |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in f["ops"][:top]:
            p, q = r["per_threads"][lo], r["per_threads"][hi]
            lines.append(f"| {r['index']} | {r['op']} | {'×'.join(map(str, r['out_shape']))} | "
                         f"{p['ms']:.2f} | {q['ms']:.2f} | {r['speedup']:.2f} | "
                         f"{_f(q['gmacs_per_s'])} | {q['gb_per_s']:.1f} | "
                         f"{_f(q['macs_per_byte'])} | {q['bound']} | "
                         f"{100 * q['roof_fraction']:.0f} |")
        k = f.get("perf", {})
        if k.get("status") == "ok":
            lines += ["", f"perf ({k['threads']} threads, {k['invokes']} invokes, "
                      f"{k['samples']} samples): share of samples per kernel group", "",
                      "| group | % | top symbols |", "|---|---|---|"]
            for g, v in k["groups"].items():
                if v["share"] >= 0.005:
                    syms = "; ".join(f"`{s['symbol']}` {100 * s['share']:.1f}"
                                     for s in v["symbols"][:2])
                    lines.append(f"| {g} | {100 * v['share']:.1f} | {syms} |")
        elif k:
            lines += ["", f"perf: {k['status']}"]
        lines.append("")
    b = result["build_kernels"]
    if b.get("status") == "ok":
        lines.append("ISA variants in this LiteRT build: " + "; ".join(
            f"{fam}: {', '.join(v['isas']) or 'none'}" for fam, v in b["families"].items()) + ".")
    else:
        lines.append(f"ISA variants: {b['status']}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, help="export folders, comma-separated")
    p.add_argument("--exits", default="exit_5,exit_1", help="files of each folder to profile")
    p.add_argument("--tile", type=int, help="re-shape smaller-tile exports to this tile")
    p.add_argument("--threads", default="1,2", help="thread counts, interleaved (first → last "
                                                    "gives the speed-up)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--max_live_mb", type=int, default=4000,
                   help="memory budget of the one-op interpreters timed together")
    p.add_argument("--roof_tile", type=int, default=256, help="spatial size of the roof's convs")
    p.add_argument("--bandwidth_mb", default="8,64,512", help="copy sizes for the bandwidth")
    p.add_argument("--perf_seconds", type=float, default=10,
                   help="perf record length per file (0: no perf)")
    p.add_argument("--top", type=int, default=10, help="single ops listed per file")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")]
    result = {"command": "python -m benchmarks.kernel_profile " + " ".join(
                  argv if argv is not None else sys.argv[1:]),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "load_start": os.getloadavg()[0], "cpu": cpu_info(), "threads": threads,
              "runs": a.runs, "warmup": a.warmup}
    print(f"load average (1 min) {result['load_start']:.1f}; measuring the roof ...",
          file=sys.stderr)
    roof = measure_roof(threads, a.roof_tile, [float(v) for v in a.bandwidth_mb.split(",")],
                        max(a.runs, 10))
    result["roof"] = roof
    result["build_kernels"] = build_kernels()
    result["files"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for folder in a.models.split(","):
            for name in a.exits.split(","):
                path, manifest, note = _load_file(folder, name, a.tile, tmp)
                print(f"profiling {folder}/{name} ...", file=sys.stderr)
                entry = profile_file(path, threads, a.runs, a.warmup, roof, a.max_live_mb)
                entry.update(label=f"{os.path.basename(os.path.normpath(folder))}/{name} "
                                   f"({manifest['quantize']}, {a.tile or manifest['tile']}²)",
                             folder=folder, name=name, note=note, quantize=manifest["quantize"],
                             manifest_macs=manifest["macs"]["per_exit"][int(name.split("_")[1]) - 1]
                             if name.startswith("exit_") else None)
                if a.perf_seconds > 0:
                    entry["perf"] = perf_kernels(path, threads[-1], a.perf_seconds)
                result["files"].append(entry)
    result["load_end"] = os.getloadavg()[0]
    text = markdown(result, a.top)
    print(text)
    if a.json:
        write_text(a.json, json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

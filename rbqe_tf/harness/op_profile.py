"""Op-level timing of a .tflite file with ai-edge-litert alone (no benchmark_model).

Each operator is cut out into a one-op model (its non-constant inputs become the
model's inputs and its outputs the model's outputs; weights and quantization are
kept) and timed with the whole model's interpreter settings (XNNPACK on by default).
The whole model runs in the same timed rounds, so the sum of the op medians against
the whole model's median shows what the cut adds (per-invoke overhead, lost fusion).
On a phone, ``benchmark_model --enable_op_profiling=true`` gives the device's own
per-op times (``python -m export.benchmark --print_commands --profile``).
"""
import os
import tempfile

import numpy as np

from rbqe_tf.harness.latency import round_robin_seconds, stats_ms
from rbqe_tf.harness.op_macs import bytes_of, macs_of
from rbqe_tf.litert.flatbuffer import is_constant, operators, pack
from rbqe_tf.litert.interpreter import make_interpreter


def single_op_models(data):
    """[(op index, op type, MACs, one-op .tflite bytes)] for every operator of ``data``."""
    model, ops = operators(data)
    if len(model.subgraphs) != 1:
        raise ValueError("op profiling needs a model with one subgraph")
    sg = model.subgraphs[0]
    all_ops = sg.operators
    model.signatureDefs = None  # they name the whole model's inputs and outputs

    out = []
    for index, (name, op, _) in enumerate(ops):
        sg.operators = [op]
        sg.inputs = [i for i in op.inputs if i >= 0 and not is_constant(model, sg.tensors[i])]
        sg.outputs = list(op.outputs)
        out.append((index, name, macs_of(name, op, sg), pack(model)))
    sg.operators = all_ops
    return out


def _random_inputs(interpreter, rng):
    for d in interpreter.get_input_details():
        if np.issubdtype(d["dtype"], np.integer):
            info = np.iinfo(d["dtype"])
            x = rng.integers(info.min, int(info.max) + 1, d["shape"]).astype(d["dtype"])
        else:
            x = rng.random(d["shape"], np.float32).astype(d["dtype"])
        interpreter.set_tensor(d["index"], x)


def time_ops(path, thread_counts=(2,), runs=5, warmup=1, xnnpack=True, max_live_mb=None):
    """Every op of the .tflite file at ``path`` as a one-op model, and the whole file,
    at each of ``thread_counts``, timed round-robin in the same rounds (so every count
    sees the same background load).

    With ``max_live_mb`` the ops are timed in groups whose tensors (an estimate: three
    times the bytes each op reads and writes, per interpreter) fit that budget, the whole
    file in every group's rounds: a 512² fp32 file's one-op interpreters do not all fit
    in memory at once. → (whole: {threads: [seconds]}, ops: [{"index", "op", "macs",
    "seconds": {threads: [seconds]}}], not_timed: [{"index", "op", "error"}])."""
    with open(path, "rb") as f:
        data = f.read()
    model, file_ops = operators(data)
    sg = model.subgraphs[0]
    singles = single_op_models(data)
    budget = None if max_live_mb is None else max_live_mb * 2**20 / len(thread_counts)
    groups, size = [[]], 0
    for single, (_, op, _) in zip(singles, file_ops):
        need = 3 * sum(bytes_of(model, op, sg).values())
        if budget is not None and groups[-1] and size + need > budget:
            groups.append([])
            size = 0
        groups[-1].append(single)
        size += need
    rng = np.random.default_rng(0)
    whole = {}
    for n in thread_counts:
        whole[n] = make_interpreter(path, n, xnnpack)
        _random_inputs(whole[n], rng)
    whole_s = {n: [] for n in thread_counts}
    ops, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for group in groups:
            calls = {("whole", n): whole[n].invoke for n in thread_counts}
            timed = []
            for index, name, macs, op_data in group:
                op_path = os.path.join(tmp, f"op_{index}.tflite")
                with open(op_path, "wb") as f:
                    f.write(op_data)
                try:
                    for n in thread_counts:
                        interpreter = make_interpreter(op_path, n, xnnpack)
                        _random_inputs(interpreter, rng)
                        calls[(index, n)] = interpreter.invoke
                except (RuntimeError, ValueError) as e:  # reported, not fatal
                    failed.append({"index": index, "op": name, "error": str(e).splitlines()[0]})
                    for n in thread_counts:
                        calls.pop((index, n), None)
                    continue
                timed.append({"index": index, "op": name, "macs": macs, "seconds": {}})
            times = round_robin_seconds(calls, runs, warmup)
            for n in thread_counts:
                whole_s[n] += times[("whole", n)]
                for o in timed:
                    o["seconds"][n] = times[(o["index"], n)]
            ops += timed
            del calls, times  # the group's interpreters go before the next group's come
    return whole_s, ops, failed


def profile(path, num_threads=2, runs=5, warmup=1, xnnpack=True):
    """Per-op and per-op-type timing of the .tflite file at ``path`` (see module doc)."""
    whole_s, timed, failed = time_ops(path, (num_threads,), runs, warmup, xnnpack)
    stats = {o["index"]: stats_ms(o["seconds"][num_threads]) for o in timed}
    stats["whole"] = stats_ms(whole_s[num_threads])
    meta = {o["index"]: (o["op"], o["macs"]) for o in timed}
    ops = [{"index": i, "op": name, "macs": macs, "median_ms": stats[i]["median_ms"]}
           for i, (name, macs) in meta.items()]
    total = sum(o["median_ms"] for o in ops)
    by_type = {}
    for o in ops:
        t = by_type.setdefault(o["op"], {"count": 0, "ms": 0.0, "macs": 0})
        t["count"] += 1
        t["ms"] += o["median_ms"]
        t["macs"] += o["macs"]
    for t in by_type.values():
        t["share"] = t["ms"] / total if total else None
        t["gmacs_per_s"] = t["macs"] / t["ms"] / 1e6 if t["macs"] and t["ms"] else None
    return {"file": os.path.basename(path), "threads": num_threads, "xnnpack": xnnpack,
            "runs": runs, "whole_median_ms": stats["whole"]["median_ms"],
            "ops_sum_ms": total,
            "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["ms"])),
            "slowest": sorted(ops, key=lambda o: -o["median_ms"])[:10],
            "not_timed": failed}


def markdown(result):
    """Table by op type: count, summed median ms, share of the ops' sum, GMAC, GMAC/s."""
    lines = [f"`{result['file']}`, {result['threads']} threads, XNNPACK "
             f"{'on' if result['xnnpack'] else 'off'}: whole model {result['whole_median_ms']:.1f} "
             f"ms (median); one-op models sum to {result['ops_sum_ms']:.1f} ms"
             + (f" ({len(result['not_timed'])} ops could not run alone)" if result["not_timed"]
                else "") + ".", "",
             "| op | count | ms (sum of medians) | % of ops' time | GMAC | GMAC/s |",
             "|---|---|---|---|---|---|"]
    for name, t in result["by_type"].items():
        gmacs = "–" if t["gmacs_per_s"] is None else f"{t['gmacs_per_s']:.1f}"
        lines.append(f"| {name} | {t['count']} | {t['ms']:.2f} | {100 * t['share']:.1f} | "
                     f"{t['macs'] / 1e9:.3f} | {gmacs} |")
    return "\n".join(lines) + "\n"

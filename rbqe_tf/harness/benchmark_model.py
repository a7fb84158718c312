"""The official TFLite ``benchmark_model`` binary: command lines for an export, and
its logs parsed into the harness's JSON.

Command lines (one per model file and configuration) write one log each, named
``<model>__<config>.log``; configurations are ``cpu_t<N>`` (XNNPACK), ``cpu_t<N>_noxnnpack``
and ``gpu``. A GPU log counts as a GPU result only if the GPU delegate replaced *every*
node ("Replacing N out of N node(s) with delegate (TfLiteGpuDelegateV2) node") and no
delegate failure was logged; otherwise the model (partly) ran on the CPU and the log is
listed under ``rejected`` with the reason, never as a GPU timing.
"""
import os
import re
import shlex

_NUM = r"([-+0-9.eE]+)"
_TIMINGS = re.compile(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
                      rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}")
_COUNT = re.compile(rf"^(?:\w+: )?count=(\d+) first={_NUM} curr={_NUM} min={_NUM} max={_NUM} "
                    rf"avg={_NUM} std={_NUM}(?: p5={_NUM} median={_NUM} p95={_NUM})?")
_REPLACING = re.compile(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate "
                        r"\((\w+)\) node, yielding (\d+) partitions")
_GRAPH = re.compile(r"Graph: \[(.*)\]")
_THREADS = re.compile(r"Num threads: \[(\d+)\]")
_MEMORY = {
    "peak_init_mb": re.compile(rf"Peak memory footprint \(MB\): init={_NUM}"),
    "peak_overall_mb": re.compile(rf"Peak memory footprint \(MB\): init={_NUM} overall={_NUM}"),
    "delta_init_mb": re.compile(rf"Memory footprint delta from the start of the tool \(MB\): "
                                rf"init={_NUM}"),
    "delta_overall_mb": re.compile(rf"Memory footprint delta from the start of the tool "
                                   rf"\(MB\): init={_NUM} overall={_NUM}"),
    "monitored_peak_mb": re.compile(rf"Overall peak memory footprint \(MB\) via periodic "
                                    rf"monitoring: {_NUM}"),
}
_GPU_DELEGATE = re.compile(r"gpu|metal|opencl", re.IGNORECASE)
_FALLBACK = ("Restored original execution plan after delegate application failure",
             "Created 0 GPU delegate kernels", "will not be executed by the delegate",
             "partially executed by the delegate", "Failed to apply", "failed to prepare",
             "Falling back to")


def configs(threads=(1, 2), xnnpack=True, noxnnpack=False, gpu=False):
    """Configuration name → benchmark_model flags."""
    out = {}
    for t in threads:
        if xnnpack:
            out[f"cpu_t{t}"] = {"num_threads": t, "use_xnnpack": "true", "use_gpu": "false"}
        if noxnnpack:
            out[f"cpu_t{t}_noxnnpack"] = {"num_threads": t, "use_xnnpack": "false",
                                          "use_gpu": "false"}
    if gpu:
        out["gpu"] = {"num_threads": max(threads), "use_xnnpack": "false", "use_gpu": "true"}
    return out


def command_lines(manifest, model_dir, log_dir, binary="benchmark_model", configurations=None,
                  runs=20, warmup=3, profile=False):
    """Shell command lines (strings) benchmarking every model of ``manifest``.

    ``model_dir``/``log_dir`` are paths as the device sees them. Score models are CPU-only
    by design (ROUND, float32), so they get no GPU line.
    """
    configurations = configurations or configs()
    lines = [f"mkdir -p {shlex.quote(log_dir)}"]
    for config, flags in configurations.items():
        for name, entry in manifest["files"].items():
            if flags["use_gpu"] == "true" and name.startswith("score_"):
                continue
            args = [binary, f"--graph={model_dir.rstrip('/')}/{entry['path']}",
                    *(f"--{k}={v}" for k, v in flags.items()),
                    f"--enable_op_profiling={'true' if profile else 'false'}",
                    f"--num_runs={runs}", f"--warmup_runs={warmup}"]
            log = f"{log_dir.rstrip('/')}/{name}__{config}.log"
            lines.append(" ".join(shlex.quote(a) for a in args) + f" > {shlex.quote(log)} 2>&1")
    return lines


def _op_profile(lines):
    """Rows of the "Summary by node type" table of the regular runs (else the last one)."""
    tables, heading, i = [], "", 0
    while i < len(lines):
        line = lines[i]
        if "Profiling Info for" in line:
            heading = line
        if "Summary by node type" in line and i + 1 < len(lines) and "[Node type]" in lines[i + 1]:
            rows, i = [], i + 2
            while i < len(lines) and lines[i].strip():
                cells = [c.strip() for c in lines[i].split("\t") if c.strip()]
                if len(cells) < 4:
                    break
                rows.append({"op": cells[0], "count": int(cells[1]), "avg_ms": float(cells[2]),
                             "percent": float(cells[3].rstrip("%"))})
                i += 1
            tables.append((heading, rows))
            continue
        i += 1
    regular = [rows for heading, rows in tables if "Regular Benchmark Runs" in heading]
    return (regular or [rows for _, rows in tables] or [None])[-1]


def parse_log(text, config=None):
    """One benchmark_model log → a record (times in ms) with ``accepted`` and ``reason``."""
    lines = [line.rstrip("\r") for line in text.splitlines()]
    rec = {"config": config, "graph": None, "threads": None}
    for pattern, key in ((_GRAPH, "graph"), (_THREADS, "threads")):
        m = next((m for m in map(pattern.search, lines) if m), None)
        if m:
            rec[key] = int(m.group(1)) if key == "threads" else m.group(1)
    timing_at = next((i for i, line in enumerate(lines) if _TIMINGS.search(line)), None)
    if timing_at is not None:
        init, first, warm, mean = map(float, _TIMINGS.search(lines[timing_at]).groups())
        rec.update(init_ms=init / 1e3, first_ms=first / 1e3, warmup_mean_ms=warm / 1e3,
                   mean_ms=mean / 1e3)
        counts = [m for m in map(_COUNT.search, lines[:timing_at]) if m]
        if counts:
            g = counts[-1].groups()
            rec.update(runs=int(g[0]), min_ms=float(g[3]) / 1e3, max_ms=float(g[4]) / 1e3)
            if g[8] is not None:
                rec.update(median_ms=float(g[8]) / 1e3, p95_ms=float(g[9]) / 1e3)
    for key, pattern in _MEMORY.items():
        m = next((m for m in map(pattern.search, lines) if m), None)
        if m:
            rec[key] = float(m.groups()[-1])
    rec["delegation"] = [{"delegate": m.group(3), "nodes": int(m.group(1)),
                          "of": None if m.group(2) is None else int(m.group(2)),
                          "partitions": int(m.group(4))}
                         for m in map(_REPLACING.search, lines) if m]
    rec["op_profile"] = _op_profile(lines)
    rec["errors"] = [line for line in lines if line.startswith("ERROR")]
    gpu_requested = ((config or "").startswith("gpu") or any("Use gpu: [1]" in line
                                                             for line in lines))
    rec["backend"] = "gpu" if gpu_requested else "cpu"
    rec["accepted"], rec["reason"] = True, None
    if timing_at is None:
        rec["accepted"], rec["reason"] = False, "no 'Inference timings' line (the run failed)"
    elif gpu_requested:
        rec["accepted"], rec["reason"] = _gpu_verdict(rec["delegation"], lines)
    return rec


def _gpu_verdict(delegation, lines):
    gpu = [d for d in delegation if _GPU_DELEGATE.search(d["delegate"])]
    fallback = next((f for f in _FALLBACK if any(f in line for line in lines)), None)
    if not gpu:
        return False, "no GPU delegate 'Replacing … node(s)' line: the model ran on the CPU"
    d = gpu[-1]
    if d["of"] is None:
        return False, (f"{d['delegate']} replaced {d['nodes']} node(s) of an unknown total "
                       "(old log format): full delegation not shown")
    if d["nodes"] != d["of"]:
        return False, (f"{d['delegate']} replaced {d['nodes']} of {d['of']} nodes: "
                       "the rest ran on the CPU")
    if fallback:
        return False, f"delegate failure logged ({fallback!r}): CPU fallback"
    return True, None


def parse_logs(folder):
    """``{"configs": {config: {model: record}}, "rejected": [records]}`` of the
    ``<model>__<config>.log`` files in ``folder`` (others are parsed with config None,
    named after the graph in the log)."""
    configs_, rejected = {}, []
    for name in sorted(os.listdir(folder)):
        if not name.endswith((".log", ".txt")):
            continue
        stem = name.rsplit(".", 1)[0]
        model, _, config = stem.partition("__")
        with open(os.path.join(folder, name), errors="replace") as f:
            rec = parse_log(f.read(), config or None)
        if not config and rec["graph"]:
            model = os.path.splitext(os.path.basename(rec["graph"]))[0]
        rec.update(model=model, log=name)
        if rec["accepted"]:
            configs_.setdefault(rec["config"] or rec["backend"], {})[model] = rec
        else:
            rejected.append(rec)
    return {"configs": configs_, "rejected": rejected}

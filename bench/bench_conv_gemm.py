"""The implicit-GEMM convolution kernels (``lasagne::conv_igemm``, the GPU
body of the 'gemm' algorithm / ``Conv2DMMLayer``) against cuDNN through
``F.conv2d`` / ``F.conv3d``, on the same tensors in the same run.

What it measures (CUDA events, L2 flushed before each call, median):

1. comparison, for each case (VGG-16 conv3, ResNet-50 3x3, C3D conv2) and
   variant (bf16 channels-last, fp32 channels-last, fp32 NCHW; fp32 uses
   TF32 as ``torch.backends.cudnn.allow_tf32`` says, for both sides):
   forward and forward+backward time, TFLOP/s and fraction of the measured
   matmul ceiling, peak memory above the inputs (``bench.common.peak_memory``)
   and its ratio, error against cuDNN, bitwise reproducibility of our
   gradients; cuDNN with ``benchmark=False`` (what users get by default)
   and ``benchmark=True`` (its best algorithm);
2. a block-size sweep of each kernel (forward, dgrad, wgrad) against the
   matching cuDNN pass alone (``aten.convolution_backward`` with one output
   asked for), every configuration checked against cuDNN;
3. the weight gradient's split count (workspace vs parallelism).

Kernels are compiled ahead in a pool of processes (Triton's disk cache then
serves the timing process), so a full run fits in one call.

    python -m bench.bench_conv_gemm                       # everything (default)
    python -m bench.bench_conv_gemm --sweep full          # every tile shape/depth
    python -m bench.bench_conv_gemm --sweep none --cases vgg16-conv3
    python -m bench.run --only bench_conv_gemm            # inside the suite

The last lines printed are the comparison table and, per kernel, the best
configurations (a literal to paste into ``conv_kernels.TUNED``). Full
numbers go to ``<out>/conv_gemm-<gpu>-<date>.json`` (``--out``, default
``$OUT`` or ``bench/results``).
"""

import argparse
import concurrent.futures as futures
import datetime
import json
import multiprocessing
import os
import re
import sys
import time
import traceback

import torch
import torch.nn.functional as F

from bench.common import ceilings, peak_memory, time_cuda

# name, batch, in channels, out channels, filter, input size, stride, pad
CASES = {
    "vgg16-conv3": (64, 256, 256, (3, 3), (56, 56), (1, 1), (1, 1)),
    "resnet50-3x3": (128, 64, 64, (3, 3), (56, 56), (1, 1), (1, 1)),
    "c3d-conv2": (16, 64, 128, (3, 3, 3), (16, 56, 56), (1, 1, 1), (1, 1, 1)),
    # a strided one, so that the phase-split data gradient is timed too
    "resnet50-3x3-s2": (128, 128, 128, (3, 3), (56, 56), (2, 2), (1, 1)),
}
VARIANTS = {"bf16-cl": (torch.bfloat16, True), "fp32-cl": (torch.float32, True),
            "fp32-nchw": (torch.float32, False), "bf16-nchw": (torch.bfloat16, False)}
DEFAULT_CASES = ("vgg16-conv3", "resnet50-3x3", "c3d-conv2", "resnet50-3x3-s2")
DEFAULT_VARIANTS = ("bf16-cl", "fp32-cl", "fp32-nchw")
SWEEP_CASES = ("vgg16-conv3", "resnet50-3x3")
SWEEP_VARIANTS = ("bf16-cl", "fp32-cl", "fp32-nchw")
REPEAT = 20
DEVICE = "cuda"
SPLITS = (1, 2, 4, 8, 16, 32, 64)


def _ck():
    from lasagne.ops.triton import conv_kernels
    return conv_kernels


def _op():
    from lasagne.ops import conv_gemm_cuda
    return conv_gemm_cuda


def make_tensors(case, variant, seed=0):
    """x, w, gy (output gradient) on CUDA for one case and variant."""
    batch, cin, cout, f, size, stride, pad = CASES[case]
    dtype, cl = VARIANTS[variant]
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn((batch, cin) + size, device=DEVICE, dtype=dtype, generator=g)
    fan_in = cin * torch.tensor(f).prod().item()
    w = (torch.randn((cout, cin) + f, device=DEVICE, generator=g) / fan_in ** 0.5).to(dtype)
    out = _ck().out_shape(x.shape, w.shape, stride, pad)
    gy = torch.randn(out, device=DEVICE, dtype=dtype, generator=g)
    if cl:
        fmt = torch.channels_last if len(size) == 2 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
        gy = gy.contiguous(memory_format=fmt)
    return x, w, gy


def flops(case):
    batch, cin, cout, f, size, stride, pad = CASES[case]
    out = _ck().out_shape((batch, cin) + size, (cout, cin) + f, stride, pad)
    n = 1
    for s in out[2:]:
        n *= s
    k = 1
    for s in f:
        k *= s
    return 2 * batch * n * cout * cin * k


def _rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# --- the kernels alone, for a given configuration -------------------------------------------------

def kernel_call(kind, case, variant, tensors, config=None, split=None):
    """A closure launching one kernel on ``tensors`` with ``config``."""
    ck = _ck()
    _, _, _, _, _, stride, pad = CASES[case]
    x, w, gy = tensors
    cl = VARIANTS[variant][1]
    if kind == "fwd":
        return lambda: ck.conv_forward(x, w, stride, pad, 1, config=config)
    if kind == "dgrad":
        return lambda: ck.conv_dgrad(gy, w, x.shape, stride, pad, 1, channels_last=cl,
                                     config=config)
    return lambda: ck.conv_wgrad(x, gy, w.shape, stride, pad, 1, config=config, split=split)


def cudnn_call(kind, case, tensors):
    """The matching cuDNN pass: forward, or the backward with only dx or
    only dw asked for."""
    _, _, _, f, _, stride, pad = CASES[case]
    x, w, gy = tensors
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    if kind == "fwd":
        return lambda: conv(x, w, None, stride, pad)
    mask = [kind == "dgrad", kind == "wgrad", False]
    return lambda: torch.ops.aten.convolution_backward(
        gy, x, w, None, list(stride), list(pad), [1] * len(stride), False,
        [0] * len(stride), 1, mask)


def op_step(case, tensors, ours):
    """Forward+backward (both gradients) through our op or cuDNN."""
    _, _, _, f, _, stride, pad = CASES[case]
    x, w, gy = tensors
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    conv_igemm = _op().conv_igemm

    def step():
        y = conv_igemm(x, w, stride, pad, 1) if ours else conv(x, w, None, stride, pad)
        return (y,) + torch.autograd.grad(y, (x, w), gy)
    return step


def op_fwd(case, tensors, ours):
    _, _, _, f, _, stride, pad = CASES[case]
    x, w, _ = tensors
    conv = F.conv2d if x.ndim == 4 else F.conv3d
    conv_igemm = _op().conv_igemm
    if ours:
        return lambda: conv_igemm(x, w, stride, pad, 1)
    return lambda: conv(x, w, None, stride, pad)


# --- ahead-of-time compilation in a process pool --------------------------------------------------

_WORKER_TENSORS = {}


def _worker_problem(case, variant):
    key = (case, variant)
    if key not in _WORKER_TENSORS:
        _WORKER_TENSORS.clear()
        torch.cuda.empty_cache()
        tensors = make_tensors(case, variant)
        refs = {}
        for kind in ("fwd", "dgrad", "wgrad"):
            r = cudnn_call(kind, case, tensors)()
            refs[kind] = r if kind == "fwd" else r[0 if kind == "dgrad" else 1]
        _WORKER_TENSORS[key] = (tensors, refs)
    return _WORKER_TENSORS[key]


def _compile_job(job):
    """Run one kernel launch once (compiling it into Triton's disk cache) and
    check its result against cuDNN; returns ``(job, error or None)``."""
    kind, case, variant, config, split = job
    try:
        tensors, refs = _worker_problem(case, variant)
        if kind == "op":
            op_step(case, tensors, True)()
            torch.cuda.synchronize()
            return job, None
        out = kernel_call(kind, case, variant, tensors, config, split)()
        torch.cuda.synchronize()
        err = _rel(out, refs[kind])
        if not err < 3e-2:  # NaN fails too
            return job, "wrong result: relative error {:.2e} vs cuDNN".format(err)
        return job, None
    except Exception as e:  # noqa: BLE001 - reported, the config is skipped
        return job, "{}: {}".format(type(e).__name__, (str(e).splitlines() or [""])[0][:200])


def precompile(jobs, workers):
    """Compile (and check) ``jobs`` in ``workers`` spawned processes, which
    fills Triton's disk cache for the timing process and keeps a crashing
    configuration out of it. Returns ``{job: error or None}``; jobs that a
    broken pool never finished are left out (compiled lazily later)."""
    if not jobs:
        return {}
    if workers <= 1:
        return dict(_compile_job(j) for j in jobs)
    # group jobs by problem so that each worker allocates few tensors
    jobs = sorted(jobs, key=lambda j: (j[1], j[2], j[0]))
    ctx = multiprocessing.get_context("spawn")
    done = {}
    try:
        with futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            pending = [pool.submit(_compile_job, j) for j in jobs]
            for f in futures.as_completed(pending):
                job, err = f.result()
                done[job] = err
    except Exception as e:  # noqa: BLE001 - e.g. a worker died: time what is known
        print("precompile: pool failed ({}: {}); {} of {} jobs done".format(
            type(e).__name__, e, len(done), len(jobs)), flush=True)
    return done


# --- measurements ---------------------------------------------------------------------------------

def compare(case, variant, ceiling):
    """Our op vs cuDNN (benchmark off and on): forward, forward+backward."""
    tensors = make_tensors(case, variant)
    fl = flops(case)
    row = {"case": case, "variant": variant}
    # correctness and reproducibility
    ours = op_step(case, tensors, True)()
    row["kernels"] = kernel_resources()
    ref = op_step(case, tensors, False)()
    again = op_step(case, tensors, True)()
    row["rel_err_y"], row["rel_err_dx"], row["rel_err_dw"] = (
        _rel(a, b) for a, b in zip(ours, ref))
    row["bitwise_reproducible"] = all(torch.equal(a, b) for a, b in zip(ours, again))
    del ours, ref, again
    old = torch.backends.cudnn.benchmark
    try:
        for label, ours_flag, bench_flag in (("ours", True, False), ("cudnn", False, False),
                                            ("cudnn_bm", False, True)):
            torch.backends.cudnn.benchmark = bench_flag
            fwd = op_fwd(case, tensors, ours_flag)
            step = op_step(case, tensors, ours_flag)
            fwd(), step()  # cuDNN benchmark mode picks its algorithms here
            torch.cuda.empty_cache()
            row[label + "_fwd_mem"] = peak_memory(fwd)
            row[label + "_step_mem"] = peak_memory(step)
            row[label + "_fwd_ms"] = time_cuda(fwd, repeat=REPEAT)["median_ms"]
            row[label + "_step_ms"] = time_cuda(step, repeat=REPEAT)["median_ms"]
    finally:
        torch.backends.cudnn.benchmark = old
    for part, mult in (("fwd", 1), ("step", 3)):
        row["ours_{}_tflops".format(part)] = mult * fl / row["ours_{}_ms".format(part)] / 1e9
        row["cudnn_{}_tflops".format(part)] = mult * fl / row["cudnn_{}_ms".format(part)] / 1e9
        if ceiling:
            row["ours_{}_frac_peak".format(part)] = row["ours_{}_tflops".format(part)] * 1e12 \
                / ceiling
        row["{}_time_ratio".format(part)] = row["ours_{}_ms".format(part)] / row[
            "cudnn_{}_ms".format(part)]
        row["{}_time_ratio_bm".format(part)] = row["ours_{}_ms".format(part)] / row[
            "cudnn_bm_{}_ms".format(part)]
        row["{}_mem_ratio".format(part)] = row["ours_{}_mem".format(part)] / max(
            1, row["cudnn_{}_mem".format(part)])
    del tensors
    torch.cuda.empty_cache()
    return row


def kernel_resources():
    """Registers, spills, shared memory and matrix instructions of the
    kernels of the latest forward/dgrad/wgrad launches."""
    out = {}
    for kind, k in _ck().LAST_KERNELS.items():
        if getattr(k, "metadata", None) is None:  # the interpreter compiles nothing
            continue
        info = {"shared": getattr(k.metadata, "shared", None),
                "regs": getattr(k, "n_regs", None), "spills": getattr(k, "n_spills", None),
                "warps": getattr(k.metadata, "num_warps", None),
                "stages": getattr(k.metadata, "num_stages", None)}
        try:
            sass = k.asm["sass"]
            info["HGMMA"] = sass.count("HGMMA")
            info["HMMA"] = sass.count("HMMA")
            info["LDGSTS.128"] = sass.count("LDGSTS.E.BYPASS.128") + sass.count("LDGSTS.E.128")
            info["LDGSTS"] = sass.count("LDGSTS")
            info["LDL/STL"] = sass.count("LDL") + sass.count("STL")
        except Exception as e:  # noqa: BLE001 - no disassembler: resources only
            info["sass"] = type(e).__name__
        out[kind] = info
    return out


def sweep(case, variant, kind, configs, compiled):
    """Time every configuration of one kernel; each checked against cuDNN."""
    tensors = make_tensors(case, variant)
    fl = flops(case)
    ref = cudnn_call(kind, case, tensors)()
    if kind != "fwd":
        ref = ref[0] if kind == "dgrad" else ref[1]
    base_ms = time_cuda(cudnn_call(kind, case, tensors), repeat=REPEAT)["median_ms"]
    default = _default(kind, case, variant)
    out = {"cudnn_ms": base_ms, "default": list(default), "configs": [],
           "tuned_key": list(_tuned_key(kind, case, variant))}
    for cfg in configs:
        entry = {"config": list(cfg)}
        err = compiled.get((kind, case, variant, cfg, None))
        if err:
            entry["error"] = err
            out["configs"].append(entry)
            continue
        try:
            call = kernel_call(kind, case, variant, tensors, cfg)
            entry["rel_err"] = _rel(call(), ref)
            entry["ms"] = time_cuda(call, repeat=REPEAT)["median_ms"]
            entry["tflops"] = fl / entry["ms"] / 1e9
            entry["ratio_vs_cudnn"] = entry["ms"] / base_ms
        except Exception as e:  # noqa: BLE001
            entry["error"] = "{}: {}".format(type(e).__name__, str(e).splitlines()[0][:200])
        out["configs"].append(entry)
    del tensors
    torch.cuda.empty_cache()
    return out


def split_sweep(case, variant, compiled):
    """Weight gradient with the default block sizes and each split count:
    time and workspace bytes."""
    ck = _ck()
    tensors = make_tensors(case, variant)
    x, w, gy = tensors
    cfg = _default("wgrad", case, variant)
    rows = []
    for split in SPLITS + (None,):
        if compiled.get(("wgrad", case, variant, cfg, split)):
            continue
        call = kernel_call("wgrad", case, variant, tensors, cfg, split)
        ms = time_cuda(call, repeat=REPEAT)["median_ms"]
        mem = peak_memory(call) - w.numel() * w.element_size()
        rows.append({"split": split if split is not None else "auto", "ms": ms,
                     "workspace_bytes": mem})
    del tensors
    torch.cuda.empty_cache()
    return {"config": list(cfg), "cap_bytes": ck.wgrad_workspace_cap(x, gy), "rows": rows}


def _default(kind, case, variant):
    ck = _ck()
    batch, cin, cout, f, size, stride, pad = CASES[case]
    positions = 1
    for s in ck.out_shape((batch, cin) + size, (cout, cin) + f, stride, pad)[2:]:
        positions *= s
    return ck.default_config(kind, VARIANTS[variant][0], cin, cout, batch * positions,
                             VARIANTS[variant][1])


def _tuned_key(kind, case, variant):
    batch, cin, cout = CASES[case][:3]
    dtype, cl = VARIANTS[variant]
    return (kind, str(dtype).replace("torch.", ""), "cl" if cl else "planar", cin, cout)


# --- driver ---------------------------------------------------------------------------------------

def run(results, cases=DEFAULT_CASES, variants=DEFAULT_VARIANTS, sweep_mode="none",
        sweep_cases=SWEEP_CASES, sweep_variants=SWEEP_VARIANTS, workers=None):
    """Append rows to ``results['rows']`` (see :mod:`bench.run`) and the
    details to ``results['conv_gemm']``."""
    ck = _ck()
    peak = results.get("ceilings") or {}
    detail = results.setdefault("conv_gemm", {"compare": [], "sweeps": {}, "splits": {}})
    workers = workers or min(16, os.cpu_count() or 1)
    # 1. compile everything ahead
    jobs = [("op", c, v, None, None) for c in cases for v in variants]
    sweep_jobs = []
    if sweep_mode != "none":
        for c in sweep_cases:
            batch, cin, cout = CASES[c][:3]
            for v in sweep_variants:
                for kind in ("fwd", "dgrad", "wgrad"):
                    cfgs = [_default(kind, c, v)] + ck.candidate_configs(
                        kind, VARIANTS[v][0], cin, cout, full=sweep_mode == "full")
                    for cfg in dict.fromkeys(cfgs):
                        sweep_jobs.append((kind, c, v, cfg, None))
                cfg = _default("wgrad", c, v)
                for split in SPLITS + (None,):
                    sweep_jobs.append(("wgrad", c, v, cfg, split))
    t0 = time.time()
    compiled = precompile(jobs + sweep_jobs, workers)
    print("compiled {} kernels in {:.0f} s ({} failed)".format(
        len(compiled), time.time() - t0, sum(1 for e in compiled.values() if e)), flush=True)

    # 2. comparison with cuDNN
    rows = results.setdefault("rows", [])
    for c in cases:
        for v in variants:
            if compiled.get(("op", c, v, None, None)):
                print("{} {}: {}".format(c, v, compiled[("op", c, v, None, None)]))
                continue
            dtype = VARIANTS[v][0]
            ceiling = peak.get("bf16_flops" if dtype == torch.bfloat16 else "tf32_flops")
            try:
                r = compare(c, v, ceiling)
            except Exception:  # noqa: BLE001
                print("{} {} failed:\n{}".format(c, v, traceback.format_exc()[-1500:]))
                continue
            detail["compare"].append(r)
            for part in ("fwd", "step"):
                rows.append({
                    "bench": "conv_gemm",
                    "case": "{} {} {}".format(c, v, "fwd" if part == "fwd" else "fwd+bwd"),
                    "ours_ms": r["ours_{}_ms".format(part)],
                    "baseline_ms": r["cudnn_{}_ms".format(part)],
                    "speedup": r["cudnn_{}_ms".format(part)] / r["ours_{}_ms".format(part)],
                    "ours_peak_bytes": r["ours_{}_mem".format(part)],
                    "baseline_peak_bytes": r["cudnn_{}_mem".format(part)],
                    "memory_ratio": r["{}_mem_ratio".format(part)],
                    "ours_frac_of_peak": r.get("ours_{}_frac_peak".format(part)),
                    "baseline": "F.conv (cuDNN, benchmark=False)",
                })
            print("{:16s} {:9s} fwd {:7.3f} / {:7.3f} ms (x{:4.2f})  fwd+bwd {:7.3f} / {:7.3f} ms "
                  "(x{:4.2f})  mem x{:4.2f} / x{:4.2f}  err {:.1e} {:.1e} {:.1e}  det {}".format(
                      c, v, r["ours_fwd_ms"], r["cudnn_fwd_ms"], r["fwd_time_ratio"],
                      r["ours_step_ms"], r["cudnn_step_ms"], r["step_time_ratio"],
                      r["fwd_mem_ratio"], r["step_mem_ratio"], r["rel_err_y"], r["rel_err_dx"],
                      r["rel_err_dw"], r["bitwise_reproducible"]), flush=True)

    # 3. sweeps
    if sweep_mode != "none":
        for c in sweep_cases:
            batch, cin, cout = CASES[c][:3]
            for v in sweep_variants:
                for kind in ("fwd", "dgrad", "wgrad"):
                    cfgs = [_default(kind, c, v)] + ck.candidate_configs(
                        kind, VARIANTS[v][0], cin, cout, full=sweep_mode == "full")
                    cfgs = list(dict.fromkeys(cfgs))
                    try:
                        s = sweep(c, v, kind, cfgs, compiled)
                    except Exception:  # noqa: BLE001
                        print("sweep {} {} {} failed:\n{}".format(c, v, kind,
                                                                 traceback.format_exc()[-1500:]))
                        continue
                    detail["sweeps"]["{} {} {}".format(c, v, kind)] = s
                    _print_sweep(c, v, kind, s)
                try:
                    detail["splits"]["{} {}".format(c, v)] = split_sweep(c, v, compiled)
                except Exception:  # noqa: BLE001
                    print("split sweep failed:\n" + traceback.format_exc()[-1500:])
    return results


def _print_sweep(case, variant, kind, s):
    ok = [e for e in s["configs"] if "ms" in e]
    ok.sort(key=lambda e: e["ms"])
    print("\n{} {} {}: cuDNN {:.3f} ms; default {}".format(case, variant, kind, s["cudnn_ms"],
                                                          s["default"]))
    print("  {:28s} {:>9s} {:>8s} {:>7s} {:>9s}".format("config (BM,BN,BK,warps,stages)",
                                                        "ms", "TFLOP/s", "xcuDNN", "rel err"))
    for e in ok:
        print("  {:28s} {:9.3f} {:8.1f} {:7.2f} {:9.1e}".format(
            str(tuple(e["config"])), e["ms"], e["tflops"], e["ratio_vs_cudnn"], e["rel_err"]))
    for e in s["configs"]:
        if "error" in e:
            print("  {:28s} {}".format(str(tuple(e["config"])), e["error"][:90]))


def _summary(results):
    detail = results.get("conv_gemm", {})
    lines = ["", "== implicit GEMM vs cuDNN (time ratio ours/cuDNN: < 1.5 is the target; "
             "memory ratio: <= 1.1) =="]
    lines.append("{:16s} {:9s} {:>9s} {:>9s} {:>6s} {:>6s} {:>10s} {:>10s} {:>6s} {:>6s} {:>5s} "
                 "{:>5s} {:>4s}".format("case", "variant", "ours fwd", "cudnn fwd", "ratio",
                                        "r(bm)", "ours f+b", "cudnn f+b", "ratio", "r(bm)",
                                        "memF", "memFB", "det"))
    for r in detail.get("compare", []):
        lines.append("{:16s} {:9s} {:9.3f} {:9.3f} {:6.2f} {:6.2f} {:10.3f} {:10.3f} {:6.2f} "
                     "{:6.2f} {:5.2f} {:5.2f} {:>4s}".format(
                         r["case"], r["variant"], r["ours_fwd_ms"], r["cudnn_fwd_ms"],
                         r["fwd_time_ratio"], r["fwd_time_ratio_bm"], r["ours_step_ms"],
                         r["cudnn_step_ms"], r["step_time_ratio"], r["step_time_ratio_bm"],
                         r["fwd_mem_ratio"], r["step_mem_ratio"],
                         "yes" if r["bitwise_reproducible"] else "NO"))
    kern = [r for r in detail.get("compare", []) if r.get("kernels")]
    if kern:
        lines.append("")
        lines.append("== kernel resources (default configs): regs/spills/shared KiB, HGMMA, "
                     "16-byte LDGSTS of all LDGSTS ==")
        for r in kern:
            lines.append("{:16s} {:9s} ".format(r["case"], r["variant"]) + "  ".join(
                "{} {}/{}/{:.0f} {} {}/{}".format(
                    kind, i.get("regs"), i.get("spills"), (i.get("shared") or 0) / 1024,
                    i.get("HGMMA", "?"), i.get("LDGSTS.128", "?"), i.get("LDGSTS", "?"))
                for kind, i in sorted(r["kernels"].items())))
    if detail.get("splits"):
        lines.append("")
        lines.append("== wgrad split count (default config): ms / workspace MiB ==")
        for key, s in detail["splits"].items():
            lines.append("{:26s} cap {:.0f} MiB: ".format(key, s["cap_bytes"] / 2 ** 20) + "  ".join(
                "{}:{:.3f}/{:.0f}".format(r["split"], r["ms"], r["workspace_bytes"] / 2 ** 20)
                for r in s["rows"]))
    if detail.get("sweeps"):
        lines.append("")
        lines.append("== best configs per kernel (ms, x cuDNN pass) ; default ==")
        best = {}
        for key, s in detail["sweeps"].items():
            ok = sorted((e for e in s["configs"] if "ms" in e and e["rel_err"] < 2e-2),
                        key=lambda e: e["ms"])
            dflt = [e for e in ok if e["config"] == s["default"]]
            lines.append("{:32s} cuDNN {:7.3f}  best {} {:7.3f} (x{:4.2f})  2nd {}  default {}"
                         .format(key, s["cudnn_ms"],
                                 tuple(ok[0]["config"]) if ok else "-",
                                 ok[0]["ms"] if ok else float("nan"),
                                 ok[0]["ratio_vs_cudnn"] if ok else float("nan"),
                                 tuple(ok[1]["config"]) if len(ok) > 1 else "-",
                                 "{:.3f}".format(dflt[0]["ms"]) if dflt else "-"))
            if ok:
                best[tuple(s["tuned_key"])] = tuple(ok[0]["config"])
        lines.append("TUNED = {  # conv_kernels.TUNED")
        for key, cfg in best.items():
            lines.append("    {!r}: {},".format(key, cfg))
        lines.append("}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES))
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="of " + ",".join(VARIANTS))
    parser.add_argument("--sweep", choices=("none", "quick", "full"), default="quick")
    parser.add_argument("--sweep-cases", default=",".join(SWEEP_CASES))
    parser.add_argument("--sweep-variants", default=",".join(SWEEP_VARIANTS))
    parser.add_argument("--workers", type=int, default=None,
                        help="compile processes (default: min(16, CPUs))")
    parser.add_argument("--no-ceilings", action="store_true")
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(
        os.path.dirname(__file__), "results"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_conv_gemm needs a CUDA GPU")
    split = lambda s: tuple(t for t in s.split(",") if t)  # noqa: E731
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
               "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
               "argv": sys.argv[1:], "rows": []}
    try:
        import triton
        results["triton"] = triton.__version__
    except ImportError:
        raise SystemExit("bench_conv_gemm needs Triton")
    if not args.no_ceilings:
        results["ceilings"] = ceilings()
        c = results["ceilings"]
        print("copy {:.0f} GB/s, bf16 matmul {:.0f} TFLOP/s, tf32 matmul {:.0f} TFLOP/s".format(
            c["copy_bytes_per_s"] / 1e9, c["bf16_flops"] / 1e12, c["tf32_flops"] / 1e12),
            flush=True)
    t0 = time.time()
    try:
        run(results, split(args.cases), split(args.variants), args.sweep,
            split(args.sweep_cases), split(args.sweep_variants), args.workers)
    finally:
        results["seconds"] = time.time() - t0
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", results["gpu"]).strip("-").lower()
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "conv_gemm-{}-{}.json".format(gpu, stamp))
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(_summary(results))
        print("wrote", path, "in {:.0f} s".format(results["seconds"]))


if __name__ == "__main__":
    main()

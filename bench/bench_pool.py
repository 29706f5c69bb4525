"""Pooling and spatial pyramid pooling on one GPU: ours beside plain PyTorch.

For every case, dtype (float32, bfloat16) and layout (NCHW, channels-last)
it times the forward pass and forward+backward (CUDA events, warm-up first,
L2 flushed before every repetition, median and p10/p90 of the repetitions)
of ours and of the plain PyTorch equivalent (``F.max_pool*d`` /
``F.avg_pool2d``; adaptive pools + ``cat`` for spatial pyramid pooling), and
reports the achieved bandwidth, ``bytes / time`` with

* forward: input + output bytes,
* forward+backward: twice that (the backward reads the output gradient and
  writes the input gradient),

as a fraction of the device-to-device copy bandwidth measured in the same run
(a large clone: bytes read + written / time). For SPP it also gives the time
over the time of reading the input once at copy bandwidth.

Run ``python bench/bench_pool.py`` on a CUDA machine (about a minute on an
H100); it prints a table and writes ``bench/results/bench_pool-<gpu>-<time>.json``.
``run(results)`` fills a dict for use from other scripts.
"""

import argparse
import datetime
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from lasagne.ops.pool import pool  # noqa: E402
from lasagne.ops.spp import spatial_pyramid_pool  # noqa: E402

REPEATS = 25
WARMUP = 5

POOL_CASES = [  # name, input shape, our call, PyTorch's call
    ("max 3x3 s2 p1", (64, 64, 112, 112),
     lambda x: pool(x, 3, 2, 1, "max"), lambda x: F.max_pool2d(x, 3, 2, 1)),
    ("max 3x3 s2 p1", (128, 256, 56, 56),
     lambda x: pool(x, 3, 2, 1, "max"), lambda x: F.max_pool2d(x, 3, 2, 1)),
    ("max 2x2 s2", (64, 64, 112, 112),
     lambda x: pool(x, 2, 2, 0, "max"), lambda x: F.max_pool2d(x, 2, 2)),
    ("max 2x2 s2", (128, 256, 56, 56),
     lambda x: pool(x, 2, 2, 0, "max"), lambda x: F.max_pool2d(x, 2, 2)),
    ("avg_exc_pad 3x3 s1 p1", (128, 256, 56, 56),
     lambda x: pool(x, 3, 1, 1, "average_exc_pad"),
     lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)),
    ("max 2x2x2", (16, 64, 16, 112, 112),
     lambda x: pool(x, 2, 2, 0, "max"), lambda x: F.max_pool3d(x, 2)),
]

SPP_CASES = [([4, 2, 1], (64, 512, 13, 13)), ([6, 3, 2, 1], (64, 512, 13, 13)),
             ([4, 2, 1], (32, 512, 17, 23)), ([6, 3, 2, 1], (32, 512, 17, 23))]


def spp_ours(dims, mode, implementation):
    return lambda x: spatial_pyramid_pool(x, dims, mode, implementation)


def spp_torch(dims, mode):
    adaptive = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    return lambda x: torch.cat([adaptive(x, n).flatten(2) for n in dims], 2)


class Timer(object):
    """CUDA-event timing with the L2 cache flushed before every repetition."""

    def __init__(self, repeats=REPEATS, warmup=WARMUP):
        self.repeats, self.warmup = repeats, warmup
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
        self.flush = torch.empty(max(4 * l2, 256 << 20), dtype=torch.uint8, device="cuda")

    def __call__(self, fn):
        for _ in range(self.warmup):
            fn()
        pairs = []
        for _ in range(self.repeats):
            self.flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        torch.cuda.synchronize()
        ms = sorted(s.elapsed_time(e) for s, e in pairs)
        q = statistics.quantiles(ms, n=10)
        return {"median_ms": statistics.median(ms), "p10_ms": q[0], "p90_ms": q[-1]}


def copy_bandwidth(timer, nbytes=1 << 30):
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    t = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (t["median_ms"] * 1e-3) / 1e9


def layout(x, channels_last):
    if not channels_last:
        return x
    return x.contiguous(memory_format=torch.channels_last if x.ndim == 4
                        else torch.channels_last_3d)


def measure(timer, fn, x):
    """Forward and forward+backward timings of fn on x, and the byte counts."""
    with torch.no_grad():
        y = fn(x)
        fwd = timer(lambda: fn(x))
    xg = x.detach().requires_grad_(True)
    grad = torch.randn_like(fn(xg))
    bwd = timer(lambda: torch.autograd.grad(fn(xg), xg, grad))
    nbytes = x.numel() * x.element_size() + y.numel() * y.element_size()
    return fwd, bwd, nbytes


def record(rows, copy_gbps, what, shape, dtype, channels_last, impl, fwd, fwdbwd, nbytes,
           in_bytes):
    for passes, t, moved in (("fwd", fwd, nbytes), ("fwd+bwd", fwdbwd, 2 * nbytes)):
        gbps = moved / (t["median_ms"] * 1e-3) / 1e9
        rows.append(dict(case=what, shape=list(shape), dtype=str(dtype).replace("torch.", ""),
                         layout="channels_last" if channels_last else "nchw", impl=impl,
                         passes=passes, bytes=moved, GBps=gbps, frac_of_copy=gbps / copy_gbps,
                         read_once_multiple=t["median_ms"] * 1e-3 / (in_bytes / (copy_gbps * 1e9)),
                         **t))


def run(results, repeats=REPEATS, warmup=WARMUP, dtypes=(torch.float32, torch.bfloat16)):
    """Run every case; fill and return ``results`` (a dict)."""
    if not torch.cuda.is_available():
        raise RuntimeError("bench_pool needs a CUDA device")
    torch.backends.cudnn.benchmark = False
    timer = Timer(repeats, warmup)
    copy_gbps = copy_bandwidth(timer)
    results.update(device=torch.cuda.get_device_name(0), torch=torch.__version__,
                   cuda=torch.version.cuda, copy_GBps=copy_gbps, repeats=repeats, warmup=warmup,
                   date=datetime.datetime.now().isoformat(timespec="seconds"))
    rows = results.setdefault("rows", [])
    gen = torch.Generator(device="cuda").manual_seed(0)
    for dtype in dtypes:
        for channels_last in (False, True):
            for what, shape, ours, theirs in POOL_CASES:
                x = layout(torch.randn(shape, device="cuda", dtype=dtype, generator=gen),
                           channels_last)
                in_bytes = x.numel() * x.element_size()
                for impl, fn in (("ours", ours), ("torch", theirs)):
                    fwd, fwdbwd, nbytes = measure(timer, fn, x)
                    record(rows, copy_gbps, what, shape, dtype, channels_last, impl, fwd, fwdbwd,
                           nbytes, in_bytes)
                del x
            for dims, shape in SPP_CASES:
                x = layout(torch.randn(shape, device="cuda", dtype=dtype, generator=gen),
                           channels_last)
                in_bytes = x.numel() * x.element_size()
                for mode in ("max", "average_exc_pad"):
                    what = "spp {} {}".format(dims, "max" if mode == "max" else "avg")
                    fns = [("ours fast", spp_ours(dims, mode, "fast")),
                           ("ours kaiming", spp_ours(dims, mode, "kaiming")),
                           ("torch", spp_torch(dims, mode))]
                    for impl, fn in fns:
                        fwd, fwdbwd, nbytes = measure(timer, fn, x)
                        record(rows, copy_gbps, what, shape, dtype, channels_last, impl, fwd,
                               fwdbwd, nbytes, in_bytes)
                del x
            torch.cuda.empty_cache()
    return results


def speedups(rows):
    """Per row of ours: PyTorch's median time over ours (same case, dtype,
    layout and passes)."""
    base = {(r["case"], tuple(r["shape"]), r["dtype"], r["layout"], r["passes"]): r["median_ms"]
            for r in rows if r["impl"] == "torch"}
    for r in rows:
        key = (r["case"], tuple(r["shape"]), r["dtype"], r["layout"], r["passes"])
        r["torch_over_ours"] = base[key] / r["median_ms"] if r["impl"] != "torch" else 1.0
    return rows


SHORT = {"float32": "fp32", "bfloat16": "bf16"}


def table(results):
    rows = speedups(results["rows"])
    lines = ["{} | torch {} | CUDA {} | copy bandwidth {:.0f} GB/s (read+write)".format(
        results["device"], results["torch"], results["cuda"], results["copy_GBps"]),
        "{:<24} {:<18} {:<5} {:<5} {:<13} {:<8} {:>9} {:>17} {:>7} {:>6} {:>8}".format(
            "case", "shape", "dtype", "lay", "impl", "passes", "median", "p10-p90 ms", "GB/s",
            "%copy", "torch/us")]
    for r in rows:
        lines.append("{:<24} {:<18} {:<5} {:<5} {:<13} {:<8} {:>9.4f} {:>8.4f}-{:<8.4f} {:>7.0f} "
                     "{:>5.0f}% {:>8.2f}".format(
                         r["case"], "x".join(map(str, r["shape"])),
                         SHORT.get(r["dtype"], r["dtype"]),
                         "CL" if r["layout"] == "channels_last" else "NCHW", r["impl"],
                         r["passes"], r["median_ms"], r["p10_ms"], r["p90_ms"], r["GBps"],
                         100 * r["frac_of_copy"], r["torch_over_ours"]))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results"))
    args = parser.parse_args(argv)
    results = run({}, args.repeats, args.warmup)
    print(table(results))
    os.makedirs(args.out, exist_ok=True)
    name = "bench_pool-{}-{}.json".format(
        results["device"].replace(" ", "_"), results["date"].replace(":", ""))
    path = os.path.join(args.out, name)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()

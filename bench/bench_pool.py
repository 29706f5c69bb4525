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

Run ``python -m bench.bench_pool`` on a CUDA machine; it prints a table and
writes ``bench/results/bench_pool-<gpu>-<time>.json``. ``python -m bench.run``
runs it with the other benchmarks.
"""

import argparse
import datetime
import json
import os

import torch
import torch.nn.functional as F

from bench.common import copy_bandwidth, time_cuda
from lasagne.ops.pool import pool
from lasagne.ops.spp import spatial_pyramid_pool

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


def layout(x, channels_last):
    if not channels_last:
        return x
    return x.contiguous(memory_format=torch.channels_last if x.ndim == 4
                        else torch.channels_last_3d)


def measure(fn, x, repeats, warmup):
    """Forward and forward+backward timings of fn on x, and the forward's
    minimum bytes (input + output)."""
    with torch.no_grad():
        y = fn(x)
        fwd = time_cuda(lambda: fn(x), warmup=warmup, repeat=repeats)
    xg = x.detach().requires_grad_(True)
    grad = torch.randn_like(fn(xg))
    bwd = time_cuda(lambda: torch.autograd.grad(fn(xg), xg, grad), warmup=warmup,
                    repeat=repeats)
    nbytes = x.numel() * x.element_size() + y.numel() * y.element_size()
    return fwd, bwd, nbytes


def _rows_for(results, copy_bps, what, shape, dtype, channels_last, timings, in_bytes):
    """Table rows (bench.run's format) for each of our implementations against
    PyTorch's, forward and forward+backward; the full timings go to
    ``results['pool']``."""
    layout_name = "CL" if channels_last else "NCHW"
    short = str(dtype).replace("torch.", "").replace("float32", "fp32").replace("bfloat16", "bf16")
    for impl, (fwd, fwdbwd, nbytes) in timings.items():
        for passes, t, moved in (("fwd", fwd, nbytes), ("fwd+bwd", fwdbwd, 2 * nbytes)):
            results.setdefault("pool", []).append(dict(
                case=what, shape=list(shape), dtype=short, layout=layout_name, impl=impl,
                passes=passes, bytes=moved, frac_of_copy=moved / (t["median_ms"] * 1e-3) / copy_bps,
                read_once_multiple=t["median_ms"] * 1e-3 / (in_bytes / copy_bps), **t))
    base = timings["torch"]
    for impl, (fwd, fwdbwd, nbytes) in timings.items():
        if impl == "torch":
            continue
        for index, (passes, moved) in enumerate((("fwd", nbytes), ("fwd+bwd", 2 * nbytes))):
            ours, theirs = (fwd, fwdbwd)[index], base[index]
            floor_ms = moved / copy_bps * 1e3
            results.setdefault("rows", []).append(dict(
                bench="pool", case="{} {} {} {} {} {}".format(
                    what, "x".join(map(str, shape)), short, layout_name, impl, passes),
                ours_ms=ours["median_ms"], baseline_ms=theirs["median_ms"],
                speedup=theirs["median_ms"] / ours["median_ms"], floor_ms=floor_ms,
                floor_ratio=ours["median_ms"] / floor_ms))


def run(results, repeats=REPEATS, warmup=WARMUP, dtypes=(torch.float32, torch.bfloat16)):
    """Run every case; append rows to ``results['rows']`` (see
    :mod:`bench.run`) and every timing to ``results['pool']``."""
    if not torch.cuda.is_available():
        raise RuntimeError("bench_pool needs a CUDA device")
    torch.backends.cudnn.benchmark = False
    copy_bps, _ = copy_bandwidth()
    results["pool_copy_bytes_per_s"] = copy_bps
    gen = torch.Generator(device="cuda").manual_seed(0)
    for dtype in dtypes:
        for channels_last in (False, True):
            for what, shape, ours, theirs in POOL_CASES:
                x = layout(torch.randn(shape, device="cuda", dtype=dtype, generator=gen),
                           channels_last)
                timings = {impl: measure(fn, x, repeats, warmup)
                           for impl, fn in (("ours", ours), ("torch", theirs))}
                _rows_for(results, copy_bps, what, shape, dtype, channels_last, timings,
                          x.numel() * x.element_size())
                del x
            for dims, shape in SPP_CASES:
                x = layout(torch.randn(shape, device="cuda", dtype=dtype, generator=gen),
                           channels_last)
                for mode in ("max", "average_exc_pad"):
                    what = "spp {} {}".format(dims, "max" if mode == "max" else "avg")
                    fns = [("ours fast", spp_ours(dims, mode, "fast")),
                           ("ours kaiming", spp_ours(dims, mode, "kaiming")),
                           ("torch", spp_torch(dims, mode))]
                    timings = {impl: measure(fn, x, repeats, warmup) for impl, fn in fns}
                    _rows_for(results, copy_bps, what, shape, dtype, channels_last, timings,
                              x.numel() * x.element_size())
                del x
            torch.cuda.empty_cache()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results"))
    args = parser.parse_args(argv)
    from bench.run import print_table
    results = run({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__},
                  args.repeats, args.warmup)
    print_table(results["rows"])
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    path = os.path.join(args.out, "bench_pool-{}-{}.json".format(
        results["gpu"].replace(" ", "_"), stamp))
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()

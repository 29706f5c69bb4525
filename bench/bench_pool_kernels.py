"""Benchmark: our Triton pooling / SPP kernels against plain PyTorch, on one GPU.

    python bench/bench_pool_kernels.py                 # everything (precompiles in parallel)
    python bench/bench_pool_kernels.py --only spp      # cases whose name contains 'spp'
    python bench/bench_pool_kernels.py --sweep         # also try tile configurations
    python bench/bench_pool_kernels.py --run-gpu-tests --workers 16
        # instead: the pooling GPU tests (test_pool_kernels.py, test_pool_gpu.py) with
        # the kernels switched on, in 16 parallel pytest shards (Triton compiles the
        # kernel variants of the tests on all cores)
    TRITON_INTERPRET=1 python bench/bench_pool_kernels.py --dry-run-cpu   # script check

For every case, dtype (float32, bfloat16) and layout (NCHW, channels-last):
time (CUDA events, median, L2 flushed before each repeat; bench/common.py) of

* ours: the ``lasagne::pool`` / ``lasagne::spp`` ops forward, the backward op
  alone (max pooling: ``lasagne::max_pool_codes_backward`` on the codes of
  the training forward), and forward+backward through autograd
  (``torch.autograd.grad``; max pooling then runs ``lasagne::max_pool_codes``);
* torch: ``F.max_pool*d`` / ``F.avg_pool*d`` (where PyTorch accepts the pad;
  otherwise the portable path of :mod:`lasagne.ops.pool`), and for SPP
  adaptive pools + cat;

the bytes-moved floor (forward: read x + write y; backward: read grad_out
and, for max, the codes of the training forward (one byte per output for
pooling, an int32 per bin for SPP), write grad_x), achieved bandwidth as a fraction of the
device-to-device copy bandwidth measured in the same run, and torch time /
our time. Results print as a table and go to
``bench/results/pool_kernels-<gpu>-<date>.json``.
"""

import argparse
import datetime
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.common import copy_bandwidth, tensor_bytes, time_cuda  # noqa: E402
from lasagne.ops import pool_cuda, spp_cuda  # noqa: E402

POOL_CASES = [
    # name, shape, pool, stride, pad, mode
    ("max3s2p1", (64, 64, 112, 112), (3, 3), (2, 2), (1, 1), "max"),
    ("max3s2p1", (128, 256, 56, 56), (3, 3), (2, 2), (1, 1), "max"),
    ("max2s2", (64, 64, 112, 112), (2, 2), (2, 2), (0, 0), "max"),
    ("max2s2", (128, 256, 56, 56), (2, 2), (2, 2), (0, 0), "max"),
    ("avgexc3s1p1", (128, 256, 56, 56), (3, 3), (1, 1), (1, 1), "average_exc_pad"),
    ("max3s1p1", (128, 256, 28, 28), (3, 3), (1, 1), (1, 1), "max"),
    ("max3s2p2", (64, 64, 112, 112), (3, 3), (2, 2), (2, 2), "max"),
    ("max2x2x2", (16, 64, 16, 112, 112), (2, 2, 2), (2, 2, 2), (0, 0, 0), "max"),
]

SPP_CASES = [
    ("spp421", (64, 512, 13, 13), (4, 2, 1)),
    ("spp6321", (64, 512, 13, 13), (6, 3, 2, 1)),
    ("spp421", (32, 512, 17, 23), (4, 2, 1)),
    ("spp6321", (32, 512, 17, 23), (6, 3, 2, 1)),
]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LAYOUTS = ("nchw", "cl")
DEVICE = "cuda"


def make_input(shape, dtype, layout, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    x = torch.randn(shape, device=DEVICE, dtype=torch.float32, generator=g).to(dtype)
    if layout == "cl":
        x = x.contiguous(memory_format=torch.channels_last if x.ndim == 4
                         else torch.channels_last_3d)
    return x


def torch_pool(x, k, s, p, mode):
    """Plain PyTorch pooling, or None where PyTorch refuses the pad."""
    if any(2 * pp > kk for pp, kk in zip(p, k)):
        return None
    nd = len(k)
    if mode == "max":
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
        return lambda t: fn(t, k, s, p)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    return lambda t: fn(t, k, s, p, count_include_pad=(mode == "average_inc_pad"))


def portable_pool(k, s, p, mode):
    """lasagne.ops.pool's portable path with our kernel hook removed."""
    try:
        from lasagne.ops import pool as P
    except ImportError:
        return None

    def run(t):
        saved = dict(getattr(P, "_KERNELS", {}))
        try:
            if hasattr(P, "register_kernel"):
                P.register_kernel("cuda", None)
            return P.pool(t, k, s, p, mode)
        finally:
            if hasattr(P, "_KERNELS"):
                P._KERNELS.update(saved)
    return run


def portable_spp(dims, mode):
    """lasagne.ops.spp's portable path (matrix product for means) with our
    kernel hook removed."""
    try:
        from lasagne.ops import spp as S
    except ImportError:
        return None

    def run(t):
        saved = dict(getattr(S, "_KERNELS", {}))
        try:
            if hasattr(S, "register_kernel"):
                S.register_kernel("cuda", None)
            return S.spatial_pyramid_pool(t, dims, mode, "kaiming")
        finally:
            if hasattr(S, "_KERNELS"):
                S._KERNELS.update(saved)
    return run


def torch_spp(dims, mode):
    fn = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    return lambda t: torch.cat([fn(t, n).flatten(2) for n in dims], 2)


def fwd_bwd(fn, x, gy):
    xr = x.detach().requires_grad_()

    def run():
        y = fn(xr)
        return torch.autograd.grad(y, xr, gy)[0]
    return run


def gbps(nbytes, ms):
    return nbytes / (ms * 1e-3) / 1e9


def bench_pool(case, dtype_name, layout, copy_bw, rows, repeat):
    name, shape, k, s, p, mode = case
    dtype = DTYPES[dtype_name]
    x = make_input(shape, dtype, layout)
    ours = lambda t: pool_cuda.pool(t, k, s, p, mode)  # noqa: E731
    y = ours(x)
    gy = torch.randn_like(y)
    if mode == "max":   # the training path: the forward's first-max codes, not x
        _, codes = torch.ops.lasagne.max_pool_codes(x, list(k), list(s), list(p), True)
        bwd = lambda: torch.ops.lasagne.max_pool_codes_backward(  # noqa: E731
            gy, codes, list(x.shape), pool_cuda._is_channels_last(x), list(k), list(s), list(p))
        bb = tensor_bytes(gy, x, codes)
    else:
        bwd = lambda: torch.ops.lasagne.pool_backward(  # noqa: E731
            gy, x, list(k), list(s), list(p), mode, True)
        bb = tensor_bytes(gy, x)
    base = torch_pool(x, k, s, p, mode)
    base_name = "torch"
    if base is None:
        base, base_name = portable_pool(k, s, p, mode), "portable"
    # correctness against the baseline
    check = "-"
    if base is not None:
        yb = base(x)
        if mode == "max":
            check = "ok" if torch.equal(y, yb) else "MISMATCH"
        else:
            err = ((y.float() - yb.float()).norm() / yb.float().norm()).item()
            check = "ok" if err < (1e-2 if dtype != torch.float32 else 1e-5) else "MISMATCH %.2e" % err
    fb = tensor_bytes(x, y)
    entries = [("fwd", lambda: ours(x), base and (lambda: base(x)), fb),
               ("bwd", bwd, None, bb),
               ("fwd+bwd", fwd_bwd(ours, x, gy), base and fwd_bwd(base, x, gy), fb + bb)]
    for what, fn, bfn, nbytes in entries:
        t = time_cuda(fn, repeat=repeat)["median_ms"]
        tb = time_cuda(bfn, repeat=repeat)["median_ms"] if bfn is not None else None
        rows.append(dict(
            case=name, shape=list(shape), pool=list(k), stride=list(s), pad=list(p), mode=mode,
            dtype=dtype_name, layout=layout, what=what, ms=t, floor_ms=nbytes / copy_bw * 1e3,
            frac_copy_bw=gbps(nbytes, t) * 1e9 / copy_bw,
            baseline=base_name if bfn is not None else None, baseline_ms=tb,
            baseline_frac=(gbps(nbytes, tb) * 1e9 / copy_bw) if tb else None,
            speedup=(tb / t) if tb else None, check=check))
        print_row(rows[-1])


def bench_spp(case, dtype_name, layout, copy_bw, rows, repeat):
    name, shape, dims = case
    dtype = DTYPES[dtype_name]
    x = make_input(shape, dtype, layout)
    for mode in ("max", "average_exc_pad"):
        ours = lambda t: spp_cuda.spatial_pyramid_pool(t, dims, mode, "kaiming")  # noqa: E731
        base = torch_spp(dims, mode)
        y = ours(x)
        yb = base(x)
        err = ((y.float() - yb.float()).norm() / yb.float().norm()).item()
        check = "ok" if err < (1e-2 if dtype != torch.float32 else 1e-5) else "MISMATCH %.2e" % err
        gy = torch.randn_like(y)
        if mode == "max":   # the training path: the forward's bin argmaxes, not x
            _, codes = torch.ops.lasagne.spp_max_codes(x, list(dims), "kaiming")
            bwd = lambda: torch.ops.lasagne.spp_max_codes_backward(  # noqa: E731
                gy, codes, list(x.shape), spp_cuda._is_channels_last(x), list(dims))
            bb = tensor_bytes(gy, x, codes)
        else:
            bwd = lambda: torch.ops.lasagne.spp_backward(  # noqa: E731
                gy, x, list(dims), mode, "kaiming")
            bb = tensor_bytes(gy, x)
        fb = tensor_bytes(x, y)
        port = portable_spp(dims, mode)
        for what, fn, bfn, pfn, nbytes in [
                ("fwd", lambda: ours(x), lambda: base(x), port and (lambda: port(x)), fb),
                ("bwd", bwd, None, None, bb),
                ("fwd+bwd", fwd_bwd(ours, x, gy), fwd_bwd(base, x, gy),
                 port and fwd_bwd(port, x, gy), fb + bb)]:
            t = time_cuda(fn, repeat=repeat)["median_ms"]
            tb = time_cuda(bfn, repeat=repeat)["median_ms"] if bfn is not None else None
            tp = time_cuda(pfn, repeat=repeat)["median_ms"] if pfn is not None else None
            rows.append(dict(
                case=name + ("-max" if mode == "max" else "-mean"), shape=list(shape),
                dims=list(dims), mode=mode, dtype=dtype_name, layout=layout, what=what, ms=t,
                floor_ms=nbytes / copy_bw * 1e3, frac_copy_bw=gbps(nbytes, t) * 1e9 / copy_bw,
                baseline="adaptive+cat" if tb else None, baseline_ms=tb,
                baseline_frac=(gbps(nbytes, tb) * 1e9 / copy_bw) if tb else None,
                speedup=(tb / t) if tb else None, check=check, portable_ms=tp,
                read_once_ms=tensor_bytes(x) / copy_bw * 1e3))
            print_row(rows[-1])


HEADER = "{:<16} {:<20} {:<5} {:<5} {:<8} {:>9} {:>7} {:>9} {:>9} {:>8} {:>8}  {}".format(
    "case", "shape", "dtype", "lay", "what", "ours ms", "floor", "of copy", "base ms", "base bw",
    "speedup", "check")


def print_row(r):
    extra = ""
    if r.get("portable_ms"):
        extra = "  (lasagne portable path {:.4f} ms)".format(r["portable_ms"])
    print("{:<16} {:<20} {:<5} {:<5} {:<8} {:>9.4f} {:>6.2f}x {:>8.1%} {:>9} {:>8} {:>8}  {}{}".format(
        r["case"], "x".join(map(str, r["shape"])), r["dtype"], r["layout"], r["what"], r["ms"],
        r["ms"] / r["floor_ms"], r["frac_copy_bw"],
        "%.4f" % r["baseline_ms"] if r["baseline_ms"] else "-",
        "%.1f%%" % (100 * r["baseline_frac"]) if r["baseline_frac"] else "-",
        "%.2fx" % r["speedup"] if r["speedup"] else "-", r["check"], extra), flush=True)


# --- parallel precompilation (fills Triton's cache before timing) ---------------------------

def _precompile_worker(job):
    kind, case, dtype_name, layout, override = job
    try:
        from lasagne.ops.triton import pool_kernels, spp_kernels
        pool_kernels.CONFIG_OVERRIDE.update(override.get("pool", {}))
        spp_kernels.CONFIG_OVERRIDE.update(override.get("spp", {}))
        if kind == "pool":
            name, shape, k, s, p, mode = case
            x = make_input(shape, DTYPES[dtype_name], layout)
            y = pool_cuda.pool(x, k, s, p, mode)
            fwd_bwd(lambda t: pool_cuda.pool(t, k, s, p, mode), x, y)()
            torch.ops.lasagne.pool_backward(y, x, list(k), list(s), list(p), mode, True)
        else:
            name, shape, dims = case
            x = make_input(shape, DTYPES[dtype_name], layout)
            for mode in ("max", "average_exc_pad"):
                y = spp_cuda.spatial_pyramid_pool(x, dims, mode, "kaiming")
                fwd_bwd(lambda t: spp_cuda.spatial_pyramid_pool(t, dims, mode, "kaiming"), x, y)()
                torch.ops.lasagne.spp_backward(y, x, list(dims), mode, "kaiming")
        torch.cuda.synchronize()
        return None
    except Exception as e:  # reported, the timing run will show it again
        return "{} {} {} {}: {!r}".format(kind, case[0], dtype_name, layout, e)


def precompile(jobs, workers):
    import multiprocessing as mp
    t0 = time.time()
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        for err in pool.imap_unordered(_precompile_worker, jobs):
            if err:
                print("precompile:", err, flush=True)
    print("precompiled {} jobs in {:.0f}s".format(len(jobs), time.time() - t0), flush=True)


SWEEP_POOL = [
    {}, {"fwd_elems": 1024}, {"fwd_elems": 4096, "fwd_warps": 8}, {"fwd_rows": (4, 2)},
    {"max_block_b": 64}, {"bwd_regs": 80}, {"bwd_regs": 320}, {"bwd_rows": (2, 1)},
    {"bwd_warps": 8}, {"bwd_rows": (1, 1)}, {"bwd_rows": (8, 4)},
    {"max_bwd_per_thread": 1}, {"max_bwd_per_thread": 4},
    {"max_bwd_per_thread": 1, "bwd_rows": (2, 1)}, {"max_bwd_per_thread": 2, "bwd_rows": (2, 1)},
    {"max_bwd_per_thread": 2, "bwd_warps": 8}, {"max_bwd_per_thread": 8},
    {"max_bwd_per_thread": 4, "max_bwd_rows": (4, 2)},
]
SWEEP_SPP = [
    {}, {"tile": 1024}, {"tile": 4096, "warps": 8}, {"cl_block_p": 16}, {"cl_block_p": 64},
    {"wmax": 16}, {"bwd_block_p": 16}, {"bwd_block_p": 64, "bwd_warps": 8},
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="run cases whose name contains this")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--layouts", default="nchw,cl")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--sweep", action="store_true", help="also time tile configurations")
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--no-precompile", action="store_true")
    ap.add_argument("--run-gpu-tests", action="store_true",
                    help="instead of benchmarking, run the pooling GPU tests as parallel pytest "
                         "shards (Triton compiles on all cores), then exit")
    ap.add_argument("--test-files", default=",".join(GPU_TEST_FILES),
                    help="with --run-gpu-tests: comma-separated test files")
    ap.add_argument("--dry-run-cpu", action="store_true",
                    help="check the script on CPU: tiny shapes, kernels through Triton's "
                         "interpreter (needs TRITON_INTERPRET=1), wall-clock timer")
    args = ap.parse_args()
    if args.run_gpu_tests:
        sys.exit(run_gpu_tests(args.workers, [f for f in args.test_files.split(",") if f]))
    if args.dry_run_cpu:
        _dry_run_setup()
        args.no_precompile = True
        args.repeat = 1
    dtypes = [d for d in args.dtypes.split(",") if d]
    layouts = [lay for lay in args.layouts.split(",") if lay]
    pool_cases = [c for c in POOL_CASES if args.only in c[0]]
    spp_cases = [c for c in SPP_CASES if args.only in c[0]]

    from lasagne.ops.triton import pool_kernels, spp_kernels
    sweeps = [({"pool": o}) for o in SWEEP_POOL[1:]] + [({"spp": o}) for o in SWEEP_SPP[1:]] \
        if args.sweep else []
    if not args.no_precompile:
        jobs = [("pool", c, d, lay, {}) for c in pool_cases for d in dtypes for lay in layouts]
        jobs += [("spp", c, d, lay, {}) for c in spp_cases for d in dtypes for lay in layouts]
        for o in sweeps:
            if "pool" in o:
                jobs += [("pool", c, d, lay, o) for c in pool_cases[:6] for d in dtypes
                         for lay in layouts]
            else:
                jobs += [("spp", c, d, lay, o) for c in spp_cases for d in dtypes
                         for lay in layouts]
        precompile(jobs, args.workers)

    if args.dry_run_cpu:
        copy_bw, gpu = 1e10, "cpu-dry-run"
    else:
        copy_bw, _ = copy_bandwidth()
        gpu = torch.cuda.get_device_name()
    print("{}; device-to-device copy {:.0f} GB/s; torch {}".format(gpu, copy_bw / 1e9,
                                                                   torch.__version__))
    print(HEADER)
    rows = []
    for c in pool_cases:
        for d in dtypes:
            for lay in layouts:
                bench_pool(c, d, lay, copy_bw, rows, args.repeat)
    for c in spp_cases:
        for d in dtypes:
            for lay in layouts:
                bench_spp(c, d, lay, copy_bw, rows, args.repeat)

    sweep_rows = []
    for o in sweeps:
        print("\n-- config", o)
        pool_kernels.CONFIG_OVERRIDE.clear()
        spp_kernels.CONFIG_OVERRIDE.clear()
        if "pool" in o:
            pool_kernels.CONFIG_OVERRIDE.update(o["pool"])
            for c in pool_cases[:6]:
                for d in dtypes:
                    for lay in layouts:
                        r0 = len(sweep_rows)
                        bench_pool(c, d, lay, copy_bw, sweep_rows, args.repeat)
                        for r in sweep_rows[r0:]:
                            r["config"] = o
        else:
            spp_kernels.CONFIG_OVERRIDE.update(o["spp"])
            for c in spp_cases:
                for d in dtypes:
                    for lay in layouts:
                        r0 = len(sweep_rows)
                        bench_spp(c, d, lay, copy_bw, sweep_rows, args.repeat)
                        for r in sweep_rows[r0:]:
                            r["config"] = o
    pool_kernels.CONFIG_OVERRIDE.clear()
    spp_kernels.CONFIG_OVERRIDE.clear()

    print("\nSummary (ours, time over the bytes-moved floor; torch time / ours):")
    print(HEADER)
    for r in rows:
        print_row(r)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(ROOT, "bench", "results", "pool_kernels-{}-{}.json".format(
        gpu.replace(" ", "_"), stamp))
    with open(path, "w") as f:
        json.dump(dict(gpu=gpu, torch=torch.__version__, copy_bytes_per_s=copy_bw,
                       rows=rows, sweep=sweep_rows), f, indent=1)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, os.path.basename(path)), "w") as f:
            json.dump(dict(gpu=gpu, torch=torch.__version__, copy_bytes_per_s=copy_bw,
                           rows=rows, sweep=sweep_rows), f, indent=1)
    print("wrote", path)


GPU_TEST_FILES = ("tests/test_pool_kernels.py", "tests/test_pool_gpu.py")


def run_gpu_tests(shards, files=GPU_TEST_FILES):
    """Run the pooling GPU tests in ``shards`` parallel pytest processes (each
    compiles its own kernels; Triton's cache is shared), with the Triton
    kernels switched on (``lasagne.ops.use_triton_pooling``), and report."""
    import subprocess
    files = [f for f in files if os.path.exists(os.path.join(ROOT, f))]
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu"]
                               + files, cwd=ROOT, capture_output=True, text=True).stdout
    ids = [line.strip() for line in collected.splitlines() if "::" in line]
    print("{} GPU tests in {} shards".format(len(ids), shards), flush=True)
    t0 = time.time()
    import tempfile
    logdir = os.environ.get("OUT") or tempfile.mkdtemp(prefix="pool_gpu_tests_")
    procs = []
    for i in range(shards):
        part = ids[i::shards]
        if not part:
            continue
        listing = os.path.join(logdir, "gpu_tests_shard{}".format(i))
        log = open(listing + ".log", "w")
        # every kernel on (the default takes only the cases where they measured
        # faster), so that test_pool_gpu.py runs through them in every mode too
        runner = ("import sys, pytest, lasagne.ops as o; o.use_triton_pooling(True); "
                  "sys.exit(pytest.main(sys.argv[1:]))")
        procs.append((subprocess.Popen(
            [sys.executable, "-c", runner, "-q", "-p", "no:cacheprovider", "-m", "gpu",
             "--maxfail=20", "--tb=short"] + part, cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT), listing))
    status = 0
    for proc, listing in procs:
        status |= proc.wait()
        with open(listing + ".log") as f:
            lines = f.read().splitlines()
        failures = [ln for ln in lines if ln.startswith(("FAILED", "ERROR", "E "))]
        print("--", os.path.basename(listing), "exit", proc.returncode, "|",
              lines[-1] if lines else "", flush=True)
        for ln in failures[:30]:
            print("   ", ln[:300])
    print("GPU tests done in {:.0f}s, exit status {}".format(time.time() - t0, status))
    return status


def _dry_run_setup():
    """Tiny shapes on CPU through the interpreter, timed with a wall clock."""
    global DEVICE, time_cuda, POOL_CASES, SPP_CASES
    DEVICE = "cpu"
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from test_pool_kernels import _fix_interpreter  # the interpreter's numpy-2 shims
    _fix_interpreter()
    pool_cuda.ROUTE_CPU_THROUGH_INTERPRETER = True
    spp_cuda.ROUTE_CPU_THROUGH_INTERPRETER = True

    def wall(fn, repeat=1, **kwargs):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        return {"median_ms": (time.perf_counter() - t0) / repeat * 1e3}
    time_cuda = wall

    def shrink(shape):
        return (1, 2) + tuple(max(3, s // 16) for s in shape[2:])
    POOL_CASES = [(c[0], shrink(c[1])) + tuple(c[2:]) for c in POOL_CASES]
    SPP_CASES = [(c[0], (1, 2) + tuple(c[1][2:]), c[2]) for c in SPP_CASES]


if __name__ == "__main__":
    main()

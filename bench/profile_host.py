"""Host time of the layers that run our Triton kernels (CUDA only).

``python -m bench.profile_host [--json PATH]`` measures how long the CPU
spends issuing one call, on inputs small enough that the GPU is never the
bottleneck: the wall clock of ``calls`` back-to-back calls (the device
synchronized before and after the batch, never inside it), divided by
``calls``; the median of ``rounds`` batches with the min and max.

Each Triton case is measured twice: with :data:`lasagne.ops.triton.launch.DIRECT`
(compiled kernels launched directly) and without it (every launch through
``JITFunction.run``), beside plain PyTorch's call for the same work and the
bare pieces of any autograd call (allocation, a Python ``autograd.Function``
forward+backward), so that the time above PyTorch's can be attributed.
With ``--autograd-threads`` every forward+backward is also measured with
autograd's device threads switched off (``set_multithreading_enabled``), which
runs the backward on the calling thread: the difference is what handing a
Python backward to autograd's CUDA thread costs.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from lasagne import nonlinearities
from lasagne.layers import InputLayer
from lasagne.layers.dnn import BatchNormDNNLayer, MaxPool2DDNNLayer, SpatialPyramidPoolingDNNLayer
from lasagne.ops.triton import launch


def host_us(fn, calls=100, rounds=7, warmup=20):
    """Median, min and max host microseconds per ``fn()`` call."""
    for _ in range(warmup):
        fn()
    per_call = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - t0) / calls * 1e6)
        torch.cuda.synchronize()
    return {"median_us": statistics.median(per_call), "min_us": min(per_call),
            "max_us": max(per_call)}


def _fwd_bwd(fn, x, params=()):
    inputs = [x] + list(params)

    def call():
        out = fn(x)
        torch.autograd.grad(out, inputs, torch.ones_like(out))
    return call


def _no_grad(fn, x):
    def call():
        with torch.no_grad():
            fn(x)
    return call


class _Empty(torch.autograd.Function):
    """A Python autograd function whose passes only allocate."""

    @staticmethod
    def forward(ctx, x):
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, dy):
        return torch.empty_like(dy)


def cases():
    """name -> {variant: zero-argument callable}."""
    out = {}
    cl = torch.channels_last
    x = torch.randn(8, 64, 28, 28, device="cuda").contiguous(memory_format=cl)
    x.requires_grad_(True)
    pool = MaxPool2DDNNLayer(InputLayer((None, 64, 28, 28)), 3, stride=2, pad=1)
    out["max pool 3x3 s2 p1, 8x64x28x28 fp32 channels-last"] = {
        "ours fwd (no grad)": _no_grad(pool.get_output_for, x),
        "ours fwd+bwd": _fwd_bwd(pool.get_output_for, x),
        "torch fwd (no grad)": _no_grad(lambda t: F.max_pool2d(t, 3, 2, 1), x),
        "torch fwd+bwd": _fwd_bwd(lambda t: F.max_pool2d(t, 3, 2, 1), x),
    }
    xb = torch.randn(8, 64, 56, 56, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    with torch.device("cuda"):
        bn = BatchNormDNNLayer(InputLayer(tuple(xb.shape)))
    w = torch.ones(64, device="cuda", requires_grad=True)
    b = torch.zeros(64, device="cuda", requires_grad=True)
    rm, rv = torch.zeros(64, device="cuda"), torch.ones(64, device="cuda")
    out["batch norm + relu, 8x64x56x56 bf16 NCHW"] = {
        "ours fwd+bwd": _fwd_bwd(lambda t: bn.get_fused_output_for(t, nonlinearities.rectify),
                                 xb, [bn.gamma, bn.beta]),
        "torch fwd+bwd": _fwd_bwd(lambda t: F.relu(F.batch_norm(
            t, rm, rv, w, b, training=True, momentum=0.1, eps=1e-4)), xb, [w, b]),
    }
    xs = torch.randn(8, 64, 13, 13, device="cuda", requires_grad=True)
    spp = SpatialPyramidPoolingDNNLayer(InputLayer((None, 64, 13, 13)), pool_dims=[4, 2, 1])

    def torch_spp(t):
        return torch.cat([F.adaptive_max_pool2d(t, n).flatten(2) for n in (4, 2, 1)], 2)
    out["SPP [4,2,1] max, 8x64x13x13 fp32 NCHW"] = {
        "ours fwd+bwd": _fwd_bwd(spp.get_output_for, xs),
        "torch fwd+bwd": _fwd_bwd(torch_spp, xs),
    }
    small = torch.randn(8, 64, 14, 14, device="cuda", requires_grad=True)
    out["pieces"] = {
        "torch.empty": lambda: torch.empty((8, 64, 14, 14), device="cuda"),
        "autograd.Function fwd+bwd (allocation only)": _fwd_bwd(_Empty.apply, small),
        "torch neg fwd+bwd": _fwd_bwd(torch.neg, small),
    }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--autograd-threads", action="store_true",
                        help="also time each forward+backward with autograd's device threads off")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_host needs a CUDA GPU")
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "cases": {}}
    print("{:52s} {:56s} {:>9s} {:>17s}".format("case", "variant", "host us", "min-max"))
    for case, variants in cases().items():
        entry = results["cases"].setdefault(case, {})
        for name, fn in variants.items():
            modes = [True, False] if name.startswith("ours") else [None]
            threads = [True, False] if args.autograd_threads and "bwd" in name else [True]
            for direct in modes:
                for threaded in threads:
                    label = name if direct is None else "{} [{}]".format(
                        name, "direct launch" if direct else "JITFunction.run")
                    if not threaded:
                        label += " [autograd threads off]"
                    if direct is not None:
                        launch.DIRECT = direct
                    torch.autograd.set_multithreading_enabled(threaded)
                    try:
                        t = host_us(fn)
                    finally:
                        launch.DIRECT = True
                        torch.autograd.set_multithreading_enabled(True)
                    entry[label] = t
                    print("{:52s} {:56s} {:9.1f} {:8.1f}-{:8.1f}".format(
                        case[:52], label[:56], t["median_us"], t["min_us"], t["max_us"]),
                        flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print("wrote", args.json)


if __name__ == "__main__":
    main()

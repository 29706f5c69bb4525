"""Run one kernel case inside a CUDA profiler range, for Nsight Compute.

Each case runs its calls once to compile and warm up, then once more between
``torch.cuda.profiler.start()`` and ``stop()``, so that

    ncu --profile-from-start off --clock-control none \\
        --section SpeedOfLight --section MemoryWorkloadAnalysis \\
        --section Occupancy --section WarpStateStats --csv --page details \\
        python -m bench.profile_kernels CASE

reads the hardware counters of exactly those kernels (ours and PyTorch's
for the same work, in that order). ``python -m bench.profile_kernels --list``
prints the cases; ``--summarize CSV...`` prints the main counters of each
kernel in such CSV files (one line per kernel). The cases are the rows whose gap to the floor or to cuDNN
the performance tables leave open; ``bench/NOTES.md`` records what the
counters said.
"""

import argparse
import collections
import csv
import io
import sys

import torch
import torch.nn.functional as F

from lasagne.ops import batchnorm as bn_ops
from lasagne.ops import pool_cuda

DEVICE = "cuda"


def _cl(t):
    return t.contiguous(memory_format=torch.channels_last)


def _max_pool_case(shape, k, s, p, backward):
    """Our channels-last bf16 max pooling (forward, or the codes backward)
    and PyTorch's."""
    x = _cl(torch.randn(shape, device=DEVICE, dtype=torch.bfloat16))
    k, s, p = list(k), list(s), list(p)
    if not backward:
        return [lambda: pool_cuda.pool(x, k, s, p, "max"),
                lambda: F.max_pool2d(x, k, s, p)]
    y, codes = torch.ops.lasagne.max_pool_codes(x, k, s, p, True)
    gy = torch.randn_like(y)
    xt = x.detach().requires_grad_()
    yt, idx = F.max_pool2d(xt, k, s, p, return_indices=True)
    return [lambda: torch.ops.lasagne.max_pool_codes_backward(gy, codes, list(x.shape), True,
                                                              k, s, p),
            lambda: torch.ops.aten.max_pool2d_with_indices_backward(gy, xt, k, s, p, [1, 1],
                                                                    False, idx)]


def _pool_layer_case(shape, k, s, p, dtype, mode="max", channels_last=True):
    """Forward+backward of ``lasagne.ops.pool.pool`` through autograd, as
    ``bench_pool`` times it: every kernel it runs."""
    from lasagne.ops.pool import pool
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last if x.ndim == 4
                         else torch.channels_last_3d)
    x.requires_grad_(True)
    grad = torch.randn_like(pool(x, k, s, p, mode))
    return [lambda: torch.autograd.grad(pool(x, k, s, p, mode), x, grad)]


def _spp_case(shape, dims, dtype):
    """Our max pyramid pooling, channels-last: the training forward (with
    the bin codes) and its backward, then PyTorch's adaptive pools + cat."""
    from lasagne.ops import spp_cuda  # noqa: F401 (registers the lasagne::spp_* ops)
    x = _cl(torch.randn(shape, device=DEVICE, dtype=dtype))
    dims = list(dims)
    y, codes = torch.ops.lasagne.spp_max_codes(x, dims, "kaiming")
    gy = torch.randn_like(y)
    return [lambda: torch.ops.lasagne.spp_max_codes(x, dims, "kaiming"),
            lambda: torch.ops.lasagne.spp_max_codes_backward(gy, codes, list(x.shape), True,
                                                             dims),
            lambda: torch.cat([F.adaptive_max_pool2d(x, d).flatten(1) for d in dims], 1)]


def _conv_case(kind, batch, cin, cout, size, dtype):
    """Our implicit-GEMM kernel for one pass of a 3x3 pad-1 convolution on
    channels-last input, and cuDNN's pass."""
    from lasagne.ops.triton import conv_kernels as ck
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = _cl(torch.randn((batch, cin) + size, device=DEVICE, dtype=dtype, generator=g))
    w = (torch.randn((cout, cin, 3, 3), device=DEVICE, generator=g) / (9 * cin) ** 0.5).to(dtype)
    gy = _cl(torch.randn((batch, cout) + size, device=DEVICE, dtype=dtype, generator=g))
    st, pd = (1, 1), (1, 1)
    if kind == "fwd":
        return [lambda: ck.conv_forward(x, w, st, pd, 1),
                lambda: F.conv2d(x, w, None, st, pd)]
    mask = [kind == "dgrad", kind == "wgrad", False]
    ours = {"dgrad": lambda: ck.conv_dgrad(gy, w, x.shape, st, pd, 1, channels_last=True),
            "wgrad": lambda: ck.conv_wgrad(x, gy, w.shape, st, pd, 1)}[kind]
    return [ours, lambda: torch.ops.aten.convolution_backward(
        gy, x, w, None, list(st), list(pd), [1, 1], False, [0, 0], 1, mask)]


def _bn_case(shape, dtype):
    """Our fused batch norm + rectifier forward and backward kernels."""
    from lasagne.ops import batchnorm_triton
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    C = shape[1]
    x3 = x.view(shape[0], C, -1)
    g = torch.rand(C, device=DEVICE) + 0.5
    b = torch.randn(C, device=DEVICE)
    dy3 = torch.randn_like(x3)
    _, mean, inv_std = batchnorm_triton.forward(x3, g, b, 1e-4, True)
    return [lambda: batchnorm_triton.forward(x3, g, b, 1e-4, True),
            lambda: batchnorm_triton.backward(dy3, x3, mean, inv_std, g, b, True),
            lambda: bn_ops.batch_norm_train(x, g, b, backend="native")]


CASES = {
    # max pooling, bf16 channels-last: the rows above 1.2x the floor, and one
    # at ~1.1x for comparison
    "max3s2p1-64x64x112-bf16-cl-fwd": lambda: _max_pool_case(
        (64, 64, 112, 112), (3, 3), (2, 2), (1, 1), False),
    "max3s2p1-128x256x56-bf16-cl-fwd": lambda: _max_pool_case(
        (128, 256, 56, 56), (3, 3), (2, 2), (1, 1), False),
    "max3s1p1-128x256x28-bf16-cl-fwd": lambda: _max_pool_case(
        (128, 256, 28, 28), (3, 3), (1, 1), (1, 1), False),
    "max3s1p1-128x256x28-bf16-cl-bwd": lambda: _max_pool_case(
        (128, 256, 28, 28), (3, 3), (1, 1), (1, 1), True),
    # the layer-level forward+backward rows above their kernels' sum
    "pool-layer-max2x2x2-16x64x16x112-fp32-cl": lambda: _pool_layer_case(
        (16, 64, 16, 112, 112), 2, 2, 0, torch.float32),
    "pool-layer-max3s2p1-128x256x56-bf16-cl": lambda: _pool_layer_case(
        (128, 256, 56, 56), 3, 2, 1, torch.bfloat16),
    "pool-layer-avgexc3s1p1-128x256x56-bf16-cl": lambda: _pool_layer_case(
        (128, 256, 56, 56), 3, 1, 1, torch.bfloat16, "average_exc_pad"),
    "pool-layer-avgexc3s1p1-128x256x56-bf16-nchw": lambda: _pool_layer_case(
        (128, 256, 56, 56), 3, 1, 1, torch.bfloat16, "average_exc_pad", False),
    "pool-layer-avgexc3s1p1-128x256x56-fp32-nchw": lambda: _pool_layer_case(
        (128, 256, 56, 56), 3, 1, 1, torch.float32, "average_exc_pad", False),
    # max pyramid pooling, where the table's rows stay 7-35x the floor
    "spp6321-32x512x17x23-fp32-cl": lambda: _spp_case(
        (32, 512, 17, 23), (6, 3, 2, 1), torch.float32),
    "spp421-64x512x13-bf16-cl": lambda: _spp_case(
        (64, 512, 13, 13), (4, 2, 1), torch.bfloat16),
    # the implicit-GEMM convolution against cuDNN
    "conv-vgg16-conv3-bf16-cl-fwd": lambda: _conv_case(
        "fwd", 64, 256, 256, (56, 56), torch.bfloat16),
    "conv-resnet50-3x3-bf16-cl-wgrad": lambda: _conv_case(
        "wgrad", 128, 64, 64, (56, 56), torch.bfloat16),
    "conv-resnet50-3x3-fp32-cl-wgrad": lambda: _conv_case(
        "wgrad", 128, 64, 64, (56, 56), torch.float32),
    # batch norm + rectifier kernels, bf16 planar
    "bn-relu-128x64x112-bf16": lambda: _bn_case((128, 64, 112, 112), torch.bfloat16),
}


# the counters --summarize prints, by their Nsight Compute names
SUMMARY = ("Duration", "DRAM Throughput", "L2 Cache Throughput", "L1/TEX Cache Throughput",
           "Compute (SM) Throughput", "Issue Slots Busy", "Registers Per Thread",
           "Theoretical Occupancy", "Achieved Occupancy", "Dynamic Shared Memory Per Block",
           "Grid Size", "Block Size")


def summarize(path):
    """One line per kernel of an ``ncu --csv --page details`` file, and the
    stall the profiler's CPIStall rule names first."""
    text = "".join(line for line in open(path) if line.startswith('"'))
    kernels = collections.OrderedDict()
    for row in csv.DictReader(io.StringIO(text)):
        k = kernels.setdefault((row["ID"], row["Kernel Name"][:70]), {})
        if row["Metric Name"]:
            k[row["Metric Name"]] = row["Metric Value"] + (
                "%" if row["Metric Unit"] == "%" else "")
        if row["Rule Name"] == "CPIStall" and row["Estimated Speedup"] and "stall" not in k:
            k["stall"] = row["Rule Description"].split(". ")[0]
    lines = ["== " + path.rsplit("/", 1)[-1]]
    for (kid, name), k in kernels.items():
        lines.append("[{}] {}".format(kid, name))
        lines.append("    " + "; ".join("{} {}".format(m, k[m]) for m in SUMMARY if m in k))
        if "stall" in k:
            lines.append("    " + k["stall"])
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", nargs="?", choices=sorted(CASES))
    parser.add_argument("--list", action="store_true", help="print the case names")
    parser.add_argument("--summarize", nargs="+", metavar="CSV",
                        help="print the main counters of ncu CSV files instead")
    args = parser.parse_args(argv)
    if args.summarize:
        print("\n".join(summarize(p) for p in args.summarize))
        return
    if args.list or args.case is None:
        print("\n".join(CASES))
        return
    if not torch.cuda.is_available():
        raise SystemExit("profile_kernels needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    calls = CASES[args.case]()
    for _ in range(3):
        for fn in calls:
            fn()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for fn in calls:
        fn()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print("profiled", args.case, file=sys.stderr)


if __name__ == "__main__":
    main()

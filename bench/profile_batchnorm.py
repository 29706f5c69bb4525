"""Where the time of the Triton batch norm goes (CUDA only).

``python -m bench.profile_batchnorm`` prints, for the fused batch norm +
rectifier of ``BatchNormDNNLayer`` on planar batches, forward+backward
through autograd:

* the CUDA-event time of the call (median, p10–p90, L2 flushed),
* the sum of the device times of the kernels it launched (profiler),
* the host time of the call (wall clock from the call to its return, the
  device synchronized before and after),

so that a gap between the event time and the kernel time can be told apart
as host time. With ``--sweep`` it also times the six kernels alone
(:mod:`lasagne.ops.batchnorm_triton`) over tile sizes and grid sizes.
"""

import argparse
import itertools
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import copy_bandwidth, time_cuda
from lasagne import nonlinearities
from lasagne.layers import InputLayer
from lasagne.layers.dnn import BatchNormDNNLayer
from lasagne.ops import batchnorm_triton

SHAPES = [(128, 64, 112, 112), (128, 256, 56, 56)]
DTYPES = [torch.bfloat16, torch.float32]


def layer_split(shape, dtype):
    """Event time, kernel time and host time of one fused forward+backward."""
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    dy = torch.randn_like(x)
    with torch.device("cuda"):
        layer = BatchNormDNNLayer(InputLayer(shape))
    params = [layer.gamma, layer.beta]

    def call():
        out = layer.get_fused_output_for(x, nonlinearities.rectify)
        torch.autograd.grad(out, [x] + params, dy)

    event = time_cuda(call, repeat=30)
    host = []
    for _ in range(21):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        call()
        host.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
    host.sort()
    rounds = 5
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(rounds):
            call()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_ms = sum(e.device_time_total for e in kernels) / rounds / 1e3
    print("{} {}: event {:.3f} ms [{:.3f}-{:.3f}], kernels {:.3f} ms, host {:.3f} ms".format(
        "x".join(map(str, shape)), str(dtype).replace("torch.", ""), event["median_ms"],
        event["p10_ms"], event["p90_ms"], kernel_ms, host[len(host) // 2]))
    for e in sorted(kernels, key=lambda e: -e.device_time_total):
        print("    {:<60} {:8.3f} ms".format(e.key[:60], e.device_time_total / rounds / 1e3))


def tile_sweep(shape, dtype, copy_bps):
    """The kernels alone (no autograd) over ``_TILE`` and ``_PROGRAMS_PER_SM``."""
    N, C, H, W = shape
    x3 = torch.randn(N, C, H * W, device="cuda", dtype=dtype)
    dy3 = torch.randn_like(x3)
    gamma = torch.rand(C, device="cuda") + 0.5
    beta = torch.randn(C, device="cuda")
    one_pass_ms = x3.numel() * x3.element_size() / copy_bps * 1e3
    saved = batchnorm_triton._TILE, batchnorm_triton._PROGRAMS_PER_SM
    try:
        for tile, per_sm in itertools.product((4096, 8192, 16384), (8, 16)):
            batchnorm_triton._TILE, batchnorm_triton._PROGRAMS_PER_SM = tile, per_sm
            _, mean, inv_std = batchnorm_triton.forward(x3, gamma, beta, 1e-4, True)
            fwd = time_cuda(lambda: batchnorm_triton.forward(x3, gamma, beta, 1e-4, True),
                            repeat=20)["median_ms"]
            bwd = time_cuda(lambda: batchnorm_triton.backward(dy3, x3, mean, inv_std, gamma,
                                                              beta, True), repeat=20)["median_ms"]
            print("    tile {:5d} programs/SM {:2d}: fwd {:.3f} ms ({:.2f}x floor), bwd {:.3f} ms "
                  "({:.2f}x floor)".format(tile, per_sm, fwd, fwd / (2 * one_pass_ms), bwd,
                                           bwd / (3 * one_pass_ms)))
    finally:
        batchnorm_triton._TILE, batchnorm_triton._PROGRAMS_PER_SM = saved


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="also sweep the kernels' tiles")
    args = parser.parse_args()
    copy_bps = copy_bandwidth()[0]
    print("copy bandwidth {:.0f} GB/s".format(copy_bps / 1e9))
    for shape, dtype in itertools.product(SHAPES, DTYPES):
        layer_split(shape, dtype)
        if args.sweep:
            tile_sweep(shape, dtype, copy_bps)


if __name__ == "__main__":
    main()

"""Why ``bench.common.time_cuda`` hides the host: one host-heavy row timed both ways.

``python -m bench.timing_check`` times the batch-norm forward+backward rows
of ``bench_batchnorm`` on a 128x64x112x112 bfloat16 NCHW batch (our layer,
our fused layer with the rectifier, PyTorch's batch norm + relu), 30
repeats, three times each, with the host's launch time visible
(``hide_host=False``: the start event fires before the Python call enqueues
its kernels) and hidden behind a spin kernel (``hide_host=True``). It prints
the median, spread, host time per call and the Python garbage collections
that ran while timing. Where host time per call approaches the device time,
the visible timing is bimodal; the hidden one is the kernels' time.
"""

import gc

import torch
import torch.nn.functional as F

from bench.common import time_cuda
from lasagne import nonlinearities
from lasagne.layers import InputLayer
from lasagne.layers.dnn import BatchNormDNNLayer

SHAPE = (128, 64, 112, 112)


def main():
    if not torch.cuda.is_available():
        raise SystemExit("timing_check needs a CUDA GPU")
    x = torch.randn(SHAPE, device="cuda", dtype=torch.bfloat16).requires_grad_(True)
    dy = torch.randn_like(x)
    with torch.device("cuda"):
        layer = BatchNormDNNLayer(InputLayer(SHAPE))
    C = SHAPE[1]
    w = torch.ones(C, device="cuda", requires_grad=True)
    b = torch.zeros(C, device="cuda", requires_grad=True)
    rm, rv = torch.zeros(C, device="cuda"), torch.ones(C, device="cuda")

    def fused():
        out = layer.get_fused_output_for(x, nonlinearities.rectify)
        torch.autograd.grad(out, [x, layer.gamma, layer.beta], dy)

    def plain():
        out = layer.get_output_for(x)
        torch.autograd.grad(out, [x, layer.gamma, layer.beta], dy)

    def torch_bn_relu():
        out = F.relu(F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-4))
        torch.autograd.grad(out, [x, w, b], dy)

    collections = [0]
    gc.callbacks.append(lambda phase, info: collections.__setitem__(
        0, collections[0] + (phase == "start")))
    for name, fn in (("fused", fused), ("layer", plain), ("torch bn+relu", torch_bn_relu)):
        for hide in (False, True):
            for _ in range(3):
                before = collections[0]
                t = time_cuda(fn, repeat=30, hide_host=hide)
                print("{:14s} hide_host={!s:5s} median {:.3f} p10 {:.3f} p90 {:.3f} max {:.3f} "
                      "host_ms {:.3f} gc {}".format(
                          name, hide, t["median_ms"], t["p10_ms"], t["p90_ms"],
                          t["times_ms"][-1], t["host_ms"], collections[0] - before), flush=True)


if __name__ == "__main__":
    main()

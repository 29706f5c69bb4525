"""Experiment: the stride-1 channels-last implicit-GEMM forward with TMA tiles.

``python -m bench.conv_tma_probe`` (CUDA, Hopper) times a prototype forward
kernel against cuDNN (``F.conv2d``, ``cudnn.benchmark``) and against the
implicit-GEMM kernel that ``Conv2DMMLayer`` runs (``conv_kernels.conv_forward``),
on the VGG-16 conv3 and two ResNet-50 3x3 problems, bfloat16 and float32
(TF32), channels-last, checking each result against cuDNN.

The prototype loads its input tiles with the tensor-memory accelerator: a
5-D descriptor over the ``(N, D, H, W, C)`` view of the input, one box of
``BW`` pixels of one output row per tap and channel block (boxes that reach
into the padding are zero-filled by the hardware, negative coordinates
included), ``BH`` such rows per program sharing each weight tile (a 2-D
descriptor over the ``(K, T*R*S*C)`` weights); wgmma reads both operands
from shared memory. Multi-row boxes (``[BH, BW]`` pixels reshaped to one
``BH*BW`` operand) compile to a register round trip in Triton 3.6, so each
row is its own box and its own dot. ``WS`` asks Triton for warp
specialization of the loop. bench/NOTES.md ("Session 7") records what it
measured and why it is not the product's kernel.
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from bench.common import time_cuda

@triton.jit
def fwd_tma_kernel(x_desc, w_desc, y_ptr, OD, OH, OW, Kg, Cg, T, R, S, pd, ph, pw,
                   syn, syk, syd, syh, syw,
                   BH: tl.constexpr, BW: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr, WS: tl.constexpr = False):
    BM: tl.constexpr = BW
    pid = tl.program_id(0)
    g = tl.program_id(1)
    num_n = tl.cdiv(Kg, BLOCK_N)
    pid_n = pid % num_n
    pid_m = pid // num_n
    tiles_w = tl.cdiv(OW, BW)
    tiles_h = tl.cdiv(OH, BH)
    tw = pid_m % tiles_w
    t = pid_m // tiles_w
    th = t % tiles_h
    t = t // tiles_h
    od = t % OD
    n = t // OD
    oh0 = th * BH
    ow0 = tw * BW
    k0 = pid_n * BLOCK_N
    nc = Cg // BLOCK_K
    acc = tl.zeros([BM, BLOCK_N], dtype=tl.float32)
    acc2 = tl.zeros([BM, BLOCK_N], dtype=tl.float32)
    acc3 = tl.zeros([BM, BLOCK_N], dtype=tl.float32)
    acc4 = tl.zeros([BM, BLOCK_N], dtype=tl.float32)
    for it in tl.range(0, T * R * S * nc, warp_specialize=WS):
        cb = it % nc
        tap = it // nc
        s = tap % S
        tr = tap // S
        r = tr % R
        tt = tr // R
        b = w_desc.load([g * Kg + k0, tap * Cg + cb * BLOCK_K]).T
        a = x_desc.load([n, od - pd + tt, oh0 - ph + r, ow0 - pw + s, g * Cg + cb * BLOCK_K])
        acc = tl.dot(a.reshape(BM, BLOCK_K), b, acc)
        if BH >= 2:
            a2 = x_desc.load([n, od - pd + tt, oh0 + 1 - ph + r, ow0 - pw + s,
                              g * Cg + cb * BLOCK_K])
            acc2 = tl.dot(a2.reshape(BM, BLOCK_K), b, acc2)
        if BH == 4:
            a3 = x_desc.load([n, od - pd + tt, oh0 + 2 - ph + r, ow0 - pw + s,
                              g * Cg + cb * BLOCK_K])
            acc3 = tl.dot(a3.reshape(BM, BLOCK_K), b, acc3)
            a4 = x_desc.load([n, od - pd + tt, oh0 + 3 - ph + r, ow0 - pw + s,
                              g * Cg + cb * BLOCK_K])
            acc4 = tl.dot(a4.reshape(BM, BLOCK_K), b, acc4)
    ow = ow0 + tl.arange(0, BM)
    k = k0 + tl.arange(0, BLOCK_N)
    m = (ow < OW)[:, None] & (k < Kg)[None, :]
    y_rows = y_ptr + n * syn + od * syd + oh0 * syh + ow * syw
    ptrs = y_rows[:, None] + ((g * Kg + k) * syk)[None, :]
    tl.store(ptrs, acc.to(y_ptr.dtype.element_ty), mask=m & (oh0 < OH))
    if BH >= 2:
        tl.store(ptrs + syh, acc2.to(y_ptr.dtype.element_ty), mask=m & (oh0 + 1 < OH))
    if BH == 4:
        tl.store(ptrs + 2 * syh, acc3.to(y_ptr.dtype.element_ty), mask=m & (oh0 + 2 < OH))
        tl.store(ptrs + 3 * syh, acc4.to(y_ptr.dtype.element_ty), mask=m & (oh0 + 3 < OH))


def conv_fwd_tma(x, w, padding, bh=2, bw=64, bn=128, bk=64, warps=8, stages=3, groups=1,
                 ws=False):
    """Stride-1 convolution of channels-last ``x`` by the prototype kernel."""
    if bh not in (1, 2, 4):
        raise ValueError("conv_fwd_tma: bh (rows per program) must be 1, 2 or 4, got {}".format(bh))
    x5 = x.unsqueeze(2) if x.ndim == 4 else x
    w5 = w.unsqueeze(2) if w.ndim == 4 else w
    pad = (0,) + tuple(padding) if x.ndim == 4 else tuple(padding)
    N, C, D, H, W = x5.shape
    K, Cg, T, R, S = w5.shape
    Kg = K // groups
    OD, OH, OW = D + 2 * pad[0] - T + 1, H + 2 * pad[1] - R + 1, W + 2 * pad[2] - S + 1
    xv = x5.permute(0, 2, 3, 4, 1)  # N D H W C, contiguous for channels-last input
    if not xv.is_contiguous():
        raise ValueError("conv_fwd_tma takes channels-last input")
    w2 = w5.permute(0, 2, 3, 4, 1).contiguous().view(K, T * R * S * Cg)
    fmt = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
    y = torch.empty((N, K) + ((OH, OW) if x.ndim == 4 else (OD, OH, OW)), dtype=x.dtype,
                    device=x.device, memory_format=fmt)
    y5 = y.unsqueeze(2) if y.ndim == 4 else y
    xd = TensorDescriptor(xv, list(xv.shape), list(xv.stride()), [1, 1, 1, bw, bk])
    wd = TensorDescriptor(w2, list(w2.shape), list(w2.stride()), [bn, bk])
    tiles = N * OD * triton.cdiv(OH, bh) * triton.cdiv(OW, bw)
    grid = (tiles * triton.cdiv(Kg, bn), groups)
    fwd_tma_kernel[grid](xd, wd, y5, OD, OH, OW, Kg, Cg, T, R, S, *pad, *y5.stride(),
                         BH=bh, BW=bw, BLOCK_N=bn, BLOCK_K=bk, WS=ws, num_warps=warps,
                         num_stages=stages)
    return y


PROBLEMS = {"vgg16-conv3": (64, 256, 256, 56), "resnet50-3x3": (128, 64, 64, 56),
            "resnet50-3x3-28": (128, 128, 128, 28)}
# (rows per program BH, row box BW, BLOCK_N, BLOCK_K (bf16; float32 uses 32),
#  warps, stages, warp-specialized loop)
CONFIGS = {256: [(1, 64, 256, 64, 8, 3, False), (2, 64, 128, 64, 8, 3, False),
                 (2, 64, 256, 64, 8, 3, False), (2, 64, 128, 64, 4, 4, False),
                 (4, 64, 128, 64, 8, 3, False), (2, 64, 128, 64, 8, 3, True)],
           64: [(1, 64, 64, 64, 4, 4, False), (2, 64, 64, 64, 4, 4, False),
                (4, 64, 64, 64, 4, 3, False), (2, 64, 64, 64, 4, 4, True)],
           128: [(1, 32, 128, 64, 4, 4, False), (2, 32, 128, 64, 4, 4, False),
                 (4, 32, 128, 64, 4, 4, False), (2, 32, 128, 64, 4, 4, True)]}


def main():
    from lasagne.ops.triton import conv_kernels
    if not torch.cuda.is_available():
        raise SystemExit("conv_tma_probe needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    for name, (N, C, K, HW) in PROBLEMS.items():
        for dt in (torch.bfloat16, torch.float32):
            x = torch.randn(N, C, HW, HW, device="cuda", dtype=dt).contiguous(
                memory_format=torch.channels_last)
            w = (torch.randn(K, C, 3, 3, device="cuda") / (9 * C) ** 0.5).to(dt)
            ref = F.conv2d(x, w, None, 1, 1).float()
            flops = 2 * N * HW * HW * K * C * 9
            base = time_cuda(lambda: F.conv2d(x, w, None, 1, 1))["median_ms"]
            print("{} {} cuDNN {:.4f} ms ({:.0f} TFLOP/s)".format(
                name, dt, base, flops / base / 1e9), flush=True)
            t = time_cuda(lambda: conv_kernels.conv_forward(x, w, (1, 1), (1, 1)))["median_ms"]
            print("{} {} conv_forward {:.4f} ms x{:.2f} of cuDNN".format(name, dt, t, t / base),
                  flush=True)
            for bh, bw, bn, bk, warps, stages, ws in CONFIGS[K]:
                bk = 32 if dt == torch.float32 else bk

                def fn():
                    return conv_fwd_tma(x, w, (1, 1), bh, bw, bn, bk, warps, stages, ws=ws)
                err = ((fn().float() - ref).norm() / ref.norm()).item()
                t = time_cuda(fn)["median_ms"]
                print("{} {} TMA BH={} BW={} BN={} BK={} warps={} stages={} ws={} {:.4f} ms "
                      "x{:.2f} of cuDNN, rel. error {:.1e}".format(
                          name, dt, bh, bw, bn, bk, warps, stages, ws, t, t / base, err),
                      flush=True)


if __name__ == "__main__":
    main()

"""Convolution layers against plain PyTorch: forward + backward time and peak
memory of ``Conv2DDNNLayer`` (cuDNN), ``Conv2DMMLayer`` (GEMM) and
``Conv3DDNNLayer`` versus ``F.conv2d`` / ``F.conv3d`` (+ bias + ReLU, as the
layers compute) on the same tensors, in float32 (NCHW, PyTorch's default
TF32 settings: on for cuDNN, off for matmul) and bfloat16 channels-last.

Run alone with ``python -m bench.bench_conv`` (prints a table and writes
``bench/results/conv-<gpu>-<date>.json``) or through ``python -m bench.run``.
"""

import datetime
import json
import os
import re

import torch
import torch.nn.functional as F

from bench.common import ceilings, peak_memory, time_cuda

# name, spatial dims, batch, in channels, out channels, filter, input size
CASES = [
    ("vgg16-conv3", 2, 64, 256, 256, 3, (56, 56)),
    ("resnet50-3x3", 2, 128, 64, 64, 3, (56, 56)),
    ("c3d-conv2", 3, 16, 64, 128, 3, (16, 56, 56)),
]
REPEAT = 25
DEVICE = "cuda"


def _layers(nd):
    """(label, layer class, matmul TF32) to measure for ``nd`` spatial axes."""
    from lasagne.layers import Conv3DLayer
    from lasagne.layers.corrmm import Conv2DMMLayer
    from lasagne.layers.dnn import Conv2DDNNLayer, Conv3DDNNLayer
    if nd == 2:
        return [("Conv2DDNNLayer", Conv2DDNNLayer, False),
                ("Conv2DMMLayer", Conv2DMMLayer, False),
                ("Conv2DMMLayer matmul-tf32", Conv2DMMLayer, True)]

    def gemm3d(*args, **kwargs):
        return Conv3DLayer(*args, flip_filters=False, algorithm="gemm", **kwargs)

    return [("Conv3DDNNLayer", Conv3DDNNLayer, False),
            ("Conv3DLayer(algorithm='gemm')", gemm3d, False)]


def _with_matmul_tf32(fn, on):
    if not on:
        return fn

    def wrapped():
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            fn()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
    return wrapped


def _tensors(nd, batch, cin, cout, k, size, dtype):
    shape = (batch, cin) + size
    x = torch.randn(shape, device=DEVICE, dtype=dtype)
    if dtype == torch.bfloat16:
        x = x.contiguous(memory_format=torch.channels_last if nd == 2
                         else torch.channels_last_3d)
    W = torch.nn.Parameter(torch.randn((cout, cin) + (k,) * nd, device=DEVICE, dtype=dtype)
                           * (2.0 / (cin * k ** nd)) ** 0.5)
    b = torch.nn.Parameter(torch.zeros(cout, device=DEVICE, dtype=dtype))
    x.requires_grad_()
    return x, W, b


def _step(forward, x, W, b, gout):
    def step():
        out = forward(x)
        torch.autograd.grad(out, (x, W, b), gout)
    return step


def measure(case, dtype):
    """Rows for one case and dtype: each layer vs PyTorch's own convolution."""
    name, nd, batch, cin, cout, k, size = case
    x, W, b = _tensors(nd, batch, cin, cout, k, size, dtype)
    conv = F.conv2d if nd == 2 else F.conv3d
    baseline = lambda x: torch.relu(conv(x, W, b, padding=k // 2))  # noqa: E731
    gout = torch.randn_like(baseline(x))
    flops = 3 * 2 * batch * cout * cin * k ** nd * gout[0, 0].numel()
    base_t = time_cuda(_step(baseline, x, W, b, gout), warmup=5, repeat=REPEAT)
    base_mem = peak_memory(_step(baseline, x, W, b, gout))
    tag = "fp32" if dtype == torch.float32 else "bf16-cl"
    rows = []
    for label, cls, tf32 in _layers(nd):
        if tf32 and dtype != torch.float32:
            continue
        layer = cls(tuple(x.shape), cout, k, pad="same", W=W, b=b)
        step = _with_matmul_tf32(_step(layer.get_output_for, x, W, b, gout), tf32)
        out_ref, out = baseline(x), layer.get_output_for(x)
        err = ((out.float() - out_ref.float()).abs().max() / out_ref.float().abs().max()).item()
        t = time_cuda(step, warmup=5, repeat=REPEAT)
        mem = peak_memory(step)
        rows.append({
            "bench": "conv", "case": "{} {} {}".format(name, tag, label),
            "ours_ms": t["median_ms"], "ours_p10_ms": t["p10_ms"], "ours_p90_ms": t["p90_ms"],
            "baseline_ms": base_t["median_ms"], "baseline_p10_ms": base_t["p10_ms"],
            "baseline_p90_ms": base_t["p90_ms"], "speedup": base_t["median_ms"] / t["median_ms"],
            "ours_peak_bytes": mem, "baseline_peak_bytes": base_mem,
            "memory_ratio": mem / base_mem if base_mem else None,
            "flops": flops, "ours_tflops": flops / t["median_ms"] / 1e9,
            "baseline_tflops": flops / base_t["median_ms"] / 1e9,
            "max_rel_err_vs_baseline": err, "repeat": REPEAT,
            "baseline": "relu({}(x, W, b))".format(conv.__name__),
        })
        del layer, out, out_ref
    return rows


def run(results):
    """Append this benchmark's rows to ``results['rows']`` (see
    :mod:`bench.run`); the fraction of the matmul ceiling is added when
    ``results['ceilings']`` is present."""
    rows = results.setdefault("rows", [])
    peak = results.get("ceilings") or {}
    for case in CASES:
        for dtype in (torch.float32, torch.bfloat16):
            for row in measure(case, dtype):
                ceiling = peak.get("bf16_flops" if dtype == torch.bfloat16 else "tf32_flops")
                if ceiling:
                    row["ours_frac_of_peak"] = row["ours_tflops"] * 1e12 / ceiling
                    row["baseline_frac_of_peak"] = row["baseline_tflops"] * 1e12 / ceiling
                rows.append(row)
                print("{:48s} ours {:8.3f} ms  torch {:8.3f} ms  x{:5.2f}  mem {:6.0f} / {:6.0f} "
                      "MiB".format(row["case"], row["ours_ms"], row["baseline_ms"],
                                   row["speedup"], row["ours_peak_bytes"] / 2 ** 20,
                                   row["baseline_peak_bytes"] / 2 ** 20), flush=True)
            torch.cuda.empty_cache()
    return results


def main():
    if not torch.cuda.is_available():
        raise SystemExit("bench_conv needs a CUDA GPU")
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
               "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
               "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
               "rows": [], "ceilings": ceilings()}
    run(results)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", results["gpu"]).strip("-").lower()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    out_dir = os.environ.get("OUT") or os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "conv-{}-{}.json".format(gpu, stamp))
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    print("wrote", path)


if __name__ == "__main__":
    main()

"""Batch normalization in training: ``BatchNormDNNLayer``, the fused
normalization + rectifier, and plain ``torch.nn.functional.batch_norm``
(+ ``relu``), forward and forward+backward.

Run alone with ``python -m bench.bench_batchnorm`` (prints a table, writes
``bench/results/batchnorm-<gpu>-<date>.json``) or through ``python -m
bench.run``. Every time is CUDA events around one call, L2 flushed before
it, median of 30 after warm-up, with the 10th and 90th percentiles.

Bandwidth is the minimum number of bytes the function must move divided by
the time, as a fraction of the device-to-device copy bandwidth measured in
the same run: forward reads x and writes y (2 tensors), forward+backward
also reads dy and writes dx (5 tensors); the per-channel vectors are
negligible.
"""

import datetime
import json
import os
import re

import torch
import torch.nn.functional as F

from bench.common import copy_bandwidth, time_cuda
from lasagne import nonlinearities
from lasagne.layers import InputLayer
from lasagne.layers.dnn import BatchNormDNNLayer
from lasagne.ops import batchnorm as bn_ops

SPATIAL_SHAPES = [(128, 64, 112, 112), (128, 256, 56, 56), (256, 1024, 14, 14)]
PER_ACTIVATION_SHAPES = [(256, 4096)]
DTYPES = [torch.float32, torch.bfloat16]
REPEAT = 30


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _variants(layer, shape, axes, dtype):
    """name -> (callable(x) returning the output, params needing gradients)."""
    C = shape[1]
    pshape = layer.gamma.shape
    w = torch.ones(C, device="cuda", requires_grad=True)
    b = torch.zeros(C, device="cuda", requires_grad=True)
    rm = torch.zeros(C, device="cuda")
    rv = torch.ones(C, device="cuda")

    def torch_bn(x):
        return F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-4)

    def torch_bn_relu(x):
        return F.relu(torch_bn(x))

    variants = {
        "layer": (lambda x: layer.get_output_for(x), [layer.gamma, layer.beta]),
        "fused_relu": (lambda x: layer.get_fused_output_for(x, nonlinearities.rectify),
                       [layer.gamma, layer.beta]),
        "torch_bn": (torch_bn, [w, b]),
        "torch_bn_relu": (torch_bn_relu, [w, b]),
    }
    if axes == 0 or len(shape) == 2:
        # other ways of the same per-activation normalization, for the record
        g = torch.ones(pshape, device="cuda", requires_grad=True)
        bb = torch.zeros(pshape, device="cuda", requires_grad=True)
        for backend in ("native", "triton"):
            if backend == "triton" and bn_ops.triton_unavailable_reason() is not None:
                continue
            variants["op_" + backend] = (
                lambda x, backend=backend: bn_ops.batch_norm_train(
                    x, g, bb, axes, 1e-4, backend=backend)[0], [g, bb])
    return variants


def _measure(fn, params, x, dy, backward):
    if backward:
        def call():
            out = fn(x)
            torch.autograd.grad(out, [x] + params, dy)
    else:
        def call():
            fn(x)
    return time_cuda(call, warmup=5, repeat=REPEAT, flush=True)


def _case(results, copy_bps, shape, axes, dtype, channels_last):
    x = torch.randn(shape, device="cuda", dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    dy = torch.randn_like(x)
    with torch.device("cuda"):
        layer = BatchNormDNNLayer(InputLayer(shape), axes=axes)
    mode = "per-act" if axes == 0 or len(shape) == 2 else "spatial"
    layout = "NHWC" if channels_last else ("NCHW" if len(shape) == 4 else "NC")
    case = "{} {} {} {}".format("x".join(map(str, shape)), _dtype_name(dtype), layout, mode)
    backends = {"layer": bn_ops.dnn_backend(x, layer.axes, None),
                "fused_relu": bn_ops.dnn_backend(x, layer.axes, "relu")}
    tensor_bytes = x.numel() * x.element_size()
    entry = {"shape": shape, "dtype": _dtype_name(dtype), "layout": layout, "mode": mode,
             "backends": backends, "variants": {}}
    for name, (fn, params) in _variants(layer, shape, axes, dtype).items():
        entry["variants"][name] = {}
        for backward in (False, True):
            key = "fwd+bwd" if backward else "fwd"
            min_bytes = (5 if backward else 2) * tensor_bytes
            try:
                t = _measure(fn, params, x, dy, backward)
            except Exception as e:  # recorded, never hidden
                entry["variants"][name][key] = {"error": "{}: {}".format(
                    type(e).__name__, e)[:400]}
                continue
            t["min_bytes"] = min_bytes
            t["bytes_per_s"] = min_bytes / (t["median_ms"] * 1e-3)
            t["fraction_of_copy_bw"] = t["bytes_per_s"] / copy_bps
            t["floor_ms"] = min_bytes / copy_bps * 1e3
            entry["variants"][name][key] = t
    results.setdefault("batchnorm", []).append(entry)
    for ours, base in (("layer", "torch_bn"), ("fused_relu", "torch_bn_relu")):
        for key in ("fwd", "fwd+bwd"):
            a = entry["variants"][ours].get(key, {})
            b = entry["variants"][base].get(key, {})
            if "median_ms" not in a or "median_ms" not in b:
                continue
            results.setdefault("rows", []).append({
                "bench": "batchnorm",
                "case": "{} {} {} [{}]".format(case, ours, key, backends[ours]),
                "ours_ms": a["median_ms"], "baseline_ms": b["median_ms"],
                "speedup": b["median_ms"] / a["median_ms"],
                "floor_ms": a["floor_ms"], "floor_ratio": a["median_ms"] / a["floor_ms"],
                "ours_fraction_of_copy_bw": a["fraction_of_copy_bw"],
                "baseline_fraction_of_copy_bw": b["fraction_of_copy_bw"]})
    _print_entry(case, entry)
    del x, dy, layer
    torch.cuda.empty_cache()


def _print_entry(case, entry):
    print("\n{}  (layer: {}, fused: {})".format(case, entry["backends"]["layer"],
                                                entry["backends"]["fused_relu"]))
    for name, modes in entry["variants"].items():
        cells = []
        for key in ("fwd", "fwd+bwd"):
            t = modes.get(key, {})
            if "median_ms" in t:
                cells.append("{:7s} {:8.3f} ms [{:.3f}-{:.3f}] {:5.1f}% of copy bw".format(
                    key, t["median_ms"], t["p10_ms"], t["p90_ms"],
                    100 * t["fraction_of_copy_bw"]))
            else:
                cells.append("{:7s} {}".format(key, t.get("error", "-")[:80]))
        print("  {:14s} {}".format(name, "   ".join(cells)), flush=True)


def run(results):
    """Append the batch-norm rows to ``results['rows']`` and the full
    measurements to ``results['batchnorm']``."""
    copy_bps = results.get("ceilings", {}).get("copy_bytes_per_s")
    if copy_bps is None:
        copy_bps, t = copy_bandwidth()
        results.setdefault("ceilings", {})["copy_bytes_per_s"] = copy_bps
    results["batchnorm_copy_bytes_per_s"] = copy_bps
    print("copy bandwidth {:.0f} GB/s".format(copy_bps / 1e9), flush=True)
    for shape in SPATIAL_SHAPES:
        for dtype in DTYPES:
            for channels_last in (False, True):
                _case(results, copy_bps, shape, 'auto', dtype, channels_last)
    for shape in PER_ACTIVATION_SHAPES:
        for dtype in DTYPES:
            _case(results, copy_bps, shape, 0, dtype, False)
    return results


PLANE_SIDES = (56, 64, 80, 96, 112, 128)


def plane_sweep(results, sides=PLANE_SIDES, dtypes=(torch.float32, torch.float16)):
    """cuDNN against our Triton kernels for planar batch norm without an
    activation (the choice :func:`lasagne.ops.batchnorm.dnn_backend` makes
    for float32/float16 NCHW), 128 x 64 x side x side, forward+backward of
    the op with gamma and beta; appended to ``results['plane_sweep']``."""
    copy_bps = results.setdefault("ceilings", {}).get("copy_bytes_per_s")
    if copy_bps is None:
        copy_bps, _ = copy_bandwidth()
        results["ceilings"]["copy_bytes_per_s"] = copy_bps
    print("\n{:34s} {:>16s} {:>16s} {:>8s}".format("planar batch norm fwd+bwd", "cudnn ms",
                                                  "triton ms", "cudnn/triton"))
    for dtype in dtypes:
        for side in sides:
            shape = (128, 64, side, side)
            x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
            dy = torch.randn_like(x)
            g = torch.ones(64, device="cuda", requires_grad=True)
            b = torch.zeros(64, device="cuda", requires_grad=True)
            entry = {"shape": shape, "dtype": _dtype_name(dtype), "backends": {},
                     "floor_ms": 5 * x.numel() * x.element_size() / copy_bps * 1e3}
            for backend in ("cudnn", "triton"):
                def fn(x, backend=backend):
                    return bn_ops.batch_norm_train(x, g, b, "auto", 1e-4, backend=backend)[0]
                entry["backends"][backend] = _measure(fn, [g, b], x, dy, True)
            results.setdefault("plane_sweep", []).append(entry)
            t = {k: v["median_ms"] for k, v in entry["backends"].items()}
            print("{:34s} {:9.3f} ({:4.2f}x) {:9.3f} ({:4.2f}x) {:8.2f}".format(
                "x".join(map(str, shape)) + " " + _dtype_name(dtype),
                t["cudnn"], t["cudnn"] / entry["floor_ms"], t["triton"],
                t["triton"] / entry["floor_ms"], t["cudnn"] / t["triton"]), flush=True)
            del x, dy
            torch.cuda.empty_cache()
    return results


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--planes", action="store_true",
                        help="only the cuDNN vs Triton sweep over plane sizes (plane_sweep)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("bench_batchnorm needs a CUDA GPU")
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    try:
        import triton
        results["triton"] = triton.__version__
    except ImportError:
        results["triton"] = None
    if args.planes:
        plane_sweep(results)
        _write(results, "batchnorm-planes")
        return
    run(results)
    print("\n{:70s} {:>9s} {:>9s} {:>8s} {:>8s} {:>8s}".format(
        "case", "ours ms", "torch ms", "speedup", "ours bw", "torch bw"))
    for r in results["rows"]:
        print("{:70s} {:9.3f} {:9.3f} {:8.2f} {:7.1f}% {:7.1f}%".format(
            r["case"][:70], r["ours_ms"], r["baseline_ms"], r["speedup"],
            100 * r["ours_fraction_of_copy_bw"], 100 * r["baseline_fraction_of_copy_bw"]))
    _write(results, "batchnorm")


def _write(results, prefix):
    out_dir = os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out_dir, exist_ok=True)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", results["gpu"]).strip("-").lower()
    path = os.path.join(out_dir, "{}-{}-{}.json".format(
        prefix, gpu, datetime.datetime.now().strftime("%Y-%m-%d-%H%M")))
    with open(path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    print("wrote", path)


if __name__ == "__main__":
    main()

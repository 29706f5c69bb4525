"""Run the benchmark suite on a CUDA GPU: ``python -m bench.run``.

Measures the ceilings (copy bandwidth, bf16 and TF32 matmul rate) and then
every layer benchmark in the same process, prints one table, and writes
``bench/results/<gpu>-<date>.json`` and a PNG chart of the speed-ups.

Each benchmark module exposes ``run(results)`` and appends rows to
``results['rows']``: dicts with ``bench``, ``case``, ``ours_ms``,
``baseline_ms`` (plain PyTorch in the same run), ``speedup``
(baseline / ours) and, for memory-bound kernels, ``floor_ms`` (minimum bytes
over the measured copy bandwidth) and ``floor_ratio`` (ours / floor).
"""

import argparse
import datetime
import importlib
import json
import os
import re
import sys
import traceback

import torch

from bench.common import ceilings

LAYER_BENCHES = ("bench_pool", "bench_batchnorm", "bench_conv", "bench_conv_gemm")


def print_table(rows):
    """Print the rows of every benchmark as one table."""
    header = "{:10s} {:60s} {:>10s} {:>10s} {:>8s} {:>9s}".format(
        "bench", "case", "ours ms", "torch ms", "speedup", "vs floor")
    print(header)
    print("-" * len(header))
    for r in rows:
        def num(key, fmt):
            v = r.get(key)
            return fmt.format(v) if isinstance(v, (int, float)) else "-"
        print("{:10s} {:60s} {:>10s} {:>10s} {:>8s} {:>9s}".format(
            str(r.get("bench", ""))[:10], str(r.get("case", ""))[:60],
            num("ours_ms", "{:.4f}"), num("baseline_ms", "{:.4f}"), num("speedup", "{:.3f}"),
            num("floor_ratio", "{:.2f}x")))


def _chart(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart")
        return
    rows = [r for r in rows if isinstance(r.get("speedup"), (int, float))]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(10, max(3, 0.22 * len(rows))))
    labels = ["{} {}".format(r["bench"], r["case"])[:80] for r in rows]
    ax.barh(range(len(rows)), [r["speedup"] for r in rows])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up over plain PyTorch (>1 is faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(LAYER_BENCHES),
                        help="comma-separated benchmark modules to run")
    parser.add_argument("--networks", action="store_true",
                        help="also run the whole-network benchmark (slow: compiles)")
    parser.add_argument("--out", default=os.environ.get("OUT"),
                        help="directory for JSON and PNG (default: $OUT, else bench/results)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench.run needs a CUDA GPU")
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-").lower()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    out_dir = args.out or os.path.join(os.path.dirname(__file__), "results")
    os.makedirs(out_dir, exist_ok=True)
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
               "date": stamp, "rows": [], "errors": {}}
    results["ceilings"] = ceilings()
    c = results["ceilings"]
    print("copy bandwidth {:.0f} GB/s, bf16 matmul {:.0f} TFLOP/s, tf32 matmul {:.0f} TFLOP/s"
          .format(c["copy_bytes_per_s"] / 1e9, c["bf16_flops"] / 1e12, c["tf32_flops"] / 1e12),
          flush=True)
    names = [n for n in args.only.split(",") if n]
    if args.networks:
        names.append("bench_networks")
    base = os.path.join(out_dir, "{}-{}".format(gpu, stamp))
    for name in names:
        try:
            module = importlib.import_module("bench." + name)
        except ImportError as e:
            results["errors"][name] = "not importable: {}".format(e)
            continue
        try:
            module.run(results)
        except Exception:
            results["errors"][name] = traceback.format_exc()[-2000:]
            print("{} failed:\n{}".format(name, results["errors"][name]), flush=True)
        # written after every benchmark, so that a run cut short keeps its numbers
        with open(base + ".json", "w") as f:
            json.dump(results, f, indent=1, default=str)
        _chart(results["rows"], base + ".png")
        print("finished", name, flush=True)
    print_table(results["rows"])
    print("wrote", base + ".json")


if __name__ == "__main__":
    main()

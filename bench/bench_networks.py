"""Whole-network training steps: our VGG-16 and ResNet-50 (built from dnn
layers, run through :class:`lasagne.Network`) against torchvision's models
with the same weights.

A step is forward + cross-entropy + backward + SGD(momentum) update, under
bf16 autocast with channels_last inputs for both, in three execution modes:
eager, ``torch.compile`` (default mode) and CUDA graphs
(``torch.compile(mode="reduce-overhead")``). Both models are prepared
(compiled) first, then timed in alternating rounds (5 steps each, 4 rounds,
order reversed every round): timing one after the other measured the
second model up to 1.6x slower in compiled mode on the host.
"""

import argparse
import gc
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from bench.common import summarize, time_cuda

MODES = ("eager", "compile", "cudagraphs")


def _ours(name, tv_model):
    from lasagne import Network
    from lasagne.models import build_resnet50, build_vgg16
    from lasagne.models.convert import resnet50_from_torchvision, vgg16_from_torchvision
    state = {k: v.detach().cpu() for k, v in tv_model.state_dict().items()}
    if name == "resnet50":
        net = build_resnet50(variant="v1.5")
        resnet50_from_torchvision(state, net)
        logits = net["fc1000"]
    else:
        net = build_vgg16()
        vgg16_from_torchvision(state, net)
        logits = net["fc8"]
    return Network(logits)


def _torchvision(name):
    import torchvision
    return getattr(torchvision.models, name)(weights=None)


def _wrap(model, mode):
    if mode == "eager":
        return model
    if mode == "compile":
        return torch.compile(model)
    return torch.compile(model, mode="reduce-overhead")


def prepare_step(model, batch, mode):
    """A training step of ``model`` (already on CUDA) in ``mode``, run once
    (compiling it); returns the step and the seconds the first call took."""
    model.train()
    fn = _wrap(model, mode)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                          momentum=0.9)
    xs = [torch.randn(batch, 3, 224, 224, device="cuda").contiguous(
        memory_format=torch.channels_last) for _ in range(2)]
    ys = [torch.randint(0, 1000, (batch,), device="cuda") for _ in range(2)]
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + 1) % 2
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fn(xs[i])
        loss = F.cross_entropy(out.float(), ys[i])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    return step, time.perf_counter() - t0


def interleaved(steps, rounds=4, repeat=5, warmup=5):
    """Time several steps in alternating order (A B, B A, ...) so that
    neither pays for running first or second (allocator state, garbage
    collection, clocks); returns a :func:`bench.common.summarize` dict per
    step over all rounds, plus ``host_ms``: the median over rounds of the
    host time per step when the steps are enqueued without waiting (the
    step time itself when the host is the bottleneck)."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    torch.cuda.synchronize()
    gc.collect()
    times = {name: [] for name in steps}
    host = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name] += time_cuda(steps[name], warmup=1, repeat=repeat,
                                     flush=False, hide_host=False)["times_ms"]
            # host time: the same steps enqueued without waiting for the GPU
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(repeat):
                steps[name]()
            host[name].append((time.perf_counter() - t0) / repeat * 1e3)
            torch.cuda.synchronize()
    out = {}
    for name in names:
        out[name] = summarize(times[name])
        out[name]["host_ms"] = statistics.median(host[name])
    return out


def run(results, models=("resnet50", "vgg16"), batches=(8, 128), modes=MODES, checkpoint=None):
    """Fill ``results['networks']`` with per-(model, batch, mode) timings;
    ``checkpoint(results)``, if given, is called after each of them (so that
    a run cut short keeps what it measured)."""
    torch.backends.cudnn.benchmark = True
    rows = results.setdefault("networks", [])
    for name in models:
        tv = _torchvision(name)
        ours = _ours(name, tv).cuda()
        tv = tv.cuda().to(memory_format=torch.channels_last)
        for batch in batches:
            for mode in modes:
                row = {"model": name, "batch": batch, "mode": mode}
                torch._dynamo.reset()
                steps, first = {}, {}
                for label, model in (("torchvision", tv), ("lasagne", ours)):
                    try:
                        steps[label], first[label] = prepare_step(model, batch, mode)
                    except Exception as e:  # recorded, never hidden
                        row[label] = {"error": "{}: {}".format(type(e).__name__, e)[:500]}
                for label, t in interleaved(steps).items():
                    t["first_step_s"] = first[label]
                    t["images_per_s"] = batch / (t["median_ms"] * 1e-3)
                    row[label] = t
                del steps
                torch.cuda.empty_cache()
                a, b = row["torchvision"], row["lasagne"]
                if "median_ms" in a and "median_ms" in b:
                    row["speedup_vs_torchvision"] = a["median_ms"] / b["median_ms"]
                    results.setdefault("rows", []).append({
                        "bench": "network",
                        "case": "{} b={} {} train step bf16 CL".format(name, batch, mode),
                        "ours_ms": b["median_ms"], "baseline_ms": a["median_ms"],
                        "speedup": row["speedup_vs_torchvision"]})
                rows.append(row)
                print(_format_row(row), flush=True)
                if checkpoint is not None:
                    checkpoint(results)
    return results


def _format_row(row):
    def cell(r):
        if "median_ms" not in r:
            return "error: " + r.get("error", "?")[:60]
        return "{:8.2f} ms ({:7.0f} img/s, host {:6.2f} ms)".format(
            r["median_ms"], r["images_per_s"], r.get("host_ms", float("nan")))
    return "{:9s} b={:<4d} {:10s} torchvision {}  lasagne {}  speedup {}".format(
        row["model"], row["batch"], row["mode"], cell(row["torchvision"]), cell(row["lasagne"]),
        "{:.3f}".format(row["speedup_vs_torchvision"]) if "speedup_vs_torchvision" in row
        else "-")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="resnet50,vgg16")
    parser.add_argument("--batches", default="8,128")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    def write(results):
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)

    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "argv": sys.argv[1:]}
    run(results, args.models.split(","), [int(b) for b in args.batches.split(",")],
        args.modes.split(","), checkpoint=write)
    write(results)


if __name__ == "__main__":
    main()

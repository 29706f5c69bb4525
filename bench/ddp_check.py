"""Data-parallel check on two GPUs (NCCL): correctness against one GPU, and
scaling. One command, a few minutes:

    python bench/ddp_check.py            # writes $OUT/ddp_check.json if OUT is set,
                                         # else bench/results/ddp_check.json

What it runs
------------
1. A two-process NCCL job (``torch.multiprocessing`` spawn, one GPU each):

   * DDP with global batch statistics (``convert_sync_batchnorm``), float64
     and float32 (TF32 off): loss curve, final weights and batch-norm moving
     averages, to be compared with one GPU training on the whole global
     batch; averages bitwise equal on the two ranks.
   * DDP with per-process statistics, float64: the loss curve compared with a
     one-GPU "ghost batch" reference (each half normalized on its own, mean
     of the two losses), each rank's averages with those of its halves;
     trainable parameters equal across ranks, averages equal after
     ``sync_batch_norm_stats``.
   * FSDP2 (``lasagne.distributed.fully_shard``) with global statistics,
     float32: loss curve.
   * Rank 0 saves checkpoints (``full_state_dict``) and its eval-mode outputs.
   * Throughput (images/s) of a CIFAR-shaped VGG of dnn layers
     (``examples/train_ddp.py``'s, width 64) under DDP: per-GPU batch 256
     (weak scaling) in bf16 autocast and fp32 (TF32), with and without
     global statistics; global batch 256 (strong scaling), bf16.
2. In this process, one GPU: the references for 1., the checkpoints loaded
   into new one-process networks (GPU and CPU) against rank 0's outputs, and
   the one-GPU throughput of the same configurations (plain ``Network``).
3. The example itself: ``torchrun --nproc_per_node=2 examples/train_ddp.py``
   and the one-process run (synthetic data, global statistics, float32),
   loss curves compared (skipped when the time budget is spent).

NVLink multicast stays off: ``NCCL_NVLS_ENABLE=0`` and
``TORCH_SYMM_MEM_DISABLE_MULTICAST=1`` are set here for every process.
Exit status 0 when every check passes.
"""

import os

# Never enable NVLink multicast on the lent machines (before torch loads NCCL).
os.environ["NCCL_NVLS_ENABLE"] = "0"
os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

STEPS = 6              # correctness: training steps
GLOBAL = 32            # correctness: global batch
SEED = 4321
LR, MOMENTUM = 0.1, 0.9
TP_WIDTH = 64          # throughput network width
TP_WINDOWS, TP_STEPS, TP_WARMUP = 3, 10, 10


# -- shared pieces -----------------------------------------------------------------------------

def load_example():
    spec = importlib.util.spec_from_file_location(
        "train_ddp_example", os.path.join(ROOT, "examples", "train_ddp.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_check_net(seed, device, dtype):
    """Convolutions with both batch-norm layers (dnn spatial, core spatial,
    dnn on a dense layer), stride-2 downsampling, global pooling."""
    import lasagne
    from lasagne.layers import DenseLayer, GlobalPoolLayer, InputLayer, batch_norm
    from lasagne.layers.dnn import Conv2DDNNLayer, batch_norm_dnn
    from lasagne.network import Network
    lasagne.random.set_rng(np.random.RandomState(seed))
    l = InputLayer((None, 3, 16, 16))
    l = batch_norm_dnn(Conv2DDNNLayer(l, 16, 3, pad=1, name="c1"))
    l = batch_norm_dnn(Conv2DDNNLayer(l, 32, 3, stride=2, pad=1, name="c2"))
    l = batch_norm(Conv2DDNNLayer(l, 32, 3, pad=1, name="c3"))
    l = GlobalPoolLayer(l, name="gap")
    l = batch_norm_dnn(DenseLayer(l, 32, name="fc"))
    l = DenseLayer(l, 10, nonlinearity=lasagne.nonlinearities.softmax, name="out")
    return Network(l).to(device=device, dtype=dtype)


def check_data(dtype):
    gen = torch.Generator().manual_seed(SEED)
    X = torch.randn(STEPS, GLOBAL, 3, 16, 16, generator=gen, dtype=torch.float64) * 1.5 + 0.3
    y = torch.randint(0, 10, (STEPS, GLOBAL), generator=gen)
    X_test = torch.randn(64, 3, 16, 16, generator=gen, dtype=torch.float64)
    return X.to(dtype), y, X_test.to(dtype)


def xent(prob, y):
    from lasagne.objectives import categorical_crossentropy
    if prob.dtype in (torch.float16, torch.bfloat16):
        prob = prob.float()
    return categorical_crossentropy(prob, y).mean()


def stat_keys(net):
    ids = set(id(p) for p in net.get_params(trainable=False))
    return [k for k, p in net.named_parameters() if id(p) in ids]


def set_precision(tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def deterministic(on):
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


def global_mean(value, world):
    t = value.detach().double().clone()
    if world > 1:
        torch.distributed.all_reduce(t)
    return t.item() / world


def train(model, X, y, part, world):
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    losses = []
    model.train()
    for step in range(X.shape[0]):
        loss = xent(model(X[step, part]), y[step, part])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(global_mean(loss, world))
    return losses


def cpu_state(net):
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def throughput(model, batch, amp, world, device):
    """Images per second of training steps (all processes), median of
    TP_WINDOWS windows of TP_STEPS steps after TP_WARMUP warm-up steps."""
    gen = torch.Generator(device=device).manual_seed(0)
    xs = [torch.randn(batch, 3, 32, 32, device=device, generator=gen) for _ in range(4)]
    if device.type == "cuda":
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    ys = [torch.randint(0, 10, (batch,), device=device, generator=gen) for _ in range(4)]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step(i):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            prob = model(xs[i % 4])
        loss = xent(prob, ys[i % 4])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i in range(TP_WARMUP):
        step(i)
    rates = []
    for _ in range(TP_WINDOWS):
        sync()
        if world > 1:
            torch.distributed.barrier()
        t0 = time.perf_counter()
        for i in range(TP_STEPS):
            step(i)
        sync()
        rates.append(TP_STEPS * batch * world / (time.perf_counter() - t0))
    return statistics.median(rates)


TP_CASES = [
    # name, per-process batch on 2 GPUs, amp, sync
    ("bf16 b256/GPU", 256, True, False),
    ("bf16 b256/GPU sync-bn", 256, True, True),
    ("fp32(tf32) b256/GPU", 256, False, False),
    ("bf16 global 256", 128, True, False),
]


def _dry_run_settings():
    """--dry-run-cpu: the same logic on CPU with Gloo and tiny sizes (to test
    this script without GPUs)."""
    global TP_WIDTH, TP_CASES, TP_WINDOWS, TP_STEPS, TP_WARMUP
    TP_WIDTH, TP_WINDOWS, TP_STEPS, TP_WARMUP = 8, 1, 2, 1
    TP_CASES = [(name, max(2, batch // 32), False, sync) for name, batch, _, sync in TP_CASES]


# -- the two-process job -----------------------------------------------------------------------

def _guard(results, name, fn):
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except Exception:
        results[name] = {"error": traceback.format_exc()}
    if isinstance(results[name], dict):
        results[name]["seconds"] = time.perf_counter() - t0


def worker(rank, world, port, outdir, run_throughput, dry):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from lasagne import distributed

    if dry:
        _dry_run_settings()
        device = torch.device("cpu")
        torch.set_num_threads(1)
    else:
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    dist.init_process_group("gloo" if dry else "nccl",
                            init_method="tcp://127.0.0.1:{}".format(port), rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=90),
                            device_id=None if dry else device)
    device_ids = None if dry else [rank]
    local = GLOBAL // world
    part = slice(rank * local, (rank + 1) * local)
    results = {}
    path = os.path.join(outdir, "rank{}.pt".format(rank))

    def guard(name, fn):
        # saved after every case: a job stopped at its deadline keeps the rest
        _guard(results, name, fn)
        torch.save(results, path + ".tmp")
        os.replace(path + ".tmp", path)

    def ddp_case(dtype, sync, tf32=False):
        def run():
            set_precision(tf32)
            deterministic(True)
            X, y, X_test = check_data(dtype)
            X, y, X_test = X.to(device), y.to(device), X_test.to(device)
            net = build_check_net(SEED + rank, device, dtype)   # DDP broadcasts rank 0's
            if sync:
                distributed.convert_sync_batchnorm(net)
            model = DDP(net, device_ids=device_ids)
            initial = max(distributed.parameter_divergence(model).values())
            losses = train(model, X, y, part, world)
            div = distributed.parameter_divergence(model)
            stats = set(stat_keys(net))
            rec = {"losses": losses, "initial_divergence": initial,
                   "weight_divergence": max(v for k, v in div.items() if k not in stats),
                   "stat_divergence": max(v for k, v in div.items() if k in stats),
                   "stats": {k: v for k, v in cpu_state(net).items() if k in stats}}
            if not sync:
                distributed.sync_batch_norm_stats(model)
                rec["stat_divergence_after_sync"] = max(
                    distributed.parameter_divergence(model).values())
            state = distributed.full_state_dict(model)
            model.eval()
            with torch.no_grad():
                rec["eval_output"] = model(X_test).cpu()
            if rank == 0:
                rec["state"] = state
            return rec
        return run

    guard("ddp_sync_f64", ddp_case(torch.float64, True))
    guard("ddp_local_f64", ddp_case(torch.float64, False))
    guard("ddp_sync_f32", ddp_case(torch.float32, True))

    def fsdp_case():
        from torch.distributed.device_mesh import init_device_mesh
        set_precision(False)
        deterministic(True)
        X, y, _ = check_data(torch.float32)
        X, y = X.to(device), y.to(device)
        net = build_check_net(SEED, device, torch.float32)
        distributed.convert_sync_batchnorm(net)
        distributed.fully_shard(net, mesh=init_device_mesh(device.type, (world,)))
        losses = train(net, X, y, part, world)
        state = distributed.full_state_dict(net)
        return {"losses": losses, "state": state if rank == 0 else None}

    guard("fsdp_sync_f32", fsdp_case)

    if run_throughput:
        example = load_example()
        from lasagne.network import Network
        for name, batch, amp, sync in TP_CASES:
            def tp(batch=batch, amp=amp, sync=sync):
                set_precision(True)
                deterministic(False)
                import lasagne
                lasagne.random.set_rng(np.random.RandomState(0))
                net = Network(example.build_cifar_net(width=TP_WIDTH)).to(device)
                if sync:
                    distributed.convert_sync_batchnorm(net)
                model = DDP(net, device_ids=device_ids)
                return {"images_per_s": throughput(model, batch, amp, world, device),
                        "per_gpu_batch": batch, "global_batch": batch * world}
            guard("tp " + name, tp)
    dist.barrier()
    dist.destroy_process_group()


def run_two(outdir, run_throughput, deadline_s, dry):
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.start_processes(worker, args=(2, port, outdir, run_throughput, dry), nprocs=2,
                             join=False, start_method="spawn")
    start = time.perf_counter()
    error = None
    try:
        while not ctx.join(timeout=5):
            if time.perf_counter() - start > deadline_s:
                error = "the two-process job passed its {} s deadline".format(deadline_s)
                break
    except Exception:
        error = traceback.format_exc()
    for p in ctx.processes:
        if p.is_alive():
            p.terminate()
    ranks = []
    for r in range(2):
        path = os.path.join(outdir, "rank{}.pt".format(r))
        ranks.append(torch.load(path, weights_only=False) if os.path.exists(path) else {})
    return ranks, error, time.perf_counter() - start


# -- one GPU references --------------------------------------------------------------------------

def reference_global(dtype, device):
    set_precision(False)
    deterministic(True)
    X, y, X_test = check_data(dtype)
    net = build_check_net(SEED, device, dtype)
    losses = train(net, X.to(device), y.to(device), slice(None), 1)
    return net, losses


def reference_ghost(dtype, device, world=2):
    set_precision(False)
    deterministic(True)
    X, y, _ = check_data(dtype)
    X, y = X.to(device), y.to(device)
    net = build_check_net(SEED, device, dtype)
    keys = stat_keys(net)
    params = dict(net.named_parameters())
    halves = [{k: params[k].detach().clone() for k in keys} for _ in range(world)]
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    local = GLOBAL // world
    losses = []
    for step in range(STEPS):
        loss = 0
        for r in range(world):
            with torch.no_grad():
                for k in keys:
                    params[k].copy_(halves[r][k])
            part = slice(r * local, (r + 1) * local)
            loss = loss + xent(net(X[step, part]), y[step, part]) / world
            with torch.no_grad():
                for k in keys:
                    halves[r][k] = params[k].detach().clone()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return net, losses, [{k: v.cpu() for k, v in h.items()} for h in halves]


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def max_abs(a, b):
    return float((a.double() - b.double()).abs().max())


# -- main ----------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description="DDP / FSDP2 check on 2 GPUs")
    parser.add_argument("--budget", type=float, default=230,
                        help="seconds; the example run is skipped past this (default 230)")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-example", action="store_true")
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="run the logic on CPU with Gloo and tiny sizes (no GPU needed)")
    args = parser.parse_args(argv)
    dry = args.dry_run_cpu
    if dry:
        _dry_run_settings()
    t_start = time.perf_counter()
    report = {"env": {"NCCL_NVLS_ENABLE": os.environ["NCCL_NVLS_ENABLE"],
                      "TORCH_SYMM_MEM_DISABLE_MULTICAST":
                          os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"],
                      "torch": torch.__version__, "cuda": torch.version.cuda},
              "checks": [], "throughput": []}
    checks = report["checks"]

    def check(name, ok, value, limit):
        checks.append({"check": name, "ok": bool(ok), "value": value, "limit": limit})

    n_gpus = torch.cuda.device_count()
    report["env"]["gpus"] = n_gpus
    report["env"]["dry_run_cpu"] = dry
    if n_gpus < 2 and not dry:
        print("needs 2 GPUs, found {}".format(n_gpus))
        return 2
    if not dry:
        report["env"]["gpu_name"] = torch.cuda.get_device_name(0)
        try:
            version = torch.cuda.nccl.version()
            report["env"]["nccl"] = ".".join(map(str, version)) \
                if isinstance(version, tuple) else str(version)
        except Exception:
            pass

    with tempfile.TemporaryDirectory() as outdir:
        ranks, job_error, job_s = run_two(outdir, not args.no_throughput, deadline_s=170, dry=dry)
    report["two_process_seconds"] = job_s
    if job_error:
        report["two_process_error"] = job_error
        print(job_error)
    errors = {name: rec["error"] for r in ranks for name, rec in r.items()
              if isinstance(rec, dict) and "error" in rec}
    for name, err in errors.items():
        print("[{}] failed:\n{}".format(name, err))
    report["errors"] = errors

    if dry:
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)

    def ok_case(name):
        return all(name in r and "error" not in r[name] for r in ranks)

    # global statistics vs one GPU on the global batch
    for dtype, name, tol in ((torch.float64, "ddp_sync_f64", 1e-9),
                             (torch.float32, "ddp_sync_f32", 1e-4)):
        if not ok_case(name):
            check(name + " ran", False, "error", "-")
            continue
        ref, ref_losses = reference_global(dtype, device)
        ref_state = cpu_state(ref)
        r0, r1 = ranks[0][name], ranks[1][name]
        check(name + ": DDP broadcast rank 0's initial state", r0["initial_divergence"] == 0,
              r0["initial_divergence"], "0")
        check(name + ": loss curve vs 1 GPU (max rel)", rel(r0["losses"], ref_losses) < tol,
              rel(r0["losses"], ref_losses), tol)
        check(name + ": BN averages bitwise equal on ranks", r0["stat_divergence"] == 0,
              r0["stat_divergence"], "0")
        check(name + ": weights equal on ranks", r0["weight_divergence"] == 0,
              r0["weight_divergence"], "0")
        d = max(max_abs(r0["state"][k], ref_state[k]) / max(1.0, float(ref_state[k].abs().max()))
                for k in ref_state)
        check(name + ": final state vs 1 GPU (max rel-to-scale)", d < tol * 10, d, tol * 10)
        # rank 0's checkpoint in a new one-process network, GPU and CPU
        X_test = check_data(dtype)[2]
        for where, tolerance in (("cuda", 1e-12 if dtype == torch.float64 else 1e-6),
                                 ("cpu", 1e-9 if dtype == torch.float64 else 1e-4)):
            if dry and where == "cuda":
                continue
            dev = torch.device(where, 0) if where == "cuda" else torch.device("cpu")
            fresh = build_check_net(SEED + 77, dev, dtype)
            fresh.load_state_dict(r0["state"])
            fresh.eval()
            with torch.no_grad():
                out = fresh(X_test.to(dev)).cpu()
            diff = max_abs(out, r0["eval_output"])
            check("{}: rank-0 checkpoint in a 1-process net on {} (max abs)".format(name, where),
                  diff <= tolerance, diff, tolerance)
        same = max_abs(r0["eval_output"], r1["eval_output"])
        limit = 1e-12 if dtype == torch.float64 else 1e-6
        check(name + ": ranks evaluate alike (max abs)", same <= limit, same, limit)
        report.setdefault("curves", {})[name] = {"two_gpus": r0["losses"], "one_gpu": ref_losses}

    # per-process statistics vs the ghost-batch reference
    name = "ddp_local_f64"
    if ok_case(name):
        ghost, ghost_losses, halves = reference_ghost(torch.float64, device)
        _, global_losses = reference_global(torch.float64, device)
        r0 = ranks[0][name]
        check(name + ": loss curve vs 1-GPU ghost batches (max rel)",
              rel(r0["losses"], ghost_losses) < 1e-9, rel(r0["losses"], ghost_losses), 1e-9)
        check(name + ": differs from global-batch BN by design (rel, step 1)",
              rel(r0["losses"][:1], global_losses[:1]) > 1e-7,
              rel(r0["losses"][:1], global_losses[:1]), "> 1e-7")
        d = max(max_abs(ranks[r][name]["stats"][k], halves[r][k])
                for r in range(2) for k in halves[r])
        check(name + ": each rank's BN averages vs its halves (max abs)", d < 1e-9, d, 1e-9)
        check(name + ": weights equal on ranks", r0["weight_divergence"] == 0,
              r0["weight_divergence"], "0")
        check(name + ": BN averages differ before sync", r0["stat_divergence"] > 0,
              r0["stat_divergence"], "> 0")
        check(name + ": equal after sync_batch_norm_stats",
              r0["stat_divergence_after_sync"] == 0, r0["stat_divergence_after_sync"], "0")
        report.setdefault("curves", {})[name] = {"two_gpus": r0["losses"],
                                                 "one_gpu_ghost": ghost_losses,
                                                 "one_gpu_global": global_losses}
    else:
        check(name + " ran", False, "error", "-")

    name = "fsdp_sync_f32"
    if ok_case(name):
        _, ref_losses = reference_global(torch.float32, device)
        r0 = ranks[0][name]
        check(name + ": FSDP2 loss curve vs 1 GPU (max rel)", rel(r0["losses"], ref_losses) < 1e-4,
              rel(r0["losses"], ref_losses), 1e-4)
        report.setdefault("curves", {})[name] = {"two_gpus": r0["losses"], "one_gpu": ref_losses}
    else:
        check(name + " ran", False, "error", "-")

    # one-GPU throughput, the same configurations
    if not args.no_throughput:
        example = load_example()
        import lasagne
        from lasagne.network import Network
        one = {}
        for name, batch, amp, sync in TP_CASES:
            key = (batch, amp)
            if key not in one:
                try:
                    set_precision(True)
                    deterministic(False)
                    lasagne.random.set_rng(np.random.RandomState(0))
                    net = Network(example.build_cifar_net(width=TP_WIDTH)).to(device)
                    one[key] = throughput(net, batch * (2 if "global" in name else 1), amp, 1,
                                          device)
                except Exception:
                    one[key] = float("nan")
                    errors["tp1 " + name] = traceback.format_exc()
            two = ranks[0].get("tp " + name, {}).get("images_per_s", float("nan"))
            one_rate = one[key]
            report["throughput"].append({
                "case": name, "one_gpu_images_per_s": one_rate, "two_gpu_images_per_s": two,
                "speedup": two / one_rate, "scaling_efficiency": two / (2 * one_rate),
                "one_gpu_batch": batch * (2 if "global" in name else 1),
                "two_gpu_global_batch": 2 * batch})

    # the example, with torchrun and on one process
    elapsed = time.perf_counter() - t_start
    if not args.no_example and elapsed < args.budget - 70:
        with tempfile.TemporaryDirectory() as tmp:
            common = [os.path.join(ROOT, "examples", "train_ddp.py"), "--data", "synthetic",
                      "--steps", "30", "--batch-size", "256", "--sync-bn", "--log-every", "5",
                      "--quiet"]
            if dry:
                common[common.index("--steps") + 1] = "3"
                common[common.index("--batch-size") + 1] = "16"
                common += ["--device", "cpu", "--log-every", "1"]
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH",
                                                                                 ""))
            cmds = {"two": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=2"] + common
                    + ["--json", os.path.join(tmp, "two.json"),
                       "--checkpoint", os.path.join(tmp, "ckpt.pt")],
                    "one": [sys.executable] + common + ["--json", os.path.join(tmp, "one.json")]}
            runs = {}
            for key, cmd in cmds.items():
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
                runs[key] = {"rc": proc.returncode, "seconds": time.perf_counter() - t0}
                if proc.returncode:
                    errors["example " + key] = proc.stdout[-3000:] + proc.stderr[-3000:]
            if all(r["rc"] == 0 for r in runs.values()):
                two = json.load(open(os.path.join(tmp, "two.json")))
                one = json.load(open(os.path.join(tmp, "one.json")))
                d = rel(two["history"]["loss"], one["history"]["loss"])
                check("example: torchrun x2 vs 1 process loss curve, float32 (max rel)",
                      d < 5e-3, d, 5e-3)
                check("example: checkpoint verified", two.get("checkpoint_verified"), True,
                      True)
                report["example"] = {"runs": runs, "two": two, "one": one}
            else:
                check("example ran", False, "error", "-")
    else:
        report["example"] = "skipped ({:.0f} s elapsed)".format(elapsed)

    report["seconds"] = time.perf_counter() - t_start
    report["errors"] = errors

    # table
    print()
    print("{:74s} {:>5s} {:>12s} {:>10s}".format("check", "ok", "value", "limit"))
    print("-" * 104)
    for c in checks:
        value = c["value"]
        value = "{:.3g}".format(value) if isinstance(value, float) else str(value)
        print("{:74s} {:>5s} {:>12s} {:>10s}".format(c["check"][:74], "yes" if c["ok"] else "NO",
                                                     value, str(c["limit"])))
    if report["throughput"]:
        print()
        print("{:26s} {:>12s} {:>12s} {:>8s} {:>10s}".format(
            "throughput (images/s)", "1 GPU", "2 GPUs", "speedup", "efficiency"))
        print("-" * 72)
        for t in report["throughput"]:
            print("{:26s} {:>12.0f} {:>12.0f} {:>8.2f} {:>9.0f}%".format(
                t["case"], t["one_gpu_images_per_s"], t["two_gpu_images_per_s"], t["speedup"],
                100 * t["scaling_efficiency"]))
        print("(VGG-style CIFAR net of dnn layers, width {}, SGD step, channels_last; 'b256/GPU': "
              "weak scaling, 1 GPU at 256 vs 2 at 256 each; 'global 256': 1 GPU at 256 vs 2 at "
              "128 each)".format(TP_WIDTH))
    failed = [c["check"] for c in checks if not c["ok"]]
    print()
    print("{} checks, {} failed, {} errors; {:.0f} s".format(len(checks), len(failed), len(errors),
                                                            report["seconds"]))
    out_dir = os.environ.get("OUT") or os.path.join(ROOT, "bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "ddp_check.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)
    print("wrote", path)
    return 0 if not failed and not errors and not job_error else 1


if __name__ == "__main__":
    sys.exit(main())

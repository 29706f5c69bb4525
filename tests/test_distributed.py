"""Data-parallel training on CPU: two processes (Gloo) against one.

One two-process job (forked, so that torch is not imported again) runs every
distributed case once; the tests compare its records with single-process
references computed here, in float64:

* DDP with global batch statistics (``convert_sync_batchnorm``): the loss
  curve, the trained parameters and the moving averages equal those of one
  process training on the whole global batch (tight tolerance); the
  averages are bitwise identical on both ranks.
* DDP with per-process statistics (the default): by design the loss is not
  the one-process loss (each rank normalizes its half); it equals a
  one-process "ghost batch" reference that normalizes each half separately
  and averages the two losses, and each rank's moving averages equal those
  of its own halves. Trainable parameters are identical across ranks, the
  averages are not until ``sync_batch_norm_stats`` averages them.
* A checkpoint written by rank 0 loads into a one-process network (built
  from another seed) and gives rank 0's outputs exactly, in eval mode.
* FSDP2 (``lasagne.distributed.fully_shard``, Gloo): the same loss curve and
  parameters as the one-process run.
* The synchronized op alone: unequal parts per rank give the full batch's
  output, statistics and input gradient.
"""

import os
import sys
import tempfile

import numpy as np
import pytest
import torch

import lasagne
from lasagne import distributed
from lasagne.layers import (DenseLayer, FlattenLayer, InputLayer, ReshapeLayer, batch_norm,
                            get_all_layers)
from lasagne.network import Network
from lasagne.nonlinearities import softmax

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with Gloo")

WORLD = 2
STEPS = 4
LOCAL = 8            # samples per rank; the global batch is WORLD * LOCAL
SEED = 1234
LR, MOMENTUM = 0.3, 0.9


# -- the model and data, shared by the references and the workers ----------------------------

def build(seed):
    """A small MLP with both kinds of batch normalization: spatial
    (BatchNormLayer over a 4D reshape) and BatchNormDNNLayer on a 2D input."""
    from lasagne.layers.dnn import batch_norm_dnn
    lasagne.random.set_rng(np.random.RandomState(seed))
    l = InputLayer((None, 12), name="in")
    l = DenseLayer(l, 12, name="d1")
    l = ReshapeLayer(l, ([0], 3, 2, 2), name="r")
    l = batch_norm(lasagne.layers.NonlinearityLayer(l, name="n1"))
    l = FlattenLayer(l, name="f")
    l = batch_norm_dnn(DenseLayer(l, 9, name="d2"), alpha=0.3)
    l = DenseLayer(l, 4, nonlinearity=softmax, name="out")
    return Network(l)


def data():
    rng = np.random.RandomState(SEED)
    X = torch.from_numpy(rng.randn(STEPS, WORLD * LOCAL, 12) * 2 + 0.5)
    y = torch.from_numpy(rng.randint(0, 4, size=(STEPS, WORLD * LOCAL)))
    X_test = torch.from_numpy(rng.randn(10, 12))
    return X, y, X_test


def xent(prob, target):
    return lasagne.objectives.categorical_crossentropy(prob, target).mean()


def stat_keys(net):
    ids = set(id(p) for p in net.get_params(trainable=False))
    return [k for k, p in net.named_parameters() if id(p) in ids]


# -- the two-process job ----------------------------------------------------------------------

def _worker(rank, world, tmpdir):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", init_method="file://" + os.path.join(tmpdir, "store"),
                            rank=rank, world_size=world)
    try:
        X, y, X_test = data()
        part = slice(rank * LOCAL, (rank + 1) * LOCAL)
        out = {}
        for sync in (True, False):
            net = build(SEED + rank)           # rank 1 differs: DDP must broadcast rank 0's
            with torch.no_grad():
                for p in net.get_params(trainable=False):
                    p.add_(rank)                # the averages too
            if sync:
                distributed.convert_sync_batchnorm(net)
            model = DDP(net)
            initial = distributed.parameter_divergence(model)
            opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
            losses = []
            model.train()
            for step in range(STEPS):
                loss = xent(model(X[step, part]), y[step, part])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total = loss.detach().clone()
                dist.all_reduce(total)
                losses.append(total.item() / world)
            record = {"losses": losses, "initial_divergence": initial,
                      "divergence": distributed.parameter_divergence(model),
                      "stats": {k: net.state_dict()[k].clone() for k in stat_keys(net)}}
            if not sync:
                record["synced"] = distributed.sync_batch_norm_stats(model)
                record["divergence_after_sync"] = distributed.parameter_divergence(model)
            state = distributed.full_state_dict(model)
            model.eval()
            with torch.no_grad():
                record["eval_output"] = model(X_test)
            record["training_after_eval"] = net.training
            if rank == 0:
                torch.save(state, os.path.join(tmpdir, "ckpt_sync{}.pt".format(int(sync))))
            out["ddp_sync" if sync else "ddp_local"] = record

        # broadcasting the averages from a chosen rank
        net = build(SEED)
        with torch.no_grad():
            for p in net.get_params(trainable=False):
                p.add_(rank + 1)
        n = distributed.sync_batch_norm_stats(net, op="broadcast", src=1)
        out["broadcast"] = {"n": n, "stats": {k: net.state_dict()[k].clone()
                                              for k in stat_keys(net)}}

        # FSDP2 on the same task, global statistics
        from torch.distributed.device_mesh import init_device_mesh
        net = build(SEED)
        distributed.convert_sync_batchnorm(net)
        distributed.fully_shard(net, mesh=init_device_mesh("cpu", (world,)))
        sharded = [type(p).__name__ for p in net.get_params(trainable=True)]
        dense_layer = [l for l in net.layers if l.name == "d1"][0]
        bound = dense_layer.W is net._parameters["d1_W"]
        opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
        losses = []
        for step in range(STEPS):
            loss = xent(net(X[step, part]), y[step, part])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total = loss.detach().clone()
            dist.all_reduce(total)
            losses.append(total.item() / world)
        state = distributed.full_state_dict(net)
        net.eval()
        with torch.no_grad():
            eval_output = net(X_test)
        # a full checkpoint loads into a freshly sharded network
        fresh = build(SEED + 5)
        distributed.fully_shard(fresh, mesh=init_device_mesh("cpu", (world,)))
        distributed.load_full_state_dict(fresh, state)
        fresh.eval()
        with torch.no_grad():
            reloaded_output = fresh(X_test)
        out["fsdp"] = {"losses": losses, "state": state, "sharded": sharded, "bound": bound,
                       "eval_output": eval_output, "reloaded_output": reloaded_output}

        # FSDP2 mixed precision: float32 compute for a float64 network (the
        # layers must see the float32 unsharded parameters)
        from torch.distributed.fsdp import MixedPrecisionPolicy
        net = build(SEED)
        distributed.convert_sync_batchnorm(net)
        distributed.fully_shard(net, mesh=init_device_mesh("cpu", (world,)),
                                mp_policy=MixedPrecisionPolicy(param_dtype=torch.float32))
        opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
        losses = []
        for step in range(STEPS):
            prob = net(X[step, part])
            loss = xent(prob.double(), y[step, part])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total = loss.detach().clone()
            dist.all_reduce(total)
            losses.append(total.item() / world)
        out["fsdp_mp"] = {"losses": losses, "output_dtype": str(prob.dtype),
                          "param_dtype": str(next(net.parameters()).dtype)}

        # the op alone, unequal parts: rank 0 holds 11 samples, rank 1 holds 5
        from lasagne.ops.batchnorm_sync import batch_norm_train_sync
        gen = torch.Generator().manual_seed(7)
        full = torch.randn(16, 3, 4, generator=gen) * 3 + 1
        weight = torch.randn(16, 3, 4, generator=gen)
        gamma = torch.randn(3, generator=gen)
        beta = torch.randn(3, generator=gen)
        mine = full[:11] if rank == 0 else full[11:]
        mine = mine.clone().requires_grad_(True)
        y_, mean, inv_std = batch_norm_train_sync(mine, gamma, beta, (0, 2), 1e-3, "relu")
        w = weight[:11] if rank == 0 else weight[11:]
        (y_ * w).sum().backward()
        out["op"] = {"y": y_.detach(), "mean": mean, "inv_std": inv_std, "dx": mine.grad}
        torch.save(out, os.path.join(tmpdir, "rank{}.pt".format(rank)))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def job():
    import torch.multiprocessing as mp
    # imported once here, before forking, not in each process
    import torch.distributed.fsdp  # noqa: F401
    import torch.distributed.device_mesh  # noqa: F401
    import lasagne.layers.dnn  # noqa: F401

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmpdir:
        mp.start_processes(_worker, args=(WORLD, tmpdir), nprocs=WORLD, join=True,
                           start_method=method)
        ranks = [torch.load(os.path.join(tmpdir, "rank{}.pt".format(r)), weights_only=False)
                 for r in range(WORLD)]
        ckpt = {sync: torch.load(os.path.join(tmpdir, "ckpt_sync{}.pt".format(int(sync))))
                for sync in (True, False)}
    return ranks, ckpt


# -- single-process references -----------------------------------------------------------------

def train_global(X, y):
    """One process, the whole global batch each step."""
    net = build(SEED)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    losses = []
    for step in range(STEPS):
        loss = xent(net(X[step]), y[step])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return net, losses


def train_ghost(X, y):
    """One process; each half of the batch normalized on its own (as each
    rank does without synchronized statistics), loss = mean of the halves'
    losses; the moving averages of each half kept apart."""
    net = build(SEED)
    keys = stat_keys(net)
    params = dict(net.named_parameters())
    halves = [{k: params[k].detach().clone() for k in keys} for _ in range(WORLD)]
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    losses = []
    for step in range(STEPS):
        loss = 0
        for r in range(WORLD):
            with torch.no_grad():
                for k in keys:
                    params[k].copy_(halves[r][k])
            part = slice(r * LOCAL, (r + 1) * LOCAL)
            loss = loss + xent(net(X[step, part]), y[step, part]) / WORLD
            with torch.no_grad():
                for k in keys:
                    halves[r][k] = params[k].detach().clone()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return net, losses, halves


def close(a, b, tol=1e-10):
    return torch.allclose(torch.as_tensor(a), torch.as_tensor(b), rtol=tol, atol=tol)


# -- tests -------------------------------------------------------------------------------------

def test_ddp_global_stats_match_one_process(job, float64):
    ranks, ckpt = job
    X, y, X_test = data()
    ref, ref_losses = train_global(X, y)
    for r in ranks:
        rec = r["ddp_sync"]
        # DDP broadcast rank 0's parameters, the batch-norm averages included
        assert max(rec["initial_divergence"].values()) == 0.0
        np.testing.assert_allclose(rec["losses"], ref_losses, rtol=1e-10)
        # the averages are bitwise identical on the ranks, equal to one process's
        assert max(rec["divergence"].values()) == 0.0
        for k, v in rec["stats"].items():
            assert close(v, ref.state_dict()[k]), k
    for k, v in ref.state_dict().items():
        assert close(ckpt[True][k], v), k


def test_ddp_local_stats_match_ghost_batches(job, float64):
    ranks, ckpt = job
    X, y, _ = data()
    ghost, ghost_losses, halves = train_ghost(X, y)
    _, global_losses = train_global(X, y)
    stats = set(stat_keys(ghost))
    for rank, r in enumerate(ranks):
        rec = r["ddp_local"]
        np.testing.assert_allclose(rec["losses"], ghost_losses, rtol=1e-10)
        # per-rank statistics: not the one-process (global batch) loss
        assert abs(rec["losses"][0] - global_losses[0]) > 1e-6
        # trainable parameters identical, moving averages per rank
        div = rec["divergence"]
        assert all(v == 0.0 for k, v in div.items() if k not in stats)
        assert all(v > 0.0 for k, v in div.items() if k in stats)
        for k, v in rec["stats"].items():
            assert close(v, halves[rank][k]), k
        assert rec["synced"] == len(stats)
        assert max(rec["divergence_after_sync"].values()) == 0.0
    # the checkpoint holds the averaged statistics and the common weights
    for k, v in ghost.state_dict().items():
        expected = sum(h[k] for h in halves) / WORLD if k in stats else v
        assert close(ckpt[False][k], expected), k


def test_sync_batch_norm_stats_broadcast(job, float64):
    ranks, _ = job
    ref = build(SEED)
    with torch.no_grad():
        for p in ref.get_params(trainable=False):
            p.add_(2)                       # rank 1's values
    for r in ranks:
        assert r["broadcast"]["n"] == 4
        for k, v in r["broadcast"]["stats"].items():
            assert torch.equal(v, ref.state_dict()[k]), k


@pytest.mark.parametrize("sync", [True, False])
def test_checkpoint_from_rank0_loads_in_one_process(job, float64, sync):
    ranks, ckpt = job
    _, _, X_test = data()
    rec = ranks[0]["ddp_sync" if sync else "ddp_local"]
    assert rec["training_after_eval"] is False
    net = build(SEED + 99)
    net.load_state_dict(ckpt[sync])
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(X_test), rec["eval_output"])
    # after sync_batch_norm_stats both ranks evaluate alike
    assert torch.equal(ranks[1]["ddp_sync" if sync else "ddp_local"]["eval_output"],
                       rec["eval_output"])


def test_fsdp2_matches_one_process(job, float64):
    ranks, _ = job
    X, y, X_test = data()
    ref, ref_losses = train_global(X, y)
    ref.eval()
    with torch.no_grad():
        ref_out = ref(X_test)
    for r in ranks:
        rec = r["fsdp"]
        assert rec["bound"] and set(rec["sharded"]) == {"DTensor"}
        np.testing.assert_allclose(rec["losses"], ref_losses, rtol=1e-10)
        for k, v in ref.state_dict().items():
            assert close(rec["state"][k], v), k
        assert close(rec["eval_output"], ref_out)
        assert torch.equal(rec["reloaded_output"], rec["eval_output"])
        mp = r["fsdp_mp"]
        assert mp["output_dtype"] == "torch.float32" and mp["param_dtype"] == "torch.float64"
        np.testing.assert_allclose(mp["losses"], ref_losses, rtol=1e-4)


def test_sync_op_unequal_parts(job, float64):
    ranks, _ = job
    gen = torch.Generator().manual_seed(7)
    full = torch.randn(16, 3, 4, generator=gen) * 3 + 1
    weight = torch.randn(16, 3, 4, generator=gen)
    gamma = torch.randn(3, generator=gen)
    beta = torch.randn(3, generator=gen)
    x = full.clone().requires_grad_(True)
    # independent reference: plain formulas in float64
    mean = x.mean(dim=(0, 2))
    var = ((x - mean[None, :, None]) ** 2).mean(dim=(0, 2))
    inv_std = 1 / torch.sqrt(var + 1e-3)
    y = torch.relu((x - mean[None, :, None]) * (gamma * inv_std)[None, :, None]
                   + beta[None, :, None])
    (y * weight).sum().backward()
    parts = [slice(0, 11), slice(11, 16)]
    for r, part in zip(ranks, parts):
        rec = r["op"]
        assert close(rec["mean"], mean.detach()) and close(rec["inv_std"], inv_std.detach())
        assert close(rec["y"], y.detach()[part])
        assert close(rec["dx"], x.grad[part])
    assert torch.equal(ranks[0]["op"]["mean"], ranks[1]["op"]["mean"])


# -- single process ----------------------------------------------------------------------------

def test_convert_sync_batchnorm_and_single_process(float64):
    net = build(SEED)
    bns = [l for l in net.layers if isinstance(l, lasagne.layers.BatchNormLayer)]
    assert len(bns) == 2 and not any(l.sync_stats for l in bns)
    X, y, _ = data()
    ref = build(SEED)
    assert distributed.convert_sync_batchnorm(net) is net
    assert all(l.sync_stats and l.process_group is None for l in bns)
    # the layer form and the list form reach the same layers
    other = build(SEED)
    distributed.convert_sync_batchnorm(other.output_layers[0])
    assert all(l.sync_stats for l in get_all_layers(other.output_layers[0])
               if isinstance(l, lasagne.layers.BatchNormLayer))
    # without torch.distributed initialized nothing changes
    for a, b in ((net, ref),):
        out_a, out_b = a(X[0]), b(X[0])
        assert torch.equal(out_a, out_b)
    assert distributed.sync_batch_norm_stats(net) == 0
    assert set(distributed.parameter_divergence(net).values()) == {0.0}
    state = distributed.full_state_dict(net)
    assert list(state) == list(net.state_dict())
    with pytest.raises(TypeError):
        distributed.convert_sync_batchnorm(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError):
        distributed.sync_batch_norm_stats(net, op="max")


def test_sync_op_gradcheck_one_process(float64):
    from lasagne.ops.batchnorm_sync import batch_norm_train_sync
    x = torch.randn(5, 3, 2, requires_grad=True)
    g = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    for act in (None, "relu"):
        assert torch.autograd.gradcheck(
            lambda x, g, b: batch_norm_train_sync(x, g, b, "auto", 1e-3, act)[0], (x, g, b))
    xp = torch.randn(6, 4, 3, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: batch_norm_train_sync(x, None, None, 0, 1e-3)[0], (xp,))


# -- the example, on two processes and on one ----------------------------------------------------

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "train_ddp.py")
EXAMPLE_ARGS = ["--data", "digits", "--steps", "6", "--batch-size", "32", "--float64",
                "--log-every", "2", "--sync-bn", "--device", "cpu", "--quiet"]


def _load_example():
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_ddp_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _example_worker(rank, world, port, tmpdir):
    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    _load_example().main(EXAMPLE_ARGS + ["--json", os.path.join(tmpdir, "two.json"),
                                         "--checkpoint", os.path.join(tmpdir, "ckpt.pt")])


def test_example_two_processes_match_one(tmp_path):
    pytest.importorskip("sklearn", reason="the digits data come from scikit-learn")
    import json
    import socket
    import torch.multiprocessing as mp

    example = _load_example()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.start_processes(_example_worker, args=(WORLD, port, str(tmp_path)), nprocs=WORLD,
                       join=True, start_method=method)
    two = json.loads((tmp_path / "two.json").read_text())
    one = example.main(EXAMPLE_ARGS)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["history"]["step"] == one["history"]["step"] == [1, 2, 4, 6]
    np.testing.assert_allclose(two["history"]["loss"], one["history"]["loss"], rtol=1e-10)
    assert one["history"]["loss"][-1] < one["history"]["loss"][0]
    np.testing.assert_allclose(two["test_loss"], one["test_loss"], rtol=1e-10)
    assert two["max_divergence"] == 0.0 and two["checkpoint_verified"]
    assert set(torch.load(tmp_path / "ckpt.pt")["state_dict"]) == \
        set(example.build_network("digits", 0, "cpu").state_dict())

#!/usr/bin/env python3
"""Data-parallel training of a Lasagne network with PyTorch's DDP.

The same script runs on one process or on several, launched by ``torchrun``:

    python3 examples/train_ddp.py                                  # one process
    torchrun --nproc_per_node=2 examples/train_ddp.py              # two processes
    torchrun --nproc_per_node=2 examples/train_ddp.py --sync-bn    # global BN statistics
    torchrun --nproc_per_node=4 examples/train_ddp.py --data synthetic --amp \\
        --batch-size 1024 --steps 300 --checkpoint cifar.pt

Each process builds the network (Lasagne layers wrapped in a
``lasagne.network.Network``), wraps it in ``DistributedDataParallel`` (or
shards it with FSDP2, ``--fsdp``) and trains on its slice of every global
batch: ``--batch-size`` is the global batch, split evenly over the processes,
and every process draws the same sequence of global batches from ``--seed``,
so runs on different numbers of processes see the same data. Backend: NCCL on
CUDA (one GPU per process, ``LOCAL_RANK``), Gloo on CPU.

Batch normalization: by default each process normalizes with its own
slice's statistics (as PyTorch's ``BatchNorm`` under DDP); the moving
averages then differ slightly between processes and are averaged before
evaluation and saving. With ``--sync-bn`` the statistics are those of the
whole global batch (``lasagne.distributed.convert_sync_batchnorm``): the
training is then the one-process training on the global batch, up to
rounding, and the averages are identical everywhere.

Data: scikit-learn's handwritten digits (``--data digits``, 8x8 images) or a
synthetic CIFAR-shaped task generated here (``--data synthetic``, 3x32x32,
10 classes: noisy low-frequency class patterns), which needs nothing but
torch.

``--checkpoint PATH``: rank 0 saves the full state (one tensor per
parameter, the Network's keys), then reloads it into a freshly built
one-process network and checks that it computes the same outputs.
``--json PATH``: rank 0 writes the loss curve and timings.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

import lasagne
from lasagne import distributed
from lasagne.layers import DenseLayer, GlobalPoolLayer, InputLayer
from lasagne.layers.dnn import Conv2DDNNLayer as ConvLayer
from lasagne.layers.dnn import MaxPool2DDNNLayer as PoolLayer
from lasagne.layers.dnn import batch_norm_dnn as batch_norm
from lasagne.network import Network
from lasagne.nonlinearities import softmax
from lasagne.objectives import categorical_accuracy, categorical_crossentropy


# ----------------------------------------------------------------------------- data

def load_digits_data():
    """scikit-learn's digits: float32 images (n, 1, 8, 8) in [0, 1], int64
    labels; a fixed split into 1,437 training and 360 test images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, np.newaxis]
    labels = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        images, labels, test_size=360, stratify=labels, random_state=0)
    return [torch.from_numpy(a) for a in (X_train, y_train, X_test, y_test)]


def make_synthetic_data(n_train=4096, n_test=1024, seed=0):
    """A CIFAR-shaped task: 3x32x32 images of 10 classes, each a fixed
    smooth random pattern (8x8 upsampled) times a random contrast, shifted by
    up to 2 pixels, plus pixel noise. Deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.nn.functional.interpolate(
        torch.randn(10, 3, 8, 8, generator=gen), size=(36, 36), mode="bilinear",
        align_corners=False)

    def draw(n):
        labels = torch.randint(0, 10, (n,), generator=gen)
        contrast = 0.5 + torch.rand(n, 1, 1, 1, generator=gen)
        dy, dx = torch.randint(0, 5, (2, n), generator=gen)
        rows = (dy[:, None] + torch.arange(32))[:, :, None]
        cols = (dx[:, None] + torch.arange(32))[:, None, :]
        base = templates[labels][torch.arange(n)[:, None, None, None],
                                 torch.arange(3)[None, :, None, None],
                                 rows[:, None], cols[:, None]]
        images = contrast * base + 0.8 * torch.randn(n, 3, 32, 32, generator=gen)
        return images.float(), labels

    X_train, y_train = draw(n_train)
    X_test, y_test = draw(n_test)
    return [X_train, y_train, X_test, y_test]


# ----------------------------------------------------------------------------- models

def build_digits_net():
    """Three 3x3 convolutions with batch normalization on the 8x8 digits,
    max pooling, global average pooling and a softmax classifier."""
    l = InputLayer((None, 1, 8, 8), name="input")
    l = batch_norm(ConvLayer(l, 32, 3, pad="same", name="conv1"))
    l = batch_norm(ConvLayer(l, 32, 3, pad="same", name="conv2"))
    l = PoolLayer(l, pool_size=2, name="pool2")
    l = batch_norm(ConvLayer(l, 64, 3, pad="same", name="conv3"))
    l = GlobalPoolLayer(l, name="gap")
    return DenseLayer(l, 10, nonlinearity=softmax, name="prob")


def build_cifar_net(width=32):
    """A small VGG-style network for 3x32x32 inputs: three stages of two
    3x3 convolutions with batch normalization, max pooling between stages,
    global average pooling and a softmax classifier."""
    l = InputLayer((None, 3, 32, 32), name="input")
    for stage, mult in enumerate((1, 2, 4), start=1):
        for i in (1, 2):
            l = batch_norm(ConvLayer(l, width * mult, 3, pad="same",
                                     name="conv{}_{}".format(stage, i)))
        if stage < 3:
            l = PoolLayer(l, pool_size=2, name="pool{}".format(stage))
    l = GlobalPoolLayer(l, name="gap")
    return DenseLayer(l, 10, nonlinearity=softmax, name="prob")


def build_network(data, seed, device, dtype=torch.float32):
    """The Network for ``data`` with initial weights drawn from ``seed``."""
    lasagne.random.set_rng(np.random.RandomState(seed))
    output = build_digits_net() if data == "digits" else build_cifar_net()
    return Network(output).to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------- processes

def setup(device_arg):
    """Initialize torch.distributed when launched by torchrun; return
    (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg == "auto":
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device_type = torch.device(device_arg).type
    if device_type == "cuda":
        if world > 1 or device_arg == "auto":
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cuda", torch.device(device_arg).index or 0)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return rank, world, device


def global_batches(n_items, batch_size, steps, seed):
    """``steps`` index tensors of global batches, reshuffled each epoch;
    the same on every process and for every number of processes."""
    rng = np.random.RandomState(seed)
    order = np.empty(0, dtype=np.int64)
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(n_items)])
        batch, order = order[:batch_size], order[batch_size:]
        yield torch.from_numpy(batch)


# ----------------------------------------------------------------------------- training

def _at_least_float32(x):
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def evaluate(net, X, y, batch_size=500):
    """Mean loss and accuracy with the moving averages (``net.eval()``)."""
    was_training = net.training
    net.eval()
    losses, correct = [], []
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            prob = _at_least_float32(net(X[start:start + batch_size]))
            losses.append(categorical_crossentropy(prob, y[start:start + batch_size]))
            correct.append(categorical_accuracy(prob, y[start:start + batch_size]))
    net.train(was_training)
    return torch.cat(losses).mean().item(), torch.cat(correct).float().mean().item()


def run(args):
    rank, world, device = setup(args.device)
    say = print if rank == 0 and not args.quiet else (lambda *a, **k: None)
    if args.batch_size % world:
        raise SystemExit("--batch-size {} is not divisible by the {} processes".format(
            args.batch_size, world))
    local = args.batch_size // world
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    dtype = torch.float64 if args.float64 else torch.float32

    data = load_digits_data() if args.data == "digits" else make_synthetic_data(seed=0)
    X_train, y_train, X_test, y_test = (t.to(device) for t in data)
    if dtype == torch.float64:
        X_train, X_test = X_train.double(), X_test.double()

    net = build_network(args.data, args.seed, device, dtype)
    if args.sync_bn:
        distributed.convert_sync_batchnorm(net)
    if world > 1 and args.fsdp:
        model = distributed.fully_shard(net)
    elif world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        model = net
    say("{} process(es) on {} ({}), global batch {} ({} per process), {} BN statistics, "
        "{}".format(world, device.type, "nccl" if device.type == "cuda" and world > 1
                    else "gloo" if world > 1 else "no torch.distributed",
                    args.batch_size, local, "global" if args.sync_bn else "per-process",
                    "FSDP2" if args.fsdp and world > 1 else "DDP" if world > 1 else "plain"))
    say("network: {} layers, {:,} parameters; data: {} ({} training images)".format(
        len(net.layers), sum(p.numel() for p in net.get_params(trainable=True)), args.data,
        len(X_train)))

    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True)
    channels_last = device.type == "cuda" and X_train.ndim == 4
    history = {"step": [], "loss": [], "seconds": []}
    start = time.perf_counter()
    timed_from, timed_images = None, 0
    model.train()
    for step, index in enumerate(global_batches(len(X_train), args.batch_size, args.steps,
                                                args.seed), start=1):
        part = index[rank * local:(rank + 1) * local].to(device)
        inputs, targets = X_train[part], y_train[part]
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            prob = model(inputs)
        loss = categorical_crossentropy(_at_least_float32(prob), targets).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == min(5, args.steps):          # timing starts after warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            timed_from, timed_images = time.perf_counter(), 0
        elif timed_from is not None:
            timed_images += args.batch_size
        if step % args.log_every == 0 or step == args.steps or step == 1:
            total = loss.detach().double() * local
            if world > 1:
                dist.all_reduce(total)
            history["step"].append(step)
            history["loss"].append(total.item() / args.batch_size)
            history["seconds"].append(time.perf_counter() - start)
            say("step {:5d}/{}  loss {:.5f}  ({:.1f} s)".format(
                step, args.steps, history["loss"][-1], history["seconds"][-1]))
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - timed_from if timed_from is not None else float("nan")
    images_per_s = timed_images / elapsed if timed_images else float("nan")

    # per-process statistics drift apart: average them before evaluating/saving
    if world > 1 and not args.sync_bn:
        distributed.sync_batch_norm_stats(model)
    divergence = max(distributed.parameter_divergence(net).values()) \
        if world > 1 and not args.fsdp else 0.0
    test_loss, test_accuracy = evaluate(net, X_test, y_test)
    say("test loss {:.4f}, accuracy {:.2f}%; {:.0f} images/s; parameters identical on all "
        "processes: {}".format(test_loss, 100 * test_accuracy, images_per_s,
                               divergence == 0.0))

    result = {"world_size": world, "device": str(device), "sync_bn": args.sync_bn,
              "fsdp": bool(args.fsdp and world > 1), "batch_size": args.batch_size,
              "history": history, "test_loss": test_loss, "test_accuracy": test_accuracy,
              "images_per_s": images_per_s, "max_divergence": divergence}
    if args.checkpoint:
        # every process takes part in these two (collectives under FSDP2)
        state = distributed.full_state_dict(model)
        net.eval()
        with torch.no_grad():
            expected = net(X_test[:256])
        if rank == 0:
            torch.save({"state_dict": state, "args": vars(args), "step": args.steps},
                       args.checkpoint)
            # reload into a fresh one-process network (other initial weights)
            fresh = build_network(args.data, args.seed + 1, device, dtype)
            fresh.load_state_dict(torch.load(args.checkpoint, map_location=device)
                                  ["state_dict"])
            fresh.eval()
            with torch.no_grad():
                same = torch.equal(fresh(X_test[:256]), expected)
            if not same:
                raise RuntimeError("the checkpoint reloaded into a new network computes "
                                   "other outputs")
            say("saved {}; a new network loaded from it computes identical outputs".format(
                args.checkpoint))
            result["checkpoint_verified"] = True
        if world > 1:
            dist.barrier()
    if args.json and rank == 0:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if world > 1:
        dist.destroy_process_group()
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("digits", "synthetic"), default="digits",
                   help="digits (scikit-learn) or a synthetic CIFAR-shaped task "
                        "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=200, help="training steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=128,
                   help="global batch size, split over the processes (default: %(default)s)")
    p.add_argument("--lr", type=float, default=0.05,
                   help="SGD learning rate, Nesterov momentum 0.9 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="initial weights and batch order (default: %(default)s)")
    p.add_argument("--sync-bn", action="store_true",
                   help="batch-norm statistics over the global batch")
    p.add_argument("--fsdp", action="store_true",
                   help="shard with FSDP2 (lasagne.distributed.fully_shard) instead of DDP")
    p.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="save the trained state here (rank 0) and verify it reloads")
    p.add_argument("--device", default="auto",
                   help="'auto' (CUDA when present), 'cpu' or 'cuda' (default: %(default)s)")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convolutions")
    p.add_argument("--float64", action="store_true", help="train in float64 (for checks)")
    p.add_argument("--log-every", type=int, default=20, help="(default: %(default)s)")
    p.add_argument("--json", metavar="PATH", default=None, help="write the results here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        p.error("--steps and --batch-size must be positive")
    return args


def main(argv=None):
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)

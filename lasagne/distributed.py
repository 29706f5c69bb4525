"""Data-parallel training of Lasagne networks with PyTorch's distributed
engine: DDP, FSDP2 (``fully_shard``) and batch normalization over the
global batch.

A :class:`~lasagne.network.Network` is an ordinary ``torch.nn.Module``, so
``torch.nn.parallel.DistributedDataParallel(net)`` works unchanged. What
this module adds:

* :func:`convert_sync_batchnorm`: turn on statistics over the global batch
  (all processes) in every batch-normalization layer of a graph, the
  counterpart of ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (which
  only knows PyTorch's own classes). It sets the layers' ``sync_stats``
  extension argument; see :mod:`lasagne.ops.batchnorm_sync` for the maths.
* :func:`sync_batch_norm_stats`: make the batch-norm moving averages (the
  untrainable ``mean``/``inv_std`` parameters) equal on every process, by
  averaging or by broadcasting them, when per-process statistics let them
  drift apart.
* :func:`parameter_divergence`: how far each parameter is from rank 0's
  (a consistency check).
* :func:`fully_shard`: FSDP2 for a ``Network``: shards the trainable
  parameters, keeps the batch-norm statistics replicated, and re-binds the
  layers to the module's current parameter objects around every forward.
* :func:`full_state_dict` / :func:`load_full_state_dict`: a checkpoint of
  full (unsharded) CPU tensors under the Network's own keys, from a plain,
  DDP-wrapped or sharded network, and back.

**How the batch-norm statistics stay consistent.** Lasagne's moving averages are parameters tagged ``trainable=False`` (the
Network gives them ``requires_grad=False``), updated in place during the
forward pass. DDP broadcasts every parameter (these included) from rank 0
when it is constructed, so all processes start equal; it never
synchronizes them again (it all-reduces gradients, and only broadcasts
buffers). Then:

* with ``sync_stats`` on (:func:`convert_sync_batchnorm`), every process
  normalizes with the same global statistics and applies the same update:
  the averages stay bitwise identical, with no extra step;
* with per-process statistics (the default), each process normalizes its
  own part of the batch and averages its own statistics, so the averages
  differ slightly between processes (PyTorch's ``BatchNorm`` keeps its
  averages in buffers, which DDP overwrites with rank 0's at every forward
  pass; parameters are not overwritten). Call
  :func:`sync_batch_norm_stats` (default: the mean over processes) before
  evaluating or saving a checkpoint; a checkpoint saved from rank 0 without
  it holds rank 0's averages.

Examples
--------
A training step on each process (launched with ``torchrun``)::

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from lasagne import distributed
    from lasagne.network import Network

    dist.init_process_group('nccl')          # 'gloo' on CPU
    net = Network(build_model()).to(device)
    distributed.convert_sync_batchnorm(net)   # optional: global statistics
    model = DDP(net, device_ids=[device.index])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = loss_fn(model(x_local), y_local)
    opt.zero_grad(); loss.backward(); opt.step()

    state = distributed.full_state_dict(model)  # every process calls it
    if dist.get_rank() == 0:
        torch.save(state, 'checkpoint.pt')
"""

import torch

from .layers.base import Layer
from .layers.helper import get_all_layers
from .layers.normalization import BatchNormLayer
from .ops.batchnorm_sync import world_size

__all__ = ["convert_sync_batchnorm", "sync_batch_norm_stats", "parameter_divergence",
           "fully_shard", "full_state_dict", "load_full_state_dict", "unwrap", "world_size"]


def unwrap(module):
    """The network inside a ``DistributedDataParallel`` (or
    ``torch.compile``) wrapper; other modules are returned as they are."""
    while True:
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod") and isinstance(module._orig_mod, torch.nn.Module):
            module = module._orig_mod
        else:
            return module


def _layers_of(obj):
    obj = unwrap(obj) if isinstance(obj, torch.nn.Module) else obj
    if isinstance(obj, torch.nn.Module):
        layers = getattr(obj, "layers", None)
        if layers is None:
            raise TypeError("expected a Network, a Layer or a list of layers, got the module "
                            "{}".format(type(obj).__name__))
        return list(layers)
    if isinstance(obj, Layer):
        return get_all_layers(obj)
    if isinstance(obj, (list, tuple)) and all(isinstance(l, Layer) for l in obj):
        return get_all_layers(list(obj))
    raise TypeError("expected a Network, a Layer or a list of layers, got {!r}".format(obj))


def convert_sync_batchnorm(network_or_layers, process_group=None):
    """Compute the batch statistics of every batch-normalization layer
    over the global batch of all processes.

    Sets ``sync_stats=True`` (and ``process_group``) on every
    :class:`~lasagne.layers.BatchNormLayer` of the graph, including
    :class:`~lasagne.layers.dnn.BatchNormDNNLayer` and the layers made by
    ``batch_norm``/``batch_norm_dnn``; the same as building them with
    ``sync_stats=True``. Parameters, names and weight files are unchanged.

    Parameters
    ----------
    network_or_layers : Network, DDP-wrapped Network, Layer or list of Layer
        The graph (for layers: everything below them).
    process_group : torch.distributed.ProcessGroup or None
        The processes that share statistics (default: the default group).

    Returns
    -------
    The object passed in (modified in place).

    Notes
    -----
    With global statistics, the loss of N processes each holding B samples
    is the loss of one process holding the N*B samples (up to rounding),
    gradients included, and the moving averages are identical everywhere.
    The cost is one small all-gather (3 numbers per channel and process)
    per layer forward and one all-reduce (2 numbers per channel) per layer
    backward, and the normalization is computed by our portable op rather
    than cuDNN. Without ``torch.distributed`` initialized, or on one
    process, the layers compute exactly as before, so the same script runs
    on one process.
    """
    for layer in _layers_of(network_or_layers):
        if isinstance(layer, BatchNormLayer):
            layer.sync_stats = True
            layer.process_group = process_group
    return network_or_layers


def _untrainable(module):
    """(key, parameter) pairs of the parameters no layer trains (batch-norm
    averages), in the network's order."""
    net = unwrap(module)
    if hasattr(net, "get_params") and hasattr(net, "_key_of"):
        ids = set(id(p) for p in net.get_params(trainable=False))
        return [(k, p) for k, p in net.named_parameters() if id(p) in ids]
    return [(k, p) for k, p in net.named_parameters() if not p.requires_grad]


def sync_batch_norm_stats(module, op="mean", src=0, group=None):
    """Make the untrainable parameters (batch-norm ``mean``/``inv_std``
    moving averages) equal on every process.

    Parameters
    ----------
    module : Network or DDP-wrapped Network
    op : 'mean' or 'broadcast' (default: 'mean')
        ``'mean'``: each average becomes its mean over the processes (for
        ``inv_std``, the mean of the inverse standard deviations, in keeping
        with how Lasagne averages them over batches). ``'broadcast'``: every
        process takes rank ``src``'s values.
    src : int (default: 0)
        The source rank for ``'broadcast'`` (a global rank).
    group : torch.distributed.ProcessGroup or None

    Returns
    -------
    int
        The number of tensors synchronized (0 on a single process).

    Notes
    -----
    A collective: every process must call it. Not needed with
    :func:`convert_sync_batchnorm` (the averages are identical there).
    """
    if op not in ("mean", "broadcast"):
        raise ValueError("sync_batch_norm_stats: op must be 'mean' or 'broadcast', got "
                         "{!r}".format(op))
    size = world_size(group)
    params = [p for _, p in _untrainable(module)]
    if size == 1 or not params:
        return 0
    dist = torch.distributed
    with torch.no_grad():
        # one collective per dtype and device: flatten, reduce, scatter back
        groups = {}
        for p in params:
            local = p.to_local() if hasattr(p, "to_local") else p
            groups.setdefault((local.dtype, local.device), []).append(local)
        for tensors in groups.values():
            flat = torch.cat([t.detach().reshape(-1) for t in tensors])
            if op == "mean":
                dist.all_reduce(flat, group=group)
                flat.div_(size)
            else:
                dist.broadcast(flat, src=src, group=group)
            offset = 0
            for t in tensors:
                n = t.numel()
                t.copy_(flat[offset:offset + n].view_as(t))
                offset += n
    return len(params)


def parameter_divergence(module, group=None):
    """The largest absolute difference of each parameter from rank 0's
    value, over all processes.

    Parameters
    ----------
    module : Network or DDP-wrapped Network (not sharded)
    group : torch.distributed.ProcessGroup or None

    Returns
    -------
    dict
        Parameter key to a float (0.0 everywhere when consistent), the same
        on every process. A collective: every process must call it.
    """
    net = unwrap(module)
    items = list(net.named_parameters())
    if world_size(group) == 1 or not items:
        return {k: 0.0 for k, _ in items}
    dist = torch.distributed
    src = dist.get_global_rank(group, 0) if group is not None else 0
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).to(torch.float64) for _, p in items])
        ref = flat.clone()
        dist.broadcast(ref, src=src, group=group)
        diff = (flat - ref).abs()
        out = torch.empty(len(items), dtype=torch.float64, device=flat.device)
        offset = 0
        for i, (_, p) in enumerate(items):
            n = p.numel()
            out[i] = diff[offset:offset + n].max() if n else 0.0
            offset += n
        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=group)
    return {k: float(v) for (k, _), v in zip(items, out.tolist())}


# -- checkpoints -------------------------------------------------------------------------------

def full_state_dict(module):
    """The network's state as full CPU tensors under its own keys.

    Works for a plain ``Network``, a DDP-wrapped one (no ``module.``
    prefix) and one sharded by :func:`fully_shard` (sharded parameters are
    gathered: then it is a collective, every process must call it). Save it
    from rank 0; it loads anywhere with ``Network.load_state_dict`` or
    :func:`load_full_state_dict`.
    """
    net = unwrap(module)
    state = {}
    for key, value in net.state_dict().items():
        if hasattr(value, "full_tensor"):        # DTensor (FSDP2)
            value = value.full_tensor()
        state[key] = value.detach().cpu().clone()
    return state


def load_full_state_dict(module, state_dict, strict=True):
    """Load a :func:`full_state_dict` checkpoint into a plain, DDP-wrapped
    or sharded network (sharded parameters take their own shard of each
    full tensor). Every process calls it with the same checkpoint.

    Returns
    -------
    The result of ``load_state_dict`` (missing and unexpected keys).
    """
    net = unwrap(module)
    current = net.state_dict()
    converted = {}
    for key, value in state_dict.items():
        target = current.get(key)
        if target is not None and hasattr(target, "device_mesh"):
            from torch.distributed.tensor import distribute_tensor
            value = distribute_tensor(value.to(device=target.device, dtype=target.dtype),
                                      target.device_mesh, target.placements)
        converted[key] = value
    return net.load_state_dict(converted, strict=strict)


# -- FSDP2 -------------------------------------------------------------------------------------

def _holders(net):
    """For each parameter key: the parameter, the (layer, attribute) pairs
    that hold it, and the layers whose ``params`` dict lists it."""
    holders = {}
    by_id = {id(p): k for k, p in net._parameters.items() if p is not None}
    for key, param in net._parameters.items():
        if param is not None:
            holders[key] = (param, [], [])
    fed = set(getattr(net, "input_layers", ()))
    for layer in net.layers:
        if layer in fed:
            continue
        for attr, value in list(vars(layer).items()):
            if isinstance(value, torch.nn.Parameter) and id(value) in by_id:
                holders[by_id[id(value)]][1].append((layer, attr))
        for param in layer.params:
            if id(param) in by_id:
                holders[by_id[id(param)]][2].append(layer)
    return holders


def _rebind(net):
    """Point every layer at the network's current parameter objects."""
    state = net._lasagne_fsdp
    changed = False
    for key, (_, attrs, listed) in state["holders"].items():
        new = net._parameters.get(key)
        old = state["current"][key]
        if new is None or new is old:
            continue
        changed = True
        for layer, attr in attrs:
            setattr(layer, attr, new)
        for layer in listed:
            layer.params = type(layer.params)(
                (new if p is old else p, tags) for p, tags in layer.params.items())
        state["current"][key] = new
    if changed and hasattr(net, "_find_consumers"):
        net._input_consumers = net._find_consumers()


def _pre_forward_rebind(module, args):
    _rebind(module)


def _post_forward_rebind(module, args, output):
    _rebind(module)


def fully_shard(network, *, mesh=None, shard_batch_norm_stats=False, **kwargs):
    """Shard a :class:`~lasagne.network.Network` with FSDP2
    (``torch.distributed.fsdp.fully_shard``).

    FSDP2 replaces the module's parameters by sharded ``DTensor``
    parameters, and before each forward by full ("unsharded") ones; Lasagne
    layers hold parameter objects themselves, so this function re-binds
    every layer attribute (``W``, ``b``, ...) and each layer's ``params``
    to the module's current objects after FSDP2's own forward hooks: the
    layers compute with the unsharded parameters, and between calls they
    hold the sharded ones (which ``net.parameters()`` and
    ``get_all_params`` then both return, for the optimizer).

    Parameters
    ----------
    network : Network
    mesh : torch.distributed.device_mesh.DeviceMesh or None
        Passed to FSDP2; by default a 1D mesh over all processes on CUDA
        (the current device) when available, else on CPU.
    shard_batch_norm_stats : bool (default: False)
        The batch-norm moving averages are updated in place during the
        forward pass; FSDP2 would update its temporary unsharded copy and
        lose the update. So by default they (all untrainable parameters) are
        passed to FSDP2 as ``ignored_params``: they stay ordinary replicated
        parameters, moved to the mesh's device here, kept consistent as
        under DDP (identical with ``sync_stats``, else see
        :func:`sync_batch_norm_stats`).
    **kwargs
        Passed to ``fully_shard`` (``reshard_after_forward``,
        ``mp_policy``, ``offload_policy``, ...).

    Returns
    -------
    Network
        The same object (its class becomes FSDP2's subclass of it).

    Notes
    -----
    The whole network is one FSDP unit (its layers are not modules): all
    parameters are gathered for the forward and backward pass, and the
    savings are in the parameters, gradients and optimizer states held
    between steps. Call the network module (``net(x)``), not
    ``get_output`` on its layers, while it is sharded. Needs a torch with
    ``fully_shard(..., ignored_params=...)`` (2.7 or newer).
    """
    from torch.distributed.fsdp import fully_shard as _torch_fully_shard

    net = unwrap(network)
    if not hasattr(net, "layers") or not hasattr(net, "_key_of"):
        raise TypeError("lasagne.distributed.fully_shard: expected a lasagne Network, got "
                        "{}".format(type(network).__name__))
    if getattr(net, "_lasagne_fsdp", None) is not None:
        raise ValueError("lasagne.distributed.fully_shard: the network is already sharded")
    if mesh is None:
        from torch.distributed.device_mesh import init_device_mesh
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
        mesh = init_device_mesh(device_type, (world_size(),))
    if mesh.device_type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device(mesh.device_type)
    ignored = set(kwargs.pop("ignored_params", None) or ())
    if not shard_batch_norm_stats:
        stats = [p for _, p in _untrainable(net)]
        for p in stats:
            if p.device != device:
                with torch.no_grad():
                    p.data = p.data.to(device)
        ignored.update(stats)
    holders = _holders(net)
    ignored_ids = set(id(p) for p in ignored)
    for key, (param, attrs, listed) in holders.items():
        if not attrs and id(param) not in ignored_ids:
            raise ValueError("lasagne.distributed.fully_shard: the parameter {!r} is not held "
                             "in an attribute of any layer, so the layers could not compute "
                             "with its unsharded value; pass it in ignored_params".format(key))
    # FSDP2 shards contiguous parameters only: the network keeps its
    # convolution weights in the standard layout from here on
    net.keep_weight_layout()
    _torch_fully_shard(net, mesh=mesh, ignored_params=ignored or None, **kwargs)
    net._lasagne_fsdp = {
        "holders": holders,
        "current": {key: param for key, (param, _, _) in holders.items()},
    }
    # FSDP2 prepends its pre-forward hook and appends its post-forward hook:
    # ours run after both, seeing the unsharded, then the sharded parameters
    net.register_forward_pre_hook(_pre_forward_rebind)
    net.register_forward_hook(_post_forward_rebind, always_call=True)
    _rebind(net)
    return net


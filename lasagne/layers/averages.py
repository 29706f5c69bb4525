"""Moving-average updates of batch normalization, applied once per forward.

In the original library the averages were Theano ``updates``: applied after
the compiled function had computed its outputs. Here a layer hands its
update to :func:`update_averages`; inside :func:`deferred_updates` (every
:func:`lasagne.layers.get_output` and :class:`lasagne.Network` forward
opens one) the updates of all layers are collected and applied together
when the forward ends, in two multi-tensor launches per distinct ``alpha``
instead of two per layer. Outside it (a direct ``get_output_for`` call) the
update is applied at once.
"""

import contextlib

import torch

__all__ = ["update_averages", "deferred_updates"]

# one list of (averages, batch values, alpha) per open deferred_updates()
_PENDING = []


def update_averages(averages, batch, alpha):
    """``average <- (1 - alpha) * average + alpha * batch`` for each pair,
    now or when the enclosing :func:`deferred_updates` ends.

    Parameters
    ----------
    averages : list of torch.Tensor
        Updated in place.
    batch : list of torch.Tensor
        The batch values, cast to each average's dtype.
    alpha : float
    """
    batch = [b if b.dtype == a.dtype else b.to(a.dtype) for a, b in zip(averages, batch)]
    if torch.compiler.is_compiling():
        # per tensor: the multi-tensor form measured slower in a compiled
        # ResNet-50 training step with CUDA graphs (7.0 against 5.3 ms at batch 8)
        with torch.no_grad():
            for average, value in zip(averages, batch):
                average.mul_(1 - alpha).add_(value, alpha=alpha)
        return
    if _PENDING:
        _PENDING[-1].append((averages, batch, alpha))
    else:
        _apply([(averages, batch, alpha)])


@contextlib.contextmanager
def deferred_updates():
    """Collect :func:`update_averages` calls and apply them on exit (not if
    the block raises: a failed forward updates nothing).

    While ``torch.compile`` traces, this is a no-op: :func:`update_averages`
    then updates in place, and the compiler fuses the updates itself.
    """
    if torch.compiler.is_compiling():
        yield
        return
    pending = []
    _PENDING.append(pending)
    try:
        yield
    finally:
        _PENDING.pop()
    _apply(pending)


def _apply(pending):
    groups = {}
    for averages, batch, alpha in pending:
        a, b = groups.setdefault(alpha, ([], []))
        a.extend(averages)
        b.extend(batch)
    with torch.no_grad():
        for alpha, (averages, batch) in groups.items():
            torch._foreach_mul_(averages, 1 - alpha)
            torch._foreach_add_(averages, batch, alpha=alpha)

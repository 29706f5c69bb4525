"""Eager-mode autograd for our kernel ops, without the dispatcher's Python.

Each kernel op is registered with ``torch.library`` so that
``torch.compile`` traces it. In eager mode a call through ``torch.ops``
also runs ``torch.library``'s Python layers (argument binding, the
autograd wrapper, output alias checks) for the forward and again for the
backward: measured on an H100 host, 0.3 ms per call, more than the kernels
themselves for the spatial pyramid pooling of a 64x512x13x13 batch
(bench/NOTES.md, "host time of the kernel ops"). Outside ``torch.compile``
the public entry points therefore run the same implementation functions
through a plain :class:`torch.autograd.Function` built here.
"""

import torch
from torch.autograd.function import once_differentiable

__all__ = ["saved_input_function"]


def saved_input_function(name, forward, backward):
    """An autograd function for an op ``y = forward(x, *args)`` whose
    gradient is ``backward(grad_y, x, *args)`` (non-tensor ``args``).

    Parameters
    ----------
    name : str
        The class name (shown in ``grad_fn``).
    forward, backward : callable
        The implementation functions the custom op calls too.

    Returns
    -------
    type
        A :class:`torch.autograd.Function` subclass; call its ``apply``.
        Its backward is not differentiable (a double backward raises).
    """

    def fwd(ctx, x, *args):
        ctx.save_for_backward(x)
        ctx.args = args
        return forward(x, *args)

    @once_differentiable
    def bwd(ctx, grad):
        (x,) = ctx.saved_tensors
        return (backward(grad, x, *ctx.args),) + (None,) * len(ctx.args)

    return type(name, (torch.autograd.Function,),
                {"forward": staticmethod(fwd), "backward": staticmethod(bwd)})

"""Triton kernels of the ops tier (pooling, spatial pyramid pooling).

Nothing here is imported by ``import lasagne``: the op modules import these
kernels lazily, inside their CUDA branch, so CPU-only machines never need
Triton. With ``TRITON_INTERPRET=1`` set before Triton is first imported, the
kernels also run on CPU tensors through Triton's interpreter (slowly; used by
``tests/test_pool_kernels.py``).
"""

import os

__all__ = ["available", "unavailable_reason", "interpreting"]


def interpreting():
    """True when Triton runs kernels through its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def unavailable_reason(x=None):
    """Why the Triton kernels cannot run (on tensor ``x``), or None if they can."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed"
    if x is not None and not x.is_cuda and not interpreting():
        return "the input is on {}, the Triton kernels run on CUDA devices".format(x.device)
    return None


def available(x=None):
    """True when the Triton kernels can run (on tensor ``x``)."""
    return unavailable_reason(x) is None

"""Pure tensor operations behind the layers: convolution, pooling, spatial
pyramid pooling and batch normalization, each with a portable reference path
and, where it pays, a GPU fast path."""


def use_triton_pooling(enabled=True):
    """Route CUDA pooling and spatial pyramid pooling through our Triton
    kernels, or (``enabled=False``) back to the portable path.

    The kernels (``lasagne.ops.pool_cuda``, ``lasagne.ops.spp_cuda``) read
    the input once, write no index tensor and have an atomic-free
    deterministic backward; they decline float64 and very large windows,
    which then take the portable path. They are not the default yet: their
    first GPU test run was cut short with failures still open (see
    ``bench/NOTES.md``). Triton is imported on first CUDA use only.

    Parameters
    ----------
    enabled : bool (default: True)
    """
    from . import pool, spp
    if enabled:
        from . import pool_cuda, spp_cuda
        pool.register_kernel("cuda", pool_cuda.cuda_kernel)
        spp.register_kernel("cuda", spp_cuda.cuda_kernel)
    else:
        pool.register_kernel("cuda", None)
        spp.register_kernel("cuda", None)

"""Pure tensor operations behind the layers: convolution, pooling, spatial
pyramid pooling and batch normalization, each with a portable reference path
and, where it pays, a GPU fast path."""


def use_triton_pooling(enabled="measured"):
    """Choose which CUDA pooling and spatial pyramid pooling calls run
    through our Triton kernels (``lasagne.ops.pool_cuda``,
    ``lasagne.ops.spp_cuda``) rather than the portable path.

    The kernels read the input once and have an atomic-free deterministic
    backward; for a max pooling whose backward will run they keep one byte
    per output window (an int32 per pyramid bin) instead of the input and of
    an int64 index tensor; they decline float64 and very large
    windows, which then take the portable path. Triton is imported on the
    first CUDA call that reaches them, never on import.

    Parameters
    ----------
    enabled : 'measured', True or False (default: 'measured')
        ``'measured'`` (the setting at import): the kernels where they
        measured faster than the alternatives on an H100 in forward+backward
        (average pooling: 4-5x PyTorch's kernels; eager channels-last max
        pooling of inputs of 64 MiB and more: 1.1-2.7x; max spatial pyramid
        pooling), PyTorch's own kernels for other max pooling and a matrix
        product for average pyramid pooling (``bench/NOTES.md``). ``True``: the kernels wherever they apply.
        ``False``: never.
    """
    from . import pool, pool_cuda, spp, spp_cuda
    if enabled == "measured":
        pool.register_kernel("cuda", pool_cuda.measured_kernel)
        spp.register_kernel("cuda", spp_cuda.measured_kernel)
    elif enabled is True:
        pool.register_kernel("cuda", pool_cuda.cuda_kernel)
        spp.register_kernel("cuda", spp_cuda.cuda_kernel)
    elif enabled is False:
        pool.register_kernel("cuda", None)
        spp.register_kernel("cuda", None)
    else:
        raise ValueError("use_triton_pooling: enabled must be 'measured', True or False, got "
                         "{!r}".format(enabled))


use_triton_pooling()

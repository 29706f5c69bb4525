"""Host side shared by the kernel launchers: grid sizes, tile sizes, index
width, layouts, the tensors they allocate, and :class:`KernelLaunch`, which
launches a compiled kernel without Triton's per-call argument binding."""

import torch

__all__ = ["cdiv", "pow2", "pow2_floor", "layout", "needs_int64", "is_channels_last",
           "layout_strides", "empty_in_layout", "config_key", "KernelLaunch", "DIRECT"]

# Launch compiled kernels directly after their first call (see KernelLaunch);
# False sends every launch through ``JITFunction.run`` (benchmarks compare both).
DIRECT = True

_INT32_LIMIT = 2 ** 31 - 1


def cdiv(a, b):
    """``ceil(a / b)`` for integers."""
    return -(-a // b)


def pow2(n):
    """The smallest power of two >= ``n`` (1 for ``n <= 1``)."""
    return 1 << max(0, int(n) - 1).bit_length()


def pow2_floor(n):
    """The largest power of two <= ``n`` (1 for ``n <= 1``)."""
    return 1 << (max(1, int(n)).bit_length() - 1)


def layout(t):
    """``(shape, strides)`` of tensor ``t``, as :func:`needs_int64` takes."""
    return tuple(t.shape), t.stride()


def needs_int64(*layouts):
    """Whether any ``(shape, strides)`` pair holds ``2**31 - 1`` elements or
    reaches that offset (then the kernels index with 64-bit integers)."""
    for shape, strides in layouts:
        numel = 1
        for n in shape:
            numel *= n
        if numel == 0:
            continue
        if numel >= _INT32_LIMIT or sum((n - 1) * abs(st) for n, st in zip(shape, strides)) \
                >= _INT32_LIMIT:
            return True
    return False


def is_channels_last(shape, strides):
    """Whether an ``(N, C, *spatial)`` layout is channels-last: more than one
    channel, channel stride 1."""
    return shape[1] > 1 and strides[1] == 1


def layout_strides(shape, channels_last):
    """Strides of a new ``(N, C, *spatial)`` tensor of ``shape``: channels
    innermost when ``channels_last``, contiguous otherwise."""
    order = (0,) + tuple(range(2, len(shape))) + (1,) if channels_last \
        else tuple(range(len(shape)))
    strides = [0] * len(shape)
    step = 1
    for axis in reversed(order):
        strides[axis] = step
        step *= shape[axis]
    return tuple(strides)


def empty_in_layout(shape, cl, dtype, device):
    """An empty tensor of ``shape`` ``(N, C, *spatial)``: channels-last when
    ``cl``, contiguous otherwise."""
    if cl:
        return torch.empty((shape[0],) + tuple(shape[2:]) + (shape[1],), dtype=dtype,
                           device=device).movedim(-1, 1)
    return torch.empty(shape, dtype=dtype, device=device)


def config_key(overrides):
    """A hashable snapshot of a module's tile-configuration overrides (part
    of its cached launch plans' keys)."""
    return tuple(sorted(overrides.items()))


def _direct_launch_api():
    """``(current_device, current_stream, hooks_idle)`` where this Triton's
    compiled kernels can be launched directly (``CompiledKernel.run`` with
    the argument list that ``JITFunction.run`` passes it, Triton 3.5+), or
    None. ``hooks_idle()`` is False while a launch hook (a profiler) is
    installed: those launches go through Triton's own path."""
    try:
        from triton import knobs
        from triton.runtime.driver import driver
    except ImportError:
        return None
    runtime = knobs.runtime
    if runtime.interpret:
        return None
    if not all(hasattr(getattr(runtime, name, None), "calls")
               for name in ("launch_enter_hook", "launch_exit_hook")):
        return None
    try:
        active = driver.active
    except RuntimeError:   # no GPU driver
        return None
    # the device Triton's own launch path asks for, without its Python wrapper
    current_device = getattr(torch._C, "_cuda_getDevice", active.get_current_device)
    return (current_device, active.get_current_stream,
            lambda: not (runtime.launch_enter_hook.calls or runtime.launch_exit_hook.calls))


_API = []
_UNSEEN = object()


def _api():
    if not _API:
        _API.append(_direct_launch_api())
    return _API[0]


class KernelLaunch:
    """A Triton kernel bound to one grid, its scalar arguments and its
    compile-time parameters: what a launcher computes once per shape.

    Calling it with the tensor arguments (the kernel's leading parameters)
    launches the kernel on the current CUDA stream. The first call for a
    device, tensor dtypes and 16-byte alignments (everything Triton
    specializes a kernel on besides the bound arguments) goes through
    ``JITFunction.run``, which compiles or finds the kernel; later calls
    hand the same argument list straight to the compiled kernel, skipping
    Triton's per-call argument binding and cache-key computation. Under
    Triton's interpreter, with :data:`DIRECT` False, or while a launch hook
    is installed, every call takes Triton's path.

    Parameters
    ----------
    kernel : triton.runtime.jit.JITFunction
    grid : tuple of int
        One to three grid sizes.
    scalars : tuple
        The arguments after the tensors, in the kernel's parameter order.
    meta : dict
        Constexpr parameters by name, and launch options (``num_warps``...).
    """

    __slots__ = ("kernel", "grid", "scalars", "meta", "_compiled")

    def __init__(self, kernel, grid, scalars=(), meta=None):
        self.kernel = kernel
        self.grid = tuple(grid) + (1,) * (3 - len(grid))
        self.scalars = tuple(scalars)
        self.meta = dict(meta or {})
        self._compiled = {}

    def __call__(self, *tensors):
        api = _api() if DIRECT else None
        if api is None:
            self.kernel[self.grid](*tensors, *self.scalars, **self.meta)
            return
        current_device, current_stream, hooks_idle = api
        device = current_device()
        key = (device,) + tuple([(t.dtype, t.data_ptr() % 16 == 0) for t in tensors])
        entry = self._compiled.get(key, _UNSEEN)
        if entry is _UNSEEN or entry is None or not hooks_idle():
            compiled = self.kernel[self.grid](*tensors, *self.scalars, **self.meta)
            if entry is _UNSEEN:   # None from here on: no direct path for this key
                self._compiled[key] = self._direct_entry(compiled, len(tensors))
            return
        compiled, rest = entry
        g0, g1, g2 = self.grid
        compiled.run(g0, g1, g2, current_stream(device), compiled.function,
                     compiled.packed_metadata, None, None, None, *tensors, *rest)

    def _direct_entry(self, compiled, n_tensors):
        """``(compiled kernel, arguments after the tensors)``: the scalars,
        then every remaining parameter (constexprs, defaults) in the
        kernel's order, as ``JITFunction.run`` passes them."""
        if not all(hasattr(compiled, name) for name in ("run", "function", "packed_metadata")):
            return None
        params = list(self.kernel.signature.parameters.values())
        bound = len(self.scalars) + n_tensors
        rest = list(self.scalars)
        for param in params[bound:]:
            if param.name in self.meta:
                rest.append(self.meta[param.name])
            elif param.default is not param.empty:
                rest.append(param.default)
            else:
                return None
        compiled.run   # loads the module and function handles now
        return compiled, tuple(rest)

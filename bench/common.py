"""Timing and ceiling measurements shared by every benchmark.

All times come from CUDA events around the measured region, after warm-up,
as the median of many repeats with the 10th and 90th percentiles as spread.
Between repeats the L2 cache is flushed by writing a buffer larger than it,
so that each repeat reads its inputs from device memory. Layer and kernel
timings measure the device (a spin kernel queued ahead of each call hides
the host's launch time, which ``host_ms`` and ``bench.profile_host`` report);
whole training steps measure the wall clock of the stream, host included.
"""

import statistics
import time

import torch

_L2_FLUSH_BYTES = 256 * 1024 * 1024
_flush_buffer = None


def flush_l2():
    """Overwrite a buffer larger than the L2 cache (50 MB on an H100)."""
    global _flush_buffer
    if _flush_buffer is None:
        _flush_buffer = torch.empty(_L2_FLUSH_BYTES // 4, dtype=torch.float32, device="cuda")
    _flush_buffer.zero_()


def time_cuda(fn, warmup=5, repeat=30, flush=True, hide_host=True):
    """Time ``fn()`` on the current CUDA stream.

    Parameters
    ----------
    fn : callable
        The region to time; called ``warmup + repeat`` times (more when
        ``hide_host`` has to repeat a call).
    warmup : int
        Untimed calls first (compilation, autotuning, allocator warm-up).
    repeat : int
        Timed calls.
    flush : bool
        Flush the L2 cache before every timed call.
    hide_host : bool
        Measure the device's time only: before every timed call the stream
        gets a spin kernel (``torch.cuda._sleep``) lasting about twice the
        host time of one call, so that ``fn``'s kernels are all queued when
        the start event fires and the device never waits for the host. A
        call whose host time outlasted its spin (a stall on the host) is
        timed again with a spin twice as long, up to ``3 * repeat`` calls
        in all; ``host_stalls`` counts them (their timings are dropped, and
        kept only if every call stalled). Whole training steps, where
        host time is the point, pass False.

    Returns
    -------
    dict
        ``median_ms``, ``p10_ms``, ``p90_ms``, ``repeat``, ``times_ms``
        (every kept call, sorted), ``host_ms`` (median host time of one
        call: from entering ``fn`` to its return, kernels only enqueued)
        and, with ``hide_host``, ``host_stalls``. Without ``hide_host`` the
        calls are queued back to back (:func:`_time_stream`).
    """
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    if not hide_host:
        return _time_stream(fn, repeat, flush)
    spin = _spin_cycles(fn)
    times, host, stalled = [], [], []
    for _ in range(3 * repeat):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        if flush:
            flush_l2()
        torch.cuda._sleep(spin)
        start.record()
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        end.record()
        # one call in flight at a time: the next spin starts after this
        # call's kernels, never piles up behind a slow host
        end.synchronize()
        host.append(elapsed)
        if elapsed * 1e3 > spin / _cycles_per_ms:
            stalled.append(start.elapsed_time(end))
            spin = min(2 * spin, int(_MAX_SPIN_MS * _cycles_per_ms))
            continue
        times.append(start.elapsed_time(end))
        if len(times) == repeat:
            break
    # a host that stalls on every call leaves only stalled timings: kept,
    # and counted, rather than no number at all
    out = summarize(times or stalled)
    out["host_ms"] = statistics.median(host) * 1e3
    out["host_stalls"] = len(stalled)
    return out


def _time_stream(fn, repeat, flush):
    """``repeat`` calls queued back to back, each between two events: the
    stream's wall clock per call, host time included where it shows."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
    host = []
    for i in range(repeat):
        if flush:
            flush_l2()
        starts[i].record()
        t0 = time.perf_counter()
        fn()
        host.append(time.perf_counter() - t0)
        ends[i].record()
    torch.cuda.synchronize()
    out = summarize([s.elapsed_time(e) for s, e in zip(starts, ends)])
    out["host_ms"] = statistics.median(host) * 1e3
    return out


_MAX_SPIN_MS = 50.0
_cycles_per_ms = None


def _spin_cycles(fn, calls=3):
    """Spin-kernel length (GPU clock cycles) covering about twice the host
    time of one ``fn()`` call (the slowest of ``calls``), plus 0.1 ms."""
    global _cycles_per_ms
    if _cycles_per_ms is None:
        probe = 20_000_000
        torch.cuda._sleep(probe // 10)
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        torch.cuda._sleep(probe)
        b.record()
        b.synchronize()
        _cycles_per_ms = probe / a.elapsed_time(b)
    worst = 0.0
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        worst = max(worst, time.perf_counter() - t0)
        torch.cuda.synchronize()
    ms = min(2 * worst * 1e3 + 0.1, _MAX_SPIN_MS)
    return int(ms * _cycles_per_ms)


def summarize(times):
    """Median, 10th and 90th percentiles of a list of times in ms."""
    times = sorted(times)
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return {"median_ms": statistics.median(times), "p10_ms": q[0], "p90_ms": q[-1],
            "repeat": len(times), "times_ms": times}


def peak_memory(fn):
    """Peak device memory allocated while running ``fn()``, in bytes, above
    what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def copy_bandwidth(nbytes=2 * 1024 ** 3):
    """Device-to-device copy bandwidth in bytes/s (bytes read + written)."""
    src = torch.randn(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    t = time_cuda(lambda: dst.copy_(src), warmup=3, repeat=20, flush=False)
    return 2 * nbytes / (t["median_ms"] * 1e-3), t


def matmul_rate(dtype, n=8192, tf32=False):
    """Dense matrix-product rate in FLOP/s for an n×n×n product."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        t = time_cuda(lambda: a @ b, warmup=3, repeat=20, flush=False)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return 2 * n ** 3 / (t["median_ms"] * 1e-3), t


def ceilings():
    """The physical ceilings of this GPU, measured now.

    Returns
    -------
    dict
        ``copy_bytes_per_s``, ``bf16_flops``, ``tf32_flops`` and their timings.
    """
    bw, t_bw = copy_bandwidth()
    bf16, t_bf16 = matmul_rate(torch.bfloat16)
    tf32, t_tf32 = matmul_rate(torch.float32, tf32=True)
    return {"copy_bytes_per_s": bw, "bf16_flops": bf16, "tf32_flops": tf32,
            "timings": {"copy": t_bw, "bf16_matmul": t_bf16, "tf32_matmul": t_tf32}}


def tensor_bytes(*tensors):
    """Total bytes of the given tensors."""
    return sum(t.numel() * t.element_size() for t in tensors)

"""KernelLaunch: which launches go through Triton's JIT and which straight to
the compiled kernel, and the argument list the compiled kernel receives.

A stand-in kernel records its calls (Triton itself is not needed); the real
kernels run through KernelLaunch in every GPU test of the Triton ops.
"""

import inspect

import pytest
import torch

from lasagne.ops.triton import launch


class FakeCompiled:
    """Stands for triton's CompiledKernel: records direct launches."""

    def __init__(self, log):
        self.log = log
        self.function = "fn-handle"
        self.packed_metadata = "packed"

    def run(self, *args):
        self.log.append(("direct",) + args)


class FakeKernel:
    """Stands for a JITFunction with the signature of ``kernel_def``."""

    def __init__(self, kernel_def, log):
        self.signature = inspect.signature(kernel_def)
        self.log = log
        self.compiled = FakeCompiled(log)

    def __getitem__(self, grid):
        def jit_run(*args, **kwargs):
            self.log.append(("jit", grid, args, kwargs))
            return self.compiled
        return jit_run


def kernel_def(x_ptr, y_ptr, n, stride, BLOCK, MODE, FLAG=True):
    pass


@pytest.fixture
def fake_api(monkeypatch):
    state = {"device": 0, "hooks_idle": True}
    api = (lambda: state["device"], lambda device: "stream{}".format(device),
           lambda: state["hooks_idle"])
    monkeypatch.setattr(launch, "_API", [api])
    monkeypatch.setattr(launch, "DIRECT", True)
    return state


def make(log):
    kernel = FakeKernel(kernel_def, log)
    return launch.KernelLaunch(kernel, (5, 2), (7, 3), dict(BLOCK=64, MODE=1, num_warps=4))


def test_first_call_compiles_then_launches_directly_with_the_full_argument_list(fake_api):
    log = []
    run = make(log)
    x, y = torch.zeros(8), torch.zeros(8)
    run(x, y)
    assert log == [("jit", (5, 2, 1), (x, y, 7, 3), dict(BLOCK=64, MODE=1, num_warps=4))]
    run(x, y)
    # tensors, scalars, then the constexprs in parameter order, the default last
    assert log[1] == ("direct", 5, 2, 1, "stream0", "fn-handle", "packed", None, None, None,
                      x, y, 7, 3, 64, 1, True)


def test_new_alignment_dtype_or_device_goes_through_the_jit_once(fake_api):
    log = []
    run = make(log)
    base = torch.zeros(16)
    run(base, base)
    run(base[1:], base)           # 4-byte offset: Triton specializes on 16-byte alignment
    run(base[1:], base)
    run(base.double(), base)
    fake_api["device"] = 1
    run(base, base)
    run(base, base)
    assert [entry[0] for entry in log] == ["jit", "jit", "direct", "jit", "jit", "direct"]
    assert log[-1][4] == "stream1"


def test_launch_hooks_and_the_switch_take_tritons_path(fake_api, monkeypatch):
    log = []
    run = make(log)
    x = torch.zeros(4)
    run(x, x)
    fake_api["hooks_idle"] = False
    run(x, x)
    fake_api["hooks_idle"] = True
    monkeypatch.setattr(launch, "DIRECT", False)
    run(x, x)
    monkeypatch.setattr(launch, "DIRECT", True)
    run(x, x)
    assert [entry[0] for entry in log] == ["jit", "jit", "jit", "direct"]


def test_no_direct_api_always_uses_the_jit(monkeypatch):
    monkeypatch.setattr(launch, "_API", [None])
    log = []
    run = make(log)
    x = torch.zeros(4)
    for _ in range(3):
        run(x, x)
    assert [entry[0] for entry in log] == ["jit"] * 3


def test_missing_constexpr_keeps_the_jit(fake_api):
    log = []
    kernel = FakeKernel(kernel_def, log)
    run = launch.KernelLaunch(kernel, (1,), (7, 3), dict(BLOCK=64))   # MODE not given
    x = torch.zeros(4)
    run(x, x)
    run(x, x)
    assert [entry[0] for entry in log] == ["jit", "jit"]


@pytest.mark.gpu
def test_pool_kernel_launches_directly_on_cuda_at_any_alignment():
    """On CUDA the real kernels take the direct path from their second
    call, for an aligned input and for one 4 bytes off alignment, with the
    same results as PyTorch's max pooling."""
    pytest.importorskip("triton")
    from lasagne.ops.triton import pool_kernels as pk
    torch.manual_seed(0)
    shape = (2, 32, 9, 10)
    flat = torch.randn(2 * 32 * 9 * 10 + 1, device="cuda")
    strides = (32 * 9 * 10, 1, 10 * 32, 32)         # channels-last
    inputs = [flat.as_strided(shape, strides, 0), flat.as_strided(shape, strides, 1)]
    plans = set()
    for x in inputs:
        expected = torch.nn.functional.max_pool2d(x, 3, 2, 1)
        for _ in range(3):
            y = pk.pool_forward(x, (3, 3), (2, 2), (1, 1), tuple(expected.shape[2:]), "max")
            torch.testing.assert_close(y, expected, rtol=0, atol=0)
        _, _, plan = pk._forward_plan(
            tuple(x.shape), x.stride(), x.element_size(), (3, 3), (2, 2), (1, 1),
            tuple(expected.shape[2:]), "max", False, pk.config_key(pk.CONFIG_OVERRIDE))
        plans.add(id(plan))
        assert plan._compiled and all(entry is not None for entry in plan._compiled.values())
    assert len(plans) == 1 and len(plan._compiled) == 2     # one plan, two alignments

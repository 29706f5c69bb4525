"""The documentation: it builds without warnings, the porting guide's
ported script runs, and its table of lasagne.updates -> torch.optim
equivalents holds against the original update formulas."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
DOCS = os.path.join(ROOT, "docs")


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- the build

def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="building the docs needs Sphinx (pip install -e "
                                         "'.[test]')")
    pytest.importorskip("numpydoc", reason="building the docs needs numpydoc")
    # the README's command, into a temporary folder
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(tmp_path / "doctrees"), DOCS, str(tmp_path / "html")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, "the docs build failed or warned:\n" + proc.stderr[-6000:]
    html = tmp_path / "html"
    for page in ("index", "tutorial", "porting", "api/layers", "api/dnn", "api/network"):
        assert (html / (page + ".html")).is_file(), page
    # the layer reference lists layers under their public path
    assert "lasagne.layers.DenseLayer" in (html / "api" / "layers.html").read_text()


# ----------------------------------------------------------------------------- the port

def test_ported_mnist_script_runs(tmp_path, monkeypatch):
    """docs/porting/mnist_torch.py, on random data in MNIST's shapes."""
    port = _load(os.path.join(DOCS, "porting", "mnist_torch.py"), "mnist_torch_port")
    rng = np.random.RandomState(0)

    def fake_dataset():
        def split(n):
            return (rng.rand(n, 1, 28, 28).astype(np.float32),
                    rng.randint(0, 10, n).astype(np.int32))
        return split(1000) + split(500) + split(500)

    monkeypatch.setattr(port, "load_dataset", fake_dataset)
    monkeypatch.chdir(tmp_path)
    try:
        port.main(num_epochs=1)
    finally:
        torch.set_default_device(None)   # main() sets it, as the script's global flag
    with np.load(tmp_path / "model.npz") as f:
        assert len(f.files) == 8   # 2 conv + 2 dense layers, W and b each


# ----------------------------------------------------------------------------- the table
#
# The original update rules, written out in float64 numpy (lasagne/updates.py
# of Lasagne 0.2), against torch.optim built as the porting guide's table
# says.

STEPS = 8


def _gradients(scale):
    rng = np.random.RandomState(1)
    return [scale * rng.randn(6) for _ in range(STEPS)]


def _torch_run(make, theta0, grads):
    p = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
    opt = make([p])
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return p.detach().numpy()


def _sgd(th, grads, lr):
    for g in grads:
        th = th - lr * g
    return th


def _momentum(th, grads, lr, mu, nesterov):
    v = np.zeros_like(th)
    for g in grads:
        v = mu * v - lr * g
        th = th + (mu * v - lr * g if nesterov else v)
    return th


def _adagrad(th, grads, lr, eps):
    acc = np.zeros_like(th)
    for g in grads:
        acc = acc + g ** 2
        th = th - lr * g / np.sqrt(acc + eps)
    return th


def _rmsprop(th, grads, lr, rho, eps):
    acc = np.zeros_like(th)
    for g in grads:
        acc = rho * acc + (1 - rho) * g ** 2
        th = th - lr * g / np.sqrt(acc + eps)
    return th


def _adadelta(th, grads, lr, rho, eps):
    acc, delta = np.zeros_like(th), np.zeros_like(th)
    for g in grads:
        acc = rho * acc + (1 - rho) * g ** 2
        update = g * np.sqrt(delta + eps) / np.sqrt(acc + eps)
        th = th - lr * update
        delta = rho * delta + (1 - rho) * update ** 2
    return th


def _adam(th, grads, lr, b1, b2, eps, amsgrad=False):
    m, v, v_max = np.zeros_like(th), np.zeros_like(th), np.zeros_like(th)
    for t, g in enumerate(grads, 1):
        a = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        v_max = np.maximum(v_max, v)
        th = th - a * m / (np.sqrt(v_max if amsgrad else v) + eps)
    return th


def _adamax(th, grads, lr, b1, b2, eps):
    m, u = np.zeros_like(th), np.zeros_like(th)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g))
        th = th - lr / (1 - b1 ** t) * m / (u + eps)
    return th


def _rmsprop_momentum(th, grads, lr, rho, eps, mu):
    # apply_momentum(rmsprop(...), momentum=mu)
    acc, v = np.zeros_like(th), np.zeros_like(th)
    for g in grads:
        acc = rho * acc + (1 - rho) * g ** 2
        stepped = th - lr * g / np.sqrt(acc + eps)
        x = mu * v + stepped
        v = x - th
        th = x
    return th


O = torch.optim

# (name, original rule, torch.optim equivalent) -- identical with the
# original's default hyper-parameters
IDENTICAL = [
    ("sgd", lambda th, g: _sgd(th, g, 0.1), lambda p: O.SGD(p, lr=0.1)),
    ("momentum", lambda th, g: _momentum(th, g, 0.1, 0.9, False),
     lambda p: O.SGD(p, lr=0.1, momentum=0.9)),
    ("nesterov_momentum", lambda th, g: _momentum(th, g, 0.1, 0.9, True),
     lambda p: O.SGD(p, lr=0.1, momentum=0.9, nesterov=True)),
    ("adadelta", lambda th, g: _adadelta(th, g, 1.0, 0.95, 1e-6),
     lambda p: O.Adadelta(p, lr=1.0, rho=0.95, eps=1e-6)),
]

# identical once epsilon is 0 (the table: "identical only for 0")
EPSILON_PLACEMENT = [
    ("adagrad", lambda th, g: _adagrad(th, g, 1.0, 0.0), lambda p: O.Adagrad(p, lr=1.0, eps=0.0)),
    ("rmsprop", lambda th, g: _rmsprop(th, g, 1.0, 0.9, 0.0),
     lambda p: O.RMSprop(p, lr=1.0, alpha=0.9, eps=0.0)),
    ("adam", lambda th, g: _adam(th, g, 1e-3, 0.9, 0.999, 0.0),
     lambda p: O.Adam(p, lr=1e-3, betas=(0.9, 0.999), eps=0.0)),
    ("amsgrad", lambda th, g: _adam(th, g, 1e-3, 0.9, 0.999, 0.0, amsgrad=True),
     lambda p: O.Adam(p, lr=1e-3, betas=(0.9, 0.999), eps=0.0, amsgrad=True)),
    ("adamax", lambda th, g: _adamax(th, g, 2e-3, 0.9, 0.999, 0.0),
     lambda p: O.Adamax(p, lr=2e-3, betas=(0.9, 0.999), eps=0.0)),
    ("rmsprop+apply_momentum", lambda th, g: _rmsprop_momentum(th, g, 0.01, 0.9, 0.0, 0.9),
     lambda p: O.RMSprop(p, lr=0.01, alpha=0.9, eps=0.0, momentum=0.9)),
]


@pytest.mark.parametrize("name,original,port", IDENTICAL, ids=[r[0] for r in IDENTICAL])
def test_updates_table_identical(name, original, port):
    theta0 = np.random.RandomState(2).randn(6)
    for scale in (1.0, 1e-3):
        grads = _gradients(scale)
        np.testing.assert_allclose(_torch_run(port, theta0, grads), original(theta0, grads),
                                   rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,original,port", EPSILON_PLACEMENT,
                         ids=[r[0] for r in EPSILON_PLACEMENT])
def test_updates_table_epsilon_placement(name, original, port):
    theta0 = np.random.RandomState(2).randn(6)
    grads = _gradients(1.0)
    np.testing.assert_allclose(_torch_run(port, theta0, grads), original(theta0, grads),
                               rtol=1e-12, atol=1e-14)


def test_rmsprop_epsilon_inside_the_root_matters():
    # the table's warning: with small gradients Lasagne's epsilon=1e-6 inside
    # the root acts like eps=1e-3 outside it
    theta0 = np.random.RandomState(2).randn(6)
    grads = _gradients(1e-4)
    lasagne_rule = _rmsprop(theta0, grads, 1e-3, 0.9, 1e-6)
    same_eps = _torch_run(lambda p: O.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-6), theta0, grads)
    assert np.max(np.abs(same_eps - lasagne_rule)) > 10 * np.max(np.abs(lasagne_rule - theta0))


def test_clip_grad_norm_matches_total_norm_constraint():
    rng = np.random.RandomState(3)
    grads = [rng.randn(4, 3), rng.randn(3)]
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    for max_norm in (0.5 * norm, 2 * norm):
        scaled = [g * min(norm, max_norm) / (norm + 1e-7) for g in grads]
        params = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        returned = torch.nn.utils.clip_grad_norm_(params, max_norm)
        assert float(returned) == pytest.approx(norm, rel=1e-12)
        for p, s in zip(params, scaled):
            np.testing.assert_allclose(p.grad.numpy(), s, rtol=2e-6)


def _snippet(rst, first_line):
    """The code block of ``rst`` that starts with ``first_line``, dedented."""
    with open(os.path.join(DOCS, rst)) as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == first_line)
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = [lines[start]]
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    return "\n".join(line[indent:] for line in block) + "\n"


def test_norm_constraint_snippet():
    """The guide's ``norm_constraint_``, against the original's formula."""
    namespace = {"torch": torch}
    exec(_snippet("porting.rst", "def norm_constraint_(param, max_norm, norm_axes=None, "
                                 "epsilon=1e-7):"), namespace)
    norm_constraint_ = namespace["norm_constraint_"]

    rng = np.random.RandomState(4)
    for value, axes in ((3 * rng.randn(20, 5), (0,)), (rng.randn(6, 3, 3, 3), (1, 2, 3))):
        norms = np.sqrt((value ** 2).sum(axis=axes, keepdims=True))
        expected = value * (np.clip(norms, 0, 2.0) / (1e-7 + norms))
        param = torch.nn.Parameter(torch.tensor(value))
        norm_constraint_(param, 2.0)
        np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- the README

def test_readme_example_runs(capsys):
    """The README's 30-second example runs and its loss goes down."""
    import re
    with open(os.path.join(ROOT, "README.md")) as f:
        code = re.findall(r"```python\n(.*?)```", f.read(), re.S)[0]
    torch.manual_seed(0)
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "(None, 10)"
    losses = [float(line.split()[1]) for line in lines[1:]]
    assert len(losses) == 4 and losses[-1] < losses[0]

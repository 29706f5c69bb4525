"""The digits example (examples/digits.py) trains, saves, reloads and
re-evaluates; a few epochs on the CPU, in seconds."""

import importlib.util
import os

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn "
                                      "(pip install -e '.[test]')")

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "digits.py")


@pytest.fixture(scope="module")
def digits():
    spec = importlib.util.spec_from_file_location("digits_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(digits, tmp_path_factory):
    """One short training run shared by the tests below (3 epochs, CPU)."""
    out = tmp_path_factory.mktemp("digits")
    argv = ["--epochs", "3", "--seed", "1", "--device", "cpu", "--quiet",
            "--out", str(out / "weights.npz")]
    try:
        import matplotlib  # noqa: F401
        argv += ["--plot", str(out / "curves.png")]
    except ImportError:
        pass
    result = digits.main(argv)
    result["dir"] = out
    return result


def test_it_trains(run):
    history = run["history"]
    assert len(history["train_loss"]) == 3
    assert all(np.isfinite(history["train_loss"]))
    # the loss goes down and the accuracy is far above chance (10%)
    assert history["train_loss"][-1] < 0.7 * history["train_loss"][0]
    assert history["test_loss"][-1] < history["test_loss"][0]
    assert run["test_accuracy"] > 0.85


def test_saved_weights_reload_to_identical_predictions(digits, run):
    path = run["dir"] / "weights.npz"
    assert path.is_file()
    assert np.array_equal(run["predictions"], run["reloaded_predictions"])
    assert run["reloaded_accuracy"] == run["test_accuracy"]

    # independently of main(): a new network (other initial weights) predicts
    # differently until the file is loaded, then exactly as the trained one
    _, _, X_test, y_test = (torch.from_numpy(a) for a in digits.load_data())
    trained = run["network"]["prob"]
    fresh = digits.build_on("cpu")["prob"]
    with torch.no_grad():
        before = digits.get_output(fresh, X_test, deterministic=True)
        digits.load_params(fresh, str(path))
        after = digits.get_output(fresh, X_test, deterministic=True)
        expected = digits.get_output(trained, X_test, deterministic=True)
    assert not torch.equal(before, expected)
    assert torch.equal(after, expected)


def test_plot_is_a_png(run):
    pytest.importorskip("matplotlib")
    with open(run["dir"] / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_same_seed_same_run(digits, tmp_path):
    argv = ["--epochs", "1", "--seed", "7", "--device", "cpu", "--quiet"]
    first = digits.main(argv + ["--out", str(tmp_path / "a.npz")])
    second = digits.main(argv + ["--out", str(tmp_path / "b.npz")])
    assert first["history"]["train_loss"] == second["history"]["train_loss"]
    assert np.array_equal(first["predictions"], second["predictions"])

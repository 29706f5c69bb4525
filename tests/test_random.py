"""lasagne.random: the generator the initializers draw from, and seed()."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import lasagne
from lasagne import init
from lasagne.random import get_rng, seed, set_rng

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def restore_rng():
    saved = get_rng()
    state = torch.get_rng_state()
    yield
    set_rng(saved)
    torch.set_rng_state(state)


def test_default_is_numpy_module():
    # a fresh interpreter: the initial generator is the numpy.random module,
    # as in the original Lasagne
    code = "import numpy, lasagne; assert lasagne.random.get_rng() is numpy.random"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_set_and_get(rng):
    r = np.random.RandomState(int(rng.integers(2 ** 31 - 1)))
    set_rng(r)
    assert get_rng() is r
    assert lasagne.random.get_rng() is r


def test_initializers_draw_from_the_set_generator(rng):
    value = int(rng.integers(2 ** 31 - 1))
    set_rng(np.random.RandomState(value))
    drawn = init.Normal(std=1.0)((4, 3))
    expected = np.random.RandomState(value).normal(0.0, 1.0, size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(drawn, expected)
    # the global numpy state is not touched
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    init.GlorotUniform()((5, 5))
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_seed_seeds_numpy_and_torch(rng):
    value = int(rng.integers(2 ** 31 - 1))
    seed(value)
    assert isinstance(get_rng(), np.random.RandomState)
    w1, t1 = init.GlorotUniform()((6, 7)), torch.rand(5)
    seed(value)
    w2, t2 = init.GlorotUniform()((6, 7)), torch.rand(5)
    np.testing.assert_array_equal(w1, w2)
    assert torch.equal(t1, t2)
    np.testing.assert_array_equal(
        w1, np.random.RandomState(value).uniform(
            -np.sqrt(3) * np.sqrt(2.0 / 13), np.sqrt(3) * np.sqrt(2.0 / 13),
            size=(6, 7)).astype(np.float32))
    seed(value + 1)
    assert not np.array_equal(init.GlorotUniform()((6, 7)), w1)

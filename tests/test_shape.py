"""FlattenLayer, ReshapeLayer, DimshuffleLayer, PadLayer and SliceLayer."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from lasagne.layers import (DimshuffleLayer, FlattenLayer, InputLayer, PadLayer, ReshapeLayer,
                            SliceLayer, dimshuffle, flatten, get_output, pad, reshape)

from harness import check_layer, check_params, check_raises, shapes_compatible

dims = st.one_of(st.none(), st.integers(1, 4))


def concrete(shape, fill=3):
    return tuple(fill if s is None else s for s in shape)


def test_aliases():
    assert flatten is FlattenLayer and reshape is ReshapeLayer
    assert dimshuffle is DimshuffleLayer and pad is PadLayer


# --- FlattenLayer -------------------------------------------------------------

@pytest.mark.parametrize("shape, outdim, expected", [
    ((None, 3, 4, 5), 2, (None, 60)),
    ((None, 3, 4, 5), 3, (None, 3, 20)),
    ((None, 3, 4, 5), 4, (None, 3, 4, 5)),
    ((None, 3, 4, 5), 1, (None,)),
    ((2, 3, None), 2, (2, None)),
    ((7,), 1, (7,)),
])
def test_flatten(float64, rng, shape, outdim, expected):
    layer = FlattenLayer(InputLayer(shape), outdim=outdim, name="f")
    check_params(layer, {})
    assert layer.output_shape == expected
    x = rng.standard_normal(concrete(shape))
    check_layer(layer, x, lambda x: x.reshape(x.shape[:outdim - 1] + (-1,)))


def test_flatten_errors():
    check_raises(ValueError, lambda: FlattenLayer((None, 3), outdim=0), "FlattenLayer", "outdim")
    check_raises(ValueError, lambda: FlattenLayer((None, 3), outdim=3), "FlattenLayer", "outdim")


# --- ReshapeLayer -------------------------------------------------------------

@pytest.mark.parametrize("shape, spec, expected", [
    ((None, 3, 4), ([0], -1), (None, 12)),
    ((None, 100, 20), ([0], [1], 5, -1), (None, 100, 5, 4)),
    ((None, 3, 4), (-1,), (None,)),
    ((2, 3, 4), (-1,), (24,)),
    ((2, 3, 4), (4, -1, 2), (4, 3, 2)),
    ((None, None, 4), ([0], [1], 2, -1), (None, None, 2, 2)),
    ((None, None, 4), ([1], [0], -1), (None, None, 4)),
    ((None, 6), ([0], 2, 3), (None, 2, 3)),
    ((None, 6), ([0], [0], -1), (None, None, None)),
    ((None, 6), (-1, [1]), (None, 6)),
    ((2, 6), ([1], [0]), (6, 2)),
])
def test_reshape(float64, rng, shape, spec, expected):
    layer = ReshapeLayer(InputLayer(shape), spec)
    assert layer.output_shape == expected
    x = rng.standard_normal(concrete(shape, 2 if spec == ([0], [0], -1) else 3))
    n = dict(enumerate(x.shape))
    target = [n[s[0]] if isinstance(s, list) else s for s in spec]
    check_layer(layer, x, lambda x: x.reshape(target))


def test_reshape_errors():
    l_in = InputLayer((None, 3, 4))
    name = "ReshapeLayer"
    check_raises(ValueError, lambda: ReshapeLayer(l_in, ([0], 5)), name, "shape", "total")
    check_raises(ValueError, lambda: ReshapeLayer(l_in, ([0], 5, -1)), name, "shape", "total")
    check_raises(ValueError, lambda: ReshapeLayer((2, 3, 4), (5, -1)), name, "total")
    check_raises(ValueError, lambda: ReshapeLayer(l_in, ([0], -1, -1)), name, "-1")
    check_raises(ValueError, lambda: ReshapeLayer(l_in, ([3], -1)), name, "[3]")
    check_raises(ValueError, lambda: ReshapeLayer(l_in, ([-1], -1)), name, "[i]")
    check_raises(ValueError, lambda: ReshapeLayer(l_in, ([0, 1], -1)), name, "[i]")
    check_raises(ValueError, lambda: ReshapeLayer(l_in, ([0], 0, -1)), name, "shape")
    check_raises(ValueError, lambda: ReshapeLayer(l_in, ([0], -2)), name, "shape")
    check_raises(ValueError, lambda: ReshapeLayer(l_in, ([0], 1.5, -1)), name, "shape")
    check_raises(ValueError, lambda: ReshapeLayer(l_in, ([0], None)), name, "shape")
    check_raises(TypeError, lambda: ReshapeLayer(l_in, 12), name, "shape")


@given(st.lists(dims, min_size=1, max_size=4), st.data())
def test_reshape_shape_property(shape, data):
    ndim = len(shape)
    refs = data.draw(st.lists(st.integers(0, ndim - 1), unique=True))
    spec = [[i] for i in refs]
    if len(refs) < ndim:  # the rest goes into -1, placed anywhere
        spec.insert(data.draw(st.integers(0, len(spec))), -1)
    layer = ReshapeLayer(tuple(shape), tuple(spec))
    x = torch.zeros(concrete(shape, 2))
    out = layer.get_output_for(x)
    assert shapes_compatible(layer.output_shape, tuple(out.shape))
    assert layer.get_output_shape_for(tuple(x.shape)) == tuple(out.shape)


# --- DimshuffleLayer ----------------------------------------------------------

def dimshuffle_ref(x, pattern):
    kept = [p for p in pattern if p != 'x']
    dropped = [a for a in range(x.ndim) if a not in kept]
    y = np.transpose(x, kept + dropped).reshape([x.shape[a] for a in kept])
    for i, p in enumerate(pattern):
        if p == 'x':
            y = np.expand_dims(y, i)
    return y


@pytest.mark.parametrize("shape, pattern, expected", [
    ((2, 3, 5, 7), (3, 2, 1, 'x', 0), (7, 5, 3, 1, 2)),
    ((None, 3), (1, 0), (3, None)),
    ((None, 3), ('x', 0, 'x', 1, 'x'), (1, None, 1, 3, 1)),
    ((None, 1, 4), (0, 2), (None, 4)),
    ((1, 1), (), ()),
    ((None, 3, 1, 1), (0, 1), (None, 3)),
    ((4,), (0,), (4,)),
])
def test_dimshuffle(float64, rng, shape, pattern, expected):
    layer = DimshuffleLayer(InputLayer(shape), pattern)
    assert layer.output_shape == expected
    x = rng.standard_normal(concrete(shape))
    check_layer(layer, x, lambda x: dimshuffle_ref(x, pattern))


def test_dimshuffle_errors():
    name = "DimshuffleLayer"
    check_raises(ValueError, lambda: DimshuffleLayer((None, 3), (0,)), name, "pattern", "size 3")
    check_raises(ValueError, lambda: DimshuffleLayer((None, 3), (0, 0, 1)), name, "more than once")
    check_raises(ValueError, lambda: DimshuffleLayer((None, 3), (0, 2)), name, "pattern")
    check_raises(ValueError, lambda: DimshuffleLayer((None, 3), (0, 'y', 1)), name, "pattern")
    check_raises(ValueError, lambda: DimshuffleLayer((None, 3), (0, -1)), name, "pattern")
    # an axis of unknown size may be dropped, but must have size 1 at run time
    layer = DimshuffleLayer(InputLayer((None, 3)), (1,), name="d")
    assert layer.output_shape == (3,)
    np.testing.assert_array_equal(get_output(layer, torch.ones(1, 3)).numpy(), np.ones(3))
    check_raises(ValueError, lambda: get_output(layer, torch.ones(2, 3)),
                 "DimshuffleLayer(name='d')", "axis 0", "size 2")


@given(st.lists(dims, min_size=0, max_size=4), st.data())
def test_dimshuffle_shape_property(shape, data):
    ndim = len(shape)
    droppable = [a for a in range(ndim) if shape[a] == 1]
    dropped = data.draw(st.lists(st.sampled_from(droppable), unique=True)) if droppable else []
    kept = data.draw(st.permutations([a for a in range(ndim) if a not in dropped]))
    pattern = list(kept)
    for _ in range(data.draw(st.integers(0, 2))):
        pattern.insert(data.draw(st.integers(0, len(pattern))), 'x')
    layer = DimshuffleLayer(tuple(shape), tuple(pattern))
    out = layer.get_output_for(torch.zeros(concrete(shape, 2)))
    assert shapes_compatible(layer.output_shape, tuple(out.shape))


# --- PadLayer -----------------------------------------------------------------

@pytest.mark.parametrize("shape, width, val, batch_ndim, expected", [
    ((None, 3, 4, 5), 1, 0, 2, (None, 3, 6, 7)),
    ((None, 3, 4, 5), (1, 2), 0, 2, (None, 3, 6, 9)),
    ((None, 3, 4, 5), ((1, 2), (0, 3)), 1.5, 2, (None, 3, 7, 8)),
    ((None, 3, 4, 5), ((2, 0),), -1, 2, (None, 3, 6, 5)),
    ((None, 3, 4, 5), [1, (0, 2)], 0, 2, (None, 3, 6, 7)),
    ((None, 3, None), 2, 0, 2, (None, 3, None)),
    ((2, 3), 1, 7, 0, (4, 5)),
    ((None, 3, 4), (1, (2, 1)), 0, 1, (None, 5, 7)),
    ((None, 3, 4), 0, 0, 2, (None, 3, 4)),
    ((None, 3), (), 0, 2, (None, 3)),
])
def test_pad(float64, rng, shape, width, val, batch_ndim, expected):
    layer = PadLayer(InputLayer(shape), width, val=val, batch_ndim=batch_ndim)
    assert layer.output_shape == expected
    assert layer.width == width and layer.val == val and layer.batch_ndim == batch_ndim
    x = rng.standard_normal(concrete(shape))
    n_pad = len(shape) - batch_ndim
    entries = [width] * n_pad if isinstance(width, int) else list(width)
    entries += [0] * (n_pad - len(entries))
    pads = [(0, 0)] * batch_ndim + [(w, w) if isinstance(w, int) else w for w in entries]
    check_layer(layer, x, lambda x: np.pad(x, pads, constant_values=val))


def test_pad_errors():
    name = "PadLayer"
    check_raises(ValueError, lambda: PadLayer((None, 3, 4), (1, 2)), name, "width")
    check_raises(ValueError, lambda: PadLayer((None, 3, 4), -1), name, "width")
    check_raises(ValueError, lambda: PadLayer((None, 3, 4), ((1, -1),)), name, "width")
    check_raises(ValueError, lambda: PadLayer((None, 3, 4), ((1, 2, 3),)), name, "width")
    check_raises(ValueError, lambda: PadLayer((None, 3, 4), (1.5,)), name, "width")
    check_raises(TypeError, lambda: PadLayer((None, 3, 4), 1.5), name, "width")
    check_raises(ValueError, lambda: PadLayer((None, 3, 4), 1, batch_ndim=4), name, "batch_ndim")
    check_raises(ValueError, lambda: PadLayer((None, 3, 4), 1, batch_ndim=-1), name, "batch_ndim")


# --- SliceLayer ---------------------------------------------------------------

@pytest.mark.parametrize("shape, indices, axis, expected", [
    ((None, 10, 8), slice(2, None, 2), 1, (None, 4, 8)),
    ((None, 10, 8), 0, -1, (None, 10)),
    ((None, 10, 8), -1, 1, (None, 8)),
    ((None, 10, 8), slice(None, None, -1), -1, (None, 10, 8)),
    ((None, 10, 8), slice(-2, 1, -3), 1, (None, 3, 8)),
    ((None, 10, 8), slice(5, 2), 1, (None, 0, 8)),
    ((None, 10, 8), slice(1, 3), 0, (None, 10, 8)),
    ((None, None), slice(0, 1), 1, (None, None)),
    ((4,), 2, 0, ()),
    ((None, 10, 8), slice(None, None, -3), 2, (None, 10, 3)),
])
def test_slice(float64, rng, shape, indices, axis, expected):
    layer = SliceLayer(InputLayer(shape), indices, axis=axis)
    assert layer.output_shape == expected
    x = rng.standard_normal(concrete(shape, 4))
    index = (slice(None),) * (axis % len(shape)) + (indices,)
    out = check_layer(layer, x, lambda x: x[index], grad=0 not in x[index].shape)
    assert out.shape == x[index].shape


def test_slice_errors():
    name = "SliceLayer"
    check_raises(ValueError, lambda: SliceLayer((None, 3), 0, axis=2), name, "axis")
    check_raises(ValueError, lambda: SliceLayer((None, 3), 0, axis=-3), name, "axis")
    check_raises(IndexError, lambda: SliceLayer((None, 3), 3), name, "indices")
    check_raises(IndexError, lambda: SliceLayer((None, 3), -4), name, "indices")
    check_raises(ValueError, lambda: SliceLayer((None, 3), slice(0, 2, 0)), name, "step")
    check_raises(ValueError, lambda: SliceLayer((None, 3), slice(0, 2.0)), name, "indices")
    check_raises(TypeError, lambda: SliceLayer((None, 3), [0, 1]), name, "indices")


@given(st.integers(1, 7), st.one_of(st.none(), st.integers(-8, 8)),
       st.one_of(st.none(), st.integers(-8, 8)),
       st.one_of(st.none(), st.integers(-3, 3).filter(lambda s: s != 0)), st.booleans())
def test_slice_property(size, start, stop, step, known):
    s = slice(start, stop, step)
    layer = SliceLayer((2, size if known else None), s, axis=1)
    x = torch.arange(2 * size).reshape(2, size)
    out = layer.get_output_for(x)
    np.testing.assert_array_equal(out.numpy(), x.numpy()[:, s])
    assert shapes_compatible(layer.output_shape, tuple(out.shape))
    assert layer.get_output_shape_for((2, size)) == tuple(out.shape)

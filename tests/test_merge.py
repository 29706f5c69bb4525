"""ConcatLayer, ElemwiseMergeLayer, ElemwiseSumLayer and autocropping."""

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from lasagne.layers import (ConcatLayer, ElemwiseMergeLayer, ElemwiseSumLayer, InputLayer,
                            autocrop, autocrop_array_shapes, concat)

from harness import check_layer, check_params, check_raises, shapes_compatible


def concrete(shape, fill=3):
    return tuple(fill if s is None else s for s in shape)


def crop_ref(arrays, cropping):
    """Plain-loop reference for autocrop on numpy arrays."""
    if cropping is None:
        return arrays
    ndim = arrays[0].ndim
    cropping = list(cropping) + [None] * (ndim - len(cropping))
    out = []
    for a in arrays:
        index = []
        for axis, mode in enumerate(cropping):
            size = a.shape[axis]
            smallest = min(b.shape[axis] for b in arrays)
            if mode is None:
                index.append(slice(None))
            elif mode == 'lower':
                index.append(slice(0, smallest))
            elif mode == 'upper':
                index.append(slice(size - smallest, size))
            else:
                off = (size - smallest) // 2
                index.append(slice(off, off + smallest))
        out.append(a[tuple(index)])
    return out


# --- autocrop -----------------------------------------------------------------

@pytest.mark.parametrize("cropping", [
    None, [None, 'lower'], [None, None, 'upper', 'center'], ['center', 'center', 'center'],
    ['lower', 'upper', 'lower', 'upper'],
])
def test_autocrop(rng, cropping):
    shapes = [(2, 5, 7, 4), (3, 5, 4, 6), (2, 5, 6, 1)]
    arrays = [rng.standard_normal(s) for s in shapes]
    got = autocrop([torch.tensor(a) for a in arrays], cropping)
    for g, r in zip(got, crop_ref(arrays, cropping)):
        np.testing.assert_array_equal(g.numpy(), r)
    assert autocrop_array_shapes(shapes, cropping) == [r.shape for r in crop_ref(arrays,
                                                                                 cropping)]


def test_autocrop_array_shapes_unknown():
    shapes = [(None, 5, 7), (3, None, 4)]
    assert autocrop_array_shapes(shapes, ['lower', 'center', 'upper']) == \
        [(None, None, 4), (None, None, 4)]
    assert autocrop_array_shapes(shapes, None) is shapes


def test_autocrop_errors():
    with pytest.raises(ValueError, match="dimensionality"):
        autocrop([torch.zeros(2, 3), torch.zeros(2, 3, 1)], ['lower'])
    with pytest.raises(ValueError, match="dimensionality"):
        autocrop_array_shapes([(2, 3), (2, 3, 1)], ['lower'])
    with pytest.raises(ValueError, match="crop mode"):
        autocrop([torch.zeros(2, 3)], ['middle'])
    with pytest.raises(ValueError, match="crop mode"):
        autocrop_array_shapes([(2, 3)], [None, 'left'])


# --- ConcatLayer --------------------------------------------------------------

@pytest.mark.parametrize("shapes, axis, cropping, expected", [
    ([(None, 3, 8), (None, 5, 8)], 1, None, (None, 8, 8)),
    ([(None, 3, 8), (None, 3, 2), (None, 3, 1)], -1, None, (None, 3, 11)),
    ([(2, 3), (None, 3)], 0, None, (None, 3)),
    ([(None, 3, None), (None, 2, 4)], 1, None, (None, 5, 4)),
    ([(None, 3, 6, 5), (None, 2, 4, 7)], 1, [None, None, 'center', 'lower'], (None, 5, 4, 5)),
    ([(None, 3, 6), (None, 2, 4)], 1, ['lower', 'upper', 'upper'], (None, 5, 4)),
    ([(4, 3)], 1, None, (4, 3)),
])
def test_concat(float64, rng, shapes, axis, cropping, expected):
    layers = [InputLayer(s) for s in shapes]
    layer = ConcatLayer(layers, axis=axis, cropping=cropping, name="c")
    check_params(layer, {})
    assert layer.output_shape == expected
    known = {}
    for s in shapes:
        for i, d in enumerate(s):
            if d is not None:
                known.setdefault(i, d)
    arrays = [rng.standard_normal([known.get(i, 4) if d is None else d for i, d in enumerate(s)])
              for s in shapes]
    check_layer(layer, arrays, lambda *xs: np.concatenate(crop_ref(list(xs), (
        None if cropping is None else [None if i == axis % len(shapes[0]) else c
                                       for i, c in enumerate(cropping)])), axis=axis))


def test_concat_alias_and_tuple_inputs(rng):
    assert concat is ConcatLayer
    layer = ConcatLayer([(None, 2), (None, 3)])
    assert layer.input_layers == [None, None] and layer.output_shape == (None, 5)


def test_concat_errors():
    name = "ConcatLayer"
    check_raises(ValueError, lambda: ConcatLayer([(None, 3, 4), (None, 3, 5)]), name, "agree")
    check_raises(ValueError, lambda: ConcatLayer([(None, 3, 4), (None, 3)]), name, "dimensions")
    check_raises(ValueError, lambda: ConcatLayer([(None, 3), (None, 3)], axis=2), name, "axis")
    check_raises(ValueError, lambda: ConcatLayer([(None, 3), (None, 3)], axis=1.0), name, "axis")
    check_raises(ValueError, lambda: ConcatLayer([]), name, "incomings")
    check_raises(ValueError, lambda: ConcatLayer([(None, 3), (None, 3)], cropping=['left']),
                 name, "cropping")
    check_raises(TypeError, lambda: ConcatLayer([(None, 3), (None, 3)], cropping='lower'),
                 name, "cropping")
    check_raises(ValueError, lambda: ConcatLayer([(None, 3), (None, 3)],
                                                 cropping=[None, None, 'lower']), name, "cropping")


@given(st.integers(1, 4), st.lists(st.one_of(st.none(), st.integers(1, 4)), min_size=1,
                                   max_size=4), st.data())
def test_concat_shape_property(n_inputs, base, data):
    ndim = len(base)
    axis = data.draw(st.integers(-ndim, ndim - 1))
    shapes = []
    for _ in range(n_inputs):
        shape = [s if s is not None or data.draw(st.booleans()) else 2 for s in base]
        shape = [d if data.draw(st.booleans()) else None for d in shape] if \
            data.draw(st.booleans()) else shape
        shape[axis] = data.draw(st.one_of(st.none(), st.integers(1, 3)))
        shapes.append(tuple(shape))
    layer = ConcatLayer(shapes, axis=axis)
    fill = [next((s[i] for s in shapes if s[i] is not None), 2) for i in range(ndim)]
    xs = []
    for s in shapes:
        c = [fill[i] if d is None else d for i, d in enumerate(s)]
        c[axis] = s[axis] if s[axis] is not None else 2
        xs.append(torch.zeros(c))
    out = layer.get_output_for(xs)
    assert shapes_compatible(layer.output_shape, tuple(out.shape))
    assert layer.get_output_shape_for([tuple(x.shape) for x in xs]) == tuple(out.shape)


# --- ElemwiseMergeLayer / ElemwiseSumLayer --------------------------------------

@pytest.mark.parametrize("fn, ref", [
    (torch.mul, np.multiply), (torch.maximum, np.maximum), (torch.sub, np.subtract),
])
def test_elemwise_merge(float64, rng, fn, ref):
    shapes = [(None, 3, 4), (2, 3, None), (None, None, 4)]
    layer = ElemwiseMergeLayer([InputLayer(s) for s in shapes], fn, name="m")
    check_params(layer, {})
    assert layer.output_shape == (2, 3, 4)
    xs = [rng.standard_normal((2, 3, 4)) for _ in shapes]
    check_layer(layer, xs, lambda a, b, c: ref(ref(a, b), c))


@pytest.mark.parametrize("coeffs, expected", [
    (1, [1, 1, 1]), (0.5, [0.5, 0.5, 0.5]), ([1, -2, 0.25], [1, -2, 0.25]),
    ((2, 1, -1), [2, 1, -1]),
])
def test_elemwise_sum(float64, rng, coeffs, expected):
    layer = ElemwiseSumLayer([InputLayer((None, 5)) for _ in range(3)], coeffs=coeffs)
    assert layer.coeffs == expected
    xs = [rng.standard_normal((4, 5)) for _ in range(3)]
    check_layer(layer, xs, lambda *xs: sum(c * x for c, x in zip(expected, xs)))


def test_elemwise_sum_cropping(float64, rng):
    shapes = [(None, 3, 6, 5), (None, 3, 4, 7)]
    cropping = [None, None, 'center', 'upper']
    layer = ElemwiseSumLayer([InputLayer(s) for s in shapes], coeffs=[1, 3], cropping=cropping)
    assert layer.output_shape == (None, 3, 4, 5)
    xs = [rng.standard_normal(concrete(s, 2)) for s in shapes]
    check_layer(layer, xs, lambda a, b: sum(c * x for c, x in zip([1, 3],
                                                                 crop_ref([a, b], cropping))))


def test_elemwise_errors():
    check_raises(ValueError, lambda: ElemwiseSumLayer([(None, 3), (None, 4)]),
                 "ElemwiseSumLayer", "same")
    check_raises(ValueError, lambda: ElemwiseSumLayer([(None, 3), (None, 3)], coeffs=[1, 2, 3]),
                 "ElemwiseSumLayer", "coeffs")
    check_raises(ValueError, lambda: ElemwiseMergeLayer([(None, 3), (3, 3, 1)], torch.add),
                 "ElemwiseMergeLayer", "dimensions")
    check_raises(TypeError, lambda: ElemwiseMergeLayer([(None, 3)], "add"),
                 "ElemwiseMergeLayer", "merge_function")
    check_raises(ValueError, lambda: ElemwiseMergeLayer([(None, 3)], torch.add,
                                                        cropping=['lower', 'side']),
                 "ElemwiseMergeLayer", "cropping")


@given(st.lists(st.lists(st.one_of(st.none(), st.integers(1, 4)), min_size=3, max_size=3),
                min_size=1, max_size=3),
       st.lists(st.sampled_from([None, 'lower', 'upper', 'center']), min_size=3, max_size=3))
def test_cropped_sum_shape_property(shapes, cropping):
    # uncropped axes must agree, so they take the first input's size there
    shapes = [tuple(s[i] if cropping[i] is not None else shapes[0][i] for i in range(3))
              for s in shapes]
    layer = ElemwiseSumLayer(shapes, cropping=cropping)
    xs = [torch.zeros([(2 if cropping[i] is None else 1 + (k + i) % 4) if d is None else d
                       for i, d in enumerate(s)]) for k, s in enumerate(shapes)]
    out = layer.get_output_for(xs)
    assert shapes_compatible(layer.output_shape, tuple(out.shape))
    assert layer.get_output_shape_for([tuple(x.shape) for x in xs]) == tuple(out.shape)

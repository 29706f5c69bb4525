"""Tests of lasagne.serialization: the restricted unpickler on malicious and
on Python 2 Model Zoo pickles, .npz round trips, and loading values into
networks."""

import io
import os
import pickle
import pickletools
import struct

import numpy as np
import pytest
import torch

from lasagne.layers import InputLayer, Layer, get_all_param_values, set_all_param_values
from lasagne.network import Network
from lasagne.serialization import (RestrictedUnpickler, load_model_zoo, load_param_values,
                                   load_params, save_params)


class Affine(Layer):
    """y = x * W + b over the trailing axis, W of shape (n,), b of (n,)."""

    def __init__(self, incoming, **kwargs):
        super(Affine, self).__init__(incoming, **kwargs)
        n = self.input_shape[-1]
        self.W = self.add_param(lambda s: np.random.randn(*s), (n,))
        self.b = self.add_param(lambda s: np.random.randn(*s), (n,), regularizable=False)

    def get_output_for(self, input, **kwargs):
        return input * self.W + self.b


class Mix(Layer):
    """y = x @ M: a 2D parameter, so shapes can be wrong in a transposed way."""

    def __init__(self, incoming, num_units, **kwargs):
        super(Mix, self).__init__(incoming, **kwargs)
        self.M = self.add_param(lambda s: np.random.randn(*s), (self.input_shape[-1], num_units))
        self.num_units = num_units

    def get_output_shape_for(self, input_shape):
        return input_shape[:-1] + (self.num_units,)

    def get_output_for(self, input, **kwargs):
        return input @ self.M


def build():
    l_in = InputLayer((None, 3))
    l = Affine(l_in, name="a")
    l = Mix(l, 5, name="mix")
    return Affine(l, name="out")


# -- a Python 2 protocol-2 pickle, written opcode by opcode ------------------------------------

class Py2Pickler(object):
    """Writes what Python 2's cPickle.dump(obj, f, 2) wrote for dicts, lists,
    str, int and numpy arrays (numpy's __reduce__: _reconstruct, then
    __setstate__ with the raw bytes as a Python 2 str), memo included."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")   # PROTO 2
        self.memo = {}

    def _put(self, key=None):
        index = len(self.memo)
        if key is not None:
            self.memo[key] = index
        else:
            self.memo[object()] = index
        self.out += b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)

    def _global(self, module, name):
        key = ("global", module, name)
        if key in self.memo:
            index = self.memo[key]
            self.out += b"h" + bytes([index])          # BINGET
        else:
            self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"   # GLOBAL
            self._put(key)

    def _int(self, i):
        if 0 <= i < 256:
            self.out += b"K" + bytes([i])              # BININT1
        elif 0 <= i < 65536:
            self.out += b"M" + struct.pack("<H", i)    # BININT2
        else:
            self.out += b"J" + struct.pack("<i", i)    # BININT

    def _str(self, data):
        # a Python 2 str: raw bytes
        if len(data) < 256:
            self.out += b"U" + bytes([len(data)]) + data    # SHORT_BINSTRING
        else:
            self.out += b"T" + struct.pack("<i", len(data)) + data   # BINSTRING
        self._put()

    def _tuple(self, items):
        if len(items) == 0:
            self.out += b")"
            return
        if len(items) <= 3:
            for item in items:
                self.save(item)
            self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(items)]
        else:
            self.out += b"("
            for item in items:
                self.save(item)
            self.out += b"t"
        self._put()

    def _dtype(self, dtype, flags=0):
        self._global("numpy", "dtype")
        self._tuple([dtype.str[1:].encode(), 0, 1])       # e.g. ('f4', 0, 1)
        self.out += b"R"                                    # REDUCE
        self._put()
        self._tuple([3, dtype.str[0].encode(), None, None, None, -1, -1, flags])
        self.out += b"b"                                    # BUILD: __setstate__

    def array(self, shape, dtype, data, dtype_flags=0):
        """An array as numpy's __reduce__ describes it; the pieces may be
        forged."""
        self._global("numpy.core.multiarray", "_reconstruct")
        self._global("numpy", "ndarray")
        self._tuple([0])
        self._str(b"b")
        self.out += b"\x87"                                 # TUPLE3
        self._put()
        self.out += b"R"
        self._put()
        self.out += b"("                                    # MARK: the state tuple
        self._int(1)
        self._tuple(list(shape))
        self._dtype(dtype, dtype_flags)
        self.out += b"\x89"                                 # NEWFALSE: C order
        self._str(data)
        self.out += b"t"
        self._put()
        self.out += b"b"                                    # BUILD: __setstate__

    def save(self, obj):
        if obj is None:
            self.out += b"N"
        elif isinstance(obj, bool):
            self.out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, int):
            self._int(obj)
        elif isinstance(obj, bytes):
            self._str(obj)
        elif isinstance(obj, np.ndarray):
            self.array(obj.shape, obj.dtype, obj.tobytes())
        elif isinstance(obj, list):
            self.out += b"]"                                # EMPTY_LIST
            self._put()
            if obj:
                self.out += b"("
                for item in obj:
                    self.save(item)
                self.out += b"e"                            # APPENDS
        elif isinstance(obj, dict):
            self.out += b"}"                                # EMPTY_DICT
            self._put()
            if obj:
                self.out += b"("
                for key, value in obj.items():
                    self.save(key)
                    self.save(value)
                self.out += b"u"                            # SETITEMS
        elif isinstance(obj, tuple):
            self._tuple(list(obj))
        else:
            raise TypeError(type(obj))

    def dumps(self, obj):
        self.save(obj)
        self.out += b"."
        return bytes(self.out)


def py2_model_zoo_bytes(values, words, mean):
    return Py2Pickler().dumps({b"param values": values, b"synset words": words,
                               b"mean image": mean})


def test_python2_model_zoo_pickle_loads(rng, tmp_path):
    values = [rng.standard_normal((3, 5)).astype(np.float32),
              rng.standard_normal(5).astype(np.float32),
              rng.standard_normal((2, 3, 3, 3)).astype(np.float32),
              np.zeros(0, dtype=np.float32)]
    words = [b"n01440764 tench, Tinca tinca", b"n01443537 goldfish"]
    mean = rng.uniform(0, 255, size=(3, 8, 8)).astype(np.float32)
    data = py2_model_zoo_bytes(values, words, mean)
    # the stream is a well-formed protocol-2 pickle of Python 2's kind
    ops = [op.name for op, _, _ in pickletools.genops(data)]
    assert ops[0] == "PROTO" and "SHORT_BINSTRING" in ops and "BINSTRING" in ops
    assert "GLOBAL" in ops and "BINGET" in ops
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    model = load_model_zoo(str(path))
    assert sorted(model) == ["mean image", "param values", "synset words"]
    assert model["synset words"] == ["n01440764 tench, Tinca tinca", "n01443537 goldfish"]
    got = model["param values"]
    assert len(got) == len(values)
    for g, v in zip(got, values):
        assert g.dtype == np.float32 and g.shape == v.shape
        np.testing.assert_array_equal(g, v)
    np.testing.assert_array_equal(model["mean image"], mean)
    # a file object works too, and load_param_values gives the list
    with open(path, "rb") as f:
        listed = load_param_values(f)
    assert all(np.array_equal(a, b) for a, b in zip(listed, values))
    # same as what the unrestricted unpickler makes of it
    plain = pickle.loads(data, encoding="latin1")
    assert all(np.array_equal(a, b) for a, b in zip(plain["param values"], got))


def test_python2_pickle_with_values_key_and_big_endian(rng):
    arr = rng.standard_normal((4, 2)).astype(">f8")
    data = Py2Pickler().dumps({b"values": [arr]})
    (got,) = load_param_values(io.BytesIO(data))
    assert got.dtype.newbyteorder("=") == np.dtype("f8")   # numpy may swap to native order
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_python3_pickles_of_arrays_load(protocol, rng):
    values = [rng.standard_normal((3, 4)).astype(np.float32),
              np.asfortranarray(rng.standard_normal((2, 3))),
              np.arange(6, dtype=np.int64),
              np.array(2.5),
              np.array([True, False]),
              np.array([1 + 2j], dtype=np.complex64),
              np.array(["tench", "goldfish"]),
              np.array(["2020-01-01"], dtype="datetime64[D]"),
              np.array(["n01440764", 3], dtype=object)]
    obj = {"param values": values, "synset words": ["a", "b"], "scalar": np.float32(1.5),
           "blob": b"\x00\xff", "tags": {1, 2}, "pair": (1, 2.0), "z": 1 + 2j}
    model = load_model_zoo(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
    for g, v in zip(model["param values"], values):
        assert g.dtype == v.dtype
        np.testing.assert_array_equal(g, v)
    assert model["scalar"] == np.float32(1.5) and model["blob"] == b"\x00\xff"
    assert model["tags"] == {1, 2} and model["pair"] == (1, 2.0) and model["z"] == 1 + 2j
    # a bare list of arrays is a parameter file too
    listed = load_param_values(io.BytesIO(pickle.dumps(values, protocol=protocol)))
    assert all(np.array_equal(a, b) for a, b in zip(listed, values))


# -- malicious pickles -----------------------------------------------------------------------

class RunsCommand(object):
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch {}".format(self.marker),))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_running_a_command_is_refused(protocol, tmp_path):
    marker = tmp_path / "pwned"
    payload = {"param values": [np.zeros(2, np.float32), RunsCommand(marker)]}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    for load in (load_model_zoo, load_param_values):
        with pytest.raises(pickle.UnpicklingError, match=r"'(posix|nt|os)\.system'"):
            load(str(path))
    net = Network(build())
    with pytest.raises(pickle.UnpicklingError, match="system"):
        load_params(net, path)
    assert not marker.exists()
    # the same file really runs the command through the plain unpickler
    pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("stream", [
    b"c__builtin__\neval\n(S'1+1'\ntR.",                       # Python 2 builtins
    b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'x'\ntR.",
    b"csubprocess\nPopen\n((S'true'\nttR.",
    b"cnumpy\nload\n(S'x.npy'\ntR.",                           # numpy, but not an array
    b"cnumpy.testing._private.utils\nrunstring\n(S'1'\n}tR.",
    b"ccopy_reg\n_reconstructor\n(cnumpy\nndarray\ncnumpy\nndarray\nNtR.",
    b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.",
])
def test_other_globals_are_refused(stream):
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        RestrictedUnpickler(io.BytesIO(stream)).load()


def forged(**kwargs):
    pickler = Py2Pickler()
    pickler.out += b"]"
    pickler._put()
    pickler.array(**kwargs)
    pickler.out += b"a."                                    # APPEND, STOP
    return bytes(pickler.out)


@pytest.mark.parametrize("kwargs, words", [
    # an object array whose elements are raw bytes: pointers chosen by the file
    (dict(shape=(1,), dtype=np.dtype("O"), data=b"\x01" * 8, dtype_flags=0), "forged"),
    # a float dtype flagged as holding references
    (dict(shape=(1,), dtype=np.dtype("f8"), data=b"\x00" * 8, dtype_flags=63), "forged"),
])
def test_forged_dtype_states_are_refused(kwargs, words):
    with pytest.raises(pickle.UnpicklingError, match=words):
        load_param_values(io.BytesIO(forged(**kwargs)))
    # the same construction with numpy's own flags loads
    kwargs["dtype_flags"] = kwargs["dtype"].flags
    if kwargs["dtype"].kind != "O":
        (arr,) = load_param_values(io.BytesIO(forged(**kwargs)))
        assert arr.dtype == kwargs["dtype"]


def test_structured_arrays_and_other_states_are_refused():
    arr = np.zeros(2, dtype=[("a", "f4"), ("b", "i2")])
    with pytest.raises(pickle.UnpicklingError, match="structured"):
        load_param_values(io.BytesIO(pickle.dumps([arr], protocol=2)))
    stream = b"\x80\x02ccollections\nOrderedDict\n)R}X\x01\x00\x00\x00aK\x01sb."
    with pytest.raises(pickle.UnpicklingError, match="state of a OrderedDict"):
        RestrictedUnpickler(io.BytesIO(stream)).load()


def test_not_a_parameter_file(tmp_path):
    with pytest.raises(ValueError, match="'param values' or 'values'"):
        load_model_zoo(io.BytesIO(pickle.dumps({"weights": []})))
    with pytest.raises(ValueError, match="not a Model Zoo dict"):
        load_model_zoo(io.BytesIO(pickle.dumps([np.zeros(2)])))
    with pytest.raises(ValueError, match="list of numpy arrays"):
        load_param_values(io.BytesIO(pickle.dumps({"param values": [1, 2]})))
    with pytest.raises(pickle.UnpicklingError, match="not a readable pickle"):
        load_param_values(io.BytesIO(b"\x80\x02}q"))
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match=".npy"):
        load_param_values(tmp_path / "one.npy")


# -- .npz and loading into networks --------------------------------------------------------

def test_npz_round_trip_network(tmp_path):
    net = Network(build())
    path = tmp_path / "weights.npz"
    save_params(net, path)
    with np.load(path) as npz:                       # the original's np.savez layout
        assert npz.files == ["arr_{}".format(i) for i in range(5)]
        for i, p in enumerate(net.parameters()):
            np.testing.assert_array_equal(npz["arr_{}".format(i)], p.detach().numpy())
    other = Network(build())
    load_params(other, path)
    for a, b in zip(net.parameters(), other.parameters()):
        assert torch.equal(a, b)
    x = torch.randn(2, 3)
    assert torch.equal(net(x), other(x))


def test_npz_round_trip_layers_and_file_objects(float64):
    out = build()
    buf = io.BytesIO()
    save_params(out, buf)
    buf.seek(0)
    other = build()
    load_params(other, buf)
    assert all(np.array_equal(a, b) for a, b in zip(get_all_param_values(out),
                                                      get_all_param_values(other)))
    assert get_all_param_values(other)[0].dtype == np.float64


def test_npz_with_other_names_is_refused(tmp_path):
    path = tmp_path / "named.npz"
    np.savez(path, W=np.zeros(3), b=np.zeros(3))
    with pytest.raises(ValueError, match="arr_0"):
        load_param_values(path)


def test_model_zoo_pickle_into_network(rng, tmp_path):
    net = Network(build())
    values = [rng.standard_normal(tuple(p.shape)).astype(np.float32) for p in net.parameters()]
    path = tmp_path / "zoo.pkl"
    path.write_bytes(py2_model_zoo_bytes(values, [b"cat"], np.zeros(3, np.float32)))
    load_params(net, path)
    for p, v in zip(net.parameters(), values):
        np.testing.assert_array_equal(p.detach().numpy(), v)
    # the original's two-step form
    other = build()
    set_all_param_values(other, load_model_zoo(path)["param values"])
    assert all(np.array_equal(a, b) for a, b in zip(get_all_param_values(other), values))


def test_mismatched_files_are_refused_and_change_nothing(rng, tmp_path):
    net = Network(build())
    before = [p.detach().clone() for p in net.parameters()]
    good = [rng.standard_normal(tuple(p.shape)).astype(np.float32) for p in net.parameters()]
    short = tmp_path / "short.pkl"
    short.write_bytes(py2_model_zoo_bytes(good[:-1], [], np.zeros(1, np.float32)))
    with pytest.raises(ValueError, match="4 arrays but the network has 5 parameters"):
        load_params(net, short)
    transposed = list(good)
    transposed[2] = good[2].T.copy()
    path = tmp_path / "transposed.npz"
    np.savez(path, *transposed)
    with pytest.raises(ValueError, match=r"array 2 .*shape \(5, 3\).*'mix_M'.*\(3, 5\)"):
        load_params(net, path)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), before))
    with pytest.raises(ValueError, match="4 values for 5 parameters"):
        set_all_param_values(net.output_layers, good[:-1])


def test_trainable_subset_and_bfloat16(tmp_path):
    net = Network(build()).to(torch.bfloat16)
    path = tmp_path / "w.npz"
    save_params(net, path, regularizable=True)
    values = load_param_values(path)
    assert len(values) == 3 and all(v.dtype == np.float32 for v in values)
    load_params(net, path, regularizable=True)

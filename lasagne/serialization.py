"""Loading and saving a network's parameter values.

Two formats:

* **Lasagne Model Zoo pickles** — a dict whose ``'param values'`` (in some
  files ``'values'``) is the list of a network's parameter values, in
  :func:`~lasagne.layers.get_all_params` order, next to entries such as
  ``'synset words'`` or ``'mean image'``. Most were written by Python 2, so
  their strings are read as latin-1. A pickle can run any code when loaded;
  :func:`load_model_zoo` uses an unpickler (:class:`RestrictedUnpickler`)
  that rebuilds nothing but numpy arrays, numpy dtypes and scalars, and
  plain containers, and refuses every other object, and any forged array or
  dtype state, with :class:`pickle.UnpicklingError`.
* **.npz files** — one array per parameter, ``arr_0`` to ``arr_<n-1>`` in
  ``get_all_params`` order: what ``np.savez(path, *get_all_param_values(net))``
  writes, the pattern the original Lasagne recommended. They are read with
  ``allow_pickle=False``.

:func:`load_params` and :func:`save_params` read and write either into a
:class:`~lasagne.network.Network` or a layer graph in one call. The module
is named after ``torch.serialization``, which does the same for modules.
"""

import codecs
import collections
import importlib
import os
import pickle
import re

import numpy as np
import torch

from .layers.helper import get_all_params
from .network import Network
from .utils import param_name

__all__ = ["RestrictedUnpickler", "load_model_zoo", "load_param_values", "load_params",
           "save_params"]


def _numpy_core(module, name):
    """A function of numpy's core, wherever this numpy version keeps it
    (``numpy._core`` since numpy 2, ``numpy.core`` before)."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module("{}.{}".format(package, module)), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy provides no {}.{}".format(module, name))


class _Refused(pickle.UnpicklingError):
    """A global, call or state the restricted unpickler does not allow."""


_TEXT_ENCODINGS = frozenset(["iso8859-1", "ascii", "utf-8"])


def _encode_text(text, encoding="utf-8", errors="strict"):
    # Python 3 pickles of bytes at protocols 0-2 store them as
    # _codecs.encode(text, 'latin1'); only text encodings of strings pass
    try:
        known = codecs.lookup(encoding).name in _TEXT_ENCODINGS
    except (LookupError, TypeError):
        known = False
    if not isinstance(text, str) or not known:
        raise _Refused("refused _codecs.encode({}, {!r}): only latin-1, ascii or utf-8 "
                       "encoding of a string is allowed".format(type(text).__name__, encoding))
    return codecs.encode(text, encoding, errors)


def _writable_frombuffer(frombuffer):
    # protocol-5 pickles rebuild arrays over (read-only) bytes: copy those
    def rebuild(*args, **kwargs):
        arr = frombuffer(*args, **kwargs)
        return arr if arr.flags.writeable else arr.copy()
    return rebuild


def _allowed_globals():
    reconstruct = _numpy_core("multiarray", "_reconstruct")
    scalar = _numpy_core("multiarray", "scalar")
    frombuffer = _writable_frombuffer(_numpy_core("numeric", "_frombuffer"))
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _encode_text,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(package + ".multiarray", "_reconstruct")] = reconstruct
        allowed[(package + ".multiarray", "scalar")] = scalar
        allowed[(package + ".numeric", "_frombuffer")] = frombuffer
    # Python 2 wrote the builtins module as __builtin__
    for module in ("builtins", "__builtin__"):
        for kind in (set, frozenset, bytearray, complex):
            allowed[(module, kind.__name__)] = kind
    return allowed


_DTYPE_KINDS = frozenset("biufcSUMmO")


def _check_dtype(dtype):
    """Refuse a dtype whose pickled state made it other than numpy's own
    dtype of that type string (forged flags or item size would let an array
    read memory as Python objects), and structured dtypes."""
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _DTYPE_KINDS:
        raise _Refused("refused the dtype {!r}: parameter files hold arrays of numbers, strings "
                       "or objects, not structured or void data".format(dtype.str))
    reference = np.dtype(dtype.str)
    if (dtype.type is not reference.type or dtype.itemsize != reference.itemsize
            or dtype.flags != reference.flags or dtype.alignment != reference.alignment
            or dtype != reference):
        raise _Refused("refused a forged dtype state for {!r} (flags {}, item size {}; numpy's "
                       "own are {} and {})".format(dtype.str, dtype.flags, dtype.itemsize,
                                                   reference.flags, reference.itemsize))


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that rebuilds only numpy arrays and plain data.

    Allowed globals: numpy arrays (``ndarray`` and its ``_reconstruct`` and
    ``_frombuffer`` helpers), numpy dtypes and scalars, the builtin ``set``,
    ``frozenset``, ``bytearray`` and ``complex``, and
    ``collections.OrderedDict`` (lists, tuples, dicts, strings and numbers
    need no global). Any other global a pickle names — a function to call or
    a class to build — is refused before anything is called. A pickle may
    set the state only of numpy arrays and dtypes, and each dtype's state is
    checked against numpy's own dtype of that type (a forged state could make
    numpy read raw bytes as Python objects); structured dtypes are refused.

    This is Python's pure-Python unpickler (``pickle._Unpickler``), the one
    whose opcodes can be intercepted; it reads the few large strings of a
    parameter file as fast as the C one.

    Parameters
    ----------
    file : binary file object
        The pickle stream.
    encoding : str (default: 'latin1')
        How Python 2 byte strings are decoded; ``'latin1'`` also keeps the
        raw bytes of numpy arrays pickled by Python 2 intact.

    Raises
    ------
    pickle.UnpicklingError
        From :meth:`load`, naming what was refused (``module.name`` for a
        global).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, encoding="latin1"):
        super(RestrictedUnpickler, self).__init__(file, encoding=encoding)
        self._allowed = _allowed_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(
                "refused to load the global '{}.{}': this file would build an object other "
                "than numpy arrays and plain data, so it is not a parameter file (or it is a "
                "malicious one)".format(module, name)) from None

    def persistent_load(self, pid):
        raise _Refused("refused a persistent id {!r}: parameter files have none".format(pid))

    def load_build(self):
        inst = self.stack[-2] if len(self.stack) >= 2 else None
        if isinstance(inst, np.dtype):
            pickle._Unpickler.load_build(self)
            _check_dtype(inst)
        elif type(inst) is np.ndarray:
            state = self.stack[-1]
            for item in (state if isinstance(state, tuple) else ()):
                if isinstance(item, np.dtype):
                    _check_dtype(item)
            pickle._Unpickler.load_build(self)
        else:
            raise _Refused("refused to set the state of a {} object: only numpy arrays and "
                           "dtypes are rebuilt".format(type(inst).__name__))

    dispatch[pickle.BUILD[0]] = load_build


def _open(path_or_file, mode):
    """A file object and whether the caller must close it."""
    if hasattr(path_or_file, "read" if "r" in mode else "write"):
        return path_or_file, False
    return open(os.fspath(path_or_file), mode), True


def _describe(path_or_file):
    if hasattr(path_or_file, "read") or hasattr(path_or_file, "write"):
        return repr(getattr(path_or_file, "name", path_or_file))
    return repr(os.fspath(path_or_file))


def load_model_zoo(path_or_file):
    """Load a Lasagne Model Zoo pickle without running code from it.

    Parameters
    ----------
    path_or_file : str, path-like or binary file object
        The pickle (Python 2 or 3, any protocol).

    Returns
    -------
    dict
        The file's dict as stored: the parameter values (a list of numpy
        arrays) under ``'param values'`` (or ``'values'``), next to whatever
        else the file holds (``'synset words'``, ``'mean image'``, ...).
        Python 2 strings come back as ``str``, decoded as latin-1.

    Raises
    ------
    pickle.UnpicklingError
        If the pickle names anything but numpy arrays and plain data (see
        :class:`RestrictedUnpickler`), or is not a pickle.
    ValueError
        If the pickle holds no dict with a list of arrays under
        ``'param values'`` or ``'values'``.

    Examples
    --------
    >>> model = load_model_zoo('vgg16.pkl')                 # doctest: +SKIP
    >>> lasagne.layers.set_all_param_values(net, model['param values'])  # doctest: +SKIP
    """
    obj = _unpickle(path_or_file)
    if not isinstance(obj, dict):
        raise ValueError("load_model_zoo: {} holds a {}, not a Model Zoo dict".format(
            _describe(path_or_file), type(obj).__name__))
    _values_of(obj, path_or_file)
    return obj


def _unpickle(path_or_file):
    f, close = _open(path_or_file, "rb")
    try:
        return _load_pickle(f, path_or_file)
    finally:
        if close:
            f.close()


def _load_pickle(f, source):
    try:
        return RestrictedUnpickler(f).load()
    except _Refused:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError) as e:
        raise pickle.UnpicklingError("{} is not a readable pickle: {}: {}".format(
            _describe(source), type(e).__name__, e)) from e


def _values_of(obj, source):
    """The list of parameter values in an unpickled object."""
    if isinstance(obj, dict):
        for key in ("param values", "values"):
            if key in obj:
                values = obj[key]
                break
        else:
            raise ValueError("{} holds a dict without 'param values' or 'values' (keys: "
                             "{})".format(_describe(source), sorted(map(str, obj))))
    else:
        values = obj
    if not isinstance(values, (list, tuple)) or \
            not all(isinstance(v, np.ndarray) for v in values):
        raise ValueError("{}: the parameter values must be a list of numpy arrays, got {}".format(
            _describe(source), type(values).__name__ if not isinstance(values, (list, tuple))
            else [type(v).__name__ for v in values]))
    return list(values)


_ARRAY_KEY = re.compile(r"^arr_(\d+)$")


def _load_npz(path_or_file):
    with np.load(path_or_file, allow_pickle=False) as npz:
        keys = list(npz.files)
        indices = [_ARRAY_KEY.match(k) for k in keys]
        if not all(indices) or sorted(int(m.group(1)) for m in indices) != list(range(len(keys))):
            raise ValueError("{} is an .npz file whose arrays are not named arr_0 to arr_{} (got "
                             "{}); save with np.savez(path, *values) or save_params".format(
                                 _describe(path_or_file), len(keys) - 1, keys))
        return [npz["arr_{}".format(i)] for i in range(len(keys))]


def load_param_values(path_or_file):
    """Read a list of parameter values from a Model Zoo pickle or an .npz
    file.

    Parameters
    ----------
    path_or_file : str, path-like or binary file object
        An .npz file (arrays ``arr_0`` ... ``arr_<n-1>``) or a pickle of a
        Model Zoo dict or of a plain list of arrays; the format is told from
        the content, not the file name. Pickles are read with
        :class:`RestrictedUnpickler`.

    Returns
    -------
    list of numpy.ndarray
        In the order of the file, which is the network's
        :func:`~lasagne.layers.get_all_params` order.

    Raises
    ------
    pickle.UnpicklingError
        For a pickle that names anything but numpy arrays and plain data.
    ValueError
        If the file holds no list of arrays.
    """
    f, close = _open(path_or_file, "rb")
    try:
        start = f.tell()
        magic = f.read(6)
        f.seek(start)
        if magic.startswith(b"PK\x03\x04"):
            return _load_npz(f)
        if magic.startswith(b"\x93NUMPY"):
            raise ValueError("{} is a single .npy array; parameter files are .npz files or "
                             "pickles of a list of arrays".format(_describe(path_or_file)))
        return _values_of(_load_pickle(f, path_or_file), path_or_file)
    finally:
        if close:
            f.close()


def _params_and_labels(network, tags):
    """A network's parameters and a label for each (for error messages)."""
    if isinstance(network, Network):
        params = network.get_params(**tags)
        return params, [network._key_of.get(id(p)) for p in params]
    params = get_all_params(network, **tags)
    return params, [param_name(p) for p in params]


def load_params(network, path_or_file, **tags):
    """Set a network's parameters from a Model Zoo pickle or an .npz file.

    The one-call form of ``set_all_param_values(network,
    load_param_values(path))``.

    Parameters
    ----------
    network : Network, Layer or list of Layer
        The network whose parameters to set, in Lasagne order
        (:meth:`Network.get_params` or
        :func:`~lasagne.layers.get_all_params`).
    path_or_file : str, path-like or binary file object
        See :func:`load_param_values`.
    **tags
        Tag filters selecting the parameters the file holds (e.g.
        ``trainable=True``).

    Raises
    ------
    ValueError
        If the file holds another number of arrays than the network has
        parameters, or an array's shape differs from its parameter's; then
        nothing is changed.

    Notes
    -----
    Values are copied into the existing parameters, cast to each
    parameter's dtype and device; the ``Parameter`` objects stay the same.
    Model Zoo weights meant for ``Conv2DDNNLayer`` (``flip_filters=False``)
    load into ``Conv2DLayer`` only with ``flip_filters=False``.
    """
    values = load_param_values(path_or_file)
    params, labels = _params_and_labels(network, tags)
    source = _describe(path_or_file)
    if len(values) != len(params):
        raise ValueError("load_params: {} holds {} arrays but the network has {} parameters; "
                         "the file was saved from another architecture".format(
                             source, len(values), len(params)))
    for i, (param, label, value) in enumerate(zip(params, labels, values)):
        if tuple(param.shape) != value.shape:
            raise ValueError("load_params: array {} of {} has shape {} but parameter {} ({!r}) "
                             "has shape {}".format(i, source, value.shape, i, label,
                                                   tuple(param.shape)))
        if value.dtype.kind not in "biuf":
            raise ValueError("load_params: array {} of {} has dtype {}, not a number".format(
                i, source, value.dtype))
    with torch.no_grad():
        for param, value in zip(params, values):
            # a native-order copy (torch reads no other byte order)
            native = value.astype(value.dtype.newbyteorder("="), copy=True)
            param.copy_(torch.from_numpy(native).to(device=param.device, dtype=param.dtype))


def save_params(network, path_or_file, **tags):
    """Save a network's parameter values to an .npz file.

    Writes ``np.savez(path, *values)``: arrays ``arr_0`` ... ``arr_<n-1>`` in
    Lasagne's parameter order, readable by :func:`load_params` and by the
    original Lasagne (``np.load(path)``).

    Parameters
    ----------
    network : Network, Layer or list of Layer
        The network whose parameters to save.
    path_or_file : str, path-like or binary file object
        Where to write; as with ``np.savez``, ``.npz`` is appended to a
        file name without it.
    **tags
        Tag filters selecting the parameters to save.

    Notes
    -----
    Values are copied to the CPU; bfloat16 values are saved as float32 (numpy
    has no bfloat16).
    """
    params, _ = _params_and_labels(network, tags)
    values = []
    for param in params:
        value = param.detach()
        if value.dtype == torch.bfloat16:
            value = value.float()
        values.append(value.cpu().numpy())
    np.savez(path_or_file, *values)

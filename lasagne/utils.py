"""Small helpers shared across the library: argument normalisation, parameter
creation and dtype handling."""

import numbers

import numpy as np
import torch

int_types = (numbers.Integral, np.integer)


def autocast_dtype(device_type):
    """The dtype ``torch.autocast`` casts to on ``device_type``, or None when
    autocast is off there or does not exist for that device (e.g. 'meta')."""
    # (torch.compile cannot trace the availability query; compiled code runs
    # on devices that have autocast)
    if not torch.compiler.is_compiling() and not torch.amp.is_autocast_available(device_type):
        return None
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def param_name(param):
    """The name a layer gave a parameter (``'<layer name>.<attribute>'``).

    The original Lasagne exposed it as ``param.name``; PyTorch reserves
    ``Tensor.name`` (read-only), so the name is kept as a private attribute
    of the parameter and read here. (``copy.deepcopy`` of a parameter does
    not keep it: PyTorch copies only the data.)

    Parameters
    ----------
    param : torch.Tensor

    Returns
    -------
    str or None
    """
    return param.__dict__.get("_lasagne_name")


def set_param_name(param, name):
    """Give ``param`` a name (see :func:`param_name`)."""
    param.__dict__["_lasagne_name"] = name


def floatX(arr):
    """Convert an array-like to a numpy array of the default float dtype.

    The default float dtype is PyTorch's (``torch.get_default_dtype()``),
    playing the part of Theano's ``floatX``.

    Parameters
    ----------
    arr : array_like
        The data to convert.

    Returns
    -------
    numpy.ndarray
    """
    # a CPU tensor: torch.empty would follow torch.set_default_device
    dtype = torch.empty((), dtype=torch.get_default_dtype(), device="cpu").numpy().dtype
    return np.asarray(arr, dtype=dtype)


def as_tuple(x, N, t=None):
    """Coerce a value to a tuple of given length (and possibly given type).

    Parameters
    ----------
    x : value or iterable
        A single value is repeated ``N`` times; an iterable is converted.
    N : int
        The length the tuple must have.
    t : type or tuple of types, optional
        The type every element must have.

    Returns
    -------
    tuple

    Raises
    ------
    ValueError
        If ``x`` is iterable and its length is not ``N``.
    TypeError
        If ``t`` is given and an element is not of that type.
    """
    try:
        X = tuple(x)
    except TypeError:
        X = (x,) * N
    if (t is not None) and not all(isinstance(v, t) for v in X):
        if t == int_types:
            expected_type = "int"
        elif isinstance(t, tuple):
            expected_type = " or ".join(tt.__name__ for tt in t)
        else:
            expected_type = t.__name__
        raise TypeError("expected a single value or an iterable of {0}, got {1} instead".format(
            expected_type, x))
    if len(X) != N:
        raise ValueError("expected a single value or an iterable with length {0}, got {1} "
                         "instead".format(N, x))
    return X


def unique(lst):
    """Return the unique elements of ``lst`` in their first-seen order.

    Elements are compared by identity for tensors (so that shared parameters
    appear once) and by equality otherwise.
    """
    seen = set()
    out = []
    for el in lst:
        key = id(el) if isinstance(el, torch.Tensor) else el
        if key not in seen:
            seen.add(key)
            out.append(el)
    return out


def one_hot(x, m=None):
    """One-hot representation of an integer vector.

    Parameters
    ----------
    x : torch.Tensor of ints
        Class indices, shape ``(n,)``.
    m : int, optional
        Number of classes; ``x.max() + 1`` if omitted.

    Returns
    -------
    torch.Tensor
        Shape ``(n, m)``, in the default float dtype.
    """
    x = torch.as_tensor(x)
    if m is None:
        m = int(x.max()) + 1
    return torch.nn.functional.one_hot(x.long(), m).to(torch.get_default_dtype())


def compute_norms(array, norm_axes=None):
    """Compute the L2 norms of the incoming weight vectors of a parameter.

    Parameters
    ----------
    array : numpy.ndarray or torch.Tensor
        Weights: 1D (each element is its own vector), 2D for dense layers
        (norms over axis 0), 3D-5D for convolutions (norms over all but
        axis 0).
    norm_axes : sequence of int, optional
        The axes to sum over; inferred from the number of dimensions if omitted.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        Same kind as ``array``.
    """
    ndim = array.ndim
    if norm_axes is None:
        if ndim == 1:
            norm_axes = ()
        elif ndim == 2:
            norm_axes = (0,)
        elif ndim in (3, 4, 5):
            norm_axes = tuple(range(1, ndim))
        else:
            raise ValueError("compute_norms: unsupported tensor dimensionality {}; "
                             "must specify norm_axes".format(ndim))
    norm_axes = tuple(norm_axes)
    if isinstance(array, torch.Tensor):
        # torch.sum over dim=() would sum over every axis: no axes means |x|
        return array.abs() if not norm_axes else torch.sqrt(torch.sum(array ** 2, dim=norm_axes))
    return np.sqrt(np.sum(array ** 2, axis=norm_axes))


def _param_label(name):
    return "parameter {!r}".format(name) if name is not None else "parameter"


def create_param(spec, shape, name=None):
    """Create a ``torch.nn.Parameter`` from a numpy array, a tensor or an
    initializer.

    Parameters
    ----------
    spec : numpy.ndarray, torch.Tensor, torch.nn.Parameter or callable
        * a numpy array: copied into a new parameter (cast to the default
          float dtype) after its shape is checked;
        * a ``torch.nn.Parameter``: returned as it is, so that two layers
          given the same parameter share it (this is how weights are tied);
        * any other tensor that is a leaf of the autograd graph: wrapped in a
          parameter that shares its memory;
        * a callable: called with ``shape``; its result (array-like) becomes a
          new parameter.
    shape : tuple of int
        The shape the parameter must have.
    name : str, optional
        Stored as the parameter's ``name`` attribute when a new parameter is
        made.

    Returns
    -------
    torch.nn.Parameter
        The given parameter itself, or a new parameter named ``name`` (see
        :func:`param_name`) on PyTorch's default device, in the default float dtype
        where created from an array or initializer.

    Raises
    ------
    ValueError
        On a shape or dimensionality mismatch, or a ``spec`` of another kind.
    TypeError
        For a tensor that is the result of a computation (not a leaf).
    RuntimeError
        If a callable does not return an array of the requested shape.
    """
    shape = tuple(shape)
    label = _param_label(name)
    if any(d is None or d <= 0 for d in shape):
        raise ValueError("cannot create {}: every dimension of its shape must be a known "
                         "positive size, got {}".format(label, shape))
    if isinstance(spec, torch.Tensor):
        if spec.ndim != len(shape):
            raise ValueError("{} has {} dimensions, should be {} (shape {})".format(
                label, spec.ndim, len(shape), shape))
        if tuple(spec.shape) != shape:
            raise ValueError("{} has shape {}, should be {}".format(label, tuple(spec.shape), shape))
        if isinstance(spec, torch.nn.Parameter):
            return spec
        if spec.grad_fn is not None:
            raise TypeError("{} was given a tensor computed from other tensors; pass a "
                            "torch.nn.Parameter (to share it) or a leaf tensor".format(label))
        param = torch.nn.Parameter(spec, requires_grad=spec.is_floating_point())
    elif isinstance(spec, np.ndarray):
        if spec.ndim != len(shape):
            raise ValueError("{} array has {} dimensions, should be {} (shape {})".format(
                label, spec.ndim, len(shape), shape))
        if spec.shape != shape:
            raise ValueError("{} array has shape {}, should be {}".format(label, spec.shape, shape))
        param = _new_param(floatX(spec))
    elif callable(spec):
        arr = spec(shape)
        if isinstance(arr, torch.Tensor):
            arr = arr.detach().cpu().numpy()
        try:
            arr = floatX(arr)
        except Exception:
            raise RuntimeError("cannot initialize {}: the provided callable did not return an "
                               "array-like value".format(label))
        if arr.shape != shape:
            raise RuntimeError("cannot initialize {}: the provided callable returned shape {}, "
                               "should be {}".format(label, arr.shape, shape))
        param = _new_param(arr)
    else:
        raise ValueError("cannot initialize {}: expected a numpy array, a tensor, a "
                         "torch.nn.Parameter or a callable, got {}".format(label, type(spec).__name__))
    if name is not None:
        set_param_name(param, name)
    return param


def _new_param(arr):
    # torch.tensor copies: a parameter never aliases the caller's array
    return torch.nn.Parameter(torch.tensor(arr, dtype=torch.get_default_dtype(),
                                         device=torch.get_default_device()))

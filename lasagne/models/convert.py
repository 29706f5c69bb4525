"""Load torchvision weights (a ``state_dict``) into our VGG-16 and ResNet-50.

torchvision itself is not needed: a state dict is a plain mapping from key
names to tensors (``torchvision.models.vgg16(weights=...).state_dict()``,
or ``torch.load`` of a downloaded ``.pth`` file).

Each converter is an explicit table: one row per torchvision key, naming the
parameter it fills (``'<layer name>.<attribute>'``) and the rule that turns
the tensor into the parameter's value. Before anything is written, the
converter checks that every key of the state dict is used exactly once,
that no key is missing, that every parameter of our network is filled
exactly once, and that every shape matches; any failure raises a
``ValueError`` listing what is wrong.

The rules
---------
``'copy'``
    The tensor as it is (biases, batch-norm ``weight``/``bias``/
    ``running_mean``).
``'conv'``
    A convolution kernel ``(out, in, *spatial)``. PyTorch computes
    cross-correlation, as our layers do with ``flip_filters=False`` (all
    layers built by :mod:`lasagne.models`), so the kernel is copied as is.
    A layer with ``flip_filters=True`` computes a true convolution, i.e. the
    cross-correlation with the kernel reversed on every spatial axis, so
    for such a layer the kernel is stored reversed on every spatial axis
    (``W = weight.flip(2, 3)``) and computes the same function.
``'dense'``
    A ``Linear`` weight ``(out, in)``: :class:`DenseLayer` computes
    ``x @ W`` with ``W`` of shape ``(in, out)``, so ``W = weight.T``. Both
    flatten a ``(C, H, W)`` input in the same row-major order, so no
    permutation of the input features is needed.
``'inv_std'``
    Batch norm ``running_var`` → ``inv_std = 1 / sqrt(running_var + eps)``
    (computed in float64), with torchvision's ``eps = 1e-5``; ``beta`` is
    the ``bias``, ``gamma`` the ``weight``, ``mean`` the ``running_mean``.
``'ignore'``
    ``num_batches_tracked``: a training counter that our batch norm (an
    exponential average with a fixed ``alpha``) does not use. It may be
    absent.

torchvision's networks end with logits (no softmax); ours add ``'prob'``,
so compare torchvision's output with ``net['fc8']`` / ``net['fc1000']``.
"""

import numpy as np
import torch

from ..layers import Layer, get_all_layers, get_all_params
from .resnet import build_resnet50, _RESNET50_STAGES
from .vgg import build_vgg16
from ..utils import param_name

__all__ = ["load_state_dict", "vgg16_from_torchvision", "resnet50_from_torchvision",
           "torchvision_vgg16_mapping", "torchvision_resnet50_mapping"]

_RULES = ("copy", "conv", "dense", "inv_std", "ignore")


def torchvision_vgg16_mapping():
    """The key table of :func:`vgg16_from_torchvision`.

    Returns
    -------
    list of (str, str or None, str)
        ``(torchvision key, our parameter, rule)``, one row per key of
        ``torchvision.models.vgg16().state_dict()``: the 13 convolutions are
        ``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}`` (the other indices
        are ReLUs and max pools), the dense layers
        ``classifier.{0,3,6}`` (the others are ReLUs and dropouts).
    """
    convs = [("features.0", "conv1_1"), ("features.2", "conv1_2"),
             ("features.5", "conv2_1"), ("features.7", "conv2_2"),
             ("features.10", "conv3_1"), ("features.12", "conv3_2"),
             ("features.14", "conv3_3"),
             ("features.17", "conv4_1"), ("features.19", "conv4_2"),
             ("features.21", "conv4_3"),
             ("features.24", "conv5_1"), ("features.26", "conv5_2"),
             ("features.28", "conv5_3")]
    dense = [("classifier.0", "fc6"), ("classifier.3", "fc7"), ("classifier.6", "fc8")]
    rows = []
    for key, layer in convs:
        rows += [(key + ".weight", layer + ".W", "conv"), (key + ".bias", layer + ".b", "copy")]
    for key, layer in dense:
        rows += [(key + ".weight", layer + ".W", "dense"), (key + ".bias", layer + ".b", "copy")]
    return rows


def _bn_rows(key, layer):
    return [(key + ".weight", layer + ".gamma", "copy"),
            (key + ".bias", layer + ".beta", "copy"),
            (key + ".running_mean", layer + ".mean", "copy"),
            (key + ".running_var", layer + ".inv_std", "inv_std"),
            (key + ".num_batches_tracked", None, "ignore")]


def torchvision_resnet50_mapping():
    """The key table of :func:`resnet50_from_torchvision`.

    torchvision's ``layer1`` ... ``layer4`` are our stages 2 ... 5 and block
    ``i`` is letter ``'abcdef'[i]``; a block's ``conv1/bn1``, ``conv2/bn2``,
    ``conv3/bn3`` are our ``res<ix>_branch2a/2b/2c`` and ``bn<ix>_branch2a/
    2b/2c``; ``downsample.0/1`` is the shortcut ``res<ix>_branch1`` and
    ``bn<ix>_branch1``; ``conv1``/``bn1`` are ``conv1``/``bn_conv1`` and
    ``fc`` is ``fc1000``. torchvision's convolutions have no bias.

    Returns
    -------
    list of (str, str or None, str)
        ``(torchvision key, our parameter, rule)``, one row per key of
        ``torchvision.models.resnet50().state_dict()``.
    """
    rows = [("conv1.weight", "conv1.W", "conv")] + _bn_rows("bn1", "bn_conv1")
    for layer_index, (stage, letters, _, _) in enumerate(_RESNET50_STAGES, start=1):
        for block, letter in enumerate(letters):
            tv = "layer%d.%d" % (layer_index, block)
            ix = "%d%s" % (stage, letter)
            for n, branch in ((1, "2a"), (2, "2b"), (3, "2c")):
                rows.append(("%s.conv%d.weight" % (tv, n), "res%s_branch%s.W" % (ix, branch),
                             "conv"))
                rows += _bn_rows("%s.bn%d" % (tv, n), "bn%s_branch%s" % (ix, branch))
            if block == 0:
                rows.append((tv + ".downsample.0.weight", "res%s_branch1.W" % ix, "conv"))
                rows += _bn_rows(tv + ".downsample.1", "bn%s_branch1" % ix)
    rows += [("fc.weight", "fc1000.W", "dense"), ("fc.bias", "fc1000.b", "copy")]
    return rows


def _layers_by_name(net, where):
    if isinstance(net, Layer):
        net = {l.name: l for l in get_all_layers(net) if l.name is not None}
    if not isinstance(net, dict):
        raise TypeError("{}: net must be the dict of layers returned by the builder (or its "
                        "output layer), got {}".format(where, type(net).__name__))
    return net


def _as_tensor(value, key, where):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise TypeError("{}: state_dict[{!r}] must be a tensor or a numpy array, got {}".format(
        where, key, type(value).__name__))


def _transform(rule, value, layer, eps):
    if rule == "conv":
        if getattr(layer, "flip_filters", False):
            return value.flip(tuple(range(2, value.ndim)))
        return value
    if rule == "dense":
        return value.t()
    if rule == "inv_std":
        return 1.0 / torch.sqrt(value.double() + eps)
    return value


def _load(net, state_dict, rows, eps, where):
    """Check everything, then copy: the network is left untouched on error."""
    layers = _layers_by_name(net, where)
    if not hasattr(state_dict, "keys"):
        raise TypeError("{}: state_dict must be a mapping from keys to tensors, got {}".format(
            where, type(state_dict).__name__))
    keys = [r[0] for r in rows]
    repeated = sorted(set(k for k in keys if keys.count(k) > 1))
    if repeated:
        raise ValueError("{}: the mapping lists key(s) {} more than once".format(where, repeated))

    given = set(state_dict.keys())
    known = set(keys)
    unexpected = sorted(given - known)
    missing = sorted(k for k, _, rule in rows if k not in given and rule != "ignore")
    problems = []
    if unexpected:
        hint = ""
        if any(k.startswith("module.") for k in unexpected):
            hint = " (strip the 'module.' prefix that DataParallel/DDP adds)"
        problems.append("{} unexpected key(s){}: {}".format(len(unexpected), hint,
                                                            ", ".join(unexpected[:10])))
    if missing:
        problems.append("{} missing key(s): {}".format(len(missing), ", ".join(missing[:10])))

    assignments = []
    filled = {}
    for key, target, rule in rows:
        if rule == "ignore" or key not in given:
            continue
        layer_name, attr = target.rsplit(".", 1)
        layer = layers.get(layer_name)
        param = getattr(layer, attr, None) if layer is not None else None
        if layer is None or param is None or param not in layer.params:
            problems.append("the network has no parameter {} (for {!r})".format(target, key))
            continue
        if param in filled:
            problems.append("{} is filled twice ({!r} and {!r})".format(
                target, filled[param], key))
            continue
        filled[param] = key
        value = _transform(rule, _as_tensor(state_dict[key], key, where), layer, eps)
        if tuple(value.shape) != tuple(param.shape):
            problems.append("{!r} gives shape {} for {} of shape {}".format(
                key, tuple(value.shape), target, tuple(param.shape)))
            continue
        assignments.append((param, value))

    unfilled = [p for p in get_all_params(list(layers.values())) if p not in filled]
    if unfilled and not missing:
        listed = ", ".join(str(param_name(p) or tuple(p.shape)) for p in unfilled[:10])
        problems.append("{} parameter(s) of the network have no row in the mapping (no "
                        "state-dict key fills them): {}".format(len(unfilled), listed))
    if problems:
        raise ValueError("{}: cannot load the state dict:\n  ".format(where)
                         + "\n  ".join(problems))
    with torch.no_grad():
        for param, value in assignments:
            param.copy_(value.to(device=param.device, dtype=param.dtype))
    return layers


def load_state_dict(net, state_dict, mapping, eps=1e-5):
    """Load a PyTorch state dict into a layer graph through a key table.

    The general form of the converters, for other torchvision networks or
    your own ``torch.nn`` models: write the table, and every check and rule
    of this module applies.

    Parameters
    ----------
    net : dict of layers, or Layer
        The network: a dict of named layers, or its output layer (its
        layers are then found by their ``name``).
    state_dict : mapping of str to torch.Tensor or numpy.ndarray
        The values to load.
    mapping : list of (str, str or None, str)
        ``(key, '<layer name>.<attribute>', rule)`` rows, one per key of
        ``state_dict``; the rules are described in this module's docstring.
    eps : float (default: 1e-5)
        Batch norm epsilon for the ``'inv_std'`` rule.

    Returns
    -------
    dict
        Layer name → layer.

    Raises
    ------
    ValueError
        On unexpected or missing keys, a parameter of the network filled
        twice or not at all, or a shape mismatch; nothing is written then.

    Examples
    --------
    >>> import torch
    >>> from lasagne.layers import InputLayer, DenseLayer, get_output
    >>> l_out = DenseLayer(InputLayer((None, 4)), 2, nonlinearity=None, name='fc')
    >>> linear = torch.nn.Linear(4, 2)
    >>> _ = load_state_dict(l_out, linear.state_dict(),
    ...                     [('weight', 'fc.W', 'dense'), ('bias', 'fc.b', 'copy')])
    >>> x = torch.randn(3, 4)
    >>> torch.allclose(get_output(l_out, x), linear(x))
    True
    """
    for row in mapping:
        if len(row) != 3 or row[2] not in _RULES:
            raise ValueError("load_state_dict: every mapping row must be (key, target, rule) "
                             "with rule in {}, got {!r}".format(_RULES, row))
    return _load(net, state_dict, list(mapping), eps, "load_state_dict")


def vgg16_from_torchvision(state_dict, net=None):
    """Load a torchvision VGG-16 state dict into our VGG-16.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor or numpy.ndarray
        ``torchvision.models.vgg16(...).state_dict()``: 32 keys
        ``features.<i>.weight/bias`` and ``classifier.<i>.weight/bias``.
    net : dict of layers, or Layer, optional
        A network from :func:`~lasagne.models.build_vgg16` (or its output
        layer); ``None`` builds one (224×224 input).

    Returns
    -------
    dict
        The network, its parameters set.

    Raises
    ------
    ValueError
        On unexpected or missing keys, a parameter not filled, or a shape
        mismatch (nothing is written then).

    Notes
    -----
    torchvision's VGG has an ``AdaptiveAvgPool2d((7, 7))`` between the
    features and the classifier; on 224×224 inputs it is the identity,
    which our network (like the Model Zoo's) assumes: ``fc6`` takes the
    7×7×512 ``pool5`` output. Compare torchvision's logits with
    ``net['fc8']``.

    Examples
    --------
    >>> import torchvision  # doctest: +SKIP
    >>> tv = torchvision.models.vgg16(weights="IMAGENET1K_V1")  # doctest: +SKIP
    >>> net = vgg16_from_torchvision(tv.state_dict())  # doctest: +SKIP
    """
    if net is None:
        net = build_vgg16()
    _load(net, state_dict, torchvision_vgg16_mapping(), 1e-5, "vgg16_from_torchvision")
    return net


def resnet50_from_torchvision(state_dict, net=None, eps=1e-5):
    """Load a torchvision ResNet-50 state dict into our ResNet-50 (v1.5).

    torchvision's ResNet-50 is the "v1.5" layout (stride in the 3×3
    convolution, ``conv1`` without bias, ``pool1`` padded): the network
    must come from ``build_resnet50(variant='v1.5')``. A Model Zoo
    (``'caffe'``) network computes another function with the same
    parameter shapes, so it is refused.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor or numpy.ndarray
        ``torchvision.models.resnet50(...).state_dict()`` (320 keys,
        ``num_batches_tracked`` included; those may be absent).
    net : dict of layers, or Layer, optional
        A network from ``build_resnet50(variant='v1.5')`` (or its output
        layer); ``None`` builds one.
    eps : float (default: 1e-5)
        The epsilon of torchvision's batch norm, folded into
        ``inv_std = 1 / sqrt(running_var + eps)``.

    Returns
    -------
    dict
        The network, its parameters set.

    Raises
    ------
    ValueError
        On a network of the wrong variant, unexpected or missing keys, a
        parameter not filled, or a shape mismatch (nothing is written then).

    Examples
    --------
    >>> import torchvision  # doctest: +SKIP
    >>> tv = torchvision.models.resnet50(weights="IMAGENET1K_V2")  # doctest: +SKIP
    >>> net = resnet50_from_torchvision(tv.state_dict())  # doctest: +SKIP
    >>> logits = lasagne.layers.get_output(net['fc1000'], x, deterministic=True)  # doctest: +SKIP
    """
    where = "resnet50_from_torchvision"
    if net is None:
        net = build_resnet50(variant="v1.5")
    layers = _layers_by_name(net, where)
    _check_v15(layers, where)
    _load(layers, state_dict, torchvision_resnet50_mapping(), eps, where)
    return net


def _check_v15(layers, where):
    wrong = []
    for stage, _, _, stride in _RESNET50_STAGES:
        for branch, expected in (("2a", 1), ("2b", stride)):
            layer = layers.get("res%da_branch%s" % (stage, branch))
            got = tuple(getattr(layer, "stride", ()) or ())
            if layer is not None and got != (expected, expected):
                wrong.append("res%da_branch%s has stride %s" % (stage, branch, got))
    pool1 = layers.get("pool1")
    if pool1 is not None and tuple(getattr(pool1, "pad", (1, 1))) != (1, 1):
        wrong.append("pool1 has pad {}".format(tuple(pool1.pad)))
    if wrong:
        raise ValueError("{}: the network is not laid out like torchvision's ResNet-50 v1.5 "
                         "({}); build it with build_resnet50(variant='v1.5')".format(
                             where, "; ".join(wrong)))

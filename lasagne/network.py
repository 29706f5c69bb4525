"""``Network``: a layer graph as a ``torch.nn.Module``.

Layers are plain Python objects that hold ``torch.nn.Parameter``\\ s; they
are not modules, so PyTorch never recurses through a graph. A
:class:`Network` collects a graph's layers once, registers every parameter
flat on itself (a tied parameter once) and computes the graph's output with
:func:`lasagne.layers.get_output`. Everything PyTorch offers for modules then
works on the graph: ``.to()``, ``.parameters()``, ``state_dict()``,
``train()``/``eval()``, ``torch.compile``, DDP, trainers.
"""

import re

import torch

from . import utils
from .layers.base import Layer, MergeLayer
from .layers.evaluation import EvaluationPlan, evaluate
from .layers.helper import get_all_layers, get_output_shape
from .layers.input import InputLayer
from .layers.special import NonlinearityLayer

__all__ = ["Network"]


class Network(torch.nn.Module):
    """A layer graph wrapped as a ``torch.nn.Module``.

    ``net(x)`` computes ``get_output(output_layer, x, deterministic=not
    net.training)``: ``net.train()`` (the default) runs the graph as for
    training (dropout on, batch normalisation on batch statistics, which it
    accumulates), ``net.eval()`` deterministically.

    Parameters
    ----------
    layer_or_layers : Layer or list of Layer
        The output layer(s). Calling the network returns one tensor for a
        single layer and a list of tensors, in this order, for a list.
    inputs : Layer or list of Layer, optional
        The layers that ``forward``'s positional arguments feed, in that
        order. Any layer may be given; its own inputs are then not followed
        (as with the keys of a dict passed to ``get_output``), so the network
        holds only the layers between these and the outputs. By default:
        every :class:`~lasagne.layers.InputLayer` below the outputs, in
        :func:`~lasagne.layers.get_all_layers` order.

    memory_format : {'auto', 'preserve'}
        ``'auto'`` (default): on CUDA, 4D/5D inputs and convolution weights
        are kept in channels-last layout (the logical NCHW shape is
        unchanged; outputs are ordinary tensors of the same shapes), where
        cuDNN convolutions run 1.5–2.5× faster. ``'preserve'`` leaves layouts
        as given.
    fuse : bool (default: True)
        Compute a batch-normalization layer and the ``NonlinearityLayer`` it
        alone feeds (the pair :func:`~lasagne.layers.batch_norm` builds) in
        one call, one pass over the data on the GPU. The results are those of
        the two layers; ``get_output`` on the same graph evaluates them
        separately.

    Attributes
    ----------
    layers : list of Layer
        The network's layers, inputs before their consumers
        (:func:`~lasagne.layers.get_all_layers` order).
    input_layers : list of Layer
        The layers that positional inputs feed.
    output_layers : list of Layer
        The output layers.

    Notes
    -----
    **The graph is fixed at construction.** The layers, how they connect,
    which pairs are fused and each layer's input checks are resolved once
    (:class:`~lasagne.layers.evaluation.EvaluationPlan`), so that a forward
    costs little more host time than the layers' own work. Build the network
    after changing the graph (e.g. after :func:`~lasagne.layers.batch_norm`);
    layer attributes read at call time, such as a nonlinearity or a
    parameter's value, may still change.

    **Parameter keys.** Each parameter is registered once under the key
    ``<layer>_<attribute>``: ``<layer>`` is the layer's name (characters
    other than letters, digits, ``_`` and ``-`` replaced by ``_``) or, for an
    unnamed layer, ``<index>_<ClassName>`` with the layer's index in
    :attr:`layers`; ``<attribute>`` is the layer attribute that holds the
    parameter (``W``, ``b``, ``inv_std``, ...), else the parameter's own name
    without the layer prefix, else ``param<i>``. A layer named ``conv1``
    thus gives ``conv1_W`` and ``conv1_b``; an unnamed third layer
    ``2_DenseLayer_W``. The keys are fixed by the graph, so the same model
    definition always gives the same ``state_dict`` keys; a key that would
    repeat gets a suffix ``_2``, ``_3``, .... A parameter shared by several
    layers (tied weights) is registered under the first layer that holds it.
    ``parameters()`` and ``state_dict()`` follow Lasagne's parameter order
    (:func:`~lasagne.layers.get_all_params`), the order of Model Zoo files.

    **Untrainable parameters.** A parameter that no layer tags
    ``trainable`` (batch-norm ``mean`` and ``inv_std``) gets
    ``requires_grad=False`` here, so that autograd never computes a gradient
    for it and optimisers given ``net.parameters()`` leave it alone; it is
    still in ``parameters()`` and ``state_dict()``. Trainable parameters
    keep their ``requires_grad`` (a parameter frozen by the user stays
    frozen). For a list of trainable parameters only, use
    ``net.get_params(trainable=True)``.

    **Moving.** ``.to()``, ``.cuda()``, ``.double()``, ``.half()`` and the
    like change every parameter *in place*: the ``Parameter`` objects stay
    the same, so the layers (which hold them) compute with the moved values
    and optimisers built earlier stay valid. This holds whatever
    ``torch.__future__.set_overwrite_module_params_on_conversion`` says
    (overwriting would leave the layers holding the old tensors); with
    ``torch.__future__.set_swap_module_params_on_conversion(True)`` the
    tensors are swapped, again keeping each object and its attributes. The
    same holds for ``load_state_dict(..., assign=True)``: each parameter
    takes the checkpoint's tensor and stays the same object.

    **Errors.** A floating-point input whose dtype differs from the
    parameters of a layer it feeds is an error naming that layer (outside
    ``torch.autocast``); inputs are never cast silently. Device mismatches
    are reported by :func:`~lasagne.layers.get_output`.

    **Saving.** Save ``net.state_dict()``, or the plain list of values
    (:mod:`lasagne.serialization`); pickling the module pickles the layer
    objects, which for deep graphs exceeds Python's recursion limit.

    Examples
    --------
    >>> import torch
    >>> from lasagne.layers import InputLayer, NonlinearityLayer
    >>> from lasagne.network import Network
    >>> l_in = InputLayer((None, 3), name='in')
    >>> net = Network(NonlinearityLayer(l_in))
    >>> net(torch.ones(2, 3)).shape
    torch.Size([2, 3])
    >>> net.input_layers == [l_in]
    True
    """

    def __init__(self, layer_or_layers, inputs=None, memory_format="auto", fuse=True):
        super(Network, self).__init__()
        self._single_output = not isinstance(layer_or_layers, (list, tuple))
        outputs = [layer_or_layers] if self._single_output else list(layer_or_layers)
        if not outputs:
            raise ValueError("Network: layer_or_layers must be a Layer or a non-empty list of "
                             "layers, got an empty list")
        for layer in outputs:
            if not isinstance(layer, Layer):
                raise TypeError("Network: layer_or_layers must be a Layer or a list of layers, "
                                "got {!r}".format(layer))
        if inputs is None:
            layers = get_all_layers(outputs)
            input_layers = [l for l in layers if isinstance(l, InputLayer)]
        else:
            input_layers = [inputs] if isinstance(inputs, Layer) else list(inputs)
            for layer in input_layers:
                if not isinstance(layer, Layer):
                    raise TypeError("Network: inputs must be a Layer or a list of layers, got "
                                    "{!r}".format(layer))
            if len(set(input_layers)) != len(input_layers):
                raise ValueError("Network: inputs lists a layer twice: {}".format(input_layers))
            layers = get_all_layers(outputs, treat_as_input=input_layers)
            members = set(layers)
            for layer in input_layers:
                if layer not in members:
                    raise ValueError("Network: the input {} is not below the output layer(s) "
                                     "{}".format(layer._where(), outputs))
        self.layers = layers
        self.input_layers = input_layers
        self._input_set = set(input_layers)
        self.output_layers = outputs
        self._key_of = {}
        self._register_params()
        self._input_consumers = self._find_consumers()
        if memory_format not in ("auto", "preserve"):
            raise ValueError("Network: memory_format must be 'auto' or 'preserve', got "
                             "{!r}".format(memory_format))
        self.memory_format = memory_format
        self._conv_weights = self._find_conv_weights()
        self._weights_channels_last = True
        self._fusions = self._find_fusions() if fuse else {}
        # the evaluation of a forward fed exactly the input layers, resolved once
        self._plan = EvaluationPlan(self.layers, self.input_layers, self._fusions)
        self._to_channels_last()

    # -- construction ------------------------------------------------------------------------

    def _register_params(self):
        """Register every parameter of the graph once, in Lasagne's order."""
        fed = set(self.input_layers)
        trainable = set()
        for layer in self.layers:
            if layer not in fed:
                trainable.update(id(p) for p in layer.get_params(trainable=True))
        used = set()
        for index, layer in enumerate(self.layers):
            if layer in fed:
                # its parameters are not used: its output is given
                continue
            prefix = _layer_key(layer, index)
            for position, param in enumerate(layer.params):
                if id(param) in self._key_of:
                    continue
                if not isinstance(param, torch.nn.Parameter):
                    raise TypeError("Network: {} holds a parameter of type {}; layers must "
                                    "hold torch.nn.Parameter objects (see add_param)".format(
                                        layer._where(), type(param).__name__))
                key = _unique_key("{}_{}".format(prefix, _attribute_key(layer, param, position)),
                                  used, self)
                used.add(key)
                if id(param) not in trainable and param.requires_grad:
                    param.requires_grad_(False)
                self.register_parameter(key, param)
                self._key_of[id(param)] = key

    def _find_consumers(self):
        """For each input layer, the layers it feeds directly that hold a
        floating-point parameter, with that parameter (for the dtype check)."""
        consumers = {layer: [] for layer in self.input_layers}
        for layer in self.layers:
            if layer in consumers:
                continue
            incoming = layer.input_layers if isinstance(layer, MergeLayer) \
                else [layer.input_layer]
            param = next((p for p in layer.params if p.is_floating_point()), None)
            if param is None:
                continue
            for parent in incoming:
                if parent in consumers and all(l is not layer for l, _ in consumers[parent]):
                    consumers[parent].append((layer, param))
        return consumers

    def _find_fusions(self):
        """Pairs (consumer, producer) computed in one call: a
        ``NonlinearityLayer`` whose only input is a layer offering
        ``get_fused_output_for`` (batch normalization) that feeds nothing
        else and is not an output."""
        users = {}
        for layer in self.layers:
            incoming = layer.input_layers if isinstance(layer, MergeLayer) \
                else [layer.input_layer]
            for parent in incoming:
                users[parent] = users.get(parent, 0) + 1
        fed = set(self.input_layers)
        outputs = set(self.output_layers)
        fusions = {}
        for layer in self.layers:
            if layer in fed or isinstance(layer, MergeLayer):
                continue
            producer = layer.input_layer
            if (type(layer) is NonlinearityLayer and producer is not None
                    and hasattr(producer, "get_fused_output_for") and producer not in fed
                    and producer not in outputs and users.get(producer) == 1):
                fusions[layer] = producer
        return fusions

    def _fusions_within(self, layers, feed):
        """The fusions that still hold when ``feed`` supplies the outputs of
        some layers: both layers evaluated, neither given."""
        members = set(layers)
        return {consumer: producer for consumer, producer in self._fusions.items()
                if consumer in members and producer in members
                and consumer not in feed and producer not in feed}

    def _find_conv_weights(self):
        """The 4D and 5D convolution weights, which are kept in channels-last
        layout on CUDA when ``memory_format='auto'``."""
        return [layer.W for layer in self.layers
                if hasattr(layer, "filter_size") and isinstance(getattr(layer, "W", None),
                                                                torch.nn.Parameter)
                and layer.W.ndim in (4, 5)]

    def keep_weight_layout(self):
        """Keep convolution weights in the standard (contiguous) layout from
        now on, and restore it now; inputs are still made channels-last on
        CUDA. Needed by FSDP2, which shards contiguous parameters only."""
        self._weights_channels_last = False
        with torch.no_grad():
            for weight in self._conv_weights:
                if not weight.is_contiguous():
                    weight.data = weight.data.contiguous()

    def _to_channels_last(self):
        if self.memory_format != "auto" or not self._weights_channels_last:
            return
        with torch.no_grad():
            for weight in self._conv_weights:
                if weight.is_cuda:
                    fmt = _CHANNELS_LAST[weight.ndim]
                    if not weight.is_contiguous(memory_format=fmt):
                        weight.data = weight.data.contiguous(memory_format=fmt)

    # -- the module interface ----------------------------------------------------------------

    def forward(self, *inputs, **kwargs):
        """Compute the network's output.

        Parameters
        ----------
        *inputs : torch.Tensor or array_like, or one dict
            One tensor per input layer, in the order of
            :attr:`input_layers`; or a single dict mapping layers (or layer
            names) to tensors, as for :func:`~lasagne.layers.get_output`.
            With no input, every input layer's ``input_var`` is used.
        **kwargs
            Passed to every layer's ``get_output_for``. ``deterministic``
            defaults to ``not self.training``.

        Returns
        -------
        torch.Tensor or list of torch.Tensor
            A tensor for a network built on one output layer, else a list.

        Raises
        ------
        ValueError
            If the number of inputs differs from the number of input layers,
            or a dict key names no layer of the network.
        RuntimeError
            If a floating-point input's dtype differs from that of the
            parameters of a layer it feeds.
        """
        kwargs.setdefault("deterministic", not self.training)
        if len(inputs) == 1 and isinstance(inputs[0], dict):
            feed = {self._resolve_layer(key): value for key, value in inputs[0].items()}
        elif inputs:
            if len(inputs) != len(self.input_layers):
                raise ValueError("Network: got {} input(s) for {} input layer(s) {}".format(
                    len(inputs), len(self.input_layers),
                    [l._where() for l in self.input_layers]))
            feed = dict(zip(self.input_layers, inputs))
        else:
            missing = [l._where() for l in self.input_layers
                       if getattr(l, "input_var", None) is None]
            if missing:
                raise ValueError("Network: called without inputs, but the input layer(s) {} have "
                                 "no input_var".format(missing))
            feed = {l: l.input_var for l in self.input_layers}
        if self._conv_weights and self.memory_format == "auto":
            feed = {layer: _channels_last_input(value) for layer, value in feed.items()}
        if not torch.compiler.is_compiling():
            self._check_dtypes(feed)
        outputs = self.output_layers[0] if self._single_output else self.output_layers
        if feed.keys() == self._input_set:
            return evaluate(outputs, feed, kwargs, self._plan)
        layers = get_all_layers(outputs, treat_as_input=list(feed))
        return evaluate(outputs, feed, kwargs,
                        EvaluationPlan(layers, feed, self._fusions_within(layers, feed)))

    def _resolve_layer(self, key):
        if isinstance(key, Layer):
            return key
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
        raise ValueError("Network: no layer of the network is named {!r}".format(key))

    def _check_dtypes(self, feed):
        for input_layer, value in feed.items():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                continue
            if utils.autocast_dtype(value.device.type) is not None:
                continue
            for layer, param in self._input_consumers.get(input_layer, ()):
                if param.dtype != value.dtype:
                    raise RuntimeError(
                        "{}: its input (from {}) has dtype {} but its parameter {!r} has dtype "
                        "{}; cast the input (x.to({})) or the network (net.to({}))".format(
                            layer._where(), input_layer._where(), value.dtype,
                            self._key_of.get(id(param)), param.dtype, param.dtype,
                            value.dtype))

    def get_params(self, **tags):
        """The network's parameters in Lasagne's order, filtered by tags.

        Parameters
        ----------
        **tags
            ``tag=True`` keeps parameters that have the tag, ``tag=False``
            drops them, e.g. ``trainable=True`` or ``regularizable=True``.

        Returns
        -------
        list of torch.nn.Parameter
            The same objects as ``parameters()`` yields, each once.
        """
        fed = set(self.input_layers)
        return utils.unique([p for layer in self.layers if layer not in fed
                             for p in layer.get_params(**tags)])

    @property
    def output_shape(self):
        """The output shape(s) inferred at build time (``None`` where
        unknown): a tuple, or a list of tuples for several outputs."""
        outputs = self.output_layers[0] if self._single_output else self.output_layers
        return get_output_shape(outputs)

    def extra_repr(self):
        return "layers={}, inputs={}, outputs={}, params={}".format(
            len(self.layers), [l._where() for l in self.input_layers],
            [l._where() for l in self.output_layers], len(self._parameters))

    # -- keeping the layers' Parameter objects -----------------------------------------------

    def _apply(self, fn, recurse=True):
        # nn.Module._apply may replace parameters by new objects (when the
        # overwrite flag is set or the tensor types differ); the layers would
        # then compute with the old ones. Every parameter is moved in place.
        if recurse:
            for module in self.children():
                module._apply(fn)
        swap = torch.__future__.get_swap_module_params_on_conversion()
        for key, param in self._parameters.items():
            if param is None:
                continue
            grad = param.grad
            with torch.no_grad():
                applied = fn(param)
                grad_applied = fn(grad) if grad is not None else None
            if applied is not param:
                if grad is not None:
                    param.grad = None
                _replace_data(param, applied, key, swap)
            if grad is not None:
                if grad_applied is grad:
                    param.grad = grad
                else:
                    param.grad = grad_applied.requires_grad_(grad.requires_grad)
        for key, buf in self._buffers.items():
            if buf is not None:
                self._buffers[key] = fn(buf)
        if hasattr(self, "_conv_weights"):
            self._to_channels_last()
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        # assign=True makes nn.Module put new Parameter objects in place of
        # ours, and swapping exchanges the objects' attributes: undo both so
        # that the layers keep theirs.
        before = [(key, p, type(p), dict(p.__dict__)) for key, p in self._parameters.items()
                  if p is not None]
        super(Network, self)._load_from_state_dict(state_dict, prefix, local_metadata,
                                                   *args, **kwargs)
        for key, param, cls, attributes in before:
            current = self._parameters[key]
            if current is not param:
                _replace_data(param, current.detach(), key, swap=False)
                self._parameters[key] = param
            if type(param) is not cls:
                param.__class__ = cls
            param.__dict__.update(attributes)


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _channels_last_input(value):
    """A CUDA image batch in channels-last layout (same logical shape): cuDNN
    convolutions and our pooling and batch-norm kernels run faster on it."""
    if isinstance(value, torch.Tensor) and value.is_cuda and value.ndim in _CHANNELS_LAST:
        return value.contiguous(memory_format=_CHANNELS_LAST[value.ndim])
    return value


def _replace_data(param, value, key, swap):
    """Make ``param`` hold ``value`` (another device, dtype or storage),
    keeping the ``param`` object and its attributes."""
    try:
        from torch._subclasses.fake_tensor import FakeTensor
    except ImportError:  # pragma: no cover
        FakeTensor = ()
    try:
        from torch.utils._python_dispatch import is_traceable_wrapper_subclass
    except ImportError:  # pragma: no cover
        def is_traceable_wrapper_subclass(t):
            return False
    compatible = torch._has_compatible_shallow_copy_type(param, value) \
        and not isinstance(value, FakeTensor)
    if compatible and not (swap or is_traceable_wrapper_subclass(value)
                           or isinstance(param, FakeTensor)):
        param.data = value
        return
    try:
        # same class, same attributes (e.g. the name lasagne.utils.param_name reads)
        replacement = type(param)(value, requires_grad=param.requires_grad)
    except TypeError:
        replacement = torch.nn.Parameter(value, requires_grad=param.requires_grad)
    replacement.__dict__.update(param.__dict__)
    try:
        torch.utils.swap_tensors(param, replacement)
    except Exception as e:
        raise RuntimeError("Network: could not move parameter {!r} in place".format(key)) from e


_UNSAFE = re.compile(r"[^0-9A-Za-z_\-]+")


def _layer_key(layer, index):
    name = getattr(layer, "name", None)
    if name is not None and str(name) != "":
        return _UNSAFE.sub("_", str(name))
    return "{}_{}".format(index, type(layer).__name__)


def _attribute_key(layer, param, position):
    for attr, value in vars(layer).items():
        if value is param:
            return _UNSAFE.sub("_", attr)
    name = utils.param_name(param)
    if isinstance(name, str) and name:
        prefix = "{}.".format(layer.name)
        if layer.name is not None and name.startswith(prefix):
            name = name[len(prefix):]
        if name:
            return _UNSAFE.sub("_", name)
    return "param{}".format(position)


def _unique_key(key, used, module):
    candidate, n = key, 1
    while candidate in used or (hasattr(module, candidate)
                                and candidate not in module._parameters):
        n += 1
        candidate = "{}_{}".format(key, n)
    return candidate

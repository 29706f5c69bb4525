"""The two base classes every layer derives from."""

import re
from collections import OrderedDict

import torch

from .. import utils

__all__ = ["Layer", "MergeLayer"]


def _check_shape(shape, where):
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError("{}: incoming must be a Layer or a shape tuple, got {!r}".format(
            where, shape))
    for d in shape:
        if d is not None and (not isinstance(d, utils.int_types) or d <= 0):
            raise ValueError("{}: every input dimension must be a positive int or None, "
                             "got input_shape={}".format(where, shape))
    return tuple(None if d is None else int(d) for d in shape)


class Layer(object):
    """Base class of layers with one input.

    A layer records the shape of its input when it is built, creates its
    parameters with :meth:`add_param`, computes its output shape with
    :meth:`get_output_shape_for` (pure arithmetic, never runs data) and its
    output with :meth:`get_output_for`.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape
        (``None`` for an unknown size).
    name : str, optional
        The layer's name; its parameters are named ``<name>.<param>``.
    """

    def __init__(self, incoming, name=None):
        self.name = name
        if isinstance(incoming, Layer):
            self.input_layer = incoming
            self.input_shape = incoming.output_shape
        else:
            self.input_layer = None
            self.input_shape = _check_shape(incoming, self._where())
        self.params = OrderedDict()
        self.get_output_kwargs = []

    def _where(self):
        """How error messages name this layer: its class and name."""
        if getattr(self, "name", None) is None:
            return type(self).__name__
        return "{}(name={!r})".format(type(self).__name__, self.name)

    def __repr__(self):
        return "<{} output_shape={}>".format(self._where(), self.output_shape)

    @property
    def output_shape(self):
        """The shape of the layer's output, inferred from its input shape."""
        return self.get_output_shape_for(self.input_shape)

    def get_params(self, unwrap_shared=True, **tags):
        """The layer's parameters, filtered by tags.

        Parameters
        ----------
        unwrap_shared : bool (default: True)
            Kept for the original signature; parameters are always
            ``torch.nn.Parameter`` objects, so there is nothing to unwrap.
        **tags
            ``tag=True`` keeps only parameters with that tag, ``tag=False``
            drops parameters with it (e.g. ``trainable=True``).

        Returns
        -------
        list of torch.nn.Parameter
            In the order they were added.
        """
        result = list(self.params.keys())
        only = set(tag for tag, value in tags.items() if value)
        exclude = set(tag for tag, value in tags.items() if not value)
        if only:
            result = [p for p in result if not (only - self.params[p])]
        if exclude:
            result = [p for p in result if not (self.params[p] & exclude)]
        return result

    def get_output_shape_for(self, input_shape):
        """Output shape for a given input shape (identity by default).

        Parameters
        ----------
        input_shape : tuple
            Sizes of the input, ``None`` where unknown.

        Returns
        -------
        tuple
        """
        return input_shape

    def get_output_for(self, input, **kwargs):
        """Compute the layer's output from its input tensor.

        Parameters
        ----------
        input : torch.Tensor
        **kwargs
            Options such as ``deterministic``; layers ignore those that are
            not theirs.

        Returns
        -------
        torch.Tensor
        """
        raise NotImplementedError("{} does not implement get_output_for".format(self._where()))

    def add_param(self, spec, shape, name=None, **tags):
        """Create a parameter and register it with tags.

        Parameters
        ----------
        spec : numpy.ndarray, torch.Tensor, torch.nn.Parameter or callable
            See :func:`lasagne.utils.create_param`.
        shape : tuple of int
            The parameter's shape.
        name : str, optional
            Prefixed with the layer's name (``<layer>.<name>``).
        **tags
            Boolean tags; ``trainable`` and ``regularizable`` default to True.

        Returns
        -------
        torch.nn.Parameter
        """
        if name is not None and self.name is not None:
            name = "{}.{}".format(self.name, name)
        # A parameter passed in (to share it) keeps the name it already has,
        # as in the original: create_param is not asked to rename it.
        shared = isinstance(spec, torch.nn.Parameter)
        try:
            param = utils.create_param(spec, shape, None if shared else name)
        except (ValueError, TypeError, RuntimeError) as e:
            message = str(e.args[0]) if e.args else str(e)
            if shared and name is not None:  # create_param was not told the name
                message = re.sub(r"\bparameter\b", "parameter {!r}".format(name), message,
                                 count=1)
            raise type(e)("{}: {}".format(self._where(), message)) from None
        if shared and name is not None and utils.param_name(param) is None:
            utils.set_param_name(param, name)
        tags['trainable'] = tags.get('trainable', True)
        tags['regularizable'] = tags.get('regularizable', True)
        self.params[param] = set(tag for tag, value in tags.items() if value)
        return param


class MergeLayer(Layer):
    """Base class of layers with several inputs.

    Parameters
    ----------
    incomings : list of :class:`Layer` instances or tuples
        The layers feeding into this layer, or their expected shapes.
    name : str, optional
        The layer's name.
    """

    def __init__(self, incomings, name=None):
        self.name = name
        incomings = list(incomings)
        self.input_layers = [inc if isinstance(inc, Layer) else None for inc in incomings]
        self.input_shapes = [inc.output_shape if isinstance(inc, Layer)
                             else _check_shape(inc, self._where()) for inc in incomings]
        self.params = OrderedDict()
        self.get_output_kwargs = []

    @Layer.output_shape.getter
    def output_shape(self):
        return self.get_output_shape_for(self.input_shapes)

    def get_output_shape_for(self, input_shapes):
        """Output shape for the given list of input shapes."""
        raise NotImplementedError("{} does not implement get_output_shape_for".format(
            self._where()))

    def get_output_for(self, inputs, **kwargs):
        """Compute the output from the list of input tensors."""
        raise NotImplementedError("{} does not implement get_output_for".format(self._where()))



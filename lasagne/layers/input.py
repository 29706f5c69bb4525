"""The layer that stands for a network's input."""

import torch

from .base import Layer, _check_shape

__all__ = ["InputLayer"]


class InputLayer(Layer):
    """A network input of a given shape.

    Parameters
    ----------
    shape : tuple of int or None
        The input's shape; ``None`` marks a size that may change from call to
        call (usually the batch size).
    input_var : torch.Tensor, optional
        A default input tensor, used by :func:`lasagne.layers.get_output` when
        no input is given for this layer.
    name : str, optional
        The layer's name.

    Examples
    --------
    >>> from lasagne.layers import InputLayer
    >>> l_in = InputLayer((None, 3, 32, 32))
    >>> l_in.output_shape
    (None, 3, 32, 32)
    """

    def __init__(self, shape, input_var=None, name=None, **kwargs):
        self.name = name
        self.shape = _check_shape(shape, self._where())
        if input_var is not None and not isinstance(input_var, torch.Tensor):
            raise TypeError("{}: input_var must be a torch.Tensor or None, got {}".format(
                self._where(), type(input_var).__name__))
        if input_var is not None and input_var.ndim != len(self.shape):
            raise ValueError("{}: input_var has {} dimensions, the layer's shape {} has {}".format(
                self._where(), input_var.ndim, self.shape, len(self.shape)))
        self.input_var = input_var
        super(InputLayer, self).__init__(self.shape, name=name, **kwargs)

    @Layer.output_shape.getter
    def output_shape(self):
        return self.shape

"""Batch normalization: :class:`BatchNormLayer` and :func:`batch_norm`."""

import torch

from .. import init
from .. import nonlinearities
from ..ops import batchnorm as bn_ops
from ..ops import batchnorm_sync as bn_sync
from .averages import update_averages
from .base import Layer
from .special import NonlinearityLayer

__all__ = ["BatchNormLayer", "batch_norm"]


def _activation_of(nonlinearity):
    """The op-level name of a nonlinearity the kernels can fuse, else None
    (with a flag saying whether it must still be applied)."""
    if nonlinearity is None or nonlinearity is nonlinearities.identity:
        return None, False
    if nonlinearity in (nonlinearities.rectify, torch.relu, torch.nn.functional.relu):
        return "relu", False
    return None, True


class BatchNormLayer(Layer):
    """Batch normalization of the incoming activations:

    .. math:: y = (x - \\mu) \\, \\gamma \\, \\mathrm{inv\\_std} + \\beta,
              \\qquad \\mathrm{inv\\_std} = 1 / \\sqrt{\\sigma^2 + \\epsilon}

    During training, :math:`\\mu` and :math:`\\sigma^2` are the mean and the
    biased variance of the current mini-batch over ``axes``, and exponential
    moving averages of the mean and of ``inv_std`` are accumulated into the
    ``mean`` and ``inv_std`` parameters; at test time
    (``deterministic=True``) those averages are used instead.

    Parameters
    ----------
    incoming : a :class:`Layer` instance or a tuple
        The layer feeding into this layer, or the expected input shape.
    axes : 'auto', int or tuple of int (default: 'auto')
        The axes to normalize over. ``'auto'`` normalizes over every axis
        but the second: over the mini-batch for dense layers, over the
        mini-batch and the spatial axes for convolutional layers.
    epsilon : float (default: 1e-4)
        Added to the variance before taking the square root.
    alpha : float (default: 0.1)
        Weight of the current batch in the moving averages:
        ``mean = (1 - alpha) * mean + alpha * batch_mean``, and the same for
        ``inv_std`` (the average is of the inverse standard deviation, not
        of the variance).
    beta : array, tensor, callable or None (default: init.Constant(0))
        Initial value or initializer of the shift :math:`\\beta`, of the
        input's shape without ``axes``; None fixes it to 0 (no parameter).
    gamma : array, tensor, callable or None (default: init.Constant(1))
        The scale :math:`\\gamma`; None fixes it to 1 (no parameter).
    mean : array, tensor or callable (default: init.Constant(0))
        The initial moving average of the mean.
    inv_std : array, tensor or callable (default: init.Constant(1))
        The initial moving average of the inverse standard deviation.
    sync_stats : bool (default: False), keyword only
        Extension (not in the original): in data-parallel training, compute
        the batch statistics over the global batch of every process of
        ``process_group`` (see :mod:`lasagne.distributed`), with gradients
        through them; the moving averages are then identical on every
        process. Without ``torch.distributed`` initialized (or with one
        process) it changes nothing.
    process_group : torch.distributed.ProcessGroup or None, keyword only
        Extension: the processes sharing statistics when ``sync_stats`` is
        on (default: the default process group).
    **kwargs
        ``name``, passed to :class:`Layer`.

    Notes
    -----
    :meth:`get_output_for` takes, besides ``deterministic``, the switches
    ``batch_norm_use_averages`` (default: ``deterministic``) and
    ``batch_norm_update_averages`` (default: ``not deterministic``). The
    averages are updated in place, without gradient, in the parameters'
    dtype, once per call; an output computed in the same call from the
    averages uses their values from before the update.

    ``mean`` and ``inv_std`` are parameters tagged ``trainable=False,
    regularizable=False, batch_norm_stat=True`` (as in the original), so
    they are in :func:`~lasagne.layers.get_all_params` and weight files.

    Float16/bfloat16 inputs are normalized with float32 parameters and
    statistics, and give an output of their own dtype.

    Unlike the original, a single channel or feature works (the original
    failed there through a broadcasting bug).

    Examples
    --------
    >>> from lasagne.layers import InputLayer, DenseLayer, BatchNormLayer
    >>> from lasagne.nonlinearities import rectify
    >>> l_in = InputLayer((None, 10))
    >>> l_dense = DenseLayer(l_in, num_units=50, nonlinearity=None, b=None)
    >>> l_bn = BatchNormLayer(l_dense)
    >>> l_bn.output_shape
    (None, 50)
    """

    _backend = "native"

    def __init__(self, incoming, axes='auto', epsilon=1e-4, alpha=0.1,
                 beta=init.Constant(0), gamma=init.Constant(1),
                 mean=init.Constant(0), inv_std=init.Constant(1), *, sync_stats=False,
                 process_group=None, **kwargs):
        super(BatchNormLayer, self).__init__(incoming, **kwargs)
        self.sync_stats = bool(sync_stats)  # extension: lasagne.distributed
        self.process_group = process_group
        try:
            self.axes = bn_ops.normalize_axes(axes, len(self.input_shape))
        except (ValueError, TypeError) as e:
            raise type(e)("{}: {}".format(self._where(), e)) from None
        self.epsilon = epsilon
        self.alpha = alpha
        self._check_arguments(axes)
        shape = bn_ops.param_shape(self.input_shape, self.axes)
        if any(size is None for size in shape):
            raise ValueError("{}: the input sizes must be known on every axis not normalized "
                             "over, got input shape {} with axes={}".format(
                                 self._where(), self.input_shape, self.axes))
        if beta is None:
            self.beta = None
        else:
            self.beta = self.add_param(beta, shape, 'beta', trainable=True, regularizable=False)
        if gamma is None:
            self.gamma = None
        else:
            self.gamma = self.add_param(gamma, shape, 'gamma', trainable=True,
                                        regularizable=True)
        self.mean = self.add_param(mean, shape, 'mean', trainable=False, regularizable=False,
                                   batch_norm_stat=True)
        self.inv_std = self.add_param(inv_std, shape, 'inv_std', trainable=False,
                                      regularizable=False, batch_norm_stat=True)

    def _check_arguments(self, axes):
        """Extra argument checks of subclasses (after ``self.axes`` is set)."""

    def get_output_for(self, input, deterministic=False, batch_norm_use_averages=None,
                       batch_norm_update_averages=None, **kwargs):
        """Normalize ``input``.

        Parameters
        ----------
        input : torch.Tensor
        deterministic : bool (default: False)
            Sets the defaults of the two switches below.
        batch_norm_use_averages : bool or None (default: None)
            Normalize with the moving averages instead of the batch
            statistics; None means ``deterministic``.
        batch_norm_update_averages : bool or None (default: None)
            Update the moving averages with this batch's statistics; None
            means ``not deterministic``.

        Returns
        -------
        torch.Tensor
            Same shape and dtype as ``input``.
        """
        return self._normalize(input, None, deterministic, batch_norm_use_averages,
                               batch_norm_update_averages)

    def get_fused_output_for(self, input, nonlinearity, deterministic=False,
                             batch_norm_use_averages=None, batch_norm_update_averages=None,
                             **kwargs):
        """``nonlinearity(self.get_output_for(input, ...))``, computed in one
        pass over the data where the backend can fuse the nonlinearity (the
        rectifier on the dnn layer's CUDA path).

        This is for graph evaluators that see a :class:`NonlinearityLayer`
        whose only input is this layer and whose output is the only use of
        this layer's output (the pair :func:`batch_norm` builds): they may
        compute both layers with this one call. The moving averages are
        updated exactly as by :meth:`get_output_for`.
        """
        return self._normalize(input, nonlinearity, deterministic, batch_norm_use_averages,
                               batch_norm_update_averages)

    def _train_backend(self, input, activation):
        """The op backend for normalizing ``input`` with batch statistics."""
        return self._backend

    def _normalize(self, input, nonlinearity, deterministic, use_averages, update_averages):
        use = deterministic if use_averages is None else use_averages
        update = (not deterministic) if update_averages is None else update_averages
        if self.sync_stats and bn_sync.world_size(self.process_group) > 1:
            return self._normalize_sync(input, nonlinearity, use, update)
        activation, apply_after = _activation_of(nonlinearity)
        if use:
            mean, inv_std = self.mean, self.inv_std
            if update:
                batch_mean, batch_inv_std = bn_ops.batch_norm_stats(input, self.axes,
                                                                    self.epsilon)
                # the output uses the averages from before this call's update;
                # clones keep the in-place update out of the autograd graph
                mean, inv_std = mean.clone(), inv_std.clone()
            out = bn_ops.batch_norm_infer(input, mean, inv_std, self.gamma, self.beta,
                                          self.axes, activation)
        else:
            out, batch_mean, batch_inv_std = bn_ops.batch_norm_train_resolved(
                input, self.gamma, self.beta, self.axes, self.epsilon, activation,
                self._train_backend(input, activation))
        if update:
            self._update_averages(batch_mean, batch_inv_std)
        if apply_after:
            out = nonlinearity(out)
        return out

    def _update_averages(self, batch_mean, batch_inv_std):
        # applied when the enclosing forward ends (lasagne.layers.averages)
        update_averages([self.mean, self.inv_std], [batch_mean, batch_inv_std], self.alpha)

    # -- extension: statistics over every process (lasagne.distributed) ----------------------

    def _normalize_sync(self, input, nonlinearity, use, update):
        """``_normalize`` with the statistics of the global batch of
        ``self.process_group`` (lasagne.ops.batchnorm_sync): identical
        statistics, and so identical moving averages, on every process."""
        activation, apply_after = _activation_of(nonlinearity)
        if use:
            mean, inv_std = self.mean, self.inv_std
            if update:
                batch_mean, batch_inv_std = bn_sync.batch_norm_stats_sync(
                    input, self.axes, self.epsilon, self.process_group)
                mean, inv_std = mean.clone(), inv_std.clone()
            out = bn_ops.batch_norm_infer(input, mean, inv_std, self.gamma, self.beta,
                                          self.axes, activation)
        else:
            out, batch_mean, batch_inv_std = bn_sync.batch_norm_train_sync(
                input, self.gamma, self.beta, self.axes, self.epsilon, activation,
                self.process_group)
        if update:
            self._update_averages(batch_mean, batch_inv_std)
        if apply_after:
            out = nonlinearity(out)
        return out


def _stack_batch_norm(layer, bn_class, kwargs):
    """Shared by :func:`batch_norm` and ``dnn.batch_norm_dnn``."""
    nonlinearity = getattr(layer, 'nonlinearity', None)
    if nonlinearity is not None:
        layer.nonlinearity = nonlinearities.identity
    if getattr(layer, 'b', None) is not None:
        layer.params.pop(layer.b, None)
        layer.b = None
    bn_name = kwargs.pop('name', None)
    if bn_name is None and getattr(layer, 'name', None) is not None:
        bn_name = layer.name + '_bn'
    layer = bn_class(layer, name=bn_name, **kwargs)
    if nonlinearity is not None:
        nonlin_name = None if bn_name is None else bn_name + '_nonlin'
        layer = NonlinearityLayer(layer, nonlinearity, name=nonlin_name)
    return layer


def batch_norm(layer, **kwargs):
    """Insert batch normalization between a layer and its nonlinearity.

    The layer is modified: its nonlinearity becomes the identity, and its
    bias, if it has one, is removed from its parameters and set to None (the
    normalization's ``beta`` takes its place). A :class:`BatchNormLayer` is
    stacked on it and, if the layer had a nonlinearity, a
    :class:`NonlinearityLayer` applying it on top of that.

    Parameters
    ----------
    layer : a :class:`Layer` instance
        The layer to normalize (modified in place as described).
    **kwargs
        Passed to :class:`BatchNormLayer`. Without ``name``, the new layers
        are named ``<layer name>_bn`` and ``<layer name>_bn_nonlin`` when
        the layer has a name.

    Returns
    -------
    BatchNormLayer or NonlinearityLayer
        The top of the new stack.

    Notes
    -----
    A layer built with ``nonlinearity=None`` holds the identity, so it gets
    an identity :class:`NonlinearityLayer` too, as in the original.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, DenseLayer, batch_norm
    >>> l_in = InputLayer((None, 10))
    >>> l1 = batch_norm(DenseLayer(l_in, num_units=50, name='fc1'))
    >>> l1.name, l1.input_layer.name
    ('fc1_bn_nonlin', 'fc1_bn')
    """
    return _stack_batch_norm(layer, BatchNormLayer, kwargs)

"""Loss functions and evaluation measures on network outputs.

Five functions compute an element-wise or item-wise loss from predictions and
targets: :func:`binary_crossentropy`, :func:`categorical_crossentropy`,
:func:`squared_error`, :func:`binary_hinge_loss` and
:func:`multiclass_hinge_loss`. :func:`aggregate` reduces such a loss to a
scalar (mean, sum, or weighted sum normalised by the weights), ready for
``.backward()``. Two more, :func:`binary_accuracy` and
:func:`categorical_accuracy`, measure accuracy for validation; they have no
useful gradient.

All take and return ``torch.Tensor`` objects; numpy arrays and Python numbers
are accepted as well and converted.

Examples
--------
>>> import torch
>>> from lasagne.nonlinearities import softmax
>>> from lasagne.objectives import categorical_crossentropy, aggregate
>>> scores = torch.randn(8, 3)
>>> targets = torch.randint(0, 3, (8,))
>>> loss = aggregate(categorical_crossentropy(softmax(scores), targets), mode='mean')
>>> loss.ndim
0
"""

import warnings

import torch

from .utils import int_types

__all__ = ["binary_crossentropy", "categorical_crossentropy", "squared_error", "aggregate",
           "binary_hinge_loss", "multiclass_hinge_loss", "binary_accuracy",
           "categorical_accuracy"]


def _tensor(x, like=None):
    """``x`` as a tensor; non-tensors go to ``like``'s device, and floating
    numpy/Python values to ``like``'s floating dtype (or PyTorch's default)."""
    if isinstance(x, torch.Tensor):
        return x
    device = like.device if isinstance(like, torch.Tensor) else None
    t = torch.as_tensor(x, device=device)
    if t.is_floating_point():
        dtype = like.dtype if isinstance(like, torch.Tensor) and like.is_floating_point() \
            else torch.get_default_dtype()
        t = t.to(dtype)
    return t


def _align_targets(predictions, targets):
    # A network with a single output unit gives predictions of shape (n, 1);
    # a target vector of shape (n,) is turned into a column (n, 1) so that it
    # pairs element by element instead of broadcasting to (n, n).
    if predictions.ndim == 2 and predictions.shape[1] == 1 and targets.ndim == 1:
        targets = targets.unsqueeze(1)
    return predictions, targets


def _accuracy_dtype(predictions):
    return predictions.dtype if predictions.is_floating_point() else torch.get_default_dtype()


def binary_crossentropy(predictions, targets):
    """Element-wise binary cross-entropy.

    .. math:: L = -t \\log(p) - (1 - t) \\log(1 - p)

    Computed by this very formula (no clipping), as the original did:
    predictions of exactly 0 or 1 give an infinite (or NaN) loss.

    Parameters
    ----------
    predictions : torch.Tensor
        Probabilities in (0, 1), e.g. a sigmoid output.
    targets : torch.Tensor
        Targets in [0, 1]. A vector is paired with a ``(n, 1)`` prediction
        column element by element.

    Returns
    -------
    torch.Tensor
        The loss per element, of the broadcast shape.

    Examples
    --------
    >>> import torch
    >>> from lasagne.objectives import binary_crossentropy
    >>> binary_crossentropy(torch.tensor([0.5]), torch.tensor([1.0]))
    tensor([0.6931])
    """
    predictions = _tensor(predictions)
    targets = _tensor(targets, predictions)
    predictions, targets = _align_targets(predictions, targets)
    return -(targets * torch.log(predictions) + (1.0 - targets) * torch.log(1.0 - predictions))


def categorical_crossentropy(predictions, targets):
    """Item-wise categorical cross-entropy.

    .. math:: L_i = - \\sum_j t_{i,j} \\log(p_{i,j})

    Parameters
    ----------
    predictions : torch.Tensor
        Class probabilities along the last axis, e.g. a softmax output of
        shape ``(n, k)``.
    targets : torch.Tensor
        Either the same shape as ``predictions`` (one-hot rows or
        probability distributions), giving ``-sum(t * log(p))`` over the last
        axis; or integer class indices with one dimension less (shape
        ``(n,)``), giving ``-log(p[i, t[i]])``.

    Returns
    -------
    torch.Tensor
        The loss per item, shape ``predictions.shape[:-1]``.

    Raises
    ------
    TypeError
        If the targets' rank fits neither form, or index targets are not
        integers.

    Notes
    -----
    No clipping is applied (as in the original): a zero probability for a
    target class gives an infinite loss.

    Examples
    --------
    >>> import torch
    >>> from lasagne.objectives import categorical_crossentropy
    >>> p = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    >>> categorical_crossentropy(p, torch.tensor([1, 0]))
    tensor([0.2877, 0.6931])
    """
    predictions = _tensor(predictions)
    targets = _tensor(targets, predictions)
    if targets.ndim == predictions.ndim:
        return -torch.sum(targets * torch.log(predictions), dim=-1)
    if targets.ndim == predictions.ndim - 1:
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise TypeError("categorical_crossentropy: targets with one dimension fewer than "
                            "predictions must be integer class indices, got dtype {}".format(
                                targets.dtype))
        picked = torch.gather(predictions, -1, targets.long().unsqueeze(-1)).squeeze(-1)
        return -torch.log(picked)
    raise TypeError("categorical_crossentropy: rank mismatch between targets and predictions: "
                    "targets must have {} dimensions (class probabilities) or {} (class "
                    "indices), got shapes {} and {}".format(
                        predictions.ndim, predictions.ndim - 1, tuple(predictions.shape),
                        tuple(targets.shape)))


def squared_error(a, b):
    """Element-wise squared difference :math:`(a - b)^2`.

    Parameters
    ----------
    a, b : torch.Tensor
        Typically predictions and targets. A vector ``b`` is paired with a
        ``(n, 1)`` column ``a`` element by element.

    Returns
    -------
    torch.Tensor
        The squared difference per element.

    Examples
    --------
    >>> import torch
    >>> from lasagne.objectives import squared_error
    >>> squared_error(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]))
    tensor([1., 4.])
    """
    a = _tensor(a)
    b = _tensor(b, a)
    a, b = _align_targets(a, b)
    return (a - b) ** 2


def aggregate(loss, weights=None, mode='mean'):
    """Reduce an element- or item-wise loss to a scalar.

    Parameters
    ----------
    loss : torch.Tensor
        The loss to reduce.
    weights : torch.Tensor, optional
        A weight per element, broadcastable to ``loss``'s shape (without
        enlarging it); the loss is multiplied by it first. Binary weights
        mask entries out (masked entries must still be finite: ``0 * nan``
        is ``nan``).
    mode : {'mean', 'sum', 'normalized_sum'} (default: 'mean')
        ``'mean'``: mean of the (weighted) loss over all its elements;
        ``'sum'``: its sum; ``'normalized_sum'``: its sum divided by the sum
        of ``weights`` (which are then required).

    Returns
    -------
    torch.Tensor
        A 0-dimensional tensor.

    Raises
    ------
    ValueError
        For an unknown ``mode``, ``'normalized_sum'`` without weights, or
        weights that do not broadcast to the loss's shape.

    Examples
    --------
    >>> import torch
    >>> from lasagne.objectives import aggregate
    >>> aggregate(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.0]), mode='normalized_sum')
    tensor(1.)
    """
    if mode not in ('mean', 'sum', 'normalized_sum'):
        raise ValueError("aggregate: mode must be 'mean', 'sum' or 'normalized_sum', "
                         "got {!r}".format(mode))
    loss = _tensor(loss)
    if not (loss.is_floating_point() or loss.is_complex()):
        # accuracies are 0/1 values; a mean needs a floating dtype
        loss = loss.to(torch.get_default_dtype())
    if weights is not None:
        weights = _tensor(weights, loss)
        try:
            shape = torch.broadcast_shapes(loss.shape, weights.shape)
        except RuntimeError:
            shape = None
        if shape != loss.shape:
            raise ValueError("aggregate: weights of shape {} do not broadcast to the loss's "
                             "shape {}".format(tuple(weights.shape), tuple(loss.shape)))
        loss = loss * weights
    if mode == 'mean':
        return loss.mean()
    if mode == 'sum':
        return loss.sum()
    if weights is None:
        raise ValueError("aggregate: mode='normalized_sum' requires weights")
    return loss.sum() / weights.sum()


def binary_hinge_loss(predictions, targets, delta=1, log_odds=None, binary=True):
    """Element-wise binary hinge loss.

    .. math:: L_i = \\max(0, \\delta - t_i\\, s_i)

    where :math:`s_i` is the prediction as log-odds and :math:`t_i \\in
    \\{-1, 1\\}`.

    Parameters
    ----------
    predictions : torch.Tensor
        Log-odds (the input of a sigmoid, ``log_odds=True``) or
        probabilities in (0, 1) (a sigmoid output, ``log_odds=False``, which
        are converted by :math:`\\log(p / (1 - p))`).
    targets : torch.Tensor
        Targets in {0, 1} (``binary=True``, mapped to {-1, 1} by ``2t - 1``)
        or in {-1, 1} (``binary=False``). A vector is paired with a
        ``(n, 1)`` prediction column element by element.
    delta : float (default: 1)
        The margin.
    log_odds : bool or None (default: None)
        Whether ``predictions`` are log-odds. ``None`` means ``True`` and
        emits a ``FutureWarning`` asking to pass it explicitly (see Notes).
    binary : bool (default: True)
        Whether targets are in {0, 1} (else in {-1, 1}).

    Returns
    -------
    torch.Tensor
        The loss per element.

    Notes
    -----
    Only ``log_odds=False`` makes this a drop-in replacement for
    :func:`binary_crossentropy` on sigmoid outputs. Before ``log_odds``
    existed, the original treated predictions as log-odds; its later
    version meant to warn for the default ``None`` and keep that behaviour,
    but its code raised the ``FutureWarning`` as an exception instead, so
    the default was unusable there. We do what it meant: warn, and treat
    predictions as log-odds. Every call that worked with either version of
    the original gives the same result here.

    Examples
    --------
    >>> import torch
    >>> from lasagne.objectives import binary_hinge_loss
    >>> binary_hinge_loss(torch.tensor([2.0, 0.5]), torch.tensor([1, 1]), log_odds=True)
    tensor([0.0000, 0.5000])
    """
    predictions = _tensor(predictions)
    targets = _tensor(targets, predictions)
    if log_odds is None:
        warnings.warn("binary_hinge_loss: the default log_odds=None treats predictions as "
                      "log-odds (sigmoid inputs); pass log_odds=True to keep this, or "
                      "log_odds=False for probabilities (sigmoid outputs)", FutureWarning,
                      stacklevel=2)
        log_odds = True
    if not log_odds:
        predictions = torch.log(predictions / (1 - predictions))
    if binary:
        targets = 2 * targets - 1
    predictions, targets = _align_targets(predictions, targets)
    return torch.relu(delta - predictions * targets)


def multiclass_hinge_loss(predictions, targets, delta=1):
    """Item-wise multi-class hinge loss.

    .. math:: L_i = \\max\\left(0, \\max_{j \\ne t_i} p_{i,j} - p_{i,t_i} + \\delta\\right)

    Parameters
    ----------
    predictions : torch.Tensor
        Scores of shape ``(n, k)`` with ``k >= 2``, e.g. a softmax output.
    targets : torch.Tensor
        Integer class indices of shape ``(n,)``, or a one-hot matrix of shape
        ``(n, k)`` (exactly one nonzero entry per row; other targets, e.g.
        soft probabilities, are not supported).
    delta : float (default: 1)
        The margin.

    Returns
    -------
    torch.Tensor
        The loss per item, shape ``(n,)``.

    Raises
    ------
    TypeError
        If the targets' rank fits neither form.
    ValueError
        If there are fewer than two classes.

    Examples
    --------
    >>> import torch
    >>> from lasagne.objectives import multiclass_hinge_loss
    >>> multiclass_hinge_loss(torch.tensor([[0.2, 0.5, 0.3]]), torch.tensor([1]))
    tensor([0.8000])
    """
    predictions = _tensor(predictions)
    targets = _tensor(targets, predictions)
    num_cls = predictions.shape[-1]
    if targets.ndim == predictions.ndim - 1:
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise TypeError("multiclass_hinge_loss: targets with one dimension fewer than "
                            "predictions must be integer class indices, got dtype {}".format(
                                targets.dtype))
        is_target = torch.nn.functional.one_hot(targets.long(), num_cls).bool()
    elif targets.ndim == predictions.ndim:
        is_target = targets != 0
    else:
        raise TypeError("multiclass_hinge_loss: rank mismatch between targets and predictions: "
                        "targets must have {} dimensions (one-hot) or {} (class indices), got "
                        "shapes {} and {}".format(predictions.ndim, predictions.ndim - 1,
                                                  tuple(predictions.shape),
                                                  tuple(targets.shape)))
    if num_cls < 2:
        raise ValueError("multiclass_hinge_loss: needs at least 2 classes, got predictions of "
                         "shape {}".format(tuple(predictions.shape)))
    zero = torch.zeros((), dtype=predictions.dtype, device=predictions.device)
    lowest = torch.full((), float('-inf'), dtype=predictions.dtype, device=predictions.device)
    correct = torch.where(is_target, predictions, zero).sum(dim=-1)
    best_other = torch.where(is_target, lowest, predictions).amax(dim=-1)
    return torch.relu(best_other - correct + delta)


def binary_accuracy(predictions, targets, threshold=0.5):
    """Element-wise binary accuracy: 1 where ``(p >= threshold) == t``.

    Parameters
    ----------
    predictions : torch.Tensor
        Probabilities of the positive class, e.g. a sigmoid output.
    targets : torch.Tensor
        Targets in {0, 1}. A vector is paired with a ``(n, 1)`` prediction
        column element by element.
    threshold : float (default: 0.5)
        Predictions at or above it count as the positive class.

    Returns
    -------
    torch.Tensor
        0/1 values in ``predictions``' floating dtype (the default float
        dtype for integer predictions), so that ``.mean()`` works directly.
        Not differentiable.

    Examples
    --------
    >>> import torch
    >>> from lasagne.objectives import binary_accuracy
    >>> binary_accuracy(torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0, 0, 1]))
    tensor([1., 0., 1.])
    """
    predictions = _tensor(predictions)
    targets = _tensor(targets, predictions)
    predictions, targets = _align_targets(predictions, targets)
    positive = (predictions >= threshold).to(targets.dtype)
    return torch.eq(positive, targets).to(_accuracy_dtype(predictions))


def categorical_accuracy(predictions, targets, top_k=1):
    """Item-wise categorical accuracy: 1 where the target class has the
    highest prediction (or is among the ``top_k`` highest).

    Parameters
    ----------
    predictions : torch.Tensor
        Class scores along the last axis, shape ``(n, k)``.
    targets : torch.Tensor
        Integer class indices of shape ``(n,)``, or a matrix of the
        predictions' shape whose row-wise argmax is the class (one-hot).
    top_k : int (default: 1)
        A prediction counts as correct if the target is among the ``top_k``
        largest scores. With ``top_k=1`` ties go to the first maximal class.

    Returns
    -------
    torch.Tensor
        0/1 values per item, shape ``(n,)``, in ``predictions``' floating
        dtype (the default float dtype otherwise). Not differentiable.

    Raises
    ------
    TypeError
        If the targets' rank fits neither form.
    ValueError
        If ``top_k`` is not a positive integer.

    Examples
    --------
    >>> import torch
    >>> from lasagne.objectives import categorical_accuracy
    >>> p = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    >>> categorical_accuracy(p, torch.tensor([1, 2]))
    tensor([1., 0.])
    >>> categorical_accuracy(p, torch.tensor([1, 2]), top_k=2)
    tensor([1., 1.])
    """
    predictions = _tensor(predictions)
    targets = _tensor(targets, predictions)
    if isinstance(top_k, bool) or not isinstance(top_k, int_types) or top_k < 1:
        raise ValueError("categorical_accuracy: top_k must be a positive int, got {!r}".format(
            top_k))
    if targets.ndim == predictions.ndim:
        targets = torch.argmax(targets, dim=-1)
    elif targets.ndim != predictions.ndim - 1:
        raise TypeError("categorical_accuracy: rank mismatch between targets and predictions: "
                        "targets must have {} dimensions (one-hot) or {} (class indices), got "
                        "shapes {} and {}".format(predictions.ndim, predictions.ndim - 1,
                                                  tuple(predictions.shape),
                                                  tuple(targets.shape)))
    dtype = _accuracy_dtype(predictions)
    if top_k == 1:
        top = torch.argmax(predictions, dim=-1)
        return torch.eq(top, targets).to(dtype)
    ranked = torch.argsort(predictions, dim=-1, stable=True)[..., -top_k:]
    return torch.eq(ranked, targets.unsqueeze(-1)).any(dim=-1).to(dtype)

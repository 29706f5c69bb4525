"""Initializers: objects that produce the starting values of parameters.

An initializer is called with a shape and returns a numpy array of that shape
in the default float dtype (see :func:`lasagne.utils.floatX`). Layers pass
initializers to :func:`lasagne.utils.create_param`, which turns the array into
a ``torch.nn.Parameter``.

Every random draw goes through :func:`lasagne.random.get_rng` (a numpy
``RandomState``, or the ``numpy.random`` module by default), with the same
sequence of calls, arguments and dtype casts as the original Lasagne. Seeding
that generator therefore reproduces, bit for bit, the initial weights a
Lasagne script produced:

>>> import numpy as np
>>> import lasagne
>>> lasagne.random.set_rng(np.random.RandomState(42))
>>> W = lasagne.init.GlorotUniform()((20, 50))
>>> W.shape
(20, 50)

Available initializers: :class:`Constant`, :class:`Normal`, :class:`Uniform`,
:class:`Glorot` (:class:`GlorotNormal`, :class:`GlorotUniform`), :class:`He`
(:class:`HeNormal`, :class:`HeUniform`), :class:`Orthogonal` and
:class:`Sparse`.
"""

import numpy as np

from .random import get_rng
from .utils import floatX

__all__ = ["Initializer", "Normal", "Uniform", "Glorot", "GlorotNormal", "GlorotUniform",
           "He", "HeNormal", "HeUniform", "Constant", "Sparse", "Orthogonal"]


def _gain_value(gain):
    # the string 'relu' selects the rectifier gain sqrt(2) (a numpy float64,
    # as the original computed it, so that later products round identically)
    if isinstance(gain, str):
        if gain == 'relu':
            return np.sqrt(2)
        raise ValueError("gain must be a number or 'relu', got {!r}".format(gain))
    return gain


def _ndim(shape):
    try:
        return len(shape)
    except TypeError:  # a bare int is a 1D shape
        return 1


class Initializer(object):
    """Base class of all initializers.

    Subclasses implement :meth:`sample`; calling the instance with a shape
    calls :meth:`sample` with it.
    """

    def __call__(self, shape):
        """Return ``self.sample(shape)``."""
        return self.sample(shape)

    def sample(self, shape):
        """Draw an array of the given shape.

        Parameters
        ----------
        shape : tuple of int or int
            The shape of the array to produce.

        Returns
        -------
        numpy.ndarray
            An array of that shape in the default float dtype.
        """
        raise NotImplementedError("{} does not implement sample()".format(type(self).__name__))

    def __repr__(self):
        fields = ", ".join("{}={!r}".format(k, v) for k, v in sorted(vars(self).items()))
        return "{}({})".format(type(self).__name__, fields)


class Normal(Initializer):
    """Gaussian initializer: values drawn from :math:`N(mean, std^2)`.

    Parameters
    ----------
    std : float (default: 0.01)
        Standard deviation of the distribution.
    mean : float (default: 0.0)
        Mean of the distribution.

    Examples
    --------
    >>> from lasagne.init import Normal
    >>> Normal(std=0.1)((3, 4)).shape
    (3, 4)
    """

    def __init__(self, std=0.01, mean=0.0):
        self.std = std
        self.mean = mean

    def sample(self, shape):
        return floatX(get_rng().normal(self.mean, self.std, size=shape))


class Uniform(Initializer):
    """Uniform initializer: values drawn from :math:`U(a, b)`.

    The interval is chosen as follows:

    * if ``std`` is given, :math:`a, b = mean \\mp \\sqrt{3}\\, std` (a
      uniform distribution with that mean and standard deviation); ``range``
      is ignored;
    * otherwise, if ``range`` is a pair, :math:`a, b = range`;
    * otherwise :math:`a, b = -range, range`. ``mean`` plays no part in
      these last two cases.

    Parameters
    ----------
    range : float or tuple of two floats (default: 0.01)
        Half-width of a symmetric interval, or the interval itself.
    std : float or None (default: None)
        Standard deviation; overrides ``range`` when given.
    mean : float (default: 0.0)
        Centre of the interval, used together with ``std`` only.

    Attributes
    ----------
    range : tuple of two floats
        The resolved interval ``(a, b)``.

    Examples
    --------
    >>> from lasagne.init import Uniform
    >>> Uniform(range=(0, 1)).range
    (0, 1)
    """

    def __init__(self, range=0.01, std=None, mean=0.0):
        if std is not None:
            low = mean - np.sqrt(3) * std
            high = mean + np.sqrt(3) * std
        else:
            try:
                low, high = range
            except TypeError:  # a single number: symmetric around zero
                low, high = -range, range
        self.range = (low, high)

    def sample(self, shape):
        low, high = self.range
        return floatX(get_rng().uniform(low=low, high=high, size=shape))


class Glorot(Initializer):
    """Glorot (Xavier) initializer: variance scaled by fan-in plus fan-out.

    The standard deviation is

    .. math:: \\sigma = gain \\sqrt{\\frac{2}{(n_1 + n_2) \\cdot r}}

    where, for a shape ``(n1, n2, *rest)``, :math:`r` is the product of
    ``rest`` (the receptive field size, 1 for a matrix); :math:`n_1 r` and
    :math:`n_2 r` are the fan-in and fan-out of a dense or convolution weight.
    With ``c01b=True`` the shape is read as ``(c, 0, 1, b)`` (channels,
    rows, columns, filters): :math:`n_1, n_2` are ``shape[0]`` and
    ``shape[3]`` and :math:`r` is ``shape[1] * shape[2]``.

    The values are drawn by ``initializer(std=sigma)``.

    Parameters
    ----------
    initializer : class or callable
        Called as ``initializer(std=...)`` to make the initializer that draws
        the values, e.g. :class:`Normal` or :class:`Uniform`.
    gain : float or 'relu' (default: 1.0)
        Scale factor; ``'relu'`` means :math:`\\sqrt{2}`.
    c01b : bool (default: False)
        Read 4D shapes in the ``c01b`` layout (cuda-convnet filters).

    Raises
    ------
    RuntimeError
        From :meth:`sample`, for a shape of fewer than 2 dimensions, or a
        shape that is not 4D with ``c01b=True``.

    Examples
    --------
    >>> from lasagne.init import Glorot, Normal
    >>> Glorot(Normal, gain='relu')((64, 32, 3, 3)).shape
    (64, 32, 3, 3)
    """

    def __init__(self, initializer, gain=1.0, c01b=False):
        self.initializer = initializer
        self.gain = _gain_value(gain)
        self.c01b = c01b

    def sample(self, shape):
        if self.c01b:
            if _ndim(shape) != 4:
                raise RuntimeError("{}(c01b=True) needs a 4D shape, got {!r}".format(
                    type(self).__name__, shape))
            n1, n2 = shape[0], shape[3]
            receptive_field_size = shape[1] * shape[2]
        else:
            if _ndim(shape) < 2:
                raise RuntimeError("{} needs a shape of at least 2 dimensions, got {!r}".format(
                    type(self).__name__, shape))
            n1, n2 = shape[0], shape[1]
            # np.prod of an empty tuple is 1.0: a matrix has receptive field 1
            receptive_field_size = np.prod(shape[2:])
        std = self.gain * np.sqrt(2.0 / ((n1 + n2) * receptive_field_size))
        return self.initializer(std=std).sample(shape)


class GlorotNormal(Glorot):
    """:class:`Glorot` with values from a :class:`Normal` distribution.

    Parameters
    ----------
    gain : float or 'relu' (default: 1.0)
    c01b : bool (default: False)
        See :class:`Glorot`.
    """

    def __init__(self, gain=1.0, c01b=False):
        super(GlorotNormal, self).__init__(Normal, gain, c01b)


class GlorotUniform(Glorot):
    """:class:`Glorot` with values from a :class:`Uniform` distribution
    (the default weight initializer of most layers).

    The values lie in :math:`[-\\sqrt{3}\\sigma, \\sqrt{3}\\sigma)`, with
    :math:`\\sigma` as in :class:`Glorot`.

    Parameters
    ----------
    gain : float or 'relu' (default: 1.0)
    c01b : bool (default: False)
        See :class:`Glorot`.
    """

    def __init__(self, gain=1.0, c01b=False):
        super(GlorotUniform, self).__init__(Uniform, gain, c01b)


class He(Initializer):
    """He (Kaiming) initializer: variance scaled by the fan-in.

    The standard deviation is :math:`\\sigma = gain \\sqrt{1 / fan_{in}}`,
    where the fan-in is ``shape[0]`` for a matrix (a dense weight of shape
    ``(num_inputs, num_units)``) and the product of ``shape[1:]`` for more
    dimensions (a convolution weight ``(num_filters, channels, *filter)``).
    With ``c01b=True`` the fan-in is the product of ``shape[:3]``.

    The values are drawn by ``initializer(std=sigma)``.

    Parameters
    ----------
    initializer : class or callable
        Called as ``initializer(std=...)``, e.g. :class:`Normal` or
        :class:`Uniform`.
    gain : float or 'relu' (default: 1.0)
        Scale factor; ``'relu'`` means :math:`\\sqrt{2}`.
    c01b : bool (default: False)
        Read 4D shapes in the ``c01b`` layout (cuda-convnet filters).

    Raises
    ------
    RuntimeError
        From :meth:`sample`, for a shape of fewer than 2 dimensions, or a
        shape that is not 4D with ``c01b=True``.

    Examples
    --------
    >>> from lasagne.init import He, Normal
    >>> He(Normal, gain='relu')((100, 50)).shape
    (100, 50)
    """

    def __init__(self, initializer, gain=1.0, c01b=False):
        self.initializer = initializer
        self.gain = _gain_value(gain)
        self.c01b = c01b

    def sample(self, shape):
        if self.c01b:
            if _ndim(shape) != 4:
                raise RuntimeError("{}(c01b=True) needs a 4D shape, got {!r}".format(
                    type(self).__name__, shape))
            fan_in = np.prod(shape[:3])
        else:
            ndim = _ndim(shape)
            if ndim < 2:
                raise RuntimeError("{} needs a shape of at least 2 dimensions, got {!r}".format(
                    type(self).__name__, shape))
            fan_in = shape[0] if ndim == 2 else np.prod(shape[1:])
        std = self.gain * np.sqrt(1.0 / fan_in)
        return self.initializer(std=std).sample(shape)


class HeNormal(He):
    """:class:`He` with values from a :class:`Normal` distribution.

    Parameters
    ----------
    gain : float or 'relu' (default: 1.0)
    c01b : bool (default: False)
        See :class:`He`.
    """

    def __init__(self, gain=1.0, c01b=False):
        super(HeNormal, self).__init__(Normal, gain, c01b)


class HeUniform(He):
    """:class:`He` with values from a :class:`Uniform` distribution.

    Parameters
    ----------
    gain : float or 'relu' (default: 1.0)
    c01b : bool (default: False)
        See :class:`He`.
    """

    def __init__(self, gain=1.0, c01b=False):
        super(HeUniform, self).__init__(Uniform, gain, c01b)


class Constant(Initializer):
    """Fills the array with one value (draws nothing from the generator).

    Parameters
    ----------
    val : float (default: 0.0)
        The value.

    Examples
    --------
    >>> from lasagne.init import Constant
    >>> Constant(1.5)((2,))
    array([1.5, 1.5], dtype=float32)
    """

    def __init__(self, val=0.0):
        self.val = val

    def sample(self, shape):
        return floatX(np.ones(shape) * self.val)


class Sparse(Initializer):
    """Sparse matrix initializer: each column has exactly
    ``int(sparsity * shape[0])`` nonzero entries, at random rows, with values
    from :math:`N(0, std^2)`.

    Column by column, the generator first shuffles the row indices
    ``0 .. shape[0]-1`` (keeping the first ones) and then draws that column's
    values.

    Parameters
    ----------
    sparsity : float (default: 0.1)
        Fraction of nonzero entries per column (larger is denser).
    std : float (default: 0.01)
        Standard deviation of the nonzero values.

    Raises
    ------
    RuntimeError
        From :meth:`sample`, for a shape that is not 2D.

    Examples
    --------
    >>> from lasagne.init import Sparse
    >>> W = Sparse(sparsity=0.25)((8, 3))
    >>> [int((W[:, k] != 0).sum()) for k in range(3)]
    [2, 2, 2]
    """

    def __init__(self, sparsity=0.1, std=0.01):
        self.sparsity = sparsity
        self.std = std

    def sample(self, shape):
        if _ndim(shape) != 2:
            raise RuntimeError("Sparse needs a 2D shape, got {!r}".format(shape))
        n_rows, n_cols = shape
        W = floatX(np.zeros(shape))
        count = int(self.sparsity * n_rows)
        rng = get_rng()
        for col in range(n_cols):
            rows = np.arange(n_rows)
            rng.shuffle(rows)
            rows = rows[:count]
            W[rows, col] = floatX(rng.normal(0.0, self.std, size=count))
        return W


class Orthogonal(Initializer):
    """Orthogonal initializer (Saxe et al., 2013).

    The shape is viewed as a matrix ``(shape[0], prod(shape[1:]))`` (for a
    convolution weight: one row per filter, its fan-in along the row). A
    matrix of standard normal values of that shape is decomposed by a
    (thin) SVD :math:`U S V`; of :math:`U` and :math:`V`, the one with the
    matrix's shape is kept, so that its rows (if it is wide) or columns (if
    it is tall) are orthonormal. It is reshaped to ``shape`` and multiplied
    by ``gain``.

    Parameters
    ----------
    gain : float or 'relu' (default: 1.0)
        Scale factor; ``'relu'`` means :math:`\\sqrt{2}`.

    Raises
    ------
    RuntimeError
        From :meth:`sample`, for a shape of fewer than 2 dimensions.

    Examples
    --------
    >>> import numpy as np
    >>> from lasagne.init import Orthogonal
    >>> W = Orthogonal()((4, 6))
    >>> np.allclose(W @ W.T, np.eye(4), atol=1e-6)
    True
    """

    def __init__(self, gain=1.0):
        self.gain = _gain_value(gain)

    def sample(self, shape):
        if _ndim(shape) < 2:
            raise RuntimeError("Orthogonal needs a shape of at least 2 dimensions, "
                               "got {!r}".format(shape))
        matrix_shape = (shape[0], np.prod(shape[1:]))
        gaussian = get_rng().normal(0.0, 1.0, matrix_shape)
        left, _, right = np.linalg.svd(gaussian, full_matrices=False)
        # thin SVD: left is (m, min(m, n)), right is (min(m, n), n); exactly
        # one of them has the matrix's shape unless it is square (then left)
        q = left if left.shape == matrix_shape else right
        return floatX(self.gain * q.reshape(shape))

"""C3D (Tran et al., "Learning Spatiotemporal Features with 3D
Convolutional Networks", 2015), the Sports-1M network of the Lasagne Model
Zoo."""

from ..layers import InputLayer, DenseLayer, NonlinearityLayer, PadLayer
from ..layers.dnn import Conv3DDNNLayer, MaxPool3DDNNLayer
from ..nonlinearities import rectify, softmax

__all__ = ["build_c3d"]

# (layer names, filters); a max pool follows each group
_C3D_GROUPS = ((("conv1a",), 64), (("conv2a",), 128), (("conv3a", "conv3b"), 256),
               (("conv4a", "conv4b"), 512), (("conv5a", "conv5b"), 512))


def build_c3d(input_shape=(None, 3, 16, 112, 112), input_var=None):
    """Build C3D as the Lasagne Model Zoo's ``c3d.py`` did.

    Eight 3×3×3 convolutions (pad 1, ReLU, no filter flip) in five groups
    ``conv1a``; ``conv2a``; ``conv3a, conv3b``; ``conv4a, conv4b``;
    ``conv5a, conv5b`` with 64, 128, 256, 512 and 512 filters, each group
    followed by a max pool ``pool1`` ... ``pool5`` (``pool1`` is 1×2×2, the
    others 2×2×2, stride equal to the size). Before ``pool5`` a ``pad``
    layer adds one zero row and column at the end of the two spatial axes
    (Caffe's pooling rounds up; the values are ReLU outputs, so the zero
    never wins a max it should not). Then dense layers ``fc6-1`` (4096,
    ReLU), ``fc7-1`` (4096, ReLU), ``fc8-1`` (487 Sports-1M classes, the
    logits) and ``prob`` (softmax). As in the Model Zoo there is no
    dropout: the network is meant for inference and feature extraction.

    Layer names, order and parameter order are the Model Zoo's, so its
    pickle (a plain list of arrays) loads with
    ``set_all_param_values(net['prob'], values)``: ``conv1a.W, conv1a.b,
    ..., conv5b.b, fc6-1.W, ..., fc8-1.b``, 22 arrays, 79,991,015 numbers.

    Parameters
    ----------
    input_shape : tuple (default: ``(None, 3, 16, 112, 112)``)
        Shape of the input layer: batch, channels, frames, height, width.
        Clips of 16 frames of 112×112 pixels match the pretrained weights.
        Other sizes build as long as every pool keeps at least one window
        (at least 16 frames and 16×16 pixels); ``fc6-1`` then has another
        number of inputs.
    input_var : torch.Tensor, optional
        A default input tensor for the input layer.

    Returns
    -------
    dict
        Layer name → layer; each layer's ``name`` is its key.

    Examples
    --------
    >>> from lasagne.models import build_c3d
    >>> net = build_c3d()
    >>> net['pool5'].output_shape
    (None, 512, 1, 4, 4)
    """
    net = {}
    net["input"] = layer = InputLayer(input_shape, input_var=input_var, name="input")
    for group, (names, filters) in enumerate(_C3D_GROUPS, start=1):
        for name in names:
            net[name] = layer = Conv3DDNNLayer(layer, filters, (3, 3, 3), pad=1,
                                               nonlinearity=rectify, flip_filters=False,
                                               name=name)
        if group == len(_C3D_GROUPS):
            net["pad"] = layer = PadLayer(layer, width=[(0, 1), (0, 1)], batch_ndim=3,
                                          name="pad")
        pool = (1, 2, 2) if group == 1 else (2, 2, 2)
        name = "pool%d" % group
        net[name] = layer = MaxPool3DDNNLayer(layer, pool_size=pool, stride=pool, name=name)
    net["fc6-1"] = DenseLayer(layer, num_units=4096, nonlinearity=rectify, name="fc6-1")
    net["fc7-1"] = DenseLayer(net["fc6-1"], num_units=4096, nonlinearity=rectify, name="fc7-1")
    net["fc8-1"] = DenseLayer(net["fc7-1"], num_units=487, nonlinearity=None, name="fc8-1")
    net["prob"] = NonlinearityLayer(net["fc8-1"], softmax, name="prob")
    return net

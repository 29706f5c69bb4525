"""VGG-16 (configuration D of Simonyan & Zisserman, "Very Deep Convolutional
Networks for Large-Scale Image Recognition", 2014) in the Lasagne Model
Zoo's layout."""

from ..layers import InputLayer, DenseLayer, DropoutLayer, NonlinearityLayer
from ..layers.dnn import Conv2DDNNLayer, MaxPool2DDNNLayer
from ..nonlinearities import softmax

__all__ = ["build_vgg16"]

# (block, number of 3x3 convolutions, filters); a 2x2 max pool follows each block
_VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def build_vgg16(input_shape=(None, 3, 224, 224), input_var=None):
    """Build VGG-16 as the Lasagne Model Zoo's ``vgg16.py`` did.

    Thirteen 3×3 convolutions (pad 1, ReLU, no filter flip) in five blocks,
    each block closed by a 2×2 max pool, then three dense layers (4096,
    4096, 1000 units) with dropout ``p=0.5`` after the first two, and a
    softmax. The layers are named, ordered and parametrised like the Model
    Zoo's, so its pickle loads directly::

        net = build_vgg16()
        lasagne.layers.set_all_param_values(net['prob'], model['param values'])

    (the pickle also holds ``'synset words'`` and ``'mean value'``, the BGR
    mean pixel to subtract). Its parameters are, in order,
    ``conv1_1.W, conv1_1.b, ..., conv5_3.b, fc6.W, fc6.b, fc7.W, fc7.b,
    fc8.W, fc8.b``: 32 arrays, 138,357,544 numbers.

    The Model Zoo used the core ``Pool2DLayer(..., 2)``; on the even sizes
    VGG-16 sees it computes exactly what ``MaxPool2DDNNLayer(2)`` computes.

    Parameters
    ----------
    input_shape : tuple (default: ``(None, 3, 224, 224)``)
        Shape of the input layer. The convolutional part works for any
        size divisible by 32; ``fc6`` then has ``512 * (H/32) * (W/32)``
        inputs, so only 224×224 matches the pretrained weights.
    input_var : torch.Tensor, optional
        A default input tensor for the input layer.

    Returns
    -------
    dict
        Layer name → layer: ``'input'``, ``'conv1_1'``, ``'conv1_2'``,
        ``'pool1'``, ..., ``'conv5_3'``, ``'pool5'``, ``'fc6'``,
        ``'fc6_dropout'``, ``'fc7'``, ``'fc7_dropout'``, ``'fc8'`` (the
        logits) and ``'prob'`` (the softmax). Each layer's ``name`` is its
        key.

    Examples
    --------
    >>> from lasagne.models import build_vgg16
    >>> net = build_vgg16()
    >>> net['fc8'].output_shape
    (None, 1000)
    """
    net = {}
    net['input'] = layer = InputLayer(input_shape, input_var=input_var, name='input')
    for block, depth, filters in _VGG16_BLOCKS:
        for i in range(1, depth + 1):
            name = 'conv{}_{}'.format(block, i)
            net[name] = layer = Conv2DDNNLayer(layer, filters, 3, pad=1, flip_filters=False,
                                               name=name)
        name = 'pool{}'.format(block)
        net[name] = layer = MaxPool2DDNNLayer(layer, 2, name=name)
    net['fc6'] = DenseLayer(layer, num_units=4096, name='fc6')
    net['fc6_dropout'] = DropoutLayer(net['fc6'], p=0.5, name='fc6_dropout')
    net['fc7'] = DenseLayer(net['fc6_dropout'], num_units=4096, name='fc7')
    net['fc7_dropout'] = DropoutLayer(net['fc7'], p=0.5, name='fc7_dropout')
    net['fc8'] = DenseLayer(net['fc7_dropout'], num_units=1000, nonlinearity=None, name='fc8')
    net['prob'] = NonlinearityLayer(net['fc8'], softmax, name='prob')
    return net

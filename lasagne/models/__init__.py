"""Model Zoo networks, written as the original Lasagne Model Zoo wrote them.

Each builder returns a dict of named layers (``net['conv1_1']`` ...
``net['prob']``) with the Model Zoo's layer names, layer order and
parameter order, built from the ``dnn`` layers, so that a Model Zoo pickle
loads unchanged (:mod:`lasagne.serialization` reads it without running code
from it)::

    import lasagne
    from lasagne.models import build_vgg16
    from lasagne.serialization import load_model_zoo

    net = build_vgg16()
    model = load_model_zoo('vgg16.pkl')
    lasagne.layers.set_all_param_values(net['prob'], model['param values'])
    prob = lasagne.layers.get_output(net['prob'], images, deterministic=True)

(``lasagne.serialization.load_params(net['prob'], path)`` does the same in
one call, and also reads C3D's pickle, a plain list of arrays.)

- :func:`build_vgg16`: VGG-16 (ILSVRC, 224×224).
- :func:`build_resnet50`: ResNet-50 from MSRA's Caffe model
  (``variant='caffe'``), or in torchvision's v1.5 layout (``'v1.5'``).
- :func:`build_c3d`: C3D for Sports-1M video clips (16×112×112, 487 classes).
- :func:`vgg16_from_torchvision`, :func:`resnet50_from_torchvision`: load
  torchvision weights; :func:`load_state_dict` does the same for any
  PyTorch state dict through a key table (see :mod:`lasagne.models.convert`).

To use a network as a ``torch.nn.Module`` (``.to(device)``, ``.eval()``,
``torch.compile``, DDP), wrap its output layer::

    from lasagne.network import Network
    model = Network(net['prob']).to('cuda').eval()
    prob = model(images)
"""

from .vgg import build_vgg16
from .resnet import build_resnet50
from .c3d import build_c3d
from .convert import (load_state_dict, vgg16_from_torchvision, resnet50_from_torchvision,
                      torchvision_vgg16_mapping, torchvision_resnet50_mapping)

__all__ = ["build_vgg16", "build_resnet50", "build_c3d", "load_state_dict",
           "vgg16_from_torchvision", "resnet50_from_torchvision", "torchvision_vgg16_mapping",
           "torchvision_resnet50_mapping"]

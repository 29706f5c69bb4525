"""lasagne-torch: Lasagne's layer library on PyTorch."""

from . import utils  # noqa: F401
from . import random  # noqa: F401
from . import nonlinearities  # noqa: F401
from . import init  # noqa: F401
from . import layers  # noqa: F401
from . import objectives  # noqa: F401
from . import regularization  # noqa: F401
from .network import Network  # noqa: F401
from . import serialization  # noqa: F401

__version__ = "0.1.0"

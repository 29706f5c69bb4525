"""Lasagne's layers and the helpers that work on layer graphs.

``lasagne.layers.dnn`` and ``lasagne.layers.corrmm`` are not imported here;
import them explicitly, as with the original.
"""

from .base import *  # noqa: F401,F403
from .input import *  # noqa: F401,F403
from .helper import *  # noqa: F401,F403
from .summary import *  # noqa: F401,F403
from .dense import *  # noqa: F401,F403
from .special import *  # noqa: F401,F403
from .noise import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403
from .merge import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403

"""Layers with a guaranteed fast GPU path: cuDNN convolution and batch
normalization, and our own pooling and spatial pyramid pooling kernels.

Import this module explicitly (``import lasagne.layers.dnn``); it is not part
of ``lasagne.layers``. Unlike the original, importing it never fails for lack
of a GPU: on a CPU every layer computes the same function through the
portable path. On CUDA the "dnn" promise is kept: convolution and batch
normalization are computed by cuDNN, and a missing or disabled cuDNN is a
clear error, never a silent slow fallback.

The layers reuse the core layers' argument handling and shape arithmetic;
each class here only fixes the algorithm, the defaults and the extra checks
of the original dnn layer.
"""

__all__ = []

# --- convolution: Conv2DDNNLayer, Conv3DDNNLayer -----------------------------

# --- pooling: Pool2DDNNLayer, MaxPool2DDNNLayer, Pool3DDNNLayer, MaxPool3DDNNLayer,
#     SpatialPyramidPoolingDNNLayer ----------------------------------------------

# --- batch normalization: BatchNormDNNLayer, batch_norm_dnn ----------------------

"""Pure tensor operations behind the layers: convolution, pooling, spatial
pyramid pooling and batch normalization, each with a portable reference path
and, where it pays, a GPU fast path."""

"""Benchmarks of lasagne-torch on a CUDA GPU (run ``python -m bench.run``)."""

#!/usr/bin/env python3
"""MNIST with lasagne-torch: the port of ``mnist_theano.py``, the "after"
script of the porting guide (docs/porting.rst shows the two side by side).

The data loading, the model definition, the training loop and the saving
are unchanged; Theano's symbolic variables and compiled functions became
two small Python functions around ``get_output`` and a ``torch.optim``
optimizer. It runs on the CPU, or on CUDA when present.
"""
# -- imports --
import gzip
import os
import sys
import time

import numpy as np
import torch

import lasagne
from lasagne.layers import InputLayer, DenseLayer, DropoutLayer
from lasagne.layers.dnn import Conv2DDNNLayer as ConvLayer
from lasagne.layers.dnn import MaxPool2DDNNLayer as PoolLayer
from lasagne.nonlinearities import softmax
from lasagne.objectives import categorical_crossentropy
from lasagne.regularization import regularize_network_params, l2

# -- data --
MIRROR = 'https://ossci-datasets.s3.amazonaws.com/mnist/'


def load_dataset(folder='mnist'):
    """MNIST as float32 images (n, 1, 28, 28) in [0, 1] and int32 labels:
    50,000 for training, 10,000 for validation, 10,000 for testing."""
    def fetch(name):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            from urllib.request import urlretrieve
            if not os.path.isdir(folder):
                os.makedirs(folder)
            urlretrieve(MIRROR + name, path)
        with gzip.open(path, 'rb') as f:
            return f.read()

    def images(name):
        raw = np.frombuffer(fetch(name), np.uint8, offset=16)
        return raw.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255)

    def labels(name):
        return np.frombuffer(fetch(name), np.uint8, offset=8).astype(np.int32)

    X = images('train-images-idx3-ubyte.gz')
    y = labels('train-labels-idx1-ubyte.gz')
    X_test = images('t10k-images-idx3-ubyte.gz')
    y_test = labels('t10k-labels-idx1-ubyte.gz')
    return X[:-10000], y[:-10000], X[-10000:], y[-10000:], X_test, y_test


def iterate_minibatches(inputs, targets, batch_size, shuffle=False):
    n = len(inputs)
    order = np.random.permutation(n) if shuffle else np.arange(n)
    for start in range(0, len(inputs) - batch_size + 1, batch_size):
        part = order[start:start + batch_size]
        yield inputs[part], targets[part]


# -- model --
def build_cnn(input_var=None):
    net = InputLayer((None, 1, 28, 28), input_var=input_var)
    net = ConvLayer(net, num_filters=32, filter_size=5)
    net = PoolLayer(net, pool_size=2)
    net = ConvLayer(net, num_filters=32, filter_size=5)
    net = PoolLayer(net, pool_size=2)
    net = DenseLayer(DropoutLayer(net, p=0.5), num_units=256)
    net = DenseLayer(DropoutLayer(net, p=0.5), num_units=10,
                     nonlinearity=softmax)
    return net


# -- training and validation functions --
def compile_functions(network):
    params = lasagne.layers.get_all_params(network, trainable=True)
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True)

    def train_fn(inputs, targets):
        prediction = lasagne.layers.get_output(network, inputs)
        loss = categorical_crossentropy(prediction, targets).mean()
        loss = loss + 1e-4 * regularize_network_params(network, l2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    @torch.no_grad()
    def val_fn(inputs, targets):
        test_prediction = lasagne.layers.get_output(network, inputs,
                                                    deterministic=True)
        targets = torch.as_tensor(targets, device=test_prediction.device)
        test_loss = categorical_crossentropy(test_prediction, targets).mean()
        test_acc = torch.eq(torch.argmax(test_prediction, dim=1),
                            targets).float().mean()
        return test_loss.item(), test_acc.item()

    return train_fn, val_fn


# -- main --
def main(num_epochs=20):
    # was: THEANO_FLAGS=device=cuda
    torch.set_default_device('cuda' if torch.cuda.is_available() else 'cpu')
    X_train, y_train, X_val, y_val, X_test, y_test = load_dataset()
    network = build_cnn()
    train_fn, val_fn = compile_functions(network)

    # training loop
    for epoch in range(num_epochs):
        start = time.time()
        train_loss, batches = 0, 0
        for inputs, targets in iterate_minibatches(X_train, y_train, 500,
                                                   shuffle=True):
            train_loss += train_fn(inputs, targets)
            batches += 1
        val_loss, val_acc, val_batches = 0, 0, 0
        for inputs, targets in iterate_minibatches(X_val, y_val, 500):
            loss, acc = val_fn(inputs, targets)
            val_loss += loss
            val_acc += acc
            val_batches += 1
        print("epoch {} of {} took {:.1f}s: train loss {:.4f}, "
              "validation loss {:.4f}, validation accuracy {:.2f}%".format(
                  epoch + 1, num_epochs, time.time() - start,
                  train_loss / batches, val_loss / val_batches,
                  100 * val_acc / val_batches))

    # save, and load again
    np.savez('model.npz', *lasagne.layers.get_all_param_values(network))
    with np.load('model.npz') as f:
        values = [f['arr_%d' % i] for i in range(len(f.files))]
    lasagne.layers.set_all_param_values(network, values)


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)

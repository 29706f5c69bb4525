#!/usr/bin/env python
"""MNIST with Theano and the original Lasagne: the "before" script of the
porting guide.

A small convolutional network trained with Nesterov momentum, written the
way Lasagne code was written around 2016. It needs Theano, a CUDA build of
Theano's era and the original Lasagne, none of which install on a current
system. Its port, ``mnist_torch.py`` beside this file, runs on
lasagne-torch; the two are shown side by side in docs/porting.rst.
"""
# -- imports --
from __future__ import print_function

import gzip
import os
import sys
import time

import numpy as np
import theano
import theano.tensor as T

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
def compile_functions(network, input_var, target_var):
    prediction = lasagne.layers.get_output(network)
    loss = categorical_crossentropy(prediction, target_var).mean()
    loss = loss + 1e-4 * regularize_network_params(network, l2)
    params = lasagne.layers.get_all_params(network, trainable=True)
    updates = lasagne.updates.nesterov_momentum(
        loss, params, learning_rate=0.01, momentum=0.9)
    train_fn = theano.function([input_var, target_var], loss, updates=updates)

    test_prediction = lasagne.layers.get_output(network, deterministic=True)
    test_loss = categorical_crossentropy(test_prediction, target_var).mean()
    test_acc = T.mean(T.eq(T.argmax(test_prediction, axis=1), target_var),
                      dtype=theano.config.floatX)
    val_fn = theano.function([input_var, target_var], [test_loss, test_acc])
    return train_fn, val_fn


# -- main --
def main(num_epochs=20):
    X_train, y_train, X_val, y_val, X_test, y_test = load_dataset()
    input_var = T.tensor4('inputs')
    target_var = T.ivector('targets')
    network = build_cnn(input_var)
    train_fn, val_fn = compile_functions(network, input_var, target_var)

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

#!/usr/bin/env python3
"""Train a small convolutional network on scikit-learn's handwritten digits.

The network is written as Lasagne code always was: a dict of layers built
from the dnn layer module (convolution with batch normalization, max
pooling, spatial pyramid pooling), dense layers and dropout. Training is
plain PyTorch: the loss comes from ``get_output`` and ``lasagne.objectives``,
the parameters from ``get_all_params(..., trainable=True)``, and
``torch.optim.Adam`` updates them; there is no compiled training function.

After training, the weights are saved to an ``.npz`` file, loaded into a
freshly built network and evaluated again: the predictions must be the same.

    python3 examples/digits.py                     # CPU, or CUDA when present
    python3 examples/digits.py --device cuda --epochs 20 --plot curves.png

The data set (1,797 images of 8x8 pixels, bundled with scikit-learn) is split
once into 1,437 training and 360 test images, the same split for every seed.
"""

import argparse
import sys
import time

import numpy as np
import torch

import lasagne
from lasagne.layers import InputLayer, DenseLayer, dropout
from lasagne.layers import get_output, get_all_params, count_params
from lasagne.layers.dnn import Conv2DDNNLayer as ConvLayer
from lasagne.layers.dnn import MaxPool2DDNNLayer as PoolLayer
from lasagne.layers.dnn import SpatialPyramidPoolingDNNLayer as SPPLayer
from lasagne.layers.dnn import batch_norm_dnn as batch_norm
from lasagne.nonlinearities import softmax
from lasagne.objectives import aggregate, categorical_accuracy, categorical_crossentropy
from lasagne.regularization import l2, regularize_network_params
from lasagne.serialization import load_params, save_params

try:
    from tqdm import tqdm
except ImportError:  # the bar is a nicety: train without it
    tqdm = None


# ----------------------------------------------------------------------------- data

def load_data(test_size=360):
    """The digits as float32 images ``(n, 1, 8, 8)`` in [0, 1] and int64
    labels, split into a fixed, class-stratified train and test set."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, np.newaxis]
    labels = digits.target.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=0)
    return X_train, y_train, X_test, y_test


def iterate_minibatches(num_items, batch_size, rng):
    """Index tensors of shuffled minibatches covering ``range(num_items)``."""
    order = torch.from_numpy(rng.permutation(num_items))
    for start in range(0, num_items, batch_size):
        yield order[start:start + batch_size]


# ----------------------------------------------------------------------------- model

def build_model():
    """The network as a dict of layers, in the style of the Lasagne Model Zoo.

    Two 3x3 convolutions with batch normalization on the 8x8 image, 2x2 max
    pooling, a third convolution on the 4x4 maps, spatial pyramid pooling
    over 4x4, 2x2 and 1x1 bins (21 values per channel), then a dense layer
    with dropout and a softmax classifier.
    """
    net = {}
    net['input'] = InputLayer((None, 1, 8, 8), name='input')
    net['conv1'] = batch_norm(ConvLayer(net['input'], 32, 3, pad='same', name='conv1'))
    net['conv2'] = batch_norm(ConvLayer(net['conv1'], 32, 3, pad='same', name='conv2'))
    net['pool2'] = PoolLayer(net['conv2'], pool_size=2, name='pool2')
    net['conv3'] = batch_norm(ConvLayer(net['pool2'], 64, 3, pad='same', name='conv3'))
    net['spp'] = SPPLayer(net['conv3'], pool_dims=[4, 2, 1], name='spp')
    net['fc4'] = DenseLayer(dropout(net['spp'], p=0.25), 128, name='fc4')
    net['prob'] = DenseLayer(dropout(net['fc4'], p=0.5), 10, nonlinearity=softmax,
                             name='prob')
    return net


def build_on(device):
    """Build the network with its parameters on ``device``."""
    with torch.device(device):
        return build_model()


# ----------------------------------------------------------------------------- training

def evaluate(output_layer, X, y, batch_size=500):
    """Mean loss, accuracy and predicted classes on ``(X, y)``, with dropout
    off and batch normalization on its running averages."""
    losses, correct, predicted = [], [], []
    with torch.no_grad():
        for start in range(0, len(X), batch_size):
            inputs, targets = X[start:start + batch_size], y[start:start + batch_size]
            prob = get_output(output_layer, inputs, deterministic=True)
            losses.append(categorical_crossentropy(prob, targets))
            correct.append(categorical_accuracy(prob, targets))
            predicted.append(prob.argmax(dim=1))
    loss = torch.cat(losses).mean().item()
    accuracy = torch.cat(correct).mean().item()
    return loss, accuracy, torch.cat(predicted).cpu().numpy()


def train_step(output_layer, optimizer, inputs, targets, l2_penalty):
    """One update of the parameters on one minibatch; returns the loss."""
    prob = get_output(output_layer, inputs)  # dropout on, batch norm on batch statistics
    loss = aggregate(categorical_crossentropy(prob, targets), mode='mean')
    if l2_penalty:
        loss = loss + l2_penalty * regularize_network_params(output_layer, l2)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def train(net, data, epochs, batch_size, lr, l2_penalty, seed, show_progress):
    """Train ``net`` with Adam; return the per-epoch history."""
    X_train, y_train, X_test, y_test = data
    output_layer = net['prob']
    params = get_all_params(output_layer, trainable=True)
    optimizer = torch.optim.Adam(params, lr=lr)
    # the learning rate falls from lr to 0 along a half cosine, for a steady end
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    shuffle_rng = np.random.RandomState(seed)

    history = {'train_loss': [], 'test_loss': [], 'test_accuracy': [], 'seconds': []}
    bar = progress_bar(epochs * -(-len(X_train) // batch_size), show_progress)
    start_time = time.perf_counter()
    for epoch in range(1, epochs + 1):
        bar.set_description('epoch {}/{}'.format(epoch, epochs))
        total, seen = 0.0, 0
        for index in iterate_minibatches(len(X_train), batch_size, shuffle_rng):
            index = index.to(X_train.device)
            loss = train_step(output_layer, optimizer, X_train[index], y_train[index],
                              l2_penalty)
            total += loss * len(index)
            seen += len(index)
            bar.set_postfix(loss='{:.4f}'.format(total / seen), refresh=False)
            bar.update()
        schedule.step()
        test_loss, test_accuracy, _ = evaluate(output_layer, X_test, y_test)
        history['train_loss'].append(total / seen)
        history['test_loss'].append(test_loss)
        history['test_accuracy'].append(test_accuracy)
        history['seconds'].append(time.perf_counter() - start_time)
        if show_progress:
            write('epoch {:3d}/{}  train loss {:.4f}  test loss {:.4f}  test accuracy {:6.2f}%  '
                  '({:.1f} s)'.format(epoch, epochs, total / seen, test_loss,
                                      100 * test_accuracy, history['seconds'][-1]))
    bar.close()
    return history


class _NoBar(object):
    """Stands in for a tqdm bar when tqdm is not installed."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def progress_bar(total, show):
    """A tqdm bar on stderr, shown when that is a terminal."""
    if tqdm is None:
        return _NoBar()
    return tqdm(total=total, unit='batch', leave=False, dynamic_ncols=True,
                disable=None if show else True)


def write(line):
    """Print a line to stdout without breaking the progress bar."""
    if tqdm is None:
        print(line)
    else:
        tqdm.write(line, file=sys.stdout)


def plot_curves(history, path):
    """Write a PNG of the loss and accuracy curves (needs matplotlib)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history['train_loss']) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history['train_loss'], label='train (dropout on, with L2 term)')
    ax_loss.plot(epochs, history['test_loss'], label='test')
    ax_loss.set_xlabel('epoch')
    ax_loss.set_ylabel('cross-entropy')
    ax_loss.set_yscale('log')
    ax_loss.legend()
    ax_loss.set_title('loss')
    ax_acc.plot(epochs, 100 * np.asarray(history['test_accuracy']), color='C1')
    ax_acc.set_xlabel('epoch')
    ax_acc.set_ylabel('test accuracy (%)')
    ax_acc.set_title('test accuracy')
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

def pick_device(name):
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a CNN of Lasagne dnn layers on scikit-learn's digits.")
    parser.add_argument('--epochs', type=int, default=15,
                        help='passes over the training set (default: %(default)s)')
    parser.add_argument('--batch-size', type=int, default=32,
                        help='minibatch size (default: %(default)s)')
    parser.add_argument('--lr', type=float, default=2e-3,
                        help='Adam learning rate (default: %(default)s)')
    parser.add_argument('--l2', type=float, default=1e-4,
                        help='L2 penalty on the weights, 0 for none (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed for initial weights, dropout and shuffling '
                             '(default: %(default)s)')
    parser.add_argument('--device', default='auto',
                        help="'auto' (CUDA when present, else CPU), 'cpu', 'cuda', "
                             "'cuda:1', ... (default: %(default)s)")
    parser.add_argument('--threads', type=int, default=1,
                        help='CPU threads for PyTorch, 0 for its default (one per core). '
                             'Batches of 8x8 images are too small to gain from more than one, '
                             'and extra threads slow training down badly when other programs '
                             'compete for the cores (default: %(default)s)')
    parser.add_argument('--out', default='digits_cnn.npz',
                        help='where to save the trained weights (default: %(default)s)')
    parser.add_argument('--plot', metavar='PNG', default=None,
                        help='write the training curves to this PNG file (needs matplotlib)')
    parser.add_argument('--quiet', action='store_true',
                        help='print nothing but errors')
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.threads < 0:
        parser.error('--epochs and --batch-size must be positive, --threads at least 0')
    return args


def main(argv=None):
    """Run the whole job; return a dict of results (used by the tests)."""
    args = parse_args(argv)
    device = pick_device(args.device)
    threads = torch.get_num_threads()
    if device.type == 'cpu' and args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args, device)
    finally:
        torch.set_num_threads(threads)


def run(args, device):
    say = (lambda line: None) if args.quiet else write

    # One seed for the initial weights (numpy, as Lasagne did) and dropout (torch).
    lasagne.random.seed(args.seed)
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    X_train, y_train, X_test, y_test = (torch.from_numpy(a).to(device) for a in load_data())
    data = (X_train, y_train, X_test, y_test)
    say('digits: {} training and {} test images of 8x8 pixels, on {}'.format(
        len(X_train), len(X_test), device))

    net = build_on(device)
    say('network: {} layers, {:,} parameters'.format(
        len(lasagne.layers.get_all_layers(net['prob'])), count_params(net['prob'])))
    history = train(net, data, args.epochs, args.batch_size, args.lr, args.l2, args.seed,
                    show_progress=not args.quiet)
    test_loss, accuracy, predictions = evaluate(net['prob'], X_test, y_test)
    say('final test accuracy {:.2f}% after {} epochs in {:.1f} s'.format(
        100 * accuracy, args.epochs, history['seconds'][-1]))

    # Save, reload into a freshly built network, and check it predicts the same.
    out = args.out if args.out.endswith('.npz') else args.out + '.npz'  # as np.savez names it
    save_params(net['prob'], out)
    fresh = build_on(device)
    load_params(fresh['prob'], out)
    _, reloaded_accuracy, reloaded_predictions = evaluate(fresh['prob'], X_test, y_test)
    if not np.array_equal(predictions, reloaded_predictions):
        raise RuntimeError('the network reloaded from {} predicts differently ({:.2f}% vs '
                           '{:.2f}%)'.format(out, 100 * reloaded_accuracy,
                                             100 * accuracy))
    say('saved the weights to {}; reloaded into a new network: test accuracy {:.2f}% '
        '(same predictions)'.format(out, 100 * reloaded_accuracy))

    if args.plot:
        plot_curves(history, args.plot)
        say('wrote the training curves to {}'.format(args.plot))

    return {
        'history': history,
        'test_loss': test_loss,
        'test_accuracy': accuracy,
        'predictions': predictions,
        'reloaded_accuracy': reloaded_accuracy,
        'reloaded_predictions': reloaded_predictions,
        'device': str(device),
        'out': out,
        'network': net,
    }


if __name__ == '__main__':
    main()

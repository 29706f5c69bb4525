"""A printed table of a network's layers, shapes and parameter counts."""

from .helper import get_all_layers, get_output_shape

__all__ = ["summary"]


def _format_shape(shape):
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def _format_count(n):
    return "{:,}".format(n)


def summary(layer_or_layers, input_shapes=None, print_fn=print):
    """Print and return a table of a network's layers.

    One row per layer, in :func:`get_all_layers` order (inputs before the
    layers they feed, which is also the order of :func:`get_all_params`):
    its index, class, name, output shape and the number of scalar
    parameters it holds. A parameter shared by several layers is counted
    once, in the row of the first layer that holds it; later rows mark it
    with ``*``. The table ends with the totals: all parameters (what
    :func:`count_params` counts, batch-norm statistics included), the
    trainable ones, and the rest.

    Parameters
    ----------
    layer_or_layers : Layer or list of Layer
        The network's output layer(s).
    input_shapes : None, tuple or dict (default: None)
        Concrete input shape(s) to show the shapes for, as in
        :func:`get_output_shape` (e.g. ``(8, 3, 224, 224)`` to fill in the
        batch size); ``None`` shows the shapes known at build time.
    print_fn : callable or None (default: print)
        Called with the table as one string; ``None`` prints nothing.

    Returns
    -------
    str
        The table.

    Examples
    --------
    >>> from lasagne.layers import InputLayer, DenseLayer, summary
    >>> l_in = InputLayer((None, 10), name='input')
    >>> l_out = DenseLayer(l_in, num_units=3, name='out')
    >>> text = summary(l_out, print_fn=None)
    >>> print(text)
    #  Layer       Name   Output shape  Params
    -  ----------  -----  ------------  ------
    0  InputLayer  input  (None, 10)         0
    1  DenseLayer  out    (None, 3)         33
    Total params: 33
    Trainable params: 33
    Non-trainable params: 0
    """
    layers = get_all_layers(layer_or_layers)
    if input_shapes is None:
        shapes = [layer.output_shape for layer in layers]
    else:
        shapes = get_output_shape(layers, input_shapes)

    seen = set()
    total = trainable = 0
    any_shared = False
    rows = []
    for index, (layer, shape) in enumerate(zip(layers, shapes)):
        own = 0
        shared = False
        for param, tags in layer.params.items():
            if param in seen:
                shared = True
                continue
            seen.add(param)
            own += param.numel()
            if 'trainable' in tags:
                trainable += param.numel()
        total += own
        any_shared |= shared
        rows.append([str(index), type(layer).__name__,
                     "" if layer.name is None else str(layer.name),
                     _format_shape(shape), _format_count(own), shared])
    # the mark of a layer holding shared parameters trails its count, so
    # that the digits of all counts stay aligned
    for row in rows:
        row[4] += ("*" if row.pop() else " ") if any_shared else ""

    header = ("#", "Layer", "Name", "Output shape", "Params")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    right = (True, False, False, False, True)

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right)).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in rows)
    if any_shared:
        out.append("* also holds parameters shared with an earlier layer (counted there)")
    out.append("Total params: " + _format_count(total))
    out.append("Trainable params: " + _format_count(trainable))
    out.append("Non-trainable params: " + _format_count(total - trainable))
    text = "\n".join(out)
    if print_fn is not None:
        print_fn(text)
    return text

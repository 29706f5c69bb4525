"""lasagne.layers.summary: the per-layer table and its totals."""

import re

from lasagne.layers import (InputLayer, DenseLayer, Conv2DLayer, DropoutLayer, BatchNormLayer,
                            ConcatLayer, FlattenLayer, count_params, get_all_layers, summary)

ROW = re.compile(r"^\s*(\d+)\s{2,}(\S+)\s{2,}(\S*)\s{2,}(\(.*\))\s{2,}([\d,]+)(\*?)$")


def parse(text):
    """Rows as (index, class, name, shape, count, shared) and the totals."""
    rows, totals = [], {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            rows.append((int(m.group(1)), m.group(2), m.group(3), m.group(4),
                         int(m.group(5).replace(",", "")), m.group(6) == "*"))
        elif ": " in line and line.split(": ")[0].endswith("params"):
            label, value = line.split(": ")
            totals[label] = int(value.replace(",", ""))
    return rows, totals


def small_net():
    l_in = InputLayer((None, 3, 8, 8), name="input")
    conv = Conv2DLayer(l_in, 4, 3, name="conv")                      # 4*3*3*3 + 4 = 112
    bn = BatchNormLayer(conv, name="bn")                             # 4 beta/gamma + 8 stats
    flat = FlattenLayer(bn, name="flat")
    drop = DropoutLayer(flat, p=0.5)                                 # unnamed
    fc = DenseLayer(drop, 10, name="fc")                             # 144*10 + 10 = 1450
    return l_in, conv, bn, fc


def test_rows_follow_get_all_layers_with_own_counts_and_shapes():
    l_in, conv, bn, fc = small_net()
    text = summary(fc, print_fn=None)
    rows, totals = parse(text)
    layers = get_all_layers(fc)
    assert [r[0] for r in rows] == list(range(len(layers)))
    assert [r[1] for r in rows] == [type(l).__name__ for l in layers]
    assert [r[2] for r in rows] == ["input", "conv", "bn", "flat", "", "fc"]
    assert [r[3] for r in rows] == ["(None, 3, 8, 8)", "(None, 4, 6, 6)", "(None, 4, 6, 6)",
                                    "(None, 144)", "(None, 144)", "(None, 10)"]
    assert [r[4] for r in rows] == [0, 112, 16, 0, 0, 1450]
    assert not any(r[5] for r in rows)
    assert totals == {"Total params": 1578, "Trainable params": 1570,
                      "Non-trainable params": 8}
    assert totals["Total params"] == count_params(fc)
    assert totals["Trainable params"] == count_params(fc, trainable=True)


def test_shared_parameters_counted_once_and_marked():
    l_in = InputLayer((None, 6))
    a = DenseLayer(l_in, 6, name="a")                                # 36 + 6
    b = DenseLayer(a, 6, W=a.W, name="b")                            # W tied, own b: 6
    c = DenseLayer(b, 6, W=a.W, b=b.b, name="c")                     # nothing of its own
    rows, totals = parse(summary(c, print_fn=None))
    assert [(r[2], r[4], r[5]) for r in rows] == [("", 0, False), ("a", 42, False),
                                                  ("b", 6, True), ("c", 0, True)]
    assert totals["Total params"] == 48 == count_params(c)
    assert "shared" in summary(c, print_fn=None)


def test_concrete_input_shapes_and_several_outputs():
    l_in = InputLayer((None, 5), name="x")
    a = DenseLayer(l_in, 3, name="a")
    b = DenseLayer(l_in, 2, name="b")
    cat = ConcatLayer([a, b], name="cat")
    rows, totals = parse(summary([cat, a], input_shapes=(7, 5), print_fn=None))
    assert [r[2] for r in rows] == [l.name for l in get_all_layers([cat, a])]
    shapes = {r[2]: r[3] for r in rows}
    assert shapes == {"x": "(7, 5)", "a": "(7, 3)", "b": "(7, 2)", "cat": "(7, 5)"}
    assert totals["Total params"] == 18 + 12


def test_prints_through_print_fn_and_returns_the_same_text(capsys):
    _, _, _, fc = small_net()
    text = summary(fc)
    assert capsys.readouterr().out == text + "\n"
    got = []
    assert summary(fc, print_fn=got.append) == text
    assert got == [text]
    summary(fc, print_fn=None)
    assert capsys.readouterr().out == ""


def test_columns_are_aligned():
    _, _, _, fc = small_net()
    lines = summary(fc, print_fn=None).splitlines()
    header, rule = lines[0], lines[1]
    # the left-aligned columns (class, name, shape) start where their header
    # and their dashes start; numbers end where their dashes end
    starts = [m.start() for m in re.finditer(r"-+", rule)]
    ends = [m.end() for m in re.finditer(r"-+", rule)]
    assert [m.start() for m in re.finditer(r"\S+( \S+)?", header)][1:4] == starts[1:4]
    for line in lines[2:2 + 6]:
        assert len(line) == len(rule)
        for s in starts[1:]:
            assert line[s - 2:s] == "  "
        assert line[ends[0] - 1].isdigit() and line[-1].isdigit()

"""Sphinx configuration for the lasagne-torch documentation.

Build (from the repository root; the docs extra installs Sphinx and numpydoc):

    python3 -m pip install -q "torch==2.13.0" -e ".[docs]"
    python3 -m sphinx -W -b html docs docs/_build/html
"""

import os
import sys

# Document the checkout being built, installed or not.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

import lasagne  # noqa: E402

project = "lasagne-torch"
author = "the lasagne-torch developers"
copyright = "the lasagne-torch developers (MIT licence)"
version = release = lasagne.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

# numpydoc: one entry per documented member, no generated member tables
# (those need autosummary stub pages and warn about every inherited member).
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
# Signatures show defaults as written (lasagne.init.GlorotUniform(), not an
# object address).
autodoc_preserve_defaults = True
# Type hints, where a module has them, belong in the signature only.
autodoc_typehints = "signature"

templates_path = []
exclude_patterns = ["_build"]
master_doc = "index"
language = "en"
pygments_style = "sphinx"

html_theme = "alabaster"
html_theme_options = {
    "description": "Lasagne's layer library on PyTorch",
    "sidebar_width": "220px",
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_title = "lasagne-torch {}".format(release)


# -- "layers-by-file": the lasagne.layers reference, one section per file ----
#
# lasagne.layers re-exports its submodules' public names. The reference lists
# each name under the user-facing path (lasagne.layers.DenseLayer), grouped
# by the file that defines it, so a layer added to a submodule's __all__
# appears here without editing the docs.

import importlib  # noqa: E402
import importlib.util  # noqa: E402
import inspect  # noqa: E402
import re  # noqa: E402

from docutils.parsers.rst import Directive  # noqa: E402
from docutils.statemachine import StringList  # noqa: E402

SECTION_TITLES = {
    "base": "Base classes",
    "input": "Network input",
    "dense": "Dense layers",
    "conv": "Convolution",
    "pool": "Pooling",
    "normalization": "Normalization",
    "shape": "Shape manipulation",
    "merge": "Merging layers",
    "noise": "Noise and dropout",
    "special": "Special-purpose layers",
    "embedding": "Embedding",
    "local": "Local layers",
    "recurrent": "Recurrent layers",
    "helper": "Helper functions",
    "summary": "Network summary",
}


def _star_imported_submodules(package):
    """Submodules a package star-imports, in the order of its __init__."""
    source = inspect.getsource(package)
    return re.findall(r"^from \.(\w+) import \*", source, flags=re.M)


def _reference_lines(package_name):
    package = importlib.import_module(package_name)
    lines = []
    for sub in _star_imported_submodules(package):
        module = importlib.import_module("{}.{}".format(package_name, sub))
        names = getattr(module, "__all__", None)
        if not names:
            continue
        title = SECTION_TITLES.get(sub)
        if title is None:
            doc = (module.__doc__ or sub).strip().splitlines()[0]
            title = doc.rstrip(".")
        lines += [title, "-" * len(title), ""]
        for name in names:
            obj = getattr(package, name)
            path = "{}.{}".format(package_name, name)
            if inspect.isclass(obj) and obj.__name__ != name:
                lines += [".. py:data:: {}".format(path), "",
                          "   An alias of :class:`{}.{}`.".format(package_name, obj.__name__),
                          ""]
            elif inspect.isclass(obj):
                lines += [".. autoclass:: {}".format(path), "   :members:",
                          "   :show-inheritance:", ""]
            elif callable(obj) and getattr(obj, "__name__", name) != name:
                lines += [".. py:data:: {}".format(path), "",
                          "   An alias of :func:`{}.{}`.".format(package_name, obj.__name__),
                          ""]
            elif callable(obj):
                lines += [".. autofunction:: {}".format(path), ""]
            else:
                lines += [".. autodata:: {}".format(path), ""]
    return lines


class LayersByFile(Directive):
    """``.. layers-by-file:: lasagne.layers`` expands to the reference of
    every public name of the package, one section per submodule."""

    required_arguments = 1

    def run(self):
        lines = _reference_lines(self.arguments[0])
        source = self.state_machine.input_lines.source(
            self.lineno - self.state_machine.input_offset - 1)
        self.state_machine.insert_input(StringList(lines, source), source)
        return []


# -- "digits-summary": the summary table of the tutorial's network -----------

from docutils import nodes  # noqa: E402


class DigitsSummary(Directive):
    """``.. digits-summary::`` builds the network of examples/digits.py and
    inserts ``lasagne.layers.summary`` of it, so the tutorial always shows
    the current network."""

    def run(self):
        path = os.path.join(ROOT, "examples", "digits.py")
        try:
            spec = importlib.util.spec_from_file_location("_digits_example", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            net = module.build_model()
            text = lasagne.layers.summary(net["prob"], print_fn=None)
        except Exception as e:
            raise self.error("digits-summary: building the network of {} failed: {}: {}".format(
                path, type(e).__name__, e))
        return [nodes.literal_block(text, text)]


def setup(app):
    app.add_directive("layers-by-file", LayersByFile)
    app.add_directive("digits-summary", DigitsSummary)
    return {"parallel_read_safe": True}

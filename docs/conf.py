"""Sphinx configuration for the skrnafm documentation.

The build runs offline and with warnings as errors
(``python -m sphinx -W --keep-going -q -b html docs docs/_build/html``), so
no extension here may need the network.
"""

import re

import skrnafm

project = "skrnafm"
author = "skrnafm developers"
copyright = "skrnafm developers"
release = skrnafm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}

autosummary_generate = True
# Classes use _templates/autosummary/class.rst, which documents their own
# methods and leaves out the scikit-learn plumbing (get_params,
# set_*_request), whose docstrings link into scikit-learn's own docs.
templates_path = ["_templates"]
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# benchmarks/*.md are sections that benchmarks/assemble.py concatenates
# into benchmarks.md.
exclude_patterns = ["_build", "benchmarks/*"]
myst_heading_anchors = 3
html_theme = "alabaster"
html_title = f"skrnafm {release}"

# reStructuredText reads a word ending in "_" as a link reference, so the
# fitted attributes that docstrings list by name (``n_features_in_,
# gene_names_, ...``) become "Unknown target name" errors. This hook escapes
# such trailing underscores before numpydoc parses the docstring. Lines with
# backquotes are left alone, because their names are already literal. A
# raw docstring may continue such a list with a trailing backslash; those
# lines are joined first, as Python joins them in ordinary docstrings.
_TRAILING_UNDERSCORE = re.compile(r"(?<=\w)_(?=[\s,;:)]|$)")


def _escape_trailing_underscores(app, what, name, obj, options, lines):
    joined = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + line.lstrip()
        else:
            joined.append(line)
    lines[:] = [
        line if "`" in line else _TRAILING_UNDERSCORE.sub(r"\\_", line) for line in joined
    ]


def setup(app):
    # numpydoc parses docstrings at the default priority 500; run before it.
    app.connect("autodoc-process-docstring", _escape_trailing_underscores, priority=400)

"""Sphinx configuration for the skrnafm documentation."""

import skrnafm

project = "skrnafm"
author = "skrnafm developers"
release = skrnafm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "numpydoc",
]
autosummary_generate = True
numpydoc_show_class_members = False
exclude_patterns = ["_build"]
html_theme = "alabaster"

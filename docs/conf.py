"""Sphinx configuration for twisted-keyx's documentation.

Build the HTML (warnings are errors, as in CI)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

and the man pages (committed in docs/man/, installed by ``pip install .``)::

    sphinx-build -W --keep-going -b man -d docs/_build/doctrees docs docs/man
"""

import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted_keyx import __version__  # noqa: E402

project = "twisted-keyx"
author = "The twisted-keyx developers"
copyright = "2026, The twisted-keyx developers"
version = release = __version__

extensions = ["sphinx.ext.autodoc"]
# Plain quotes: the man pages, committed, come out the same whichever
# builder ran first on the shared doctrees.
smartquotes = False

root_doc = "index"
exclude_patterns = ["_build", "man", "diagrams", "sequences"]
# A fixed date in the man pages, so that a rebuild gives the same files.
today = "2026"

html_theme = "alabaster"
html_title = f"twisted-keyx {release}"

autodoc_member_order = "bysource"
# Methods that override Twisted's keep their own docstring, or none.
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "show-inheritance": True}
# Docstrings are written as plain reST prose; names in them are not targets.
nitpicky = False

# (source, name, description, authors, section): one page per command.
man_pages = [
    ("reference/keyx-client", "keyx-client",
     "run the twisted-keyx handshakes as a client", [author], 1),
    ("reference/keyx-admin", "keyx-admin",
     "manage twisted-keyx users, keys, groups and diagrams", [author], 1),
    ("reference/keyx-lab", "keyx-lab",
     "attack the twisted-keyx handshakes on loopback", [author], 1),
    ("reference/twistd-keyx", "twistd-keyx",
     "the twisted-keyx daemon (twistd keyx)", [author], 1),
]
man_show_urls = False


def _copy_figures(app, exception):
    """The state diagrams and sequence charts, which pages link to by path."""
    if exception is not None or app.builder.format != "html":
        return
    for name in ("diagrams", "sequences"):
        shutil.copytree(os.path.join(HERE, name), os.path.join(app.outdir, name),
                        dirs_exist_ok=True)


def layers():
    """The packages, top to bottom, as setup.cfg's import-linter contract
    lists them (``a | b`` on one line: side by side, in that order)."""
    import configparser

    config = configparser.ConfigParser()
    config.read(os.path.join(os.path.dirname(HERE), "setup.cfg"))
    contract = config["importlinter:contract:layers"]
    # The layers are named within the contract's container (twisted_keyx).
    container = contract.get("containers", "").strip()
    packages = []
    for line in contract["layers"].split("\n"):
        packages += [f"{container}.{name.strip()}" if container else name.strip()
                     for name in line.split("|") if name.strip()]
    return packages


def _public_modules(package):
    import pkgutil
    import importlib

    module = importlib.import_module(package)
    names = [package]
    for info in pkgutil.iter_modules(module.__path__):
        if not info.name.startswith("_"):
            names.append(f"{package}.{info.name}")
    return names


def api_reference():
    """The reST of the API reference: one section per layer, autodoc per module."""
    lines = []
    for package in layers():
        lines += [f"``{package}``", "-" * (len(package) + 4), ""]
        for name in _public_modules(package):
            if name != package:
                lines += [f".. rubric:: ``{name}``", ""]
            lines += [f".. automodule:: {name}"]
            if name == package:
                lines += ["   :no-members:"]
            lines += [""]
    return "\n".join(lines)


def _generate_api(app, docname, source):
    if docname == "reference/api":
        source[0] = source[0].replace(".. API-MODULES", api_reference())


def _plain_references(app, doctree, docname):
    """In a man page a cross-reference is its text: there is nothing to click."""
    if app.builder.name != "man":
        return
    from docutils import nodes

    for reference in list(doctree.findall(nodes.reference)):
        text = reference.astext()
        reference.replace_self(nodes.emphasis(text, text))


def setup(app):
    app.connect("build-finished", _copy_figures)
    app.connect("doctree-resolved", _plain_references)
    app.connect("source-read", _generate_api)

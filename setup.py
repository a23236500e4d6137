"""Packaging for twisted-keyx; metadata and dependencies live in setup.cfg.

The twistd dropin lives in ``twisted/plugins/`` (no ``__init__.py`` there or in
``twisted/``), so it is listed as the package ``twisted.plugins``: the wheel
then puts ``keyx_plugin.py`` next to Twisted's own plugins in site-packages,
which is where ``twisted.plugin.getPlugins`` looks.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["twisted_keyx", "twisted_keyx.*"]) + ["twisted.plugins"],
)

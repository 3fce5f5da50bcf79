"""Shim for Beam's ``--setup_file``: Dataflow's stager runs ``python setup.py sdist`` (when the
``build`` module is absent) and workers pip-install that sdist. Everything — name, version,
packages, dependencies — comes from pyproject.toml; this file only lets the stager find it."""

from setuptools import setup

setup()

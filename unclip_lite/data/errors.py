"""Errors shared by the data modules.

A missing data file should say *what* is missing and *how to get it*, not surface as a bare
``KeyError`` three calls deep; every loader in :mod:`unclip_lite.data` raises this one.
"""
from __future__ import annotations


class DataFilesMissingError(FileNotFoundError):
    """A data set's files (package assets, images, a CSV, shards) are not where expected.

    Subclasses :class:`FileNotFoundError` so ``except FileNotFoundError`` still catches it;
    the message names what is missing and how to install or create it.
    """

"""Data files shipped with routerd, and their loaders.

``models.toml`` is the built-in model capability database. This package reads package data
(importlib.resources) and hands the bytes to the pure parser in ``routerd.core.catalog``.
"""

from __future__ import annotations

from importlib import resources

from routerd.core.catalog import Catalog, parse_catalog

__all__ = ["load_builtin_catalog", "builtin_catalog_bytes"]


def builtin_catalog_bytes() -> bytes:
    """The raw bytes of the built-in ``models.toml``."""
    return resources.files(__name__).joinpath("models.toml").read_bytes()


def load_builtin_catalog() -> Catalog:
    """Parse and validate the built-in model database. Raises ``CatalogError`` if the
    shipped file is broken (a test keeps it from ever being)."""
    return parse_catalog(builtin_catalog_bytes())

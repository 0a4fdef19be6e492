"""The two ways an import can fail: the whole source, or one item."""

from __future__ import annotations


class ImportFailed(Exception):
    """The whole source cannot be imported (missing, unknown type, wrong columns, zip bomb)."""


class ItemSkipped(Exception):
    """One item cannot be imported; ``str(exc)`` is the reason recorded in the report."""

"""The data layer: the SQLite store, images on disk, and everything that moves pairs in or out
(ingest, importers, safe zips, Hugging Face datasets, exports, the demo collection, splits).

Depends only on :mod:`mmdemo.settings`, :mod:`mmdemo.text` and :mod:`mmdemo.locks`.
"""

"""Import text–image pairs from files: a folder, a zip, a CSV/JSONL table or browser uploads.

One set of functions serves the UI and the CLI. :func:`import_source` looks at what it is given:

- a folder or ``.zip`` in Hugging Face *imagefolder* layout: images plus ``metadata.jsonl`` /
  ``metadata.csv`` (``file_name`` + a caption column, paths relative to the metadata file), or
  a ``<name>.txt`` caption next to each image;
- a ``.csv`` / ``.tsv`` / ``.jsonl`` whose rows name images relative to that file;
- a Hugging Face dataset (``save_to_disk`` folder, parquet, hub id): handed to
  :mod:`mmdemo.data.hf_import`.

:func:`import_uploads` takes what a browser uploaded: images with typed captions, or a bundle.

Every item goes through :func:`mmdemo.data.ingest.ingest_item` (atomic per item, duplicates counted,
never added twice). A bad item becomes a rejection with a reason and the rest goes on; only a
source that cannot be used at all raises :class:`ImportFailed`. Nothing here follows a symbolic
link, reads outside the imported folder, or extracts a zip to disk (see
:mod:`mmdemo.data.safe_zip`).

Modules: ``files`` (folder and zip trees, capped reads, path checks), ``tables`` (CSV/JSONL
parsing, column detection, splits), ``core`` (planning and running an import), ``uploads``
(browser uploads).
"""

from mmdemo.data.importers.core import import_source, looks_like_hf_dataset
from mmdemo.data.importers.errors import ImportFailed
from mmdemo.data.importers.files import IMAGE_EXTENSIONS, max_image_file_bytes
from mmdemo.data.importers.tables import CAPTION_COLUMNS, IMAGE_COLUMNS, SPLIT_ALIASES
from mmdemo.data.importers.uploads import import_uploads

__all__ = [
    "CAPTION_COLUMNS",
    "IMAGE_COLUMNS",
    "IMAGE_EXTENSIONS",
    "SPLIT_ALIASES",
    "ImportFailed",
    "import_source",
    "import_uploads",
    "looks_like_hf_dataset",
    "max_image_file_bytes",
]

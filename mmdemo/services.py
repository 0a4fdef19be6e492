"""The process-wide objects the web UI and the CLI share, built once per process.

Per-session things (which collection a browser tab looks at, the page it is on) live in
``gr.State`` in :mod:`mmdemo.ui`; everything here is shared by all sessions and is thread-safe
(the :class:`~mmdemo.data.store.Store` guards its connection with a lock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mmdemo.data.demo import DEMO_COLLECTION, ensure_demo_collection
from mmdemo.data.store import Store, StoreError
from mmdemo.hub.sync import Syncer, prepare_sync
from mmdemo.retrieval.embeddings import EmbeddingCache
from mmdemo.retrieval.models import ModelCache, ModelChoice, resolve_base_model
from mmdemo.settings import Settings, Storage, detect_storage
from mmdemo.training.jobs import BackgroundWork, JobManager
from mmdemo.training.run import GpuRunner
from mmdemo.training.zerogpu import gpu_runner

__all__ = ["DEMO_COLLECTION", "Services"]

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Settings, the store, the resolved base model and the shared caches and job manager."""

    settings: Settings
    store: Store
    model: ModelChoice
    models: ModelCache = field(default_factory=ModelCache)
    """Loaded models (base, runs) shared by every session; never trained in place."""
    embeddings: EmbeddingCache | None = None
    """On-disk embedding cache under ``settings.cache_dir`` (set by :meth:`create`)."""
    jobs: JobManager = field(default_factory=JobManager)
    """The one background job (a finetune) of this process."""
    gpu: GpuRunner | None = None
    """Where finetunes run instead of a worker thread: ZeroGPU's runner on a ZeroGPU Space."""
    sync: Syncer | None = None
    """Saves the state to ``MMDEMO_SYNC_TO`` in the background (``create(sync=True)`` only)."""
    storage: Storage | None = None
    """Which filesystem holds ``MMDEMO_HOME`` (a bucket, a FUSE mount: SQLite's journal mode)."""
    background: BackgroundWork = field(default_factory=BackgroundWork)
    """Low-priority chores: encoding a collection with a just-finished run's model."""

    @classmethod
    def create(
        cls,
        settings: Settings,
        *,
        demo: bool = True,
        recover_runs: bool = True,
        sync: bool = False,
        mounts: str | None = None,
        hub_api: Any = None,
    ) -> Services:
        """Open everything the app needs; never waits on the network for long.

        Creates the runtime folders, opens (and migrates) the store, marks runs that a previous
        process left running as interrupted (unless ``recover_runs`` is false: a CLI command
        beside a running app must not mark the app's run), ensures the demo collection (unless
        ``demo`` is false) and resolves the base model (waits at most ``settings.hub_timeout_s``).

        With ``sync`` (the app's start) and ``MMDEMO_SYNC_TO`` set, an empty home is first
        restored from the target, and :attr:`sync` saves to it every ``MMDEMO_SYNC_EVERY_S``
        once started (:func:`mmdemo.ui.app.launch` starts it; :mod:`mmdemo.hub.sync`).
        ``mounts`` (the mount table's text) and ``hub_api`` (an ``HfApi`` stand-in) are for tests.
        """
        settings.ensure_dirs()
        storage = detect_storage(settings.home, mounts)
        if storage.network:
            log.warning("%s", storage_note(storage))
        store = Store(settings.db_path, settings.max_caption_chars, storage.journal_mode)
        syncer = None
        try:
            if sync:
                syncer = prepare_sync(store, settings, api=hub_api)
            if recover_runs:
                store.mark_interrupted_runs()
            if demo:
                ensure_demo_collection(store, settings, name=DEMO_COLLECTION)
            model = resolve_base_model(settings)
        except BaseException:
            store.close()
            raise
        return cls(
            settings=settings,
            store=store,
            model=model,
            embeddings=EmbeddingCache(settings),
            jobs=JobManager(niceness=settings.train_niceness),
            gpu=gpu_runner(settings),
            sync=syncer,
            storage=storage,
            background=BackgroundWork(niceness=settings.train_niceness),
        )

    def after_finetune(self, result: object) -> None:
        """A finetune ended: encode its collection with the new model in the background, so
        the first Compare or Label query with it is as fast as later ones (a finished run only;
        :meth:`BackgroundWork.wait` waits for it)."""
        if getattr(result, "status", None) != "finished":
            return
        name = str(getattr(result, "name", ""))
        try:
            collection_id = self.store.get_run(name).collection_id
        except StoreError:  # the run is gone already: nothing to warm
            return
        if collection_id is None:
            return
        from mmdemo.retrieval.warm import warm_model

        self.background.start(
            lambda: warm_model(self, f"run:{name}", collection_id), name=f"encode run {name}"
        )

    def close(self) -> None:
        """Save once more and stop syncing, then release the store's connection (tests, the
        CLI and the app's clean stop call this)."""
        if self.sync is not None:
            self.sync.stop(final=True)
        self.store.close()


def storage_note(storage: Storage) -> str:
    """What the start log and the header say about a network/FUSE home (empty otherwise)."""
    if not storage.network:
        return ""
    return (
        f"MMDEMO_HOME {storage.home} is on a network/FUSE filesystem ({storage.fs_type}):"
        " SQLite uses a rollback journal (journal_mode=DELETE) instead of WAL; run one"
        " writing process (the app) on it."
    )

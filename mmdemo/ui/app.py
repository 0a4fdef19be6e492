"""The app shell: header, tabs, and how the server is launched.

Each tab is a module ``mmdemo/ui/<tab>.py`` exposing ``build_<tab>(services, shared)``, which lays
out its components inside the current ``gr.Tab`` and wires its events. Adding a tab is one entry
in :data:`TABS`.
"""

from __future__ import annotations

import html
import secrets
import signal
import threading
from collections.abc import Callable
from typing import Any

import gradio as gr

from mmdemo.hub.sync import describe
from mmdemo.services import Services, storage_note
from mmdemo.settings import Settings
from mmdemo.text import html_text
from mmdemo.ui.api import register_api
from mmdemo.ui.common import Shared, default_collection
from mmdemo.ui.compare.layout import build_compare
from mmdemo.ui.curate.layout import build_curate
from mmdemo.ui.finetune.layout import build_finetune
from mmdemo.ui.label.layout import build_label
from mmdemo.ui.publish.layout import build_publish

TabBuilder = Callable[[Services, Shared], None]

TABS: list[tuple[str, str, TabBuilder]] = [
    ("Curate", "curate", build_curate),
    ("Label", "label", build_label),
    ("Finetune", "finetune", build_finetune),
    ("Compare", "compare", build_compare),
    ("Publish", "publish", build_publish),
]
"""``(label, id, builder)`` for every tab, in display order."""

APP_CSS = """
#mm-header { padding: 4px 2px 0; }
#mm-header h1 { margin: 0; font-size: 1.6rem; }
#mm-header .mm-tagline { color: var(--body-text-color-subdued); margin: 2px 0 6px; }
#mm-header .mm-model { font-size: 0.92rem; }
#mm-header .mm-model code { font-size: 0.88rem; }
#mm-sync p { margin: 0 2px; font-size: 0.88rem; }
#mm-sync .mm-warn { color: var(--color-accent); font-weight: 600; }
#mm-stats p, #mm-page p { margin: 0; }
#mm-page { text-align: center; align-self: center; }
#mm-message p { margin: 0; }
#mm-gallery .caption-label { font-size: 0.78rem; }
.mm-results .caption-label { font-size: 0.74rem; }
.mm-results .thumbnail-item:hover .caption-label { white-space: normal; max-width: 100%; }
"""

COLLECTION_STORAGE_KEY = "mmdemo-collection"

UPLOAD_CACHE_SWEEP = (1800, 3600)
"""Every 30 minutes, delete uploads (Gradio's cache) older than an hour: imports copy what
they keep into the image folder, and an upload can be gigabytes."""


def header_html(services: Services) -> str:
    """The product name and which base model is in use, and why."""
    model = services.model
    return (
        '<div id="mm-header">'
        "<h1>mmdemo</h1>"
        '<p class="mm-tagline">Adapt a text–image embedding model to your own pairs: '
        "curate → label hard negatives → finetune → compare → publish.</p>"
        f'<p class="mm-model"><b>Base model:</b> <code>{html.escape(model.label)}</code>'
        f" — {html.escape(model.reason)}</p>"
        "</div>"
    )


NO_PERSISTENCE_WARNING = (
    "This Space forgets every label when it restarts: set MMDEMO_SYNC_TO=hf://datasets/OWNER/NAME"
    " (with the owner's write token as the HF_TOKEN secret) or mount a storage bucket at /data."
)


def persistence_lines(services: Services, now: float | None = None) -> list[tuple[str, str]]:
    """Where the state is kept, as ``(kind, plain text)`` lines for the header: the sync's last
    save or error, a storage bucket, the journal mode on a network filesystem, or (a Space
    keeping nothing) the warning that it forgets labels and what to set."""
    lines: list[tuple[str, str]] = []
    storage = services.storage
    if services.sync is not None:
        status = services.sync.status()
        failing = status.last_error is not None and (
            status.last_ok_at is None or (status.last_error_at or 0) > status.last_ok_at
        )
        lines.append(("warn" if failing else "info", describe(status, now)))
    if storage is not None and storage.bucket:
        lines.append(("info", f"State kept on the storage bucket: MMDEMO_HOME={storage.home}."))
    if storage is not None and storage.network:
        lines.append(("info", storage_note(storage)))
    if services.settings.space_id and services.sync is None and not (storage and storage.bucket):
        lines.append(("warn", NO_PERSISTENCE_WARNING))
    return lines


def persistence_html(services: Services, now: float | None = None) -> str:
    """The header's persistence lines as escaped HTML (empty when there is nothing to say)."""
    lines = persistence_lines(services, now)
    if not lines:
        return ""
    body = "".join(f'<p class="mm-{kind}">{html_text(text)}</p>' for kind, text in lines)
    return f'<div id="mm-sync-status">{body}</div>'


def browser_state_secret(settings: Settings) -> str:
    """The key the browser's remembered collection is encrypted with, kept in MMDEMO_HOME so a
    restarted app can still read it (Gradio's default is random per process: after a restart
    every browser would silently fall back to the default collection)."""
    path = settings.home / "browser-state.key"
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if len(key) < 32:
        key = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key)
    return key


def build_app(services: Services) -> gr.Blocks:
    """Build the whole web app (no server is started; see :func:`launch`)."""
    with gr.Blocks(
        title="mmdemo", analytics_enabled=False, delete_cache=UPLOAD_CACHE_SWEEP
    ) as demo:
        shared = Shared(
            demo=demo,
            collection=gr.BrowserState(
                default_collection(services),
                storage_key=COLLECTION_STORAGE_KEY,
                secret=browser_state_secret(services.settings),
            ),
            timer=gr.Timer(2.0),
            label_focus=gr.State(None),
        )
        gr.HTML(header_html(services))
        if services.sync is not None:  # "saved … s ago" refreshes on the one timer's ticks
            gr.HTML(lambda: persistence_html(services), every=shared.timer, elem_id="mm-sync")
        else:
            gr.HTML(persistence_html(services), elem_id="mm-sync")
        with gr.Tabs():
            for label, tab_id, build_tab in TABS:
                with gr.Tab(label, id=tab_id) as tab:
                    shared.tabs[tab_id] = tab
                    build_tab(services, shared)
        register_api(services, demo)  # hides the wiring above; adds the named endpoints
    return demo


def launch_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch``: where to listen and what to allow.

    Only the image folder and the downloads folder (dry-run zips) may be served; uploads are
    capped at ``settings.max_upload_mb``.
    """
    return {
        "server_name": settings.host,
        "server_port": settings.port,
        "max_file_size": settings.max_upload_mb * 1024 * 1024,
        "allowed_paths": [str(settings.images_dir), str(settings.downloads_dir)],
        "css": APP_CSS,
        "ssr_mode": False,
        "mcp_server": False,
        "show_error": False,
    }


def launch(services: Services, demo: gr.Blocks | None = None, **overrides: Any) -> gr.Blocks:
    """Build (unless given) and serve the app; blocks unless ``prevent_thread_lock=True``."""
    demo = demo if demo is not None else build_app(services)
    if overrides.get("prevent_thread_lock"):
        if services.sync is not None:
            services.sync.start()  # saves every MMDEMO_SYNC_EVERY_S; a clean stop saves again
        demo.launch(**{**launch_options(services.settings), **overrides})
        return demo
    # Serve in the background and keep the main thread for finetunes: CPU training is fastest
    # there (see JobManager.run_jobs_here). Ctrl+C stops both, and so does SIGTERM (what a Space
    # sends before it restarts), so the last labels are saved before the process ends. The
    # handler goes in first: a SIGTERM while the server starts also ends in the last save.
    if threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        if services.sync is not None:
            services.sync.start()
        demo.launch(
            **{**launch_options(services.settings), **overrides, "prevent_thread_lock": True}
        )
        services.jobs.run_jobs_here()
    except KeyboardInterrupt:
        print("Keyboard interruption in main thread... closing server.")
    finally:
        demo.close()
        if services.sync is not None:
            services.sync.stop(final=True)
    return demo


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

"""The app shell: header, tabs, and how the server is launched.

Each tab is a module ``mmdemo/ui/<tab>.py`` exposing ``build_<tab>(services, shared)``, which lays
out its components inside the current ``gr.Tab`` and wires its events. Adding a tab is one entry
in :data:`TABS`.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Callable
from typing import Any

import gradio as gr

from mmdemo.services import Services
from mmdemo.settings import Settings
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
        demo.launch(**{**launch_options(services.settings), **overrides})
        return demo
    # Serve in the background and keep the main thread for finetunes: CPU training is fastest
    # there (see JobManager.run_jobs_here). Ctrl+C stops both.
    demo.launch(**{**launch_options(services.settings), **overrides, "prevent_thread_lock": True})
    try:
        services.jobs.run_jobs_here()
    except KeyboardInterrupt:
        print("Keyboard interruption in main thread... closing server.")
    finally:
        demo.close()
    return demo

"""Start the mmdemo web app: ``python app.py`` (what ``make run`` and a Hugging Face Space run).

Configuration comes from the environment (see README / ``mmdemo.settings``).
"""

import os

# Before gradio / huggingface_hub are imported: no usage analytics, no telemetry.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import sys  # noqa: E402

from mmdemo.hub.sync import SyncError  # noqa: E402
from mmdemo.services import Services  # noqa: E402
from mmdemo.settings import Settings  # noqa: E402
from mmdemo.ui.app import build_app, launch  # noqa: E402

if __name__ == "__main__":
    # sync=True: an empty home is first restored from MMDEMO_SYNC_TO, then saved to it.
    try:
        services = Services.create(Settings.from_env(), sync=True)
    except SyncError as exc:  # a newer schema, another home's target: refuse to serve, clearly
        sys.exit(f"mmdemo: {exc}")
    launch(services, build_app(services))

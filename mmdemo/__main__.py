"""Entry point for ``python -m mmdemo``."""

import os
import sys

# Before gradio/huggingface_hub are imported: no usage analytics, no telemetry.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from mmdemo.cli import main  # noqa: E402

sys.exit(main())

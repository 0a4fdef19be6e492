"""`python app.py` itself, as `make run` and a Space start it: the server answers from a
background thread, a finetune started in the browser runs on the process's main thread at a
lower CPU priority than the server, and Ctrl+C stops everything cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mmdemo.retrieval.models import TINY_MODEL_DIRNAME

pytest_plugins = ["tests.browser"]

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 180.0  # upper bound for the app to come up or react; a safety net, not a speed check


def thread_nice(pid: int, thread_id: int) -> int:
    """Nice value of one thread of a process (field 19 of /proc/<pid>/task/<tid>/stat)."""
    stat = Path(f"/proc/{pid}/task/{thread_id}/stat").read_text()
    return int(stat.rsplit(")", 1)[-1].split()[16])


def wait_until_serving(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "app.py exited before serving"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"app.py did not answer at {url}")


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread priorities")
def test_app_py_serves_trains_on_its_main_thread_and_stops_on_ctrl_c(
    app_settings, tiny_model_dir, page, screenshot
):
    from playwright.sync_api import expect

    from tests.test_browser_finetune import set_number

    env = {
        **os.environ,
        "MMDEMO_HOME": str(app_settings.home),
        "MMDEMO_PORT": str(app_settings.port),
        "MMDEMO_BASE_MODEL": "tiny",
        "MMDEMO_DEMO_PAIRS": str(app_settings.demo_pairs),
        "MMDEMO_TRAIN_NICENESS": "9",
        "HF_HUB_OFFLINE": "1",
    }
    tiny = app_settings.models_dir / TINY_MODEL_DIRNAME
    if not tiny.exists():
        shutil.copytree(tiny_model_dir, tiny)
    url = f"http://{app_settings.host}:{app_settings.port}/"
    app = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(url, app)
        assert thread_nice(app.pid, app.pid) == 0  # nothing has trained yet

        page.goto(url)
        page.get_by_role("tab", name="Finetune").click()
        # As a person does: the tab shows which collection it will train before Start.
        expect(page.locator("#mm-ft-collection input")).to_have_value(
            "demo-shapes", timeout=WAIT_S * 1000
        )
        set_number(page, "mm-ft-epochs", "3")
        set_number(page, "mm-ft-batch", "8")
        page.locator("#mm-ft-start").click()
        expect(page.locator("#mm-ft-status")).to_contain_text("Finished", timeout=WAIT_S * 1000)
        expect(page.locator("#mm-ft-metrics")).to_contain_text("recall@1")
        screenshot("app-process-finished")

        # The job ran on the main thread (its id is the pid), which lowered its own priority;
        # the server's threads kept theirs.
        assert thread_nice(app.pid, app.pid) == 9
        others = [int(t) for t in os.listdir(f"/proc/{app.pid}/task") if int(t) != app.pid]
        assert 0 in {thread_nice(app.pid, t) for t in others}
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200  # still serving

        app.send_signal(signal.SIGINT)  # Ctrl+C
        output, _ = app.communicate(timeout=60)
        assert app.returncode == 0, output
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()

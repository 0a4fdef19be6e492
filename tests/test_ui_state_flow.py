"""The app's wiring obeys the one-way rule: a person's action changes the shared collection,
views read it; nothing listens to its changes, and no change/input handler writes back into the
component that triggered it (the loops a reload used to start)."""

from __future__ import annotations

import gradio as gr
import pytest

from mmdemo.services import Services
from mmdemo.settings import Settings
from mmdemo.ui.app import build_app

CHANGE_EVENTS = {"change", "input", "blur", "release", "submit"}
"""Events that carry a value a person set (a gallery ``select`` is a click: re-highlighting the
clicked thumbnail is allowed)."""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("flow-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny", "MMDEMO_DEMO_PAIRS": "12"}
    )
    services = Services.create(settings)
    yield build_app(services)
    services.close()


def _shared_collection(demo: gr.Blocks) -> gr.BrowserState:
    [state] = [b for b in demo.blocks.values() if isinstance(b, gr.BrowserState)]
    return state


def test_nothing_listens_to_the_shared_collection(demo):
    shared = _shared_collection(demo)
    listeners = [
        fn.name for fn in demo.fns.values() if any(target[0] == shared._id for target in fn.targets)
    ]
    assert listeners == []


def test_only_a_persons_choice_of_collection_writes_it(demo):
    shared = _shared_collection(demo)
    writers = {
        (demo.blocks[target[0]].__class__.__name__, target[1])
        for fn in demo.fns.values()
        if shared in fn.outputs
        for target in fn.targets
    }
    assert writers, "something must let a person switch collections"
    allowed = {("Dropdown", "input"), ("Button", "click")}
    assert writers <= allowed, writers
    for fn in demo.fns.values():
        if shared in fn.outputs:
            assert not any(t[1] in {"load", "tick", "change"} for t in fn.targets), fn.name


def test_no_change_handler_writes_back_into_its_trigger(demo):
    for fn in demo.fns.values():
        triggers = {target[0] for target in fn.targets if target[1] in CHANGE_EVENTS}
        written = {block._id for block in fn.outputs}
        assert not triggers & written, f"{fn.name} writes back into what triggered it"


def test_the_remembered_collection_survives_an_app_restart(tmp_path):
    from mmdemo.ui.app import browser_state_secret

    settings = Settings.from_env({"MMDEMO_HOME": str(tmp_path / "home")})
    first = browser_state_secret(settings)
    assert len(first) >= 32 and browser_state_secret(settings) == first
    other = Settings.from_env({"MMDEMO_HOME": str(tmp_path / "other")})
    assert browser_state_secret(other) != first

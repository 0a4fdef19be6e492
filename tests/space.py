"""Fixtures for handler tests that run as on a Hugging Face Space and off it.

Use them from a test module with ``pytest_plugins = ["tests.space"]``:

- ``space``: the app's real Services with ``SPACE_ID`` set (writes need a login), the small demo
  collection and the tiny CLIP; one per test module.
- ``local``: the same store and model, off a Space (no login needed).
- every test starts with no hard-negative labels (``no_labels_left`` removes them after each).
- ``ALICE``: what ``require_login`` reads from a ``gr.OAuthProfile``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from mmdemo.services import Services
from mmdemo.settings import Settings

ALICE = SimpleNamespace(username="alice")


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The app's services as on a Space (``SPACE_ID`` set), with the small demo collection."""
    home = tmp_path_factory.mktemp("space-home")
    settings = Settings.from_env({"MMDEMO_HOME": str(home)}).with_overrides(
        space_id="alice/mmdemo", demo_pairs=24, base_model="tiny"
    )
    services = Services.create(settings)
    yield services
    services.close()


@pytest.fixture(scope="module")
def local(space: Services) -> Services:
    """The same store and model, off a Space (no login there)."""
    return dataclasses.replace(space, settings=dataclasses.replace(space.settings, space_id=None))


@pytest.fixture(autouse=True)
def no_labels_left(space: Services) -> Iterator[None]:
    yield
    store = space.store
    for collection in store.list_collections():
        for label in store.labels_for_collection(collection.id):
            store.remove_label(label.id)

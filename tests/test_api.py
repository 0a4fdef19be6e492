"""The app's API: the named endpoints as plain functions on a real Services, and the live app
through ``gradio_client`` (only the named endpoints are listed; the tabs' wiring is not)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mmdemo.retrieval.compare import search_command
from mmdemo.retrieval.models import TINY_MODEL_DIRNAME
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.settings import Settings
from mmdemo.ui import api
from mmdemo.ui.app import build_app

pytest_plugins = ["tests.browser"]

RUN = "api-run"


def add_run(services: Services, name: str = RUN) -> None:
    """A finished run whose model is a copy of the tiny base model."""
    settings = services.settings
    run_dir = settings.runs_dir / name
    shutil.copytree(settings.models_dir / TINY_MODEL_DIRNAME, run_dir / "model")
    services.store.create_run(name, None, "tiny", str(run_dir), status="finished")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    home = tmp_path_factory.mktemp("api-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny", "MMDEMO_DEMO_PAIRS": "24"}
    )
    services = Services.create(settings)
    add_run(services)
    yield services
    services.close()


def test_list_collections_names_every_collection_with_its_counts(services):
    services.store.get_or_create_collection("<b>empty</b>")
    rows = {row["name"]: row for row in api.list_collections(services)}
    demo = rows[DEMO_COLLECTION]
    assert demo["pairs"] == 24 and sum(demo["splits"].values()) == 24
    assert set(demo) == {"name", "pairs", "splits", "negatives", "also_positives"}
    assert rows["<b>empty</b>"]["pairs"] == 0, "names are data, returned as stored"


def test_list_models_offers_base_and_finished_runs(services):
    assert api.list_models(services) == [
        {"name": "base", "label": "Base: tiny-clip (built-in)"},
        {"name": RUN, "label": f"Run: {RUN}"},
    ]
    assert api.model_key(services, " ") == "base"
    assert api.model_key(services, RUN) == api.model_key(services, f"run:{RUN}") == f"run:{RUN}"


def test_search_is_the_cli_search(services):
    caption = services.store.list_pairs(services.store.collection(DEMO_COLLECTION).id)[0].caption
    hits = api.search(services, DEMO_COLLECTION, caption, RUN, 5)
    assert hits == search_command(services, DEMO_COLLECTION, f"run:{RUN}", caption, k=5)
    assert [hit["rank"] for hit in hits] == [1, 2, 3, 4, 5]
    assert {"pair_id", "score", "caption"} <= set(hits[0])


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"collection": "nope"}, "No collection"),
        ({"query": "   "}, "Bad query: blank caption"),
        ({"k": 0}, "k must be from 1 to 100"),
        ({"k": "many"}, "k must be a whole number"),
        ({"model": "no-such-run"}, "Unknown model 'no-such-run'"),
    ],
)
def test_search_refuses_what_it_cannot_serve(services, kwargs, reason):
    request = {"collection": DEMO_COLLECTION, "query": "a red circle", "model": "base", "k": 3}
    with pytest.raises(api.ApiError, match=reason):
        api.search(services, **{**request, **kwargs})


def test_a_model_folder_is_not_a_model_name(services, tmp_path: Path):
    """The CLI loads a local folder; a client may only name what the app offers."""
    folder = services.settings.runs_dir / RUN / "model"
    with pytest.raises(api.ApiError, match="Unknown model"):
        api.search(services, DEMO_COLLECTION, "a red circle", str(folder), 3)


def test_only_the_named_endpoints_are_public(services):
    demo = build_app(services)
    public = sorted(fn.api_name for fn in demo.fns.values() if fn.api_visibility != "private")
    assert public == sorted(api.API_NAMES)
    assert len(demo.fns) > 40, "the tabs' wiring is still there, only hidden"
    info = demo.get_api_info()
    assert sorted(info["named_endpoints"]) == [f"/{name}" for name in sorted(api.API_NAMES)]
    assert info["unnamed_endpoints"] == {}


def test_gradio_client_sees_and_calls_only_the_api(live_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    add_run(live_app.services)
    client = Client(live_app.url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")
    assert sorted(endpoints["named_endpoints"]) == ["/list_collections", "/list_models", "/search"]
    assert endpoints["unnamed_endpoints"] == {}
    params = [p["parameter_name"] for p in endpoints["named_endpoints"]["/search"]["parameters"]]
    assert params == ["collection", "query", "model", "k"]

    collections = client.predict(api_name="/list_collections")
    assert [row["name"] for row in collections] == [DEMO_COLLECTION]
    assert [m["name"] for m in client.predict(api_name="/list_models")] == ["base", RUN]

    store = live_app.services.store
    pair = store.list_pairs(store.collection(DEMO_COLLECTION).id, split="eval")[0]
    hits = client.predict(DEMO_COLLECTION, pair.caption, RUN, 4, api_name="/search")
    assert len(hits) == 4 and hits[0]["rank"] == 1
    assert hits == api.search(live_app.services, DEMO_COLLECTION, pair.caption, RUN, 4)
    defaults = client.predict(collection=DEMO_COLLECTION, query=pair.caption, api_name="/search")
    assert [hit["rank"] for hit in defaults] == list(range(1, 11)), "k defaults to 10"

    with pytest.raises(AppError, match="Unknown model 'nope'"):
        client.predict(DEMO_COLLECTION, "a red circle", "nope", 3, api_name="/search")
    with pytest.raises(ValueError, match="Cannot find a function"):
        client.predict(api_name="/on_confirm_delete")

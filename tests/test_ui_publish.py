"""The Publish tab's handlers, called directly on a real store, a real tiny model and real images.

Only the Hub is faked: :class:`tests.test_hub.FakeHfApi` stands in for ``HfApi`` (and a copy of
a dry run stands in for ``snapshot_download``).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import gradio as gr
import pytest
from gradio.utils import oauth_token_requirement
from PIL import Image

from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.data.store import Store
from mmdemo.hub.publish import DryRunPublisher, publish_dataset
from mmdemo.retrieval.models import ModelChoice, build_tiny_clip
from mmdemo.services import Services
from mmdemo.settings import Settings
from mmdemo.ui import identity
from mmdemo.ui.app import build_app
from mmdemo.ui.publish import handlers as h
from mmdemo.ui.publish import view as v
from tests.conftest import make_image_bytes
from tests.test_hub import FakeHfApi, _http_error


def shown(markdown: str) -> str:
    """What a person reads of escaped Markdown: backslash escapes and entities resolved."""
    return html.unescape(re.sub(r"\\(.)", r"\1", markdown))


CANARY = "hf_CANARYpublishTABcanary0123456789ab"
SPACE_SECRET = "hf_SPACEsecretOFtheOWNERxx0123456789"
METRICS = {
    side: {
        direction: {
            "recall@1": r1,
            "recall@5": 0.9,
            "recall@10": 1.0,
            "mrr@10": r1 + 0.05,
            "ndcg@10": r1 + 0.1,
        }
        for direction in ("t2i", "i2t")
    }
    for side, r1 in (("base", 0.25), ("finetuned", 0.75))
}
CONFIG = {"epochs": 1, "learning_rate": 5e-05, "batch_size": 8, "loss": "mnrl"}
WORDS = ["red", "green", "blue", "yellow", "magenta", "cyan"]


# -- fixtures: a collection with labels and a finished run ------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("publish-tiny") / "model")


@pytest.fixture
def services(settings: Settings, store: Store) -> Services:
    """Services on a fresh home; publishing never loads the base model, so none is resolved."""
    return Services(settings, store, ModelChoice("tiny", "tiny", "tests", True))


def fill_collection(services: Services, name: str = "shapes") -> int:
    """Six real pairs over the three splits, two hand-labeled negatives by carol."""
    coll = services.store.create_collection(name)
    report = ImportReport(name)
    pairs = []
    for i, word in enumerate(WORDS):
        color = (40 * i % 256, 200 - 30 * i, 90 + 25 * i)
        pairs.append(
            ingest_item(
                services.store,
                services.settings,
                coll.id,
                report,
                f"{word}.png",
                make_image_bytes(color),
                f"a {word} square",
                ("train", "train", "eval", "test", "train", "test")[i],
                "alice",
            )
        )
    services.store.add_label(
        pairs[0].id, "negative", negative_sha256=pairs[1].image_sha256, author="carol"
    )
    services.store.add_label(
        pairs[4].id, "negative", negative_caption="a red circle", author="carol"
    )
    return coll.id


def make_run(services: Services, tiny: Path, collection_id: int | None, name: str = "run-1"):
    """A finished run as training leaves it: ``model/``, config.json, metrics.json."""
    run_dir = services.settings.runs_dir / name
    shutil.copytree(tiny, run_dir / "model")
    (run_dir / "config.json").write_text(json.dumps(CONFIG))
    (run_dir / "metrics.json").write_text(json.dumps(METRICS))
    services.store.create_run(
        name, collection_id, "sentence-transformers/clip-ViT-B-32", str(run_dir), status="finished"
    )
    return run_dir


@pytest.fixture
def published(services: Services, tiny_clip: Path) -> Services:
    """``services`` with the collection ``shapes`` and the finished run ``run-1`` trained on it."""
    make_run(services, tiny_clip, fill_collection(services))
    return services


def no_ambient_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))


class Progress:
    """Records calls shaped like ``gr.Progress``'s."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, value, desc=None, unit=None) -> None:  # noqa: ANN001
        self.calls.append((value, desc))


def visible(update: object) -> bool | None:
    return update.get("visible") if isinstance(update, dict) else None


def push(services: Services, **overrides) -> v.PublishOutcome:
    """The Push button with a form that publishes run-1 and shapes to alice's repos."""
    values = {
        "run": "run-1",
        "model_repo": "alice/shapes-clip",
        "collection": "shapes",
        "dataset_repo": "alice/shapes",
        "private": True,
        "if_exists": "ask",
        "pasted_token": TOKEN,
        "oauth_token": None,
        "profile": None,
    }
    values.update(overrides)
    api = values.pop("api", None) or FakeHfApi()
    return h.push(services, **values, api=api)


TOKEN = "hf_pastedTOKENpastedTOKEN0123456789"


# -- the dry run -------------------------------------------------------------------------------
def test_dry_run_zip_holds_a_model_that_encodes_and_a_dataset_that_loads(
    published: Services, tmp_path: Path
):
    progress = Progress()
    outcome = h.dry_run(
        published, "run-1", "alice/shapes-clip", "shapes", "alice/shapes", progress=progress
    )
    assert outcome.status.startswith("**Dry run ready**"), outcome.status
    assert "Nothing was sent" in outcome.status
    assert visible(outcome.download) is True and visible(outcome.ask) is False
    archive = Path(outcome.download["value"])
    assert archive.name == "mmdemo-dry-run-shapes-clip.zip"
    assert archive.parent.parent == published.settings.downloads_dir, "zips stay in MMDEMO_HOME"
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "unzipped")
    assert {"model/modules.json", "model/model.safetensors", "model/README.md"} <= names
    assert "dataset/README.md" in names and any(n.endswith(".parquet") for n in names)
    assert not [n for n in names if n.endswith(("metrics.json", "config.json")) and "/" not in n]

    from datasets import load_dataset
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tmp_path / "unzipped" / "model"), device="cpu")
    image_vec = model.encode([Image.new("RGB", (40, 40), (200, 30, 30))])
    text_vec = model.encode(["a red square"])
    assert image_vec.shape == text_vec.shape and image_vec.shape[0] == 1
    pairs = load_dataset(str(tmp_path / "unzipped" / "dataset"), "pairs")
    assert sum(len(split) for split in pairs.values()) == 6
    assert pairs["train"][0]["image"].convert("RGB").size == (64, 48)
    triplets = load_dataset(str(tmp_path / "unzipped" / "dataset"), "triplets")
    assert len(triplets["train"]) == 2

    # The preview is the model card that was zipped: metrics table, no broken image links.
    card = (tmp_path / "unzipped" / "model" / "README.md").read_text()
    preview = outcome.preview["value"]
    assert visible(outcome.preview) is True
    row = next(line for line in card.splitlines() if "| text → image | accuracy@1 |" in line)
    assert row in preview, "the preview shows the card's evaluation table"
    assert "```yaml" in preview and "base_model: sentence-transformers/clip-ViT-B-32" in preview
    assert "](assets/example-1.jpg)" in card and "![" not in preview
    assert "`assets/example-1.jpg`" in preview
    # Progress went through both publishes to the end; the staging folders are gone.
    assert progress.calls[-1][0] == (10, 10)
    assert not list(published.settings.tmp_dir.iterdir())


def test_dry_run_of_only_the_dataset_needs_no_run(published: Services, tmp_path: Path):
    outcome = h.dry_run(published, None, "", "shapes", "alice/shapes")
    with zipfile.ZipFile(outcome.download["value"]) as z:
        names = z.namelist()
    assert names and all(n.startswith("dataset/") for n in names)
    assert "## Authors" in outcome.preview["value"] and "- carol" in outcome.preview["value"]


# -- checking the form before anything is sent -------------------------------------------------
@pytest.mark.parametrize(
    ("model_repo", "dataset_repo", "expected"),
    [
        ("noslash", "", "must be owner/name"),
        ("alice/has space", "", "is not valid"),
        ("a/b/c", "", "must be owner/name"),
        ("alice/ok", "alice/bad--name", "dataset repo name"),
        ("", "", "Nothing to publish"),
    ],
)
def test_invalid_repo_ids_get_a_clear_message_and_nothing_is_sent(
    published: Services, model_repo: str, dataset_repo: str, expected: str
):
    message = v.check_targets(published, "run-1", model_repo, "shapes", dataset_repo)
    if model_repo or dataset_repo:
        assert message.startswith("⚠️") and expected in shown(message)
    else:  # an empty form is a hint, not a warning
        assert message == v.EMPTY_FORM and expected in message
    api = FakeHfApi()
    with pytest.warns(UserWarning, match=expected):
        outcome = push(published, model_repo=model_repo, dataset_repo=dataset_repo, api=api)
    assert expected in shown(outcome.status) and api.calls == []
    with pytest.warns(UserWarning, match=expected):
        dry = h.dry_run(published, "run-1", model_repo, "shapes", dataset_repo)
    assert expected in shown(dry.status) and dry.download == gr.skip()


def test_the_form_says_what_it_would_publish_and_what_is_missing(published: Services):
    ready = v.check_targets(published, "run-1", " alice/m ", "shapes", "alice/d")
    assert ready == (
        "Ready: run **run\\-1** → model repo `alice/m` and collection **shapes** → dataset repo"
        " `alice/d`."
    )
    assert "Choose a finished run" in v.check_targets(published, None, "alice/m", None, "")
    assert "Choose a collection" in v.check_targets(published, "run-1", "", None, "alice/d")
    assert "not a finished run" in v.check_targets(published, "nope", "alice/m", None, "")


# -- pushing -----------------------------------------------------------------------------------
def test_push_uploads_the_dry_run_files_with_the_pasted_token(
    published: Services, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_TOKEN", SPACE_SECRET)  # a pasted token wins over the environment
    api = FakeHfApi()
    progress = Progress()
    outcome = h.push(
        published,
        "run-1",
        "alice/shapes-clip",
        "shapes",
        "alice/shapes",
        True,
        "ask",
        TOKEN,
        api=api,
        progress=progress,
    )
    assert outcome.status.startswith("**Published**"), outcome.status
    assert "https://huggingface.co/alice/shapes-clip" in outcome.status
    assert "https://huggingface.co/datasets/alice/shapes" in outcome.status
    assert {kw["token"] for name, kw in api.calls if name != "list_repo_files"} == {TOKEN}
    creates = [(kw["repo_id"], kw["private"]) for name, kw in api.calls if name == "create_repo"]
    assert creates == [("alice/shapes", True), ("alice/shapes-clip", True)]
    remote = api.repos[("model", "alice/shapes-clip")]
    assert {"modules.json", "model.safetensors", "README.md"} <= set(remote)
    card = remote["README.md"]
    assert b"| text \xe2\x86\x92 image | accuracy@1 |" in card and b"datasets/alice/shapes" in card
    assert any(p.endswith(".parquet") for p in api.repos[("dataset", "alice/shapes")])
    assert progress.calls[-1][0] == (10, 10)


def test_an_existing_repo_shows_the_choice_then_a_pull_request_or_an_overwrite(
    published: Services,
):
    api = FakeHfApi()
    api.repos[("model", "alice/shapes-clip")] = {".gitattributes": b"", "README.md": b"old"}
    asked = push(published, api=api)
    assert visible(asked.ask) is True
    assert "model repo `alice/shapes-clip` already exists" in asked.status
    assert "Nothing was sent" in asked.status
    assert set(api.names()) == {"list_repo_files"}, "nothing may be sent before the choice"

    pr = push(published, if_exists="pr", api=api)
    assert visible(pr.ask) is False
    assert "pull request opened at https://huggingface.co/alice/shapes-clip/discussions/1" in (
        pr.status
    )
    assert api.repos[("model", "alice/shapes-clip")]["README.md"] == b"old"

    done = push(published, if_exists="overwrite", api=api)
    assert done.status.startswith("**Published**")
    assert api.repos[("model", "alice/shapes-clip")]["README.md"] != b"old"
    assert v.cancel_choice().status == "Nothing was sent."
    assert visible(v.cancel_choice().ask) is False


def test_a_failure_after_the_dataset_says_what_was_published_and_a_retry_works(
    published: Services,
):
    api = FakeHfApi()
    calls = {"n": 0}
    real_upload = api.upload_folder

    def flaky_upload(**kwargs):  # noqa: ANN202 - the model upload (second) breaks once
        calls["n"] += 1
        if calls["n"] == 2:
            raise _http_error(503, "https://huggingface.co/api/models/alice/shapes-clip/commit")
        return real_upload(**kwargs)

    api.upload_folder = flaky_upload
    with pytest.warns(UserWarning, match="server error"):
        failed = push(published, api=api)
    assert "server error (503)" in shown(failed.status)
    assert "Published before that:" in failed.status
    assert "https://huggingface.co/datasets/alice/shapes" in failed.status
    # Retrying: the dataset now exists, so the app asks; overwriting publishes both.
    assert visible(push(published, api=api).ask) is True
    retried = push(published, if_exists="overwrite", api=api)
    assert retried.status.startswith("**Published**")
    assert "model.safetensors" in api.repos[("model", "alice/shapes-clip")]


# -- identity and the token ---------------------------------------------------------------------
def test_no_token_says_how_to_log_in_and_sends_nothing(
    published: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    no_ambient_token(monkeypatch, tmp_path)
    api = FakeHfApi()
    with pytest.warns(UserWarning, match="Not logged in"):
        outcome = push(published, pasted_token="", api=api)
    assert "HF_TOKEN" in shown(outcome.status) and "hf auth login" in shown(outcome.status)
    assert api.calls == []
    assert "No token found" in identity.token_hint(published.settings)
    monkeypatch.setenv("HF_TOKEN", CANARY)
    hint = identity.token_hint(published.settings)
    assert "will be used" in hint and CANARY not in hint


def test_a_canary_token_never_appears_in_outputs_files_or_warnings(
    published: Services, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level("DEBUG")
    api = FakeHfApi()
    api.fail["upload_folder"] = [
        RuntimeError(f"upload died, Authorization: Bearer {CANARY}"),
        _http_error(403, "https://huggingface.co/api/datasets/alice/shapes/commit", body=CANARY),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcomes = [push(published, pasted_token=CANARY, api=api) for _ in range(3)]
        outcomes.append(h.dry_run(published, "run-1", "alice/shapes-clip", "shapes", "alice/d"))
        outcomes.append(push(published, pasted_token=CANARY, if_exists="overwrite", api=api))
    assert "Something broke" in outcomes[0].status and "403" in outcomes[1].status
    assert outcomes[2].status.startswith("**Published**")
    assert {kw["token"] for name, kw in api.calls if name == "upload_folder"} == {CANARY}
    texts = [repr(o) for o in outcomes] + [str(w.message) for w in caught] + [caplog.text]
    assert all(CANARY not in text for text in texts)
    needle, scanned = CANARY.encode(), 0
    archive = Path(outcomes[3].download["value"])
    for path in [*published.settings.home.rglob("*"), *archive.parent.rglob("*")]:
        if path.is_file():
            scanned += 1
            assert needle not in path.read_bytes(), f"token written to {path}"
    assert scanned > 10


class FakeProfile(gr.OAuthProfile):
    def __init__(self, username: str):
        super().__init__(
            {"name": username, "preferred_username": username, "profile": "", "picture": ""}
        )


def test_on_a_space_only_the_visitors_own_login_is_used(
    published: Services, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_TOKEN", SPACE_SECRET)  # the Space owner's secret
    space = Services(
        published.settings.with_overrides(space_id="owner/mmdemo"), published.store, published.model
    )
    with pytest.raises(identity.LoginRequired, match="Log in"):
        identity.require_login(None, space.settings)
    assert identity.require_login(FakeProfile("bob"), space.settings) == "bob"
    assert identity.require_login(None, published.settings) is None

    api = FakeHfApi()
    with pytest.warns(UserWarning, match="Log in"):
        anonymous = push(space, pasted_token=TOKEN, api=api)
    assert "Log in" in anonymous.status and api.calls == []

    oauth = gr.OAuthToken(token=CANARY, scope="openid profile contribute-repos", expires_at=0)
    done = push(space, pasted_token=TOKEN, oauth_token=oauth, profile=FakeProfile("bob"), api=api)
    assert done.status.startswith("**Published**"), done.status
    assert {kw["token"] for _, kw in api.calls} == {CANARY}
    assert "Publishing uses **your own**" in identity.token_hint(space.settings)


# -- the reverse: a collection from a dataset repo ---------------------------------------------
def fake_snapshot(folder: Path, seen: list[dict]):  # noqa: ANN201
    def download(**kwargs) -> str:  # stands in for huggingface_hub.snapshot_download
        seen.append(kwargs)
        shutil.copytree(folder, kwargs["local_dir"], dirs_exist_ok=True)
        return kwargs["local_dir"]

    return download


def test_import_from_hub_restores_the_collection_with_its_labels(
    published: Services, tmp_path: Path
):
    store = published.store
    dataset = publish_dataset(
        DryRunPublisher(tmp_path / "dry"), store, published.settings, "shapes", "alice/shapes"
    )
    seen: list[dict] = []
    outcome = h.import_from_hub(
        published, " alice/shapes ", "", TOKEN, download=fake_snapshot(dataset.folder, seen)
    )
    # The collection defaults to the repo's name; "shapes" exists, so only what it lacks is added.
    assert outcome.status.startswith("Added 0 pairs, skipped 6"), outcome.status
    assert outcome.collection["value"] == "shapes"
    assert seen[0]["repo_id"] == "alice/shapes" and seen[0]["token"] == TOKEN

    restored = h.import_from_hub(
        published, "alice/shapes", "restored", TOKEN, download=fake_snapshot(dataset.folder, seen)
    )
    assert restored.collection["value"] == "restored"
    assert "restored" in restored.collection["choices"]
    before = store.collection_stats(store.collection("shapes").id)
    after = store.collection_stats(store.collection("restored").id)
    assert (after.pairs, after.splits, after.negatives) == (
        before.pairs,
        before.splits,
        before.negatives,
    )

    with pytest.warns(UserWarning, match="owner/name"):
        bad = h.import_from_hub(
            published, "shapes", "", TOKEN, download=fake_snapshot(tmp_path, seen)
        )
    assert "owner/name" in bad.status and len(seen) == 2


def test_import_on_a_space_needs_a_login_and_records_the_author(
    published: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HF_TOKEN", SPACE_SECRET)
    settings = published.settings.with_overrides(space_id="owner/mmdemo")
    space = Services(settings, published.store, published.model)
    folder = publish_dataset(
        DryRunPublisher(tmp_path / "dry"), space.store, settings, "shapes", "alice/shapes"
    ).folder
    seen: list[dict] = []
    with pytest.warns(UserWarning, match="Log in"):
        refused = h.import_from_hub(
            space, "alice/shapes", "x", "", download=fake_snapshot(folder, seen)
        )
    assert "Log in" in refused.status and seen == []

    oauth = gr.OAuthToken(token=CANARY, scope="contribute-repos", expires_at=0)
    done = h.import_from_hub(
        space,
        "alice/shapes",
        "mine",
        "",
        oauth,
        FakeProfile("bob"),
        download=fake_snapshot(folder, seen),
    )
    assert done.status.startswith("Added 6 pairs") and seen[0]["token"] == CANARY
    authors = {p.author for p in space.store.list_pairs(space.store.collection("mine").id)}
    assert authors <= {"alice", "bob"} and authors


# -- the dropdowns and the tab ------------------------------------------------------------------
def test_choices_list_finished_runs_follow_the_run_and_skip_when_unchanged(
    published: Services, tiny_clip: Path
):
    other = published.store.create_collection("other")
    running = make_run(published, tiny_clip, other.id, name="busy")
    assert running.is_dir()
    published.store.update_run("busy", status="running")
    first = v.refresh_choices(published, None, None, None, preferred="other")
    assert first.run["choices"] == ["run-1"] and first.run["value"] == "run-1"
    assert first.collection["value"] == "shapes", "the run's own collection comes first"
    assert sorted(first.collection["choices"]) == ["other", "shapes"]
    again = v.refresh_choices(published, "run-1", "other", first.seen, preferred="other")
    assert again.run == gr.skip() and again.collection == gr.skip()
    published.store.update_run("busy", status="finished")
    later = v.refresh_choices(published, "run-1", "other", first.seen, preferred="other")
    assert later.run["choices"] == ["busy", "run-1"] and later.run["value"] == "run-1"
    assert later.collection["value"] == "other", "the current pick is kept"
    assert v.follow_run(published, "busy")["value"] == "other"


def test_the_collection_follows_the_browsers_current_one_when_it_changes(published: Services):
    published.store.create_collection("other")
    first = v.refresh_choices(published, None, None, None, preferred="shapes")
    assert (first.run["value"], first.collection["value"]) == ("run-1", "shapes")
    # Shown again, the same current collection: the person's own pick in this tab stays.
    kept = v.refresh_choices(published, "run-1", "other", first.seen, preferred="shapes")
    assert kept.collection == gr.skip()
    # Curate opened "other" meanwhile: the tab follows it, and keeps the run.
    followed = v.refresh_choices(published, "run-1", "shapes", first.seen, preferred="other")
    assert (followed.run["value"], followed.collection["value"]) == ("run-1", "other")
    # A current collection deleted elsewhere: the pick stays (it still exists).
    stale = v.refresh_choices(published, "run-1", "other", followed.seen, preferred="gone")
    assert stale.collection["value"] == "other"
    # A browser round trip turns the tuples into lists: still recognised as unchanged.
    as_lists = [list(stale.seen[0]), list(stale.seen[1]), stale.seen[2]]
    again = v.refresh_choices(published, "run-1", "other", as_lists, preferred="gone")
    assert again.run == gr.skip() and again.collection == gr.skip()


def test_a_form_change_clears_the_last_outcome_so_both_lines_agree(published: Services):
    with pytest.warns(UserWarning, match="Nothing to publish"):
        clicked_early = h.dry_run(published, "run-1", "", "shapes", "")
    assert "Nothing to publish" in clicked_early.status
    changed = v.form_changed(published, "run-1", "alice/m", "shapes", "")
    assert changed.check.startswith("Ready: run") and changed.status == ""
    assert visible(changed.ask) is False and visible(changed.download) is False
    assert visible(changed.preview) is False
    empty = v.form_changed(published, "run-1", "", "shapes", "")
    assert empty.check == v.EMPTY_FORM and "⚠" not in empty.check


def test_user_text_in_the_publish_tab_is_text(published: Services, tiny_clip: Path, tmp_path):
    store = published.store
    hostile = "<b>x</b>"
    fill_collection(published, hostile)
    coll = store.collection(hostile)
    pair = store.list_pairs(coll.id, split="eval")[0]  # the card's examples come from eval
    store.update_pair(pair.id, caption="<img src=x onerror=alert(1)>")
    make_run(published, tiny_clip, coll.id, name="<i>r</i>")

    ready = v.check_targets(published, "<i>r</i>", "alice/m", hostile, "alice/d")
    assert "<" not in ready and "&lt;i&gt;r&lt;/i&gt;" in ready and "&lt;b&gt;x&lt;/b&gt;" in ready
    with pytest.warns(UserWarning) as toasts:
        refused = push(published, run="<img src=x>", model_repo="alice/m", dataset_repo="")
    assert "<img" not in refused.status and "<img" not in str(toasts[0].message)
    assert "&lt;img src=x&gt;" in str(toasts[0].message), "the toast shows it as typed"

    for run_name, model_repo in ((None, ""), ("<i>r</i>", "alice/m")):
        dry = h.dry_run(published, run_name, model_repo, hostile, "alice/hostile")
        assert "<" not in dry.status and "&lt;b&gt;x&lt;/b&gt;" in dry.status
        preview = dry.preview["value"]
        assert "## " in preview, "the card's Markdown still renders"
        outside_code = re.sub(r"```.*?```|`[^`\n]*`", "", preview, flags=re.DOTALL)
        assert "<" not in outside_code, "raw HTML shows as text"
        assert "&lt;" in outside_code
        if run_name:  # the model card shows example captions: the hostile one as text
            assert "<img src=x onerror=alert(1)>" in shown(outside_code)


def test_the_publish_tab_reads_the_collection_when_shown_and_checks_in_one_listener(
    published: Services,
):
    demo = build_app(published)
    by_id = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    check, status = by_id["mm-pub-check"], by_id["mm-pub-status"]
    run, collection = by_id["mm-pub-run"], by_id["mm-pub-collection"]
    browser_state = next(b for b in demo.blocks.values() if isinstance(b, gr.BrowserState))
    timer = next(b for b in demo.blocks.values() if isinstance(b, gr.Timer))
    publish_fns = [
        fn
        for fn in demo.fns.values()
        if {check, status, run, collection} & set(fn.outputs)
        or any(t[0] == by_id["mm-pub-dry"]._id for t in fn.targets)
    ]
    assert not any(t[0] == timer._id for fn in publish_fns for t in fn.targets), "no polling"
    (checks,) = [fn for fn in publish_fns if check in fn.outputs]
    assert len(checks.targets) == 4 and checks.trigger_mode == "always_last"
    assert status in checks.outputs, "a form change clears the last outcome"
    readers = [fn for fn in publish_fns if browser_state in fn.inputs]
    assert sorted(t[1] for fn in readers for t in fn.targets) == ["load", "select"]
    for fn in publish_fns:
        if fn.tracks_progress:
            assert len(fn.show_progress_on) == 1, fn.name
        else:
            assert fn.show_progress == "hidden", fn.name


def test_the_app_has_a_publish_tab_whose_handlers_get_the_oauth_token(
    published: Services, monkeypatch: pytest.MonkeyPatch
):
    demo = build_app(published)
    blocks = list(demo.blocks.values())
    assert not any(isinstance(b, gr.LoginButton) for b in blocks), "no login button locally"
    assert any(getattr(b, "elem_id", None) == "mm-pub-dry" for b in blocks)
    wants_token = {
        fn.name: oauth_token_requirement(fn.fn)
        for fn in demo.fns.values()
        if oauth_token_requirement(fn.fn)
    }
    assert set(wants_token.values()) == {"optional"} and len(wants_token) == 3, wants_token

    space = Services(
        published.settings.with_overrides(space_id="owner/mmdemo"), published.store, published.model
    )
    no_oauth = build_app(space)  # SPACE_ID alone: no OAuth set up, so no button (it would fail)
    assert not any(isinstance(b, gr.LoginButton) for b in no_oauth.blocks.values())
    assert any(
        "no Hugging Face login" in str(getattr(b, "value", "")) for b in no_oauth.blocks.values()
    )

    from gradio import oauth

    monkeypatch.setenv("SYSTEM", "spaces")  # what a Space with `hf_oauth: true` gives Gradio
    monkeypatch.setenv("SPACE_ID", "owner/mmdemo")
    for name in ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES"):
        monkeypatch.setattr(oauth, name, "x")
    monkeypatch.setattr(oauth, "OPENID_PROVIDER_URL", "https://huggingface.co")
    space_demo = build_app(space)
    assert any(isinstance(b, gr.LoginButton) for b in space_demo.blocks.values())
    assert space_demo.expects_oauth

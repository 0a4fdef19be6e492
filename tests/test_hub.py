"""Publishing: dry-run output that really loads, and the real publisher against a fake Hub API.

Only the network is faked: :class:`FakeHfApi` stands in for the ``HfApi`` methods the publisher
calls, keeps the "remote" files in memory and raises the errors ``huggingface_hub`` itself raises
(built with its own ``hf_raise_for_status`` from real ``httpx2`` responses).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import CommitInfo
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import hf_raise_for_status
from PIL import Image

from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.data.store import Store
from mmdemo.hub import publish as hub
from mmdemo.hub.publish import (
    DryRunPublisher,
    HubPublisher,
    PublishError,
    RepoExists,
    Secret,
    publish_dataset,
    publish_model,
    push_command,
    redact,
    resolve_token,
)
from mmdemo.settings import Settings
from tests.conftest import make_image_bytes

CANARY = "hf_CANARYcanaryCANARYcanary0123456789"
TOKEN = "hf_testTOKENtestTOKENtestTOKEN01234"
METRICS = {
    "base": {
        "t2i": {
            "recall@1": 0.25,
            "recall@5": 0.5,
            "recall@10": 0.75,
            "mrr@10": 0.4,
            "ndcg@10": 0.5,
        },
        "i2t": {
            "recall@1": 0.2,
            "recall@5": 0.45,
            "recall@10": 0.7,
            "mrr@10": 0.35,
            "ndcg@10": 0.45,
        },
    },
    "finetuned": {
        "t2i": {
            "recall@1": 0.875,
            "recall@5": 1.0,
            "recall@10": 1.0,
            "mrr@10": 0.9,
            "ndcg@10": 0.95,
        },
        "i2t": {
            "recall@1": 0.8125,
            "recall@5": 1.0,
            "recall@10": 1.0,
            "mrr@10": 0.85,
            "ndcg@10": 0.9,
        },
    },
    "probe": {"base": {"accuracy": 0.5}, "finetuned": {"accuracy": 0.6875}},
}
CONFIG = {"epochs": 2, "learning_rate": 5e-05, "batch_size": 16, "loss": "mnrl", "hub_token": TOKEN}


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmdemo.retrieval.models import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny") / "model")


COLORS = [
    (200, 30, 30),
    (30, 200, 30),
    (30, 30, 200),
    (200, 200, 30),
    (200, 30, 200),
    (30, 200, 200),
]
NAMES = ["red", "green", "blue", "yellow", "magenta", "cyan"]


def _fill_collection(store: Store, settings: Settings, name: str = "shapes") -> int:
    collection = store.create_collection(name)
    report = ImportReport(name)
    pairs = []
    for index, (color, word) in enumerate(zip(COLORS, NAMES, strict=True)):
        split = ("train", "train", "eval", "test", "train", "test")[index]
        author = "alice" if index % 2 else "bob"
        pairs.append(
            ingest_item(
                store,
                settings,
                collection.id,
                report,
                f"{word}.png",
                make_image_bytes(color),
                f"a {word} square | plain",
                split,
                author,
            )
        )
    store.add_label(pairs[0].id, "negative", negative_sha256=pairs[1].image_sha256, author="carol")
    store.add_label(pairs[0].id, "negative", negative_caption="a blue circle", author="carol")
    store.add_label(pairs[2].id, "also-positive", negative_sha256=pairs[5].image_sha256)
    return collection.id


def _make_run(
    store: Store,
    settings: Settings,
    tiny: Path,
    collection_id: int | None,
    name: str = "run-1",
    layout: str = "subfolder",
    status: str = "finished",
) -> Path:
    run_dir = settings.runs_dir / name
    if layout == "subfolder":
        shutil.copytree(tiny, run_dir / "model")
        (run_dir / "config.json").write_text(json.dumps(CONFIG))
    else:  # the run folder is the model folder
        shutil.copytree(tiny, run_dir)
    (run_dir / "metrics.json").write_text(json.dumps(METRICS))
    (run_dir / "log.jsonl").write_text('{"step": 1, "loss": 3.2}\n')
    store.create_run(
        name,
        collection_id,
        "sentence-transformers/clip-ViT-B-32",
        str(run_dir),
        config_json=json.dumps(CONFIG) if layout != "subfolder" else "{}",
        status=status,
    )
    store.update_run(name, metrics_json=json.dumps(METRICS))
    return run_dir


@pytest.fixture
def collection_id(store: Store, settings: Settings) -> int:
    return _fill_collection(store, settings)


@pytest.fixture
def run_dir(store: Store, settings: Settings, tiny_model_dir: Path, collection_id: int) -> Path:
    return _make_run(store, settings, tiny_model_dir, collection_id)


def _http_error(status: int, url: str, headers: dict | None = None, body: str = "") -> Exception:
    """The exception huggingface_hub raises for this response (via its own hf_raise_for_status)."""
    request = httpx2.Request("POST", url, headers={"authorization": f"Bearer {TOKEN}"})
    response = httpx2.Response(
        status,
        request=request,
        headers=headers or {},
        json={"error": body} if body else None,
    )
    try:
        hf_raise_for_status(response)
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("no error raised")


class FakeHfApi:
    """Stands in for the HfApi calls; remote repos are dicts of path -> bytes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.pull_requests: list[dict[str, bytes]] = []
        self.fail: dict[str, list[BaseException]] = {}

    def _enter(self, name: str, kwargs: dict) -> None:
        self.calls.append((name, kwargs))
        queue = self.fail.get(name)
        if queue:
            raise queue.pop(0)

    def _missing(self, repo_id: str, repo_type: str) -> Exception:
        prefix = "datasets/" if repo_type == "dataset" else "models/"
        return _http_error(
            404, f"https://huggingface.co/api/{prefix}{repo_id}", {"X-Error-Code": "RepoNotFound"}
        )

    def whoami(self, token=None) -> dict:
        self._enter("whoami", {"token": token})
        return {"name": "alice"}

    def list_repo_files(self, repo_id, *, repo_type=None, token=None) -> list[str]:
        self._enter("list_repo_files", {"repo_id": repo_id, "repo_type": repo_type, "token": token})
        if (repo_type, repo_id) not in self.repos:
            raise self._missing(repo_id, repo_type)
        return sorted(self.repos[(repo_type, repo_id)])

    def create_repo(self, repo_id, *, repo_type, private, exist_ok, token) -> str:
        kwargs = {"repo_id": repo_id, "repo_type": repo_type, "private": private}
        self._enter("create_repo", {**kwargs, "exist_ok": exist_ok, "token": token})
        self.repos.setdefault((repo_type, repo_id), {".gitattributes": b"*.bin lfs\n"})
        return hub.repo_url(repo_id, repo_type)

    def upload_folder(self, **kwargs) -> CommitInfo:
        self._enter("upload_folder", kwargs)
        key = (kwargs["repo_type"], kwargs["repo_id"])
        if key not in self.repos:
            raise self._missing(kwargs["repo_id"], kwargs["repo_type"])
        folder = Path(kwargs["folder_path"])
        files = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*")
            if p.is_file()
        }
        url = hub.repo_url(kwargs["repo_id"], kwargs["repo_type"])
        if kwargs["create_pr"]:
            self.pull_requests.append(files)
            number = len(self.pull_requests)
            return CommitInfo(
                f"{url}/commit/abc", "m", "", "abc", pr_url=f"{url}/discussions/{number}"
            )
        remote = self.repos[key]
        if kwargs.get("delete_patterns") == "*":
            for path in [p for p in remote if p != ".gitattributes" and p not in files]:
                del remote[path]
        remote.update(files)
        return CommitInfo(f"{url}/commit/abc", "m", "", "abc")

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _digest(folder: Path) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in _tree(folder).items()}


def _front_matter(card: str) -> dict:
    import yaml

    return yaml.safe_load(card.split("---")[1])


# -- the dry run really loads ------------------------------------------------------------------
def test_dry_run_writes_a_model_that_encodes_and_a_dataset_that_loads(
    settings: Settings, run_dir: Path, tmp_path: Path
):
    out = tmp_path / "dry"
    result = push_command(settings, "run-1", "alice/shapes-clip", "alice/shapes", None, False, out)
    assert result["dry_run"] is True
    assert result["model_dir"] == str(out / "model") and result["dataset_dir"] == str(
        out / "dataset"
    )
    assert result["model_url"] == "https://huggingface.co/alice/shapes-clip"

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out / "model"), device="cpu")
    image_vec = model.encode([Image.new("RGB", (40, 40), (200, 30, 30))])
    text_vec = model.encode(["a red square"])
    assert image_vec.shape == text_vec.shape == (1, 64)

    files = set(_tree(out / "model"))
    assert {"modules.json", "model.safetensors", "sentence_bert_config.json"} <= files
    assert not files & {"metrics.json", "log.jsonl"}, "run artifacts leaked into the model repo"
    card = (out / "model" / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["base_model"] == "sentence-transformers/clip-ViT-B-32"
    assert meta["datasets"] == ["alice/shapes"]
    assert {"mmdemo", "clip", "sentence-transformers", "hard-negatives"} <= set(meta["tags"])
    assert meta["pipeline_tag"] and meta["library_name"] == "sentence-transformers"
    # Measured at publish time on the one eval pair; the base (a Hub id) cannot load offline.
    assert "| text → image | accuracy@1 | – | 1.0000 |  |" in card
    assert "| image → text | queries | – | 1 |  |" in card
    assert "No base column: the base model could not be loaded when publishing" in card
    assert "recall@1 | 0.2500 | 0.8750" not in card, "training-time numbers replaced"
    assert "| accuracy | 0.5000 | 0.6875 | +0.1875 |" in card
    assert "https://huggingface.co/datasets/alice/shapes" in card
    assert "`learning_rate` | 5e-05" in card and "hub_token" not in card
    assert 'SentenceTransformer("alice/shapes-clip")' in card
    examples = sorted(f for f in files if f.startswith("assets/"))
    assert examples == ["assets/example-1.jpg"], "examples come from the eval split only"
    assert "| ![a blue square \\| plain](assets/example-1.jpg) |" in card
    for name in examples:
        assert Image.open(out / "model" / name).size[0] > 0

    from datasets import load_dataset

    pairs = load_dataset(str(out / "dataset"), "pairs")
    assert sum(len(split) for split in pairs.values()) == 6
    first = pairs["test"][0]
    assert first["image"].convert("RGB").size == (64, 48)
    assert first["caption"].endswith("square | plain")
    triplets = load_dataset(str(out / "dataset"), "triplets")
    assert len(triplets["train"]) == 2
    data_card = (out / "dataset" / "README.md").read_text()
    assert 'load_dataset("alice/shapes", "pairs")' in data_card
    assert "## Authors" in data_card and "- carol" in data_card and "- alice" in data_card
    assert "https://huggingface.co/alice/shapes-clip" in data_card


def test_run_folder_that_is_the_model_folder_publishes_without_run_artifacts(
    store: Store, settings: Settings, tiny_model_dir: Path, collection_id: int, tmp_path: Path
):
    _make_run(store, settings, tiny_model_dir, collection_id, name="flat", layout="root")
    result = publish_model(DryRunPublisher(tmp_path / "out"), store, settings, "flat", "alice/flat")
    files = set(result.files)
    assert {"config.json", "modules.json", "model.safetensors", "README.md"} <= files
    assert not files & {"metrics.json", "log.jsonl"}
    card = (result.folder / "README.md").read_text()
    assert "`epochs` | 2" in card and "| text → image | accuracy@1 | – | 1.0000 |" in card


def test_real_publisher_uploads_exactly_the_dry_run_files(
    settings: Settings, run_dir: Path, tmp_path: Path
):
    before = _digest(run_dir)
    dry = push_command(settings, "run-1", "alice/m", "alice/d", None, True, tmp_path / "dry")
    api = FakeHfApi()
    result = push_command(
        settings, "run-1", "alice/m", "alice/d", None, True, None, token=TOKEN, api=api
    )
    assert result["dry_run"] is False
    assert result["model_url"] == "https://huggingface.co/alice/m"
    assert result["dataset_url"] == "https://huggingface.co/datasets/alice/d"
    creates = [kw for name, kw in api.calls if name == "create_repo"]
    assert [(c["repo_id"], c["repo_type"], c["private"]) for c in creates] == [
        ("alice/d", "dataset", True),
        ("alice/m", "model", True),
    ]
    assert all(kw.get("token") == TOKEN for name, kw in api.calls if name != "list_repo_files")
    remote_model = api.repos[("model", "alice/m")]
    assert remote_model.keys() - {".gitattributes"} == _tree(Path(dry["model_dir"])).keys()
    for path, data in _tree(Path(dry["model_dir"])).items():
        assert remote_model[path] == data, path
    remote_data = api.repos[("dataset", "alice/d")]
    assert remote_data.keys() - {".gitattributes"} == _tree(Path(dry["dataset_dir"])).keys()
    assert _digest(run_dir) == before, "publishing changed the run folder"


# -- names, existing repos ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("repo", "dataset_repo"),
    [
        ("", None),
        ("noslash", None),
        ("a/b/c", None),
        ("alice/bad--name", None),
        ("alice/has space", None),
        ("/name", None),
        ("alice/ok", "alice/bad..data"),
        ("alice/ok", "justaname"),
    ],
)
def test_invalid_repo_names_fail_before_any_request(
    store: Store, settings: Settings, run_dir: Path, repo: str, dataset_repo: str | None
):
    api = FakeHfApi()
    with pytest.raises(PublishError, match="repo name") as caught:
        push_command(settings, "run-1", repo, dataset_repo, None, False, None, token=TOKEN, api=api)
    assert api.calls == []
    assert "owner/name" in str(caught.value) or "not valid" in str(caught.value)
    with pytest.raises(PublishError):
        publish_model(
            HubPublisher(TOKEN, api=api), store, settings, "run-1", repo, dataset_repo=dataset_repo
        )
    assert api.calls == []


def test_existing_repo_asks_then_overwrites_or_opens_a_pull_request(
    store: Store, settings: Settings, run_dir: Path
):
    api = FakeHfApi()
    api.repos[("model", "alice/m")] = {".gitattributes": b"", "README.md": b"old", "old.bin": b"x"}
    publisher = HubPublisher(TOKEN, api=api)
    with pytest.raises(RepoExists, match="already exists") as caught:
        publish_model(publisher, store, settings, "run-1", "alice/m")
    assert caught.value.repo_id == "alice/m"
    assert api.names() == ["list_repo_files"], "nothing may be sent before the user chooses"

    pr = publish_model(publisher, store, settings, "run-1", "alice/m", if_exists="pr")
    assert pr.pr_url == "https://huggingface.co/alice/m/discussions/1"
    assert api.repos[("model", "alice/m")]["README.md"] == b"old", "a PR must leave main alone"
    assert "model.safetensors" in api.pull_requests[0]

    done = publish_model(publisher, store, settings, "run-1", "alice/m", if_exists="overwrite")
    assert done.replaced and done.pr_url is None
    remote = api.repos[("model", "alice/m")]
    assert "old.bin" not in remote and remote["README.md"] != b"old"
    uploads = [kw for name, kw in api.calls if name == "upload_folder"]
    assert [(u["create_pr"], u["delete_patterns"]) for u in uploads] == [(True, None), (False, "*")]
    assert "create_repo" not in api.names()


def test_dataset_repo_that_exists_raises_repo_exists(
    store: Store, settings: Settings, collection_id
):
    api = FakeHfApi()
    api.repos[("dataset", "alice/d")] = {".gitattributes": b"", "data.parquet": b"x"}
    with pytest.raises(RepoExists, match="dataset repo alice/d"):
        publish_dataset(HubPublisher(TOKEN, api=api), store, settings, "shapes", "alice/d")
    assert api.names() == ["list_repo_files"]


# -- failures ----------------------------------------------------------------------------------
URL = "https://huggingface.co/api/models/alice/m/commit/main"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            _http_error(
                401, URL, {"X-Error-Message": "Invalid credentials in Authorization header"}
            ),
            "did not accept the token (401",
        ),
        (_http_error(403, URL, body=f"token {CANARY} lacks write"), "403 Forbidden"),
        (_http_error(429, URL, {"Retry-After": "30"}), "Wait 30 seconds"),
        (_http_error(503, URL), "server error (503)"),
        (httpx2.ConnectError(f"[Errno -3] name resolution failed for {CANARY}"), "Could not reach"),
        (OfflineModeIsEnabled("offline"), "Offline mode is on"),
        (RuntimeError(f"stream reset while sending chunk (auth {CANARY})"), "Something broke"),
    ],
)
def test_hub_failures_become_clear_token_free_messages(
    store: Store, settings: Settings, run_dir: Path, error: Exception, expected: str
):
    api = FakeHfApi()
    api.fail["upload_folder"] = [error]
    with pytest.raises(PublishError) as caught:
        publish_model(HubPublisher(CANARY, api=api), store, settings, "run-1", "alice/m")
    message = str(caught.value)
    assert expected in message
    assert CANARY not in message and TOKEN not in message
    assert caught.value.__suppress_context__ and caught.value.__cause__ is None
    assert not list(settings.tmp_dir.iterdir()), "the staging folder was left behind"


def test_a_broken_upload_then_a_retry_publishes_everything(
    store: Store, settings: Settings, run_dir: Path
):
    api = FakeHfApi()
    api.fail["upload_folder"] = [httpx2.WriteError("connection reset mid-upload")]
    publisher = HubPublisher(TOKEN, api=api)
    before = _digest(run_dir)
    with pytest.raises(PublishError, match="Could not reach the Hub") as caught:
        publish_model(publisher, store, settings, "run-1", "alice/m", progress=None)
    assert "retrying is safe" in str(caught.value)
    assert api.repos[("model", "alice/m")] == {".gitattributes": b"*.bin lfs\n"}
    assert _digest(run_dir) == before
    # The repo now exists but is empty: a plain retry (no overwrite needed) uploads everything.
    steps: list[tuple[int, int | None, str]] = []
    result = publish_model(
        publisher, store, settings, "run-1", "alice/m", progress=lambda *a: steps.append(a)
    )
    assert not result.created
    assert "model.safetensors" in api.repos[("model", "alice/m")]
    assert steps[-1] == (5, 5, "done")
    assert api.names().count("create_repo") == 1


def test_repo_check_errors_are_translated(store: Store, settings: Settings, run_dir: Path):
    api = FakeHfApi()
    api.fail["list_repo_files"] = [_http_error(429, URL)]
    with pytest.raises(PublishError, match="rate-limiting"):
        publish_model(HubPublisher(TOKEN, api=api), store, settings, "run-1", "alice/m")


def test_unfinished_run_and_missing_model_are_refused(
    store: Store, settings: Settings, tiny_model_dir: Path, tmp_path: Path
):
    _make_run(store, settings, tiny_model_dir, None, name="busy", status="running")
    with pytest.raises(PublishError, match="is running"):
        publish_model(DryRunPublisher(tmp_path / "o"), store, settings, "busy", "alice/m")
    empty = settings.runs_dir / "empty"
    empty.mkdir()
    store.create_run("empty", None, "tiny", str(empty), status="finished")
    with pytest.raises(PublishError, match="no saved model"):
        publish_model(DryRunPublisher(tmp_path / "o"), store, settings, "empty", "alice/m")
    with pytest.raises(PublishError, match="No run named"):
        publish_model(DryRunPublisher(tmp_path / "o"), store, settings, "nope", "alice/m")


def test_push_without_a_token_says_how_to_log_in(
    settings: Settings, run_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    _no_ambient_token(monkeypatch, tmp_path)
    api = FakeHfApi()
    with pytest.raises(PublishError, match="HF_TOKEN"):
        push_command(settings, "run-1", "alice/m", None, None, False, None, api=api)
    assert api.calls == []


# -- tokens ------------------------------------------------------------------------------------
def _no_ambient_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))


def test_resolve_token_prefers_oauth_then_pasted_then_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    _no_ambient_token(monkeypatch, tmp_path)
    assert resolve_token(None, None) is None
    assert resolve_token("  ", "") is None
    monkeypatch.setenv("HF_TOKEN", CANARY)
    assert resolve_token(None, None).reveal() == CANARY
    assert resolve_token("hf_pasted", None).reveal() == "hf_pasted"

    class OAuthToken:  # the shape of gradio's OAuthToken
        token = "hf_oauth"

    assert resolve_token("hf_pasted", OAuthToken()).reveal() == "hf_oauth"
    secret = resolve_token(None, None)
    assert repr(secret) == "Secret('***')" and str(secret) == "***" and f"{secret}" == "***"
    assert CANARY not in repr(HubPublisher(secret, api=FakeHfApi()))
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_redact_masks_the_token_and_anything_token_shaped():
    text = f"401 for Bearer {TOKEN} and {CANARY} (token={TOKEN})"
    clean = redact(text, Secret(TOKEN))
    assert TOKEN not in clean and CANARY not in clean
    assert redact("plain words", None) == "plain words"


def test_canary_token_from_the_environment_is_never_written_or_logged(
    settings: Settings,
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture,
):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    caplog.set_level("DEBUG")
    out = tmp_path / "dry"
    push_command(settings, "run-1", "alice/m", "alice/d", None, False, out)
    api = FakeHfApi()
    push_command(settings, "run-1", "alice/m", "alice/d", None, False, None, api=api)
    assert {kw["token"] for name, kw in api.calls} == {CANARY}, "HF_TOKEN was not used"
    api.fail["upload_folder"] = [
        RuntimeError(f"upload died, Authorization: Bearer {CANARY}"),
        _http_error(403, URL, body=f"{CANARY} may not write"),
    ]
    errors = []
    for _ in range(2):
        with pytest.raises(PublishError) as caught:
            push_command(
                settings,
                "run-1",
                "alice/m",
                None,
                None,
                False,
                None,
                if_exists="overwrite",
                api=api,
            )
        errors.append(caught.value)
    zipped = hub.zip_folder(out)

    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [caplog.text]
    captured = capsys.readouterr()
    texts += [captured.out, captured.err]
    assert any("403" in t for t in texts) and "Hub call failed" in caplog.text
    for text in texts:
        assert CANARY not in text
    needle = CANARY.encode()
    scanned = 0
    for root in (settings.home, tmp_path):
        for path in root.rglob("*"):
            if path.is_file():
                scanned += 1
                assert needle not in path.read_bytes(), f"token written to {path}"
    assert scanned > 20 and zipped.is_file()


# -- small helpers -----------------------------------------------------------------------------
def test_on_space_reads_space_id_from_settings_or_an_environment(tmp_path: Path):
    home = str(tmp_path / "h")
    assert hub.on_space(Settings.from_env({"MMDEMO_HOME": home, "SPACE_ID": "alice/app"}))
    assert not hub.on_space(Settings.from_env({"MMDEMO_HOME": home}))
    assert hub.on_space({"SPACE_ID": "alice/app"}) and not hub.on_space({})


def test_zip_folder_holds_every_file_of_the_dry_run(settings: Settings, run_dir: Path, tmp_path):
    out = tmp_path / "dry"
    push_command(settings, "run-1", "alice/m", "alice/d", None, False, out)
    archive = hub.zip_folder(out)
    assert archive == tmp_path / "dry.zip"
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        assert names == set(_tree(out))
        card = z.read("model/README.md")
    assert card == (out / "model" / "README.md").read_bytes()
    assert Image.open(io.BytesIO(_tree(out)["model/assets/example-1.jpg"])).size[0] > 0


def test_dry_run_refuses_to_replace_a_foreign_folder(settings, run_dir: Path, tmp_path: Path):
    (tmp_path / "out" / "model").mkdir(parents=True)
    (tmp_path / "out" / "model" / "precious.txt").write_text("mine")
    with pytest.raises(PublishError, match="earlier dry run"):
        push_command(settings, "run-1", "alice/m", None, None, False, tmp_path / "out")
    assert (tmp_path / "out" / "model" / "precious.txt").read_text() == "mine"


# -- the reverse: a collection back from a dataset repo -----------------------------------------
def test_pull_dataset_imports_pairs_and_labels_from_a_dataset_repo(
    store: Store, settings: Settings, collection_id: int, tmp_path: Path
):
    published = publish_dataset(
        DryRunPublisher(tmp_path / "dry"), store, settings, "shapes", "alice/shapes"
    )
    seen: list[dict] = []

    def fake_download(**kwargs) -> str:  # stands in for snapshot_download
        seen.append(kwargs)
        shutil.copytree(published.folder, kwargs["local_dir"], dirs_exist_ok=True)
        return kwargs["local_dir"]

    report = hub.pull_dataset(
        store, settings, "restored", "alice/shapes", token=TOKEN, download=fake_download
    )
    assert seen[0]["repo_id"] == "alice/shapes" and seen[0]["repo_type"] == "dataset"
    assert seen[0]["token"] == TOKEN
    restored = store.collection("restored")
    before, after = store.collection_stats(collection_id), store.collection_stats(restored.id)
    assert report.added == 6
    assert (after.pairs, after.splits) == (before.pairs, before.splits)
    assert (after.negatives, after.also_positives) == (before.negatives, before.also_positives)
    assert not list(settings.tmp_dir.iterdir()), "the download folder was left behind"

    def offline(**kwargs):
        raise httpx2.ConnectError("no route to host")

    with pytest.raises(PublishError, match="Could not reach the Hub while downloading"):
        hub.pull_dataset(store, settings, "again", "alice/shapes", download=offline)
    with pytest.raises(PublishError, match="owner/name"):
        hub.pull_dataset(store, settings, "again", "shapes", download=fake_download)
    assert len(seen) == 1


@pytest.mark.parametrize("source", ["export", "published"])
@pytest.mark.parametrize("name", ["unlabeled", "image-negatives", "everything"])
def test_pull_dataset_gives_back_the_same_pairs_splits_and_labels(
    name: str, source: str, store: Store, settings: Settings, tmp_path: Path
):
    """Whatever labels a collection has (none included), a pull of its export or of its
    published dataset restores the same pairs, splits, authors and labels."""
    from mmdemo.data.export import export_collection
    from tests.test_export import COLLECTIONS

    COLLECTIONS[name](store, settings, name)
    if source == "export":
        folder = export_collection(store, settings, name, tmp_path / "export").out_dir
    else:
        publisher = DryRunPublisher(tmp_path / "dry")
        folder = publish_dataset(publisher, store, settings, name, f"alice/{name}").folder

    def fake_download(**kwargs) -> str:  # stands in for snapshot_download
        shutil.copytree(folder, kwargs["local_dir"], dirs_exist_ok=True)
        return kwargs["local_dir"]

    report = hub.pull_dataset(store, settings, "pulled", f"alice/{name}", download=fake_download)

    def pairs(collection: str) -> set[tuple]:
        found = store.collection(collection)
        return {(p.caption, p.image_sha256, p.split, p.author) for p in store.list_pairs(found.id)}

    def labels(collection: str) -> set[tuple]:
        found = store.collection(collection)
        sha = {p.id: p.image_sha256 for p in store.list_pairs(found.id)}
        return {
            (sha[lab.pair_id], lab.kind, lab.negative_sha256, lab.negative_caption, lab.author)
            for lab in store.labels_for_collection(found.id)
        }

    assert report.rejected == []
    assert pairs("pulled") == pairs(name)
    assert labels("pulled") == labels(name)
    assert report.negatives_added == len(labels(name))


def test_the_fake_is_called_exactly_as_the_real_hfapi_accepts(
    settings: Settings, run_dir: Path, tmp_path: Path
):
    import inspect

    from huggingface_hub import HfApi

    api = FakeHfApi()
    push_command(settings, "run-1", "alice/m", "alice/d", None, False, None, token=TOKEN, api=api)
    HubPublisher(TOKEN, api=api).whoami()
    assert {"list_repo_files", "create_repo", "upload_folder", "whoami"} == set(api.names())
    for name, kwargs in api.calls:
        args = [kwargs.pop("repo_id")] if name == "list_repo_files" else []
        inspect.signature(getattr(HfApi, name)).bind(HfApi(), *args, **kwargs)


def test_real_hfapi_in_offline_mode_gives_a_clear_message(
    store, settings, run_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read per request: no network here
    with pytest.raises(PublishError, match="Offline mode is on"):
        publish_model(HubPublisher(TOKEN), store, settings, "run-1", "alice/m")


def test_push_command_says_how_to_overwrite_an_existing_repo(settings, run_dir: Path):
    api = FakeHfApi()
    api.repos[("model", "alice/m")] = {"README.md": b"old"}
    with pytest.raises(RepoExists, match="--if-exists overwrite"):
        push_command(settings, "run-1", "alice/m", None, None, False, None, token=TOKEN, api=api)

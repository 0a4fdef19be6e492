"""SigLIP and SigLIP 2 as base models, and SigLIP's sigmoid loss (real tiny models, real trainer).

The fast tests build the tiny SigLIP / SigLIP 2 (about a second each), check the text padding
they were trained with survives a save and reload, and check the sigmoid loss against the
formula, its masking, its gradients under two real gloo processes, and that the trainer trains its
temperature and bias. The slow test finetunes both tiny models through the CLI on a small demo
collection and uses the runs (eval, search, compare, a publish dry run).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mmdemo.retrieval import models
from mmdemo.retrieval.models import (
    TINY_FAMILIES,
    apply_family_defaults,
    build_tiny_model,
    ensure_tiny_model,
    load_model,
    resolve_base_model,
    verify_encodes_both,
)
from mmdemo.settings import Settings
from mmdemo.training.data import (
    EXTRA_CAPTION,
    EXTRA_IMAGE,
    EXTRA_NONE,
    MaskedSigmoidLoss,
    Relevance,
    build_loss,
    sigmoid_pair_losses,
)
from tests.conftest import make_image_bytes

SHORT = ["a red square", "a big blue circle on the left of a small green triangle"]


@pytest.fixture(scope="module")
def tiny_siglips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both tiny SigLIPs, built once for this module in folders named like the app's."""
    root = tmp_path_factory.mktemp("tiny-siglips")
    return {f: build_tiny_model(root / TINY_FAMILIES[f].dirname, f) for f in ("siglip", "siglip2")}


# -- the tiny models -------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_tiny_siglip_saves_its_padding_and_encodes_both(tiny_siglips: dict, family: str):
    """The saved folder loads through the generic Transformer, pads every text to 64 tokens
    (written into sentence_bert_config.json, so any loader gets it), and embeds images and
    text (one modality per call) into one 64-dimensional space."""
    folder = tiny_siglips[family]
    saved = json.loads((folder / "sentence_bert_config.json").read_text())
    assert saved["processing_kwargs"]["text"] == {"padding": "max_length", "max_length": 64}
    model = load_model(str(folder), fresh=True)
    assert type(model[0]).__name__ == "Transformer"
    assert model[0].model.config.model_type == family
    features = model[0].preprocess(SHORT)
    assert tuple(features["input_ids"].shape) == (2, 64)
    assert verify_encodes_both(model) == 64
    if family == "siglip2":  # patch-based inputs at the tiny geometry, not the processor's default
        image = model[0].preprocess([_image(size=(96, 96)), _image()])
        assert tuple(image["pixel_values"].shape) == (2, 64, 4 * 4 * 3)
        assert image["spatial_shapes"].tolist() == [[8, 8], [7, 9]]  # 64×48 keeps its shape


def test_tiny_siglip_tokenizers_keep_the_demo_words_whole(tiny_siglips: dict):
    siglip = load_model(str(tiny_siglips["siglip"]), fresh=True)[0].tokenizer
    pieces = siglip.convert_ids_to_tokens(siglip("A red square, left!")["input_ids"])
    assert pieces == ["▁a", "▁red", "▁square", "▁left", "</s>"]  # lowercased, no punctuation
    siglip2 = load_model(str(tiny_siglips["siglip2"]), fresh=True)[0].tokenizer
    pieces = siglip2.convert_ids_to_tokens(siglip2("A red square")["input_ids"])
    assert pieces == ["a", "▁red", "▁square"]
    # Anything else still tokenizes: SigLIP 2 falls back to bytes.
    assert "<0xC3>" in siglip2.convert_ids_to_tokens(siglip2("é")["input_ids"])


def test_tiny_siglip_is_deterministic_per_seed(tiny_siglips: dict, tmp_path: Path):
    again = build_tiny_model(tmp_path / "again", "siglip2", seed=0)
    other = build_tiny_model(tmp_path / "other", "siglip2", seed=1)
    weights = (tiny_siglips["siglip2"] / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights


def test_a_siglip_without_a_padding_setting_gets_it_when_loaded(tmp_path: Path, tiny_clip_dir):
    """A plain transformers SigLIP folder (as on the Hub) would pad to the longest text; the app
    loads it with max_length padding and every model it saves carries the setting."""
    raw = tmp_path / "raw"
    models._save_tiny_hf_folder(raw, 0, "siglip")
    model = load_model(str(raw), fresh=True)
    assert model[0].processing_kwargs["text"] == {"padding": "max_length", "max_length": 64}
    assert tuple(model[0].preprocess(SHORT)["input_ids"].shape) == (2, 64)
    model.save_pretrained(str(tmp_path / "saved"))
    saved = json.loads((tmp_path / "saved" / "sentence_bert_config.json").read_text())
    assert saved["processing_kwargs"]["text"]["padding"] == "max_length"
    # A model's own setting wins, and CLIP is left alone.
    model[0].processing_kwargs = {"text": {"padding": "longest"}}
    assert not apply_family_defaults(model)
    clip = load_model(str(tiny_clip_dir), fresh=True)
    assert not clip[0].processing_kwargs
    assert clip[0].preprocess(SHORT)["input_ids"].shape[1] < 64


@pytest.mark.parametrize(
    ("value", "dirname"), [("tiny-siglip", "tiny-siglip"), ("TINY-SIGLIP2", "tiny-siglip2")]
)
def test_base_model_names_pick_the_tiny_siglips_built_once(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, value: str, dirname: str
):
    choice = resolve_base_model(settings.with_overrides(base_model=value))
    assert choice.is_tiny and Path(choice.spec) == settings.models_dir / dirname
    assert choice.label == f"{dirname} (built-in)" and "SigLIP" in choice.reason

    def no_rebuild(*args: object, **kwargs: object) -> Path:
        raise AssertionError("rebuilt")

    monkeypatch.setattr(models, "build_tiny_model", no_rebuild)
    assert ensure_tiny_model(settings, dirname.removeprefix("tiny-")) == Path(choice.spec)
    assert sorted(p.name for p in settings.models_dir.iterdir()) == [dirname]


# -- the sigmoid loss ------------------------------------------------------------------------------
def _labels(rows: list[tuple[int, int, int, int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


def _by_hand(caps, imgs, positive, t: float, b: float) -> float:
    total = 0.0
    for i in range(caps.size(0)):
        for j in range(imgs.size(0)):
            z = 1.0 if positive(i, j) else -1.0
            cos = float(torch.cosine_similarity(caps[i], imgs[j], dim=0))
            total += -math.log(1 / (1 + math.exp(-z * (t * cos + b))))
    return total / caps.size(0)


def test_sigmoid_loss_is_the_papers_formula_with_repeats_as_positives():
    """``1/|B| Σ_i Σ_j -log σ(z_ij (t cos + b))``; rows 0 and 1 share a caption, so (0, 1) and
    (1, 0) are positives too, not negatives."""
    torch.manual_seed(0)
    caps, imgs = torch.randn(3, 8), torch.randn(3, 8)
    labels = _labels([(0, 0, EXTRA_NONE, -1), (0, 1, EXTRA_NONE, -1), (1, 2, EXTRA_NONE, -1)])
    relevance = Relevance({(0, 0), (0, 1), (1, 2)}, n_images=3)
    loss = MaskedSigmoidLoss(nn.Identity(), relevance)
    assert loss.temperature == pytest.approx(10.0) and loss.bias.item() == -10.0
    got = loss.compute_loss_from_embeddings([caps, imgs], labels).item()
    groups = [0, 0, 1]
    expected = _by_hand(caps, imgs, lambda i, j: groups[i] == groups[j], 10.0, -10.0)
    assert got == pytest.approx(expected, rel=1e-5)
    # Without the repeat, the same embeddings give the plain diagonal loss.
    plain = Relevance({(0, 0), (1, 1), (2, 2)}, n_images=3)
    distinct = _labels([(0, 0, EXTRA_NONE, -1), (1, 1, EXTRA_NONE, -1), (2, 2, EXTRA_NONE, -1)])
    got = (
        MaskedSigmoidLoss(nn.Identity(), plain)
        .compute_loss_from_embeddings([caps, imgs], distinct)
        .item()
    )
    assert got == pytest.approx(_by_hand(caps, imgs, lambda i, j: i == j, 10.0, -10.0), rel=1e-5)


def test_sigmoid_loss_scores_hard_negatives_as_more_no_pairs():
    """An image negative is one more column, a caption negative one more row of its caption; a
    batch's rows of the other kind add nothing."""
    torch.manual_seed(1)
    caps, imgs, extra = torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 8)
    relevance = Relevance({(0, 0), (1, 1)}, n_images=4)
    log_t, b = torch.tensor(math.log(10.0)), torch.tensor(-10.0)
    image_rows = _labels([(0, 0, EXTRA_IMAGE, 2), (1, 1, EXTRA_IMAGE, 3)])
    got = sigmoid_pair_losses(caps, imgs, extra, image_rows, relevance, log_t, b).mean()
    expected = _by_hand(caps, torch.cat([imgs, extra]), lambda i, j: i == j, 10.0, -10.0)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    caption_rows = _labels([(0, 0, EXTRA_CAPTION, 5), (1, 1, EXTRA_NONE, -1)])
    got = sigmoid_pair_losses(caps, imgs, extra, caption_rows, relevance, log_t, b).mean()
    rows = torch.cat([caps, extra[:1]])  # caption 0's negative is a third row, owned by row 0
    expected = _by_hand(rows, imgs, lambda i, j: i == j, 10.0, -10.0) * 3 / 2
    assert float(got) == pytest.approx(expected, rel=1e-5)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        caps, imgs, labels, relevance = _rank_batch(rank)
        loss = MaskedSigmoidLoss(nn.Identity(), relevance)
        loss.compute_loss_from_embeddings([caps, imgs], labels).backward()
        torch.save([loss.log_scale.grad, loss.bias.grad], Path(out_dir) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def _rank_batch(rank: int):
    generator = torch.Generator().manual_seed(100 + rank)
    caps, imgs = torch.randn(4, 8, generator=generator), torch.randn(4, 8, generator=generator)
    labels = _labels([(i, i, EXTRA_NONE, -1) for i in range(4)])
    return caps, imgs, labels, Relevance({(i, i) for i in range(4)}, n_images=4)


def test_sigmoid_loss_parameters_get_the_same_gradient_in_every_process(tmp_path: Path):
    """DDP averages the model's gradients only; the loss averages its own two the same way, so
    every process takes the same step (two real gloo processes on different batches)."""
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    grads = [torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1)]
    alone = []
    for rank in (0, 1):
        caps, imgs, labels, relevance = _rank_batch(rank)
        loss = MaskedSigmoidLoss(nn.Identity(), relevance)
        loss.compute_loss_from_embeddings([caps, imgs], labels).backward()
        alone.append([loss.log_scale.grad, loss.bias.grad])
    for k in (0, 1):
        assert torch.allclose(grads[0][k], grads[1][k])
        assert torch.allclose(grads[0][k], (alone[0][k] + alone[1][k]) / 2, atol=1e-6)
        assert not torch.allclose(alone[0][k], alone[1][k])


def test_the_trainer_trains_the_temperature_and_bias(tiny_siglips: dict, tmp_path: Path):
    """sentence-transformers' optimizer takes the loss's parameters: two steps move t and b;
    the model's own logit_scale / logit_bias stay frozen (our losses do not use them)."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    from mmdemo.training.run import _load

    model = _load(str(tiny_siglips["siglip"]))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if "logit_" in n}
    assert len(frozen) == 2 and not any(
        p.requires_grad for n, p in model.named_parameters() if "logit_" in n
    )
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200), (30, 200, 30), (200, 200, 30)]):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(make_image_bytes(colour))
    captions = ["a red square", "a blue square", "a green square", "a yellow square"]
    data = Dataset.from_dict(
        {
            "anchor": captions,
            "positive": [str(p) for p in paths],
            "label": [[i, i, EXTRA_NONE, -1] for i in range(4)],
        }
    )
    loss = build_loss(model, Relevance({(i, i) for i in range(4)}, 4), "sigmoid")
    start = (loss.log_scale.item(), loss.bias.item())
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    trainer.train()
    grouped = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert id(loss.log_scale) in grouped and id(loss.bias) in grouped
    assert (loss.log_scale.item(), loss.bias.item()) != start
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param.detach(), frozen[name])


def test_sigmoid_loss_works_inside_matryoshka(tiny_siglips: dict):
    model = load_model(str(tiny_siglips["siglip2"]), fresh=True)
    loss = build_loss(model, Relevance({(0, 0), (1, 1)}, 2), "sigmoid", matryoshka_dims=(64, 16))
    features = [model[0].preprocess(["a red square", "a blue circle"])]
    features.append(model[0].preprocess([_image(), _image((20, 20, 200))]))
    labels = _labels([(0, 0, EXTRA_NONE, -1), (1, 1, EXTRA_NONE, -1)])
    value = loss(features, labels)
    value.backward()
    assert value.item() > 0 and loss.loss.bias.grad is not None


def test_a_pretrained_siglip_starts_the_loss_from_its_own_temperature(tiny_siglips: dict):
    model = load_model(str(tiny_siglips["siglip"]), fresh=True)
    assert MaskedSigmoidLoss(model, Relevance(set(), 1)).temperature == pytest.approx(10.0)
    with torch.no_grad():  # as if trained: transformers initialises both to 0
        model[0].model.logit_scale.fill_(math.log(117.0))
        model[0].model.logit_bias.fill_(-12.5)
    loss = MaskedSigmoidLoss(model, Relevance(set(), 1))
    assert loss.temperature == pytest.approx(117.0, rel=1e-4) and loss.bias.item() == -12.5


# -- the choices people see ------------------------------------------------------------------------
def test_every_loss_is_offered_in_the_tab_and_the_cli():
    from mmdemo.cli import build_parser
    from mmdemo.training.run import LOSSES, TrainConfig
    from mmdemo.ui.finetune.knobs import LOSS_CHOICES

    assert [value for _, value in LOSS_CHOICES] == list(LOSSES)
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    loss_action = next(a for a in train._actions if a.dest == "loss")
    assert list(loss_action.choices) == list(LOSSES)
    assert "sigmoid" in LOSSES and TrainConfig(loss="sigmoid").validate().symmetric


def test_cards_describe_each_tiny_base(tmp_path: Path):
    from mmdemo.hub.cards import TINY_BASE_DESCRIPTION, tiny_base_description
    from mmdemo.hub.staging import describe_base_model

    for dirname, title in [
        ("tiny-clip", "CLIP"),
        ("tiny-siglip", "SigLIP"),
        ("tiny-siglip2", "SigLIP 2"),
    ]:
        base = describe_base_model(str(tmp_path / "models" / dirname))
        assert base == type(base)(f"mmdemo's built-in tiny {title}", None, True, title)
        assert tiny_base_description(title).startswith(f"mmdemo's built-in tiny {title}: ")
    assert tiny_base_description("CLIP") == TINY_BASE_DESCRIPTION
    assert "64 tokens" in tiny_base_description("SigLIP")
    assert "patches" in tiny_base_description("SigLIP 2")
    assert not describe_base_model(str(tmp_path / "tiny")).is_tiny  # a folder named "tiny"


def _image(colour: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (64, 48)):
    from PIL import Image

    return Image.new("RGB", size, colour)


# -- the whole app on them -------------------------------------------------------------------------
GAIN_MARGIN_R1 = 0.2
"""Half the smallest text→image recall@1 gain measured on this demo (80 pairs, 10 eval queries):
both tiny SigLIPs × MNRL / sigmoid × seeds 0–2 gained +0.4 to +0.6 (base 0.1 / 0.2)."""
GAIN_MARGIN_MRR = 0.18
"""Half the smallest MRR@10 gain measured there (+0.37 to +0.55)."""


def _cli(capsys, *argv: str) -> object:
    from mmdemo.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads([line for line in captured.out.splitlines() if line.strip()][-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("base", "loss", "title"),
    [("tiny-siglip", "mnrl", "SigLIP"), ("tiny-siglip2", "sigmoid", "SigLIP 2")],
)
def test_cli_finetunes_a_tiny_siglip_and_uses_the_run(
    capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base: str, loss: str, title: str
):
    """A fresh home, ``train --base-model tiny-siglip[2]`` on an 80-pair demo: a clear gain over
    the base; the saved run keeps SigLIP's padding; eval, search, compare and a publish dry run
    work on it, and the card describes the tiny base."""
    home = tmp_path / "home"
    monkeypatch.setenv("MMDEMO_BASE_MODEL", base)  # what `--model base` means below
    monkeypatch.setenv("MMDEMO_DEMO_PAIRS", "80")
    run = f"{base}-{loss}"
    trained = _cli(
        capsys, "--home", str(home), "train", "--collection", "demo-shapes",
        "--base-model", base, "--loss", loss, "--run", run, "--max-minutes", "10",
    )  # fmt: skip
    assert trained["status"] == "finished"
    before, after = trained["metrics"]["base"]["t2i"], trained["metrics"]["finetuned"]["t2i"]
    assert after["recall@1"] > before["recall@1"] + GAIN_MARGIN_R1, trained["metrics"]
    assert after["mrr@10"] > before["mrr@10"] + GAIN_MARGIN_MRR, trained["metrics"]
    model_dir = Path(trained["model_dir"])
    saved = json.loads((model_dir / "sentence_bert_config.json").read_text())
    assert saved["processing_kwargs"]["text"] == {"padding": "max_length", "max_length": 64}

    for which, expected in (("base", before), (run, after)):
        measured = _cli(
            capsys, "--home", str(home), "eval", "--collection", "demo-shapes", "--model", which
        )
        assert measured["t2i"]["recall@1"] == pytest.approx(expected["recall@1"])
    hits = _cli(
        capsys, "--home", str(home), "search", "--collection", "demo-shapes", "--model", run,
        "--query", "a red circle above a blue square", "-k", "3",
    )  # fmt: skip
    assert len(hits) == 3 and hits[0]["score"] >= hits[-1]["score"]
    compared = _cli(
        capsys, "--home", str(home), "compare", "--collection", "demo-shapes", "--run", run
    )
    assert compared

    out = tmp_path / "dry"
    pushed = _cli(
        capsys, "--home", str(home), "push", "--run", run, "--repo", f"someone/{run}",
        "--dry-run", str(out),
    )  # fmt: skip
    assert pushed["dry_run"] is True
    card = next(out.rglob("README.md")).read_text(encoding="utf-8")
    assert f"mmdemo's built-in tiny {title}:" in card
    assert str(home) not in card


def test_the_card_config_names_the_start_values():
    loss = MaskedSigmoidLoss(nn.Identity(), Relevance(set(), 1))
    config = loss.get_config_dict()
    assert config["start_temperature"] == pytest.approx(10.0) and config["start_bias"] == -10.0
    assert config["learns_temperature_and_bias"] and config["relevant_pairs"] == "positives"


@pytest.mark.slow
def test_finetune_tab_trains_a_tiny_siglip_with_the_sigmoid_loss(tmp_path: Path):
    """The Finetune tab's Start on a Services whose base model is the tiny SigLIP, loss picked
    from the tab's choices: the run finishes with a clear gain and the runs table names the base."""
    from mmdemo.services import DEMO_COLLECTION, Services
    from mmdemo.ui.finetune import handlers as h
    from mmdemo.ui.finetune.knobs import LOSS_CHOICES

    settings = Settings.from_env(
        {"MMDEMO_HOME": str(tmp_path / "home"), "MMDEMO_BASE_MODEL": "tiny-siglip"}
    ).with_overrides(demo_pairs=80)
    services = Services.create(settings)
    try:
        assert services.model.is_tiny and services.model.label == "tiny-siglip (built-in)"
        sigmoid = {value: label for label, value in LOSS_CHOICES}["sigmoid"]
        assert "SigLIP" in sigmoid
        knobs = h.default_knobs(services.model.is_tiny)._replace(loss="sigmoid", max_minutes=10)
        h.start_finetune(services, DEMO_COLLECTION, knobs)
        snap = services.jobs.status()
        done = services.jobs.wait(snap.job_id, 600)
        assert done.state == "finished", done.message
        name = done.progress["run_name"]
        metrics = json.loads((settings.runs_dir / name / "metrics.json").read_text())
        before, after = metrics["base"]["t2i"], metrics["finetuned"]["t2i"]
        assert after["recall@1"] > before["recall@1"] + GAIN_MARGIN_R1, metrics
        config = json.loads((settings.runs_dir / name / "config.json").read_text())
        assert config["config"]["loss"] == "sigmoid"
        assert config["base_model"] == str(settings.models_dir / "tiny-siglip")
        view = h.poll(services, None, DEMO_COLLECTION, knobs)
        row = view.runs.iloc[0]
        assert (row["run"], row["status"], row["base model"]) == (name, "finished", "tiny-siglip")
    finally:
        services.jobs.cancel()
        services.close()

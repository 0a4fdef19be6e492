"""Training rows from a collection, and losses that know which in-batch pairs match.

Rows. Every train-split pair becomes ``(anchor caption, positive image path)``, the image being the
pre-resized copy. Hand-labeled hard negatives add rows with a third ``negative`` column:

- an image negative (kind ``negative``) → ``(caption, image, negative image)`` in the dataset
  ``image_negatives``: one more candidate for the text→image direction;
- a caption negative → ``(caption, image, negative caption)`` in ``caption_negatives``: one more
  candidate for the image→text direction, so these rows exist only with a symmetric loss (with the
  one-directional default they are counted as unused, and the UI can say so);
- labels of kind ``also-positive`` are never negatives; they mark more relevant items instead.
  Labels by several people are resolved first (:func:`mmdemo.data.agreement.consensus`): a
  candidate anyone marked also-correct is not a negative, whoever marked it one.

A labeled pair appears once per negative (its plain row is replaced), so labeled pairs weigh a bit
more. Negatives that are held-out (eval/test) images or captions are dropped: training must not
see the items evaluation retrieves. Datasets stay homogeneous (one kind of third column each); the
trainer samples batches from them in proportion to their size.

False in-batch negatives. Two rows with the same caption (class-like data) or an also-positive
image in the same batch would be pushed apart by a plain in-batch-negatives loss. Each row carries
integer labels ``[caption group, image id, extra kind, extra id]`` and the losses below mask every
candidate that is relevant to the query (same caption, same image, or an also-positive label) out
of the softmax. So batches can be as large as wanted on data whose captions repeat, where
``BatchSamplers.NO_DUPLICATES`` would cap a batch at the number of distinct captions; that sampler
is only picked (``sampler="auto"``) when captions are mostly distinct (≥ 4 × batch size), where it
costs nothing and spreads duplicates over batches.

Measured on class-like data (320 demo scenes captioned only by their two shapes: 6 captions; tiny
model, batch 32, 80 / 240 steps, eval text→image recall@1): masking + default sampler 0.67 / 1.00;
NO_DUPLICATES (batches of at most 6 rows) 0.33 / 0.67; no masking + default sampler 0.50 / 0.83.

SigLIP's sigmoid loss (:class:`MaskedSigmoidLoss`, ``loss="sigmoid"``) scores every caption–image
pair of a batch as its own yes/no question, so a relevant pair off the diagonal (same caption, same
image, also-positive) is simply a *positive* there (label +1), not something to hide; hard
negatives are more "no" pairs. Its temperature and bias are parameters of the loss, trained with the
model and averaged across processes under DDP.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.util import cos_sim
from torch import Tensor, nn

from mmdemo.data.agreement import conflicts, consensus
from mmdemo.data.images import train_path
from mmdemo.data.store import Store
from mmdemo.settings import Settings

EXTRA_NONE, EXTRA_IMAGE, EXTRA_CAPTION = 0, 1, 2
NO_DUPLICATES_FACTOR = 4
"""``sampler="auto"`` uses NO_DUPLICATES when distinct captions ≥ this × batch size."""


@dataclass
class TrainData:
    """What the trainer needs: the datasets, the relevance relation and counts for people."""

    columns: dict[str, dict[str, list]]
    """Per dataset name: ``anchor``, ``positive``, optional ``negative`` and ``label`` columns."""
    relevance: Relevance
    stats: dict[str, Any] = field(default_factory=dict)

    def datasets(self) -> Any:
        """A ``datasets.Dataset`` (one kind of rows) or a ``DatasetDict`` (several)."""
        from datasets import Dataset, DatasetDict

        built = {name: Dataset.from_dict(cols) for name, cols in self.columns.items()}
        if len(built) == 1:
            return next(iter(built.values()))
        return DatasetDict(built)

    @property
    def image_paths(self) -> set[str]:
        """Every image path in the datasets (what :mod:`mmdemo.training.pipeline` prepares)."""
        paths: set[str] = set()
        for cols in self.columns.values():
            paths.update(cols["positive"])
            if cols is self.columns.get("image_negatives"):
                paths.update(cols["negative"])
        return paths

    def steps_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Optimizer steps in one epoch (every dataset's batches, shared across processes)."""
        batches = sum(-(-len(c["anchor"]) // batch_size) for c in self.columns.values())
        return max(1, -(-batches // max(1, world_size)))


class Relevance:
    """The set of (caption group, image id) that match: a pair, or an also-positive label."""

    def __init__(self, matches: set[tuple[int, int]], n_images: int):
        self.n_images = max(1, int(n_images))
        keys = sorted(g * self.n_images + i for g, i in matches)
        self._keys = torch.tensor(keys, dtype=torch.int64)
        self._on_device: dict[torch.device, Tensor] = {}

    def __len__(self) -> int:
        return int(self._keys.numel())

    def matches(self, groups: Tensor, images: Tensor) -> Tensor:
        """Element-wise (broadcast) whether caption group ``groups`` matches image ``images``."""
        device = groups.device
        if device not in self._on_device:
            self._on_device[device] = self._keys.to(device)
        return torch.isin(groups * self.n_images + images, self._on_device[device])


def _looks_like_media(text: str) -> bool:
    """Would sentence-transformers read this string as an image/video/audio path or URL?"""
    from sentence_transformers.base.modality import infer_modality

    try:
        return infer_modality(text) != "text"
    except ValueError:
        return True


def build_train_data(
    store: Store,
    settings: Settings,
    collection_id: int,
    use_hard_negatives: bool = True,
    symmetric: bool = False,
) -> TrainData:
    """Read the train split and its labels from the store into :class:`TrainData`."""
    all_pairs = store.list_pairs(collection_id)
    train = [p for p in all_pairs if p.split == "train"]
    held_images = {p.image_sha256 for p in all_pairs if p.split != "train"}
    held_captions = {p.caption for p in all_pairs if p.split != "train"}
    stats: Counter = Counter()
    groups: dict[str, int] = {}
    images: dict[str, int] = {}

    def group(caption: str) -> int:
        return groups.setdefault(caption, len(groups))

    def image(sha: str) -> int:
        return images.setdefault(sha, len(images))

    usable = []
    for pair in train:
        if not train_path(settings.images_dir, pair.image_sha256).is_file():
            stats["skipped_missing_image"] += 1
        elif _looks_like_media(pair.caption):
            stats["skipped_path_like_caption"] += 1
        else:
            usable.append(pair)
    matches = {(group(p.caption), image(p.image_sha256)) for p in usable}

    # Labels by different authors may disagree: one decision per candidate, and a candidate
    # anyone marked also-correct is never a negative (mmdemo.data.agreement.consensus).
    labels = store.labels_for_collection(collection_id)
    if overruled := conflicts(labels):
        stats["negatives_overruled"] = overruled
    by_pair: dict[int, list] = defaultdict(list)
    for label in consensus(labels):
        by_pair[label.pair_id].append(label)
    columns: dict[str, dict[str, list]] = {
        "pairs": {"anchor": [], "positive": [], "label": []},
        "image_negatives": {"anchor": [], "positive": [], "negative": [], "label": []},
        "caption_negatives": {"anchor": [], "positive": [], "negative": [], "label": []},
    }

    def add(name: str, pair: Any, negative: str | None, extra: list[int]) -> None:
        cols = columns[name]
        cols["anchor"].append(pair.caption)
        cols["positive"].append(str(train_path(settings.images_dir, pair.image_sha256)))
        if negative is not None:
            cols["negative"].append(negative)
        cols["label"].append([group(pair.caption), image(pair.image_sha256), *extra])

    for pair in usable:
        labeled = 0
        for label in by_pair.get(pair.id, []):
            sha, caption = label.negative_sha256, label.negative_caption
            if label.kind == "also-positive":
                stats["also_positive"] += 1
                if sha is not None:
                    matches.add((group(pair.caption), image(sha)))
                else:
                    matches.add((group(caption), image(pair.image_sha256)))
                continue
            if not use_hard_negatives:
                continue
            if sha is not None:
                path = train_path(settings.images_dir, sha)
                if sha in held_images:
                    stats["negatives_held_out"] += 1
                elif not path.is_file():
                    stats["skipped_missing_image"] += 1
                else:
                    add("image_negatives", pair, str(path), [EXTRA_IMAGE, image(sha)])
                    stats["image_negatives"] += 1
                    labeled += 1
            elif caption in held_captions:
                stats["negatives_held_out"] += 1
            elif _looks_like_media(caption):
                stats["skipped_path_like_caption"] += 1
            elif not symmetric:
                stats["caption_negatives_unused"] += 1
            else:
                add("caption_negatives", pair, caption, [EXTRA_CAPTION, group(caption)])
                stats["caption_negatives"] += 1
                labeled += 1
        if not labeled:
            add("pairs", pair, None, [EXTRA_NONE, -1])

    columns = {name: cols for name, cols in columns.items() if cols["anchor"]}
    stats["pairs"] = len(usable)
    stats["distinct_captions"] = len({p.caption for p in usable})
    stats["rows"] = {name: len(cols["anchor"]) for name, cols in columns.items()}
    return TrainData(columns, Relevance(matches, len(images)), dict(stats))


def pick_sampler(distinct_captions: int, batch_size: int, sampler: str = "auto") -> str:
    """``"no_duplicates"`` or ``"batch_sampler"`` (see the module docstring for why)."""
    if sampler != "auto":
        return sampler
    if distinct_captions >= NO_DUPLICATES_FACTOR * batch_size:
        return "no_duplicates"
    return "batch_sampler"


# -- losses ----------------------------------------------------------------------------------------
def masked_row_losses(
    captions: Tensor,
    images: Tensor,
    extra: Tensor | None,
    labels: Tensor,
    relevance: Relevance,
    scale: float,
    symmetric: bool,
    start: int = 0,
    stop: int | None = None,
) -> Tensor:
    """InfoNCE per row ``start:stop`` with every relevant non-target candidate masked out.

    text→image: caption ``i`` against all images of the batch (plus image negatives); its target
    is image ``i``. image→text (``symmetric``): image ``i`` against all captions (plus caption
    negatives); the two cross-entropies are averaged, as in CLIP.
    """
    stop = captions.size(0) if stop is None else stop
    labels = labels.to(captions.device).long()
    group, image_id, kind, extra_id = labels.unbind(1)
    rows = torch.arange(start, stop, device=captions.device)
    local = torch.arange(stop - start, device=captions.device)

    def one_direction(queries: Tensor, cands: Tensor, unmatched: Tensor) -> Tensor:
        unmatched[local, rows] = False  # the target itself stays
        logits = cos_sim(queries, cands) * scale
        logits = logits.masked_fill(unmatched, float("-inf"))
        return torch.logsumexp(logits, dim=1) - logits[local, rows]

    cands, cand_ids, invalid = images, image_id, torch.zeros_like(image_id, dtype=torch.bool)
    if extra is not None:
        cands = torch.cat([images, extra])
        cand_ids = torch.cat([image_id, extra_id.clamp(min=0)])
        invalid = torch.cat([invalid, kind != EXTRA_IMAGE])
    drop = relevance.matches(group[rows, None], cand_ids[None, :]) | invalid[None, :]
    loss = one_direction(captions[rows], cands, drop)
    if not symmetric:
        return loss
    cands, cand_groups = captions, group
    invalid = torch.zeros_like(group, dtype=torch.bool)
    if extra is not None:
        cands = torch.cat([captions, extra])
        cand_groups = torch.cat([group, extra_id.clamp(min=0)])
        invalid = torch.cat([invalid, kind != EXTRA_CAPTION])
    drop = relevance.matches(cand_groups[None, :], image_id[rows, None]) | invalid[None, :]
    return (loss + one_direction(images[rows], cands, drop)) / 2


def _directions(symmetric: bool) -> dict[str, Any]:
    if symmetric:
        return {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}
    return {"directions": ("query_to_doc",), "partition_mode": "joint"}


def build_loss(
    model: Any,
    relevance: Relevance,
    name: str = "mnrl",
    scale: float = 20.0,
    mini_batch_size: int = 16,
    matryoshka_dims: Sequence[int] = (),
) -> Any:
    """The loss for ``name``: ``mnrl``, ``symmetric``, ``cached``, ``cached-symmetric`` or
    ``sigmoid`` (which learns its own temperature: ``scale`` is not used), wrapped in
    ``MatryoshkaLoss`` when ``matryoshka_dims`` are given."""
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

    symmetric = name.endswith("symmetric")
    if name == "sigmoid":
        loss = MaskedSigmoidLoss(model, relevance)
    elif name.startswith("cached"):
        loss = MaskedCachedMultipleNegativesRankingLoss(
            model, relevance, symmetric, scale, mini_batch_size
        )
    else:
        loss = MaskedMultipleNegativesRankingLoss(model, relevance, symmetric, scale)
    if matryoshka_dims:
        loss = MatryoshkaLoss(model, loss, list(matryoshka_dims))
    return loss


class MaskedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """:class:`MultipleNegativesRankingLoss` (optionally symmetric) that masks in-batch candidates
    relevant to the query (same caption, same image, also-positive) instead of counting them as
    negatives. Expects the label layout of :func:`build_train_data`."""

    def __init__(
        self, model: Any, relevance: Relevance, symmetric: bool = False, scale: float = 20.0
    ):
        super().__init__(model, scale=scale, **_directions(symmetric))
        self.relevance = relevance
        self.symmetric = symmetric

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        extra = embeddings[2] if len(embeddings) > 2 else None
        return masked_row_losses(
            embeddings[0], embeddings[1], extra, labels, self.relevance, self.scale, self.symmetric
        ).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "masks_relevant_in_batch": True}


class MaskedCachedMultipleNegativesRankingLoss(CachedMultipleNegativesRankingLoss):
    """The gradient-cached variant (large batches in ``mini_batch_size`` pieces), same masking."""

    def __init__(
        self,
        model: Any,
        relevance: Relevance,
        symmetric: bool = False,
        scale: float = 20.0,
        mini_batch_size: int = 16,
    ):
        super().__init__(
            model, scale=scale, mini_batch_size=mini_batch_size, **_directions(symmetric)
        )
        self.relevance = relevance
        self.symmetric = symmetric

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        captions, images = torch.cat(reps[0]), torch.cat(reps[1])
        extra = torch.cat(reps[2]) if len(reps) > 2 else None
        total = captions.size(0)
        losses: list[Tensor] = []
        for begin in range(0, total, self.mini_batch_size):
            end = min(begin + self.mini_batch_size, total)
            part = (
                masked_row_losses(
                    captions,
                    images,
                    extra,
                    labels,
                    self.relevance,
                    self.scale,
                    self.symmetric,
                    begin,
                    end,
                ).sum()
                / total
            )
            if with_backward:
                part.backward()
                part = part.detach()
            losses.append(part)
        return sum(losses)

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "masks_relevant_in_batch": True}


# -- SigLIP's sigmoid loss -------------------------------------------------------------------------
def sigmoid_pair_losses(
    captions: Tensor,
    images: Tensor,
    extra: Tensor | None,
    labels: Tensor,
    relevance: Relevance,
    log_scale: Tensor,
    bias: Tensor,
) -> Tensor:
    """SigLIP's loss per batch row: ``-Σ_j log σ(z_ij · (t · cos(x_i, y_j) + b))``.

    ``t = exp(log_scale)``. Rows ``x`` are the batch's captions plus its caption negatives, columns
    ``y`` its images plus its image negatives (a row's ``extra`` is one or the other by its kind;
    a pairs-only batch has none). ``z_ij`` is +1 when caption ``i`` and image ``j`` match
    (:class:`Relevance`: the diagonal, a same-caption or same-image pair, an also-positive label)
    and -1 otherwise. Returns one value per caption of the batch (its extra caption's pairs, when
    it has one, are added to it), so ``.mean()`` is the paper's ``1/|B| Σ_i Σ_j``.
    """
    labels = labels.to(captions.device).long()
    group, image_id, kind, extra_id = labels.unbind(1)
    rows, cols, row_groups, col_images = captions, images, group, image_id
    owner = torch.arange(captions.size(0), device=captions.device)
    if extra is not None:
        is_caption, is_image = kind == EXTRA_CAPTION, kind == EXTRA_IMAGE
        rows = torch.cat([captions, extra[is_caption]])
        row_groups = torch.cat([group, extra_id[is_caption]])
        owner = torch.cat([owner, owner[is_caption]])
        cols = torch.cat([images, extra[is_image]])
        col_images = torch.cat([image_id, extra_id[is_image]])
    positive = relevance.matches(row_groups[:, None], col_images[None, :])
    sign = positive.to(rows.dtype) * 2 - 1
    logits = cos_sim(rows, cols) * log_scale.exp() + bias
    per_row = -nn.functional.logsigmoid(sign * logits).sum(dim=1)
    return torch.zeros(captions.size(0), dtype=per_row.dtype, device=per_row.device).index_add(
        0, owner, per_row
    )


def _average_across_processes(grad: Tensor) -> Tensor:
    """The gradient averaged over all processes (DDP averages the model's, not the loss's)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return grad
    grad = grad.clone()
    dist.all_reduce(grad)
    return grad / dist.get_world_size()


def siglip_start_values(model: Any) -> tuple[float, float] | None:
    """A pretrained SigLIP's own ``(log t, b)``, or None (not a SigLIP, or untrained: transformers
    initialises both to 0, far from the paper's start)."""
    found = {
        name.rsplit(".", 1)[-1]: param
        for name, param in model.named_parameters()
        if name.endswith(("logit_scale", "logit_bias"))
    }
    if set(found) != {"logit_scale", "logit_bias"}:
        return None
    scale, bias = (found[k].detach().reshape(-1)[0].item() for k in ("logit_scale", "logit_bias"))
    if scale == 0.0 and bias == 0.0:
        return None
    return scale, bias


class MaskedSigmoidLoss(nn.Module):
    """SigLIP's pairwise sigmoid loss (Zhai et al., 2023) for (caption, image[, negative]) rows with
    the labels of :func:`build_train_data`; see :func:`sigmoid_pair_losses`.

    The temperature ``t = exp(log_scale)`` and the bias ``b`` are parameters of this loss, started
    at the paper's ``t = 10``, ``b = -10`` (or at a pretrained SigLIP's own values). The trainer
    optimises them with the model (sentence-transformers' optimizer takes the loss's parameters);
    under DDP their gradients are averaged across processes by a hook, as DDP does for the model's.
    Off-diagonal pairs that match are counted as positives (see the module docstring).
    """

    def __init__(
        self,
        model: Any,
        relevance: Relevance,
        init_scale: float = 10.0,
        init_bias: float = -10.0,
        from_model: bool = True,
    ):
        super().__init__()
        self.model = model
        self.relevance = relevance
        start = siglip_start_values(model) if from_model else None
        log_scale, bias = start if start is not None else (math.log(init_scale), init_bias)
        # (t, b) at the start: sentence-transformers' card reads the config before training.
        self.start = (math.exp(log_scale), float(bias))
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))
        for param in (self.log_scale, self.bias):
            param.register_hook(_average_across_processes)

    def forward(self, sentence_features: Any, labels: Tensor) -> Tensor:
        return self.compute_loss_from_embeddings(
            embed_columns(self.model, sentence_features), labels
        )

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor) -> Tensor:
        extra = embeddings[2] if len(embeddings) > 2 else None
        return sigmoid_pair_losses(
            embeddings[0],
            embeddings[1],
            extra,
            labels,
            self.relevance,
            self.log_scale,
            self.bias,
        ).mean()

    @property
    def temperature(self) -> float:
        """The current ``t`` (for logs and tests)."""
        return float(self.log_scale.detach().exp())

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "start_temperature": round(self.start[0], 4),
            "start_bias": round(self.start[1], 4),
            "learns_temperature_and_bias": True,
            "masks_relevant_in_batch": True,
            "relevant_pairs": "positives",
        }

    @property
    def citation(self) -> str:
        return """
@inproceedings{zhai2023sigmoid,
    title={Sigmoid Loss for Language Image Pre-Training},
    author={Zhai, Xiaohua and Mustafa, Basil and Kolesnikov, Alexander and Beyer, Lucas},
    booktitle={ICCV},
    year={2023}
}
"""

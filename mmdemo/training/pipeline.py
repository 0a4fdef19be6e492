"""The training input pipeline: model-ready images made once, captions tokenised once.

Before, every step decoded each pre-resized JPEG, cropped it with PIL and ran the model's image
processor and tokenizer on the batch (about 620 pairs/s per core for ViT-B/32's 224 px). Now:

- :class:`ImageCache`: the image processor's own output, with rescaling and normalisation turned
  off (``uint8`` at the model's input size: CLIP's resized centre crop, SigLIP's resize, SigLIP 2's
  patches), made **once per image and model geometry** into a memory-mapped ``.npy`` under
  ``MMDEMO_HOME/cache/train-inputs/<geometry>/``. The geometry key hashes the processor's class,
  its settings and the module's image ``processing_kwargs``; the file name hashes the image set.
  A second finetune on the same images is a cache hit; a new image set reuses the rows of the
  earlier arrays of that geometry and processes only the new images.
- :class:`TextCache`: every distinct caption tokenised once by the model's own ``preprocess``,
  kept padded; a batch takes its rows and is cut to its longest caption when the model pads to the
  longest (CLIP), or keeps the saved fixed length (SigLIP's ``max_length`` 64).
- :class:`TrainInputs`: the trainer's data collator. It gathers ``uint8`` rows and token ids
  (cheap enough for DataLoader workers), then :meth:`TrainInputs.finish` random-crops (each side
  keeps a share in ``[min_side, 1]``, resized back), optionally flips, and normalises with the
  processor's own rescale factor, mean and std — as tensor ops, on the GPU when the model is on
  one (the trainer calls ``finish`` at the step), in the collator otherwise. Without augmentation
  the result equals the processor's output (tests/test_pipeline.py).

Flips are off in the app: captions say "left of" and "right of", which a mirror image would turn
into wrong pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmdemo.locks import file_lock

CACHE_VERSION = 2
CACHE_SUBDIR = "train-inputs"
KEEP_PER_GEOMETRY = 4
"""Arrays kept per geometry folder (the newest); older image sets are deleted."""
_NO_NORMALISE = {"image": {"do_rescale": False, "do_normalize": False}}


# -- geometry --------------------------------------------------------------------------------------
def _module(model: Any) -> Any:
    """The model's first module (the generic ``Transformer`` that owns the processor)."""
    return model[0] if hasattr(model, "__getitem__") else model


def image_settings(model: Any) -> dict[str, Any]:
    """What the model-ready image depends on: processor class, its settings, image kwargs."""
    module = _module(model)
    processor = getattr(module, "processor", None)
    image_processor = getattr(processor, "image_processor", processor)
    if image_processor is None or not hasattr(image_processor, "to_dict"):
        raise ValueError("This model has no image processor.")
    settings = {
        k: v for k, v in image_processor.to_dict().items() if not k.startswith("_") and k != "name"
    }
    kwargs = dict((getattr(module, "processing_kwargs", None) or {}).get("image") or {})
    return {
        "version": CACHE_VERSION,
        "processor": type(image_processor).__name__,
        "settings": settings,
        "kwargs": kwargs,
    }


def geometry_key(model: Any) -> str:
    """A short hash of :func:`image_settings` (the cache folder's name)."""
    text = json.dumps(image_settings(model), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Normaliser:
    """``(x · rescale − mean) / std`` per channel, as one multiply-add."""

    scale: tuple[float, ...]
    shift: tuple[float, ...]

    @classmethod
    def from_model(cls, model: Any) -> Normaliser:
        found = image_settings(model)["settings"]
        rescale = float(found.get("rescale_factor", 1 / 255))
        if not found.get("do_rescale", True):
            rescale = 1.0
        mean = found.get("image_mean") or (0.0, 0.0, 0.0)
        std = found.get("image_std") or (1.0, 1.0, 1.0)
        if not found.get("do_normalize", True):
            mean, std = (0.0,) * len(mean), (1.0,) * len(std)
        return cls(
            tuple(rescale / s for s in std), tuple(-m / s for m, s in zip(mean, std, strict=True))
        )

    def tensors(self, device: Any, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
        scale = torch.tensor(self.scale, dtype=torch.float32, device=device).view(*shape)
        shift = torch.tensor(self.shift, dtype=torch.float32, device=device).view(*shape)
        return scale, shift


# -- images ----------------------------------------------------------------------------------------
def _sha_of(path: str) -> str:
    """The image sha of a pre-resized training copy (``<sha>.train.jpg``), else of the path."""
    name = Path(path).name
    stem = name.split(".", 1)[0]
    if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
        return stem
    return hashlib.sha256(str(path).encode()).hexdigest()


@dataclass
class ImageCache:
    """``uint8`` model inputs of a set of images, one row per image (memory-mapped when on disk).

    Images are stored ``(H, W, C)`` and handed out as channels-last ``(C, H, W)`` views: the
    CPU's fast ``uint8`` bilinear resize works on that layout (about 3× the plain one).
    ``extras`` holds per-image arrays the processor returns besides ``pixel_values`` (SigLIP 2's
    ``spatial_shapes`` and ``pixel_attention_mask``).
    """

    pixels: np.ndarray
    extras: dict[str, np.ndarray]
    rows: dict[str, int]
    """Image path → row."""
    path: Path | None = None
    built: int = 0
    """Images processed now (0: a full cache hit)."""
    reused: int = 0
    """Rows copied from earlier arrays of the same geometry."""
    patch_size: int | None = None
    """SigLIP 2 (NaFlex) only: the side of a patch, to turn its patches back into images."""

    def __len__(self) -> int:
        return len(self.rows)


class VariableGeometry(ValueError):
    """The model's image processor sizes each image itself (dynamic resolution, e.g. Qwen-VL):
    there is no one array shape to make images into once, so training reads them per batch
    (:class:`ImageFileInputs`)."""


def _process_images(model: Any, paths: Sequence[str]) -> dict[str, np.ndarray]:
    """The processor's output for ``paths`` without rescaling/normalising, as numpy arrays."""
    from mmdemo.data.images import load_rgb

    out = model.preprocess([load_rgb(p) for p in paths], processing_kwargs=_NO_NORMALISE)
    arrays: dict[str, np.ndarray] = {}
    for key, value in out.items():
        if isinstance(value, Tensor):
            if key == "pixel_values":
                value = value.round().clamp(0, 255).to(torch.uint8)
                if value.dim() == 4:  # (N, C, H, W) → stored (N, H, W, C): see ImageCache
                    value = value.permute(0, 2, 3, 1).contiguous()
            arrays[key] = value.numpy()
    if "pixel_values" not in arrays:
        raise ValueError("The image processor returned no pixel_values.")
    return arrays


def _earlier_rows(folder: Path, wanted: set[str]) -> dict[str, tuple[Path, int]]:
    """Rows of ``wanted`` shas found in the arrays already in ``folder``."""
    found: dict[str, tuple[Path, int]] = {}
    for index in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            shas = json.loads(index.read_text(encoding="utf-8"))["shas"]
        except (OSError, ValueError, KeyError):
            continue
        npy = index.with_suffix(".npy")
        if not npy.is_file():
            continue
        for row, sha in enumerate(shas):
            if sha in wanted and sha not in found:
                found[sha] = (npy, row)
    return found


def _open(npy: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    pixels = np.load(npy, mmap_mode="r")
    extras_file = npy.with_suffix(".extras.npz")
    extras: dict[str, np.ndarray] = {}
    if extras_file.is_file():
        with np.load(extras_file) as handle:
            extras = {k: handle[k] for k in handle.files}
    return pixels, extras


def build_image_cache(
    model: Any,
    paths: Iterable[str],
    cache_dir: Path | None = None,
    chunk: int = 64,
) -> ImageCache:
    """The model-ready ``uint8`` images of ``paths`` for ``model``'s geometry.

    With ``cache_dir``: read from (or made once into) ``cache_dir/train-inputs/<geometry>/``,
    keyed by the sorted image shas; rows of images already made for this geometry are copied from
    the earlier arrays. Without: made in memory.
    """
    paths = set(paths)
    by_sha: dict[str, str] = {}
    for path in sorted(paths):
        by_sha.setdefault(_sha_of(path), path)
    shas = sorted(by_sha)
    if not shas:
        raise ValueError("No images to prepare.")
    if cache_dir is None:
        return _build_image_cache(model, by_sha, shas, paths, None, chunk)
    folder = Path(cache_dir) / CACHE_SUBDIR / geometry_key(model)
    folder.mkdir(parents=True, exist_ok=True)
    # One builder per geometry folder at a time (the app and a CLI run, DDP ranks): the others
    # wait, then find the array made (or copy its rows), and nobody prunes a file being read.
    with file_lock(folder / ".lock"):
        return _build_image_cache(model, by_sha, shas, paths, folder, chunk)


def _build_image_cache(
    model: Any,
    by_sha: dict[str, str],
    shas: list[str],
    paths: set[str],
    folder: Path | None,
    chunk: int,
) -> ImageCache:
    sha_rows = {sha: row for row, sha in enumerate(shas)}
    path_rows = {path: sha_rows[_sha_of(path)] for path in paths}
    npy = None
    if folder is not None:
        name = hashlib.sha256("\n".join(shas).encode()).hexdigest()[:24]
        npy = folder / f"{name}.npy"
        if npy.is_file() and npy.with_suffix(".json").is_file():
            pixels, extras = _open(npy)
            os.utime(npy.with_suffix(".json"))
            return ImageCache(pixels, extras, path_rows, npy, patch_size=_patch_size(model, extras))
    earlier = _earlier_rows(folder, set(shas)) if folder is not None else {}
    sample = _process_images(model, [by_sha[shas[0]]])
    if sample["pixel_values"].shape[0] != 1 or any(v.shape[:1] != (1,) for v in sample.values()):
        raise VariableGeometry(
            "The image processor does not give one array per image (dynamic resolution)."
        )
    pixels = (
        np.lib.format.open_memmap(
            str(npy) + ".tmp.npy", "w+", np.uint8, (len(shas), *sample["pixel_values"].shape[1:])
        )
        if npy is not None
        else np.empty((len(shas), *sample["pixel_values"].shape[1:]), np.uint8)
    )
    extras = {
        k: np.zeros((len(shas), *v.shape[1:]), v.dtype)
        for k, v in sample.items()
        if k != "pixel_values"
    }
    opened: dict[Path, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    todo: list[int] = []
    for row, sha in enumerate(shas):
        if sha not in earlier:
            todo.append(row)
            continue
        source, at = earlier[sha]
        if source not in opened:
            opened[source] = _open(source)
        old_pixels, old_extras = opened[source]
        if old_pixels.shape[1:] != pixels.shape[1:] or set(old_extras) != set(extras):
            todo.append(row)
            continue
        pixels[row] = old_pixels[at]
        for key in extras:
            extras[key][row] = old_extras[key][at]
    for begin in range(0, len(todo), chunk):
        rows = todo[begin : begin + chunk]
        made = _process_images(model, [by_sha[shas[r]] for r in rows])
        if made["pixel_values"].shape != (len(rows), *pixels.shape[1:]) or any(
            made[key].shape != (len(rows), *extras[key].shape[1:]) for key in extras
        ):
            raise VariableGeometry("The image processor gave images of different shapes.")
        pixels[rows] = made["pixel_values"]
        for key in extras:
            extras[key][rows] = made[key]
    reused = len(shas) - len(todo)
    if npy is None:
        return ImageCache(
            pixels, extras, path_rows, None, len(todo), reused, _patch_size(model, extras)
        )
    pixels.flush()
    del pixels
    if extras:
        tmp_extras = npy.with_suffix(".extras.tmp.npz")
        np.savez(tmp_extras, **extras)
        os.replace(tmp_extras, npy.with_suffix(".extras.npz"))
    os.replace(str(npy) + ".tmp.npy", npy)
    index = {"shas": shas, "geometry": image_settings(model)}
    tmp_index = npy.with_suffix(".json.tmp")
    tmp_index.write_text(json.dumps(index, default=str), encoding="utf-8")
    os.replace(tmp_index, npy.with_suffix(".json"))
    _prune(folder)
    pixels, extras = _open(npy)
    return ImageCache(pixels, extras, path_rows, npy, len(todo), reused, _patch_size(model, extras))


def _patch_size(model: Any, extras: dict[str, np.ndarray]) -> int | None:
    """The patch side of a NaFlex processor (its output has ``spatial_shapes``), else None."""
    if "spatial_shapes" not in extras:
        return None
    found = image_settings(model)
    patch = found["kwargs"].get("patch_size") or found["settings"].get("patch_size")
    return int(patch) if patch else None


def _prune(folder: Path, keep: int = KEEP_PER_GEOMETRY) -> None:
    """Delete all but the ``keep`` most recently used arrays of a geometry folder."""
    indexes = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for index in indexes[keep:]:
        for path in (index, index.with_suffix(".npy"), index.with_suffix(".extras.npz")):
            path.unlink(missing_ok=True)


# -- captions --------------------------------------------------------------------------------------
@dataclass
class TextCache:
    """Every distinct caption's token rows, padded to one width, and how a batch is cut."""

    tensors: dict[str, Tensor]
    """``input_ids``, ``attention_mask``, …: ``(captions, width)``."""
    lengths: Tensor
    rows: dict[str, int]
    fixed: bool
    """The model pads to a fixed length (SigLIP: 64): batches keep the whole width."""
    left: bool
    """Padding on the left (the tokens end each row)."""
    constants: dict[str, Any] = field(default_factory=dict)
    """Non-tensor outputs of ``preprocess`` (``modality``)."""

    def batch(self, texts: Sequence[str]) -> dict[str, Any]:
        """The features ``model.preprocess(texts)`` would give."""
        try:
            index = torch.tensor([self.rows[t] for t in texts], dtype=torch.long)
        except KeyError as exc:
            raise KeyError(f"Caption not prepared for training: {exc.args[0]!r}") from exc
        out: dict[str, Any] = dict(self.constants)
        width = next(iter(self.tensors.values())).shape[1]
        keep = width if self.fixed else int(self.lengths[index].max())
        cut = slice(width - keep, width) if self.left else slice(0, keep)
        for key, value in self.tensors.items():
            out[key] = value[index, cut]
        return out


def _width(model: Any, texts: list[str]) -> int:
    return int(model.preprocess(texts)["input_ids"].shape[1])


def build_text_cache(model: Any, texts: Iterable[str], chunk: int = 512) -> TextCache:
    """Tokenise each distinct text of ``texts`` once with the model's own ``preprocess``."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        raise ValueError("No captions to prepare.")
    module = _module(model)
    tokenizer = getattr(getattr(module, "processor", None), "tokenizer", None)
    tokenizer = tokenizer or getattr(module, "tokenizer", None)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
    fixed = _width(model, ["a"]) == _width(model, ["a", "a " * 40])
    parts: list[dict[str, Any]] = []
    for begin in range(0, len(unique), chunk):
        parts.append(model.preprocess(unique[begin : begin + chunk]))
    width = max(int(p["input_ids"].shape[1]) for p in parts)
    keys = [k for k, v in parts[0].items() if isinstance(v, Tensor) and v.dim() == 2]
    constants = {k: v for k, v in parts[0].items() if not isinstance(v, Tensor)}
    tensors = {
        k: torch.full(
            (len(unique), width), pad_id if k == "input_ids" else 0, dtype=parts[0][k].dtype
        )
        for k in keys
    }
    lengths = torch.cat([p["attention_mask"].sum(dim=1) for p in parts]).long()
    row = 0
    for part in parts:
        n, w = part["input_ids"].shape
        for key in keys:
            target = tensors[key][row : row + n]
            if left:
                target[:, width - w :] = part[key]
            else:
                target[:, :w] = part[key]
        row += n
    return TextCache(tensors, lengths, {t: i for i, t in enumerate(unique)}, fixed, left, constants)


# -- augmentation ----------------------------------------------------------------------------------
def crop_boxes(
    n: int, generator: torch.Generator, min_side: float, flip: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per image: side share ``s`` in ``[min_side, 1]``, offsets ``(x, y)`` in ``[0, 1 − s]``
    (shares of the side) and a flip flag (always False unless ``flip``)."""
    side = torch.empty(n).uniform_(min_side, 1.0, generator=generator)
    x = torch.rand(n, generator=generator) * (1 - side)
    y = torch.rand(n, generator=generator) * (1 - side)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return side, x, y, flips


def crop_resize_each(images: Tensor, side: Tensor, x: Tensor, y: Tensor, flips: Tensor) -> Tensor:
    """Crop each ``(C, H, W)`` image to its box and resize it back (bilinear), one image at a
    time: the fast way on a CPU, where ``uint8`` images stay ``uint8``."""
    out = torch.empty_like(images)
    height, width = images.shape[-2:]
    for i in range(images.shape[0]):
        w = max(1, round(width * float(side[i])))
        h = max(1, round(height * float(side[i])))
        left = min(width - w, round(width * float(x[i])))
        top = min(height - h, round(height * float(y[i])))
        crop = images[i : i + 1, :, top : top + h, left : left + w]
        if (h, w) != (height, width):
            crop = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
        out[i] = crop[0].flip(-1) if flips[i] else crop[0]
    return out


def crop_resize_batched(
    images: Tensor, side: Tensor, x: Tensor, y: Tensor, flips: Tensor
) -> Tensor:
    """The same crop, resize and flip for a whole float batch in one ``grid_sample`` (the fast
    way on a GPU: one kernel instead of one per image)."""
    n = images.shape[0]
    side, x, y = (t.to(images.device, torch.float32) for t in (side, x, y))
    sign = 1.0 - 2.0 * flips.to(images.device, torch.float32)
    theta = torch.zeros(n, 2, 3, device=images.device)
    theta[:, 0, 0] = side * sign
    theta[:, 1, 1] = side
    theta[:, 0, 2] = 2 * x + side - 1
    theta[:, 1, 2] = 2 * y + side - 1
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _unpatchify(patches: Tensor, h: int, w: int, p: int) -> Tensor:
    """SigLIP 2 patches ``(B, ≥h·w, p·p·C)`` → images ``(B, C, h·p, w·p)``."""
    b, c = patches.shape[0], patches.shape[-1] // (p * p)
    grid = patches[:, : h * w].reshape(b, h, w, p, p, c)
    return grid.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h * p, w * p)


def _patchify(images: Tensor, p: int) -> Tensor:
    """Images ``(B, C, h·p, w·p)`` → patches ``(B, h·w, p·p·C)`` (the processor's order)."""
    b, c, hp, wp = images.shape
    h, w = hp // p, wp // p
    grid = images.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1)
    return grid.reshape(b, h * w, p * p * c)


# -- the collator ----------------------------------------------------------------------------------
class TrainInputs:
    """The trainer's data collator over :class:`ImageCache` and :class:`TextCache`.

    ``__call__`` turns rows of caption and image-path strings into the features the model takes
    (``{column}_pixel_values`` as ``uint8``, token ids, labels); :meth:`finish` augments and
    normalises the images — in the collator when ``finish_in_collator`` (CPU training: the
    DataLoader workers do it), else at the step on the model's device (the trainer calls it).
    """

    valid_label_columns = ["label"]

    def __init__(
        self,
        images: ImageCache,
        texts: TextCache,
        normaliser: Normaliser,
        augment: bool = True,
        min_side: float = 0.85,
        flip: bool = False,
        seed: int = 0,
        finish_in_collator: bool = True,
    ):
        self.images, self.texts, self.normaliser = images, texts, normaliser
        self.augment, self.min_side, self.flip = augment, min_side, flip
        self.seed = seed
        self.finish_in_collator = finish_in_collator
        self._generator: torch.Generator | None = None
        self._generator_pid: int | None = None

    @classmethod
    def build(
        cls,
        model: Any,
        image_paths: Iterable[str],
        texts: Iterable[str],
        cache_dir: Path | None = None,
        **options: Any,
    ) -> TrainInputs:
        """Both caches for ``model`` (images from ``cache_dir`` when there, else made now)."""
        images = build_image_cache(model, image_paths, cache_dir)
        return cls(images, build_text_cache(model, texts), Normaliser.from_model(model), **options)

    # what the trainer's loader calls
    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features:
            return {}
        batch: dict[str, Any] = {}
        first = features[0]
        if "dataset_name" in first:
            batch["dataset_name"] = first["dataset_name"]
        for column, value in first.items():
            if column == "dataset_name":
                continue
            values = [row[column] for row in features]
            if column in self.valid_label_columns:
                batch["label"] = torch.tensor(values)
                continue
            if isinstance(value, str) and value in self.images.rows:
                found = self.image_features(values)
            else:
                found = self.texts.batch(values)
            for key, item in found.items():
                batch[f"{column}_{key}"] = item
        return self.finish(batch) if self.finish_in_collator else batch

    def image_features(self, paths: Sequence[str]) -> dict[str, Any]:
        """``pixel_values`` (``uint8``) and the processor's other image outputs for ``paths``."""
        try:
            rows = np.array([self.images.rows[p] for p in paths], dtype=np.int64)
        except KeyError as exc:
            raise KeyError(f"Image not prepared for training: {exc.args[0]!r}") from exc
        pixels = torch.from_numpy(np.asarray(np.take(self.images.pixels, rows, axis=0)))
        if pixels.dim() == 4:  # stored (N, H, W, C): a channels-last (N, C, H, W) view
            pixels = pixels.permute(0, 3, 1, 2)
        out: dict[str, Any] = {"pixel_values": pixels}
        for key, values in self.images.extras.items():
            out[key] = torch.from_numpy(np.take(values, rows, axis=0))
        out["modality"] = "image"
        return out

    # augmentation + normalisation
    def _rng(self) -> torch.Generator:
        """A generator per process (each DataLoader worker draws its own crops)."""
        pid = os.getpid()
        if self._generator is None or self._generator_pid != pid:
            info = torch.utils.data.get_worker_info()
            self._generator = torch.Generator().manual_seed(
                self.seed * 1000 + (info.id + 1 if info else 0)
            )
            self._generator_pid = pid
        return self._generator

    def finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``batch`` with every ``uint8`` ``*_pixel_values`` augmented and normalised to float32
        (on the tensors' device); anything else passes through."""
        out = dict(batch)
        for key, value in batch.items():
            if (
                key.endswith("pixel_values")
                and isinstance(value, Tensor)
                and value.dtype == torch.uint8
            ):
                prefix = key[: -len("pixel_values")]
                out[key] = self.finish_images(value, batch.get(prefix + "spatial_shapes"))
        return out

    def finish_images(self, pixels: Tensor, spatial: Tensor | None = None) -> Tensor:
        """Augment (when on) and normalise one column's ``uint8`` images."""
        if spatial is not None and self.images.patch_size:
            return self._finish_patches(pixels, spatial)
        if self.augment:
            boxes = crop_boxes(pixels.shape[0], self._rng(), self.min_side, self.flip)
            if pixels.is_cuda:
                pixels = crop_resize_batched(pixels.float(), *boxes)
            else:
                pixels = crop_resize_each(pixels, *boxes)
        scale, shift = self.normaliser.tensors(pixels.device, (1, -1, 1, 1))
        result = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device)
        result.copy_(pixels)
        return result.mul_(scale).add_(shift)

    def _finish_patches(self, patches: Tensor, spatial: Tensor) -> Tensor:
        """SigLIP 2 (NaFlex): augment per group of equal patch grids, normalise, zero padding."""
        p = int(self.images.patch_size or 1)
        channels = patches.shape[-1] // (p * p)
        if self.augment:
            patches = patches.clone()
            boxes = crop_boxes(patches.shape[0], self._rng(), self.min_side, self.flip)
            shapes = spatial.tolist()
            for h, w in {tuple(s) for s in shapes}:
                rows = [i for i, s in enumerate(shapes) if tuple(s) == (h, w)]
                index = torch.tensor(rows, device=patches.device)
                images = _unpatchify(patches[index], h, w, p)
                part = [b[index.cpu()] for b in boxes]
                if patches.is_cuda:
                    images = crop_resize_batched(images.float(), *part).round().clamp(0, 255)
                else:
                    images = crop_resize_each(images, *part)
                patches[index, : h * w] = _patchify(images, p).to(patches.dtype)
        scale, shift = self.normaliser.tensors(patches.device, (1, 1, 1, channels))
        result = patches.to(torch.float32).view(*patches.shape[:2], p * p, channels)
        result = (result * scale + shift).view(patches.shape)
        counts = (spatial[:, 0] * spatial[:, 1]).to(patches.device)
        valid = torch.arange(patches.shape[1], device=patches.device)[None, :] < counts[:, None]
        return result * valid[..., None]


def available_cores() -> int:
    """CPU cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container's ``--cpus``), where there is one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def loader_options(device: str, world_size: int = 1, cores: int | None = None) -> dict[str, Any]:
    """DataLoader settings for the trainer: on a GPU all cores but one, shared by the processes
    of a node, persistent, with pinned memory; on a CPU none (the cores train; the pipeline's
    collation costs little next to a step)."""
    cores = cores if cores is not None else available_cores()
    if device != "cuda":
        return {"dataloader_num_workers": 0, "dataloader_pin_memory": False}
    workers = max(0, (cores - 1) // max(1, world_size))
    return {
        "dataloader_num_workers": workers,
        "dataloader_pin_memory": True,
        "dataloader_persistent_workers": workers > 0,
        "dataloader_prefetch_factor": 4 if workers > 0 else None,
    }


def stop_loader_workers(trainer: Any) -> None:
    """End the persistent DataLoader workers of ``trainer``'s training loader now (they would
    otherwise wait, idle, until the trainer is garbage-collected)."""
    loader = getattr(trainer, "_train_dataloader", None)
    for holder in (loader, getattr(loader, "base_dataloader", None)):
        iterator = getattr(holder, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            holder._iterator = None


def training_texts(columns: dict[str, dict[str, list]]) -> list[str]:
    """The captions of a :class:`~mmdemo.training.data.TrainData`'s columns (anchors and caption
    negatives; its ``image_paths`` are the images)."""
    texts: list[str] = []
    for name, cols in columns.items():
        texts.extend(cols["anchor"])
        if name != "image_negatives" and "negative" in cols:
            texts.extend(cols["negative"])
    return texts


class ImageFileInputs:
    """The collator for models whose processor sizes each image itself (:class:`VariableGeometry`):
    it wraps the trainer's own collator and, per batch, loads each image path (the 224-px
    training copies) and randomly crops it (each side keeps a share in ``[min_side, 1]``) before
    the model's processor runs. Slower than :class:`TrainInputs`, but any processor works."""

    def __init__(
        self,
        image_paths: Iterable[str],
        augment: bool = True,
        min_side: float = 0.85,
        seed: int = 0,
        reason: str = "",
    ):
        self.image_paths = set(image_paths)
        self.augment, self.min_side, self.reason = augment, min_side, reason
        self.collator: Any = None
        self._rng = np.random.default_rng(seed)

    def wrap(self, collator: Any) -> ImageFileInputs:
        """Use ``collator`` (the trainer's default) for the processed batch; returns self."""
        self.collator = collator
        return self

    def __getattr__(self, name: str) -> Any:
        collator = self.__dict__.get("collator")
        if collator is None:  # before wrap(), or while unpickling
            raise AttributeError(name)
        return getattr(collator, name)

    def crop(self, image: Any) -> Any:
        width, height = image.size
        side = self._rng.uniform(self.min_side, 1.0)
        w, h = max(1, round(width * side)), max(1, round(height * side))
        x = int(self._rng.integers(0, width - w + 1))
        y = int(self._rng.integers(0, height - h + 1))
        return image.crop((x, y, x + w, y + h))

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        from mmdemo.data.images import load_rgb

        rows = []
        for row in features:
            row = dict(row)
            for key, value in row.items():
                if isinstance(value, str) and value in self.image_paths:
                    image = load_rgb(value)
                    row[key] = self.crop(image) if self.augment else image
            rows.append(row)
        return self.collator(rows)


def describe(inputs: TrainInputs | ImageFileInputs) -> dict[str, Any]:
    """Facts for the run's log: cache file, hit or built, sizes."""
    if isinstance(inputs, ImageFileInputs):
        return {"images": len(inputs.image_paths), "per_batch": True, "reason": inputs.reason}
    cache = inputs.images
    return {
        "images": len(cache),
        "captions": len(inputs.texts.rows),
        "image_cache": str(cache.path) if cache.path else None,
        "image_cache_hit": cache.built == 0 and cache.reused == 0,
        "images_made": cache.built,
        "images_reused": cache.reused,
        "image_shape": list(cache.pixels.shape[1:]),
        "image_layout": "HWC" if cache.pixels.ndim == 4 else "patches",
        "image_mib": round(math.prod(cache.pixels.shape) / 2**20, 2),
        "finish_on": "collator" if inputs.finish_in_collator else "step",
    }

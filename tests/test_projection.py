"""The embedding map's projection (PCA, UMAP when installed) and the own-image ranks."""

from __future__ import annotations

import numpy as np
import pytest

from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.retrieval.embeddings import EmbeddingCache, text_key
from mmdemo.retrieval.models import load_model, model_fingerprint
from mmdemo.retrieval.projection import (
    PCA,
    UMAP,
    ProjectionError,
    available_methods,
    collection_map,
    own_image_ranks,
    pca_2d,
    project,
    to_unit_square,
    umap_available,
)
from tests.conftest import make_image_bytes


def known_plane(n: int = 200, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Rows ``5 + a·u + b·v`` (plus a little noise) with var(a) ≫ var(b) and u ⟂ v."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    u, v = basis[:, 0], basis[:, 1]
    a = rng.normal(scale=10.0, size=n)
    b = rng.normal(scale=2.0, size=n)
    rows = 5.0 + np.outer(a, u) + np.outer(b, v) + rng.normal(scale=0.01, size=(n, dim))
    return rows, a, b, u, v


def test_pca_shape_and_dtype():
    rows, *_ = known_plane()
    points = pca_2d(rows)
    assert points.shape == (200, 2)
    assert points.dtype == np.float32


def test_pca_finds_the_known_components_in_order():
    rows, a, b, _, _ = known_plane()
    points = pca_2d(rows)
    # The first component is the high-variance direction, the second the other one.
    assert abs(np.corrcoef(points[:, 0], a)[0, 1]) > 0.999
    assert abs(np.corrcoef(points[:, 1], b)[0, 1]) > 0.999
    assert np.allclose(points.mean(axis=0), 0.0, atol=1e-3)
    assert points[:, 0].var() > 10 * points[:, 1].var()
    # It is the SVD's answer up to the sign of each component.
    centred = rows - rows.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    reference = u[:, :2] * s[:2]
    assert np.allclose(np.abs(points), np.abs(reference), atol=1e-3)


def test_pca_signs_are_fixed_and_both_paths_agree():
    rows, *_ = known_plane(n=30, dim=8)
    assert np.array_equal(pca_2d(rows), pca_2d(rows.copy()))
    # The sign rule fixes the axes by the components (largest loading positive), not by the
    # solver: mirrored data keeps the axes, so its picture is mirrored too.
    assert np.allclose(pca_2d(-rows), -pca_2d(rows), atol=1e-4)
    rng = np.random.default_rng(3)
    small = rng.normal(size=(6, 40))  # exact eigendecomposition
    wide = rng.normal(size=(10, 100))  # few rows, many dimensions: the rows' SVD
    tall = rng.normal(size=(60, 4))  # exact eigendecomposition
    for data in (small, wide, tall):
        points = pca_2d(data)
        centred = data - data.mean(axis=0)
        _, s, _ = np.linalg.svd(centred, full_matrices=False)
        assert np.allclose(np.sort(np.linalg.norm(points, axis=0))[::-1], s[:2], atol=1e-4)


def test_pca_of_many_rows_in_many_dimensions_matches_the_svd():
    """512-dim embeddings of thousands of images take the iterative path: same answer."""
    rows, a, b, _, _ = known_plane(n=3000, dim=512, seed=5)
    rows = rows + np.random.default_rng(6).normal(scale=0.5, size=rows.shape)  # a real tail
    points = pca_2d(rows)
    centred = rows - rows.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    assert np.allclose(np.abs(points), np.abs(u[:, :2] * s[:2]), rtol=1e-3, atol=1e-2)
    assert abs(np.corrcoef(points[:, 0], a)[0, 1]) > 0.99


def test_pca_of_too_little_data_is_zeros():
    assert pca_2d(np.zeros((0, 5))).shape == (0, 2)
    assert np.array_equal(pca_2d(np.ones((1, 5))), np.zeros((1, 2), dtype=np.float32))
    one_dim = pca_2d(np.arange(4, dtype=float)[:, None])
    assert one_dim.shape == (4, 2)
    assert np.allclose(one_dim[:, 1], 0.0)
    with pytest.raises(ValueError):
        pca_2d(np.zeros(3))


def test_unit_square_keeps_ratios_and_centres():
    points = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 2.0]])
    unit = to_unit_square(points)
    assert unit.min() >= 0.0 and unit.max() <= 1.0
    assert np.allclose(unit[:, 0], [0.0, 1.0, 1.0])
    assert np.allclose(unit[:, 1], [0.25, 0.25, 0.75])  # half as tall, centred
    assert np.allclose(to_unit_square(np.ones((3, 2))), 0.5)
    assert to_unit_square(np.zeros((0, 2))).shape == (0, 2)


def test_project_methods():
    rows, *_ = known_plane(n=40)
    unit = project(rows, PCA)
    assert unit.shape == (40, 2)
    assert unit.min() >= 0.0 and unit.max() <= 1.0 + 1e-6
    assert PCA in available_methods()
    with pytest.raises(ProjectionError, match="Unknown projection"):
        project(rows, "tsne")
    if not umap_available():
        assert UMAP not in available_methods()
        with pytest.raises(ProjectionError, match="not installed"):
            project(rows, UMAP)


def test_umap_when_installed():
    pytest.importorskip("umap")
    rows, *_ = known_plane(n=60)
    unit = project(rows, UMAP)
    assert unit.shape == (60, 2)
    assert UMAP in available_methods()


# -- on a real collection -------------------------------------------------------------------------
def add_pairs(store, settings, name: str, captions: list[str]) -> list[int]:  # noqa: ANN001
    collection = store.get_or_create_collection(name)
    report = ImportReport(collection.name)
    for i, caption in enumerate(captions):
        colour = ((53 * i + 20) % 256, (97 * i + 3) % 256, (29 * i + 60) % 256)
        ingest_item(
            store,
            settings,
            collection.id,
            report,
            f"{i}.png",
            make_image_bytes(colour, size=(40 + i, 36)),
            caption,
            "train",
        )
    assert report.added == len(captions), report.rejected
    return report.added_pair_ids


def test_collection_map_uses_the_cache_and_follows_the_pairs(store, settings, tiny_clip_dir):
    captions = [f"a shape number {i}" for i in range(8)]
    ids = add_pairs(store, settings, "mapped", captions)
    collection = store.collection("mapped")
    cache = EmbeddingCache(settings)
    model = load_model(str(tiny_clip_dir))
    fingerprint = model_fingerprint(str(tiny_clip_dir))

    first = collection_map(store, cache, model, fingerprint, collection.id)
    assert len(first) == 8
    assert first.pair_ids.tolist() == ids
    assert first.points.shape == (8, 2)
    assert first.points.min() >= 0.0 and first.points.max() <= 1.0 + 1e-6
    calls = cache.encode_calls

    # A caption edit keeps the images: nothing is encoded, the same projection comes back.
    store.update_pair(ids[0], caption="renamed")
    again = collection_map(store, cache, model, fingerprint, collection.id)
    assert cache.encode_calls == calls
    assert np.array_equal(again.points, first.points)

    # A deleted pair drops out of the map.
    store.delete_pair(ids[1])
    fewer = collection_map(store, cache, model, fingerprint, collection.id)
    assert fewer.pair_ids.tolist() == [ids[0], *ids[2:]]
    assert cache.encode_calls == calls
    with pytest.raises(ProjectionError):
        collection_map(store, cache, model, fingerprint, collection.id, "tsne")


class NeverEncodes:
    """A model for vectors put in the cache beforehand: encoding anything is a test failure."""

    def encode(self, inputs, **kwargs):  # noqa: ANN001, ANN003, ANN201
        raise AssertionError(f"unexpected encode of {len(inputs)} items")


def test_own_image_ranks_count_only_other_captions(store, settings):
    """Known vectors in the cache: caption i's text is closest to image order[i]."""
    captions = ["red", "green", "blue", "RED "]  # the last is the first's caption, respaced
    ids = add_pairs(store, settings, "ranked", captions)
    collection = store.collection("ranked")
    pairs = store.list_pairs(collection.id)
    cache = EmbeddingCache(settings)
    fingerprint = "known-vectors"
    images = np.eye(4, dtype=np.float32)
    cache.add_vectors(fingerprint, "image", [p.image_sha256 for p in pairs], images)
    texts = np.array(
        [
            [0.5, 0.0, 0.8, 0.3],  # "red": blue's image (0.8) beats red's (0.5); RED's twin 0.3
            [0.0, 1.0, 0.0, 0.0],  # "green": its own image first
            [0.6, 0.5, 0.4, 0.9],  # "blue": three images beat its own, one is red's twin
        ],
        dtype=np.float32,
    )
    cache.add_vectors(fingerprint, "text", [text_key(c) for c in ("red", "green", "blue")], texts)

    ranks = own_image_ranks(store, cache, NeverEncodes(), fingerprint, collection.id)
    assert ranks[ids[1]] == 1  # green
    assert ranks[ids[0]] == 2  # red: only blue's image is ahead (its twin RED's is not counted)
    assert ranks[ids[3]] == 2  # RED: red's text, whose best other-caption image is blue's
    assert ranks[ids[2]] == 4  # blue: red, green and RED's images are all ahead

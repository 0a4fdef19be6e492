"""Team labeling in the domain: per-author labels (schema 3), claims, the queue over an order,
agreement (Cohen's kappa, checked by hand) and the rule for conflicting labels in training."""

from __future__ import annotations

import sqlite3
import time

import pytest

from mmdemo.data.agreement import agreement, cohen_kappa, conflicts, consensus
from mmdemo.data.images import ImageLimits, ingest_image_bytes
from mmdemo.data.store import _MIGRATIONS, SCHEMA_VERSION, NegativeLabel, Store
from mmdemo.retrieval.compare import set_label
from mmdemo.retrieval.label_order import in_overlap, next_in_queue, shuffled
from mmdemo.training.data import build_train_data
from tests.conftest import make_image_bytes


def _image(settings, color):  # noqa: ANN001, ANN202
    limits = ImageLimits.from_settings(settings)
    return ingest_image_bytes(make_image_bytes(color), settings.images_dir, limits).as_row()


def _pairs(store, settings, n=4):  # noqa: ANN001, ANN202
    c = store.create_collection("team")
    pairs = []
    for i in range(n):
        pair, _ = store.add_pair(c.id, _image(settings, (40 * i, 200 - 30 * i, 90)), f"scene {i}")
        pairs.append(pair)
    return c, pairs


def test_a_version_2_database_keeps_its_labels_and_gains_per_author_labels(settings):
    conn = sqlite3.connect(settings.db_path)
    conn.executescript(_MIGRATIONS[1] + _MIGRATIONS[2])
    conn.execute("INSERT INTO collections VALUES (1, 'c', 1, 1)")
    for sha in ("a", "b"):
        conn.execute(f"INSERT INTO images VALUES ('{sha}', 32, 32, 'png', 10, 1)")
    conn.execute("INSERT INTO pairs VALUES (1, 1, 'a', 'x', 'train', NULL, NULL, 1, 1, NULL)")
    conn.execute("INSERT INTO negatives VALUES (1, 1, 'b', NULL, 'negative', 'ann', 1)")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = Store(settings.db_path)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 3
        assert [(lab.kind, lab.author) for lab in store.labels_for_pair(1)] == [("negative", "ann")]
        store.add_label(1, "also-positive", negative_sha256="b", author="bob")
        store.add_label(1, "also-positive", negative_sha256="b", author="ann")  # ann changes hers
        assert sorted((lab.author, lab.kind) for lab in store.labels_for_pair(1)) == [
            ("ann", "also-positive"),
            ("bob", "also-positive"),
        ]
        # Still one label per author and target.
        with pytest.raises(sqlite3.IntegrityError), store.transaction() as c:
            c.execute("INSERT INTO negatives VALUES (9, 1, 'b', NULL, 'negative', 'bob', 1)")
    finally:
        store.close()


def test_labels_without_an_author_are_the_local_annotators_after_the_upgrade(settings):
    conn = sqlite3.connect(settings.db_path)
    conn.executescript(_MIGRATIONS[1] + _MIGRATIONS[2])
    conn.execute("INSERT INTO collections VALUES (1, 'c', 1, 1)")
    for sha in ("a", "b", "c", "d"):
        conn.execute(f"INSERT INTO images VALUES ('{sha}', 32, 32, 'png', 10, 1)")
    conn.execute("INSERT INTO pairs VALUES (1, 1, 'a', 'x', 'train', NULL, NULL, 1, 1, NULL)")
    conn.execute("INSERT INTO negatives VALUES (1, 1, 'b', NULL, 'negative', NULL, 1)")
    conn.execute("INSERT INTO negatives VALUES (2, 1, 'c', NULL, 'also-positive', NULL, 1)")
    conn.execute("INSERT INTO negatives VALUES (3, 1, NULL, 'y', 'negative', NULL, 1)")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = Store(settings.db_path)
    try:
        assert [(lab.id, lab.kind) for lab in store.labels_for_pair(1)] == [
            (1, "negative"),
            (2, "also-positive"),
            (3, "negative"),
        ]
        # The local annotator changes their mind about c: their old label is replaced, not
        # kept next to the new one (where also-correct would overrule them).
        edit = set_label(store, 1, "negative", sha256="c", author="local")
        assert edit.previous is not None and edit.previous.id == 2
        labels = store.labels_for_pair(1)
        assert [(lab.id, lab.kind, lab.author) for lab in labels] == [
            (1, "negative", None),
            (2, "negative", "local"),
            (3, "negative", None),
        ]
        assert [lab.kind for lab in consensus(labels)] == ["negative"] * 3
        stats = store.collection_stats(1)
        assert (stats.negatives, stats.also_positives, stats.caption_negatives) == (3, 0, 1)
        # An import without an author updates the local label too; another person's is apart.
        store.add_label(1, "also-positive", negative_sha256="c")
        store.add_label(1, "negative", negative_sha256="c", author="bob")
        assert sorted(
            (lab.author, lab.kind)
            for lab in store.labels_for_pair(1)
            if lab.id != 1 and lab.negative_sha256 == "c"
        ) == [("bob", "negative"), ("local", "also-positive")]
        # A no-author row next to a "local" one (a database upgraded before this rule): the
        # local annotator's newer label wins in the consensus, and relabeling merges the two.
        with store.transaction() as c:
            c.execute("INSERT INTO negatives VALUES (9, 1, 'd', NULL, 'also-positive', NULL, 1)")
            c.execute("INSERT INTO negatives VALUES (10, 1, 'd', NULL, 'negative', 'local', 2)")
        d_labels = [lab for lab in store.labels_for_pair(1) if lab.negative_sha256 == "d"]
        assert [lab.kind for lab in consensus(d_labels)] == ["negative"]
        stats = store.collection_stats(1)  # b, d and the caption; c is also correct (bob: no)
        assert (stats.negatives, stats.also_positives) == (3, 1)
        store.add_label(1, "negative", negative_sha256="d", author="local")
        d_labels = [lab for lab in store.labels_for_pair(1) if lab.negative_sha256 == "d"]
        assert [(lab.id, lab.author) for lab in d_labels] == [(10, "local")]
    finally:
        store.close()


def test_claims_keep_a_pair_for_one_annotator_until_they_expire(store, settings):
    c, pairs = _pairs(store, settings)
    a, b = pairs[0].id, pairs[1].id
    fresh = time.time() - 60
    assert store.claim_pair(a, "alice", fresh)
    assert not store.claim_pair(a, "bob", fresh)  # alice holds it
    assert store.claims(c.id, fresh) == {a: "alice"}
    assert store.claim_pair(b, "alice", fresh)  # one claim per annotator: a is free again
    assert store.claims(c.id, fresh) == {b: "alice"}
    assert store.claim_pair(a, "bob", fresh)
    # An expired claim is taken over.
    assert store.claim_pair(b, "bob", expires_before=time.time() + 1)
    assert store.claims(c.id, fresh) == {b: "bob"}
    store.release_claims("bob")
    assert store.claims(c.id, fresh) == {}


def test_the_queue_splits_pairs_between_annotators_and_shares_the_overlap():
    order = [5, 3, 8, 1, 2]
    never = lambda pair_id: False  # noqa: E731
    # alice has 5 open; bob is offered the others, and nothing labeled by anyone.
    labeled = {8: {"carol"}}
    claims = {5: "alice"}
    assert next_in_queue(order, None, "bob", labeled, claims, never) == [3, 1, 2]
    assert next_in_queue(order, None, "alice", labeled, claims, never) == [5, 3, 1, 2]
    assert next_in_queue(order, 3, "bob", labeled, claims, never) == [1, 2, 3]  # wraps
    assert next_in_queue(order, None, "bob", labeled, claims, never, unlabeled_only=False) == [
        3,
        8,
        1,
        2,
    ]
    # Overlap pairs go to everyone, claimed or labeled by others, until each labeled them.
    overlap = {5, 8}.__contains__
    assert next_in_queue(order, None, "bob", labeled, claims, overlap) == [5, 3, 8, 1, 2]
    assert next_in_queue(order, None, "carol", labeled, claims, overlap) == [5, 3, 1, 2]


def test_the_overlap_share_is_a_fixed_draw_and_random_order_a_fixed_shuffle():
    ids = range(1, 2001)
    chosen = [i for i in ids if in_overlap(7, i, 0.25)]
    assert 400 < len(chosen) < 600  # about a quarter
    assert chosen == [i for i in ids if in_overlap(7, i, 0.25)]
    assert not any(in_overlap(7, i, 0.0) for i in ids) and all(in_overlap(7, i, 1) for i in ids)
    assert shuffled(ids, 1) == shuffled(ids, 1) != shuffled(ids, 2)
    assert sorted(shuffled(ids, 1)) == list(ids)


def _label(pair_id, target, kind, author, at=0.0):  # noqa: ANN001, ANN202
    return NegativeLabel(0, pair_id, target, None, kind, author, at)


def test_cohens_kappa_on_a_hand_computed_example():
    # Two annotators decide 10 candidates: both "negative" on 6, both "also" on 1, and
    # alice negative / bob also on 2, alice also / bob negative on 1.
    # p_o = 7/10; alice: 8 neg, 2 also; bob: 7 neg, 3 also;
    # p_e = 0.8*0.7 + 0.2*0.3 = 0.62; kappa = (0.7 - 0.62) / (1 - 0.62) = 0.08/0.38 = 0.2105…
    n, a = "negative", "also-positive"
    decisions = [(n, n)] * 6 + [(a, a)] + [(n, a)] * 2 + [(a, n)]
    assert cohen_kappa(decisions) == pytest.approx(0.08 / 0.38)
    assert cohen_kappa([(n, n)] * 3) is None  # one kind only: undefined
    assert cohen_kappa([]) is None
    assert cohen_kappa([(n, n), (a, a)]) == pytest.approx(1.0)

    labels = []
    for i, (x, y) in enumerate(decisions):
        labels += [_label(i // 2, f"img{i}", x, "alice"), _label(i // 2, f"img{i}", y, "bob")]
    labels.append(_label(0, "only-alice", n, "alice"))  # decided by one person: not compared
    labels.append(_label(0, "img0", a, None))  # no author: left out
    found = agreement(labels)
    assert (found.items, found.decisions, found.agreed, found.shared_pairs) == (10, 10, 7, 5)
    assert found.kappa == pytest.approx(0.08 / 0.38)
    assert [(r.a, r.b, r.items) for r in found.raters] == [("alice", "bob", 10)]
    counts = {c.author: (c.pairs, c.negatives, c.also_positives) for c in found.annotators}
    assert counts == {"alice": (5, 9, 2), "bob": (5, 7, 3)}


def test_consensus_never_makes_an_also_correct_candidate_a_negative():
    n, a = "negative", "also-positive"
    labels = [
        _label(1, "x", n, "alice", 1.0),
        _label(1, "x", a, "bob", 2.0),
        _label(1, "y", a, "alice", 1.0),
        _label(1, "y", n, "bob", 3.0),  # later, still overruled
        _label(1, "z", n, "alice", 1.0),
        _label(1, "z", n, "bob", 2.0),
    ]
    chosen = consensus(labels)
    assert [(lab.negative_sha256, lab.kind, lab.author) for lab in chosen] == [
        ("x", a, "bob"),
        ("y", a, "alice"),
        ("z", n, "bob"),
    ]
    assert conflicts(labels) == 2
    # Each annotator counts with their latest label: alice took back her also-correct on y.
    later = [*labels, _label(1, "y", n, "alice", 4.0), _label(1, "w", a, None, 1.0)]
    later.append(_label(1, "w", n, "local", 2.0))  # no author = local: changed their mind
    chosen = consensus(later)
    assert [(lab.negative_sha256, lab.kind) for lab in chosen] == [
        ("x", a),
        ("y", n),
        ("z", n),
        ("w", n),
    ]
    assert conflicts(later) == 1


def test_training_rows_follow_the_rule_for_labels_by_different_authors(store, settings):
    c, pairs = _pairs(store, settings)
    anchor, x, y = pairs[0], pairs[1], pairs[2]
    store.add_label(anchor.id, "negative", negative_sha256=x.image_sha256, author="alice")
    store.add_label(anchor.id, "also-positive", negative_sha256=x.image_sha256, author="bob")
    store.add_label(anchor.id, "negative", negative_sha256=y.image_sha256, author="alice")
    store.add_label(anchor.id, "negative", negative_sha256=y.image_sha256, author="bob")
    stats = store.collection_stats(c.id)  # as training counts: x also correct, y a negative once
    assert (stats.negatives, stats.also_positives) == (1, 1)
    data = build_train_data(store, settings, c.id)
    negatives = data.columns["image_negatives"]["negative"]
    # x was marked also-correct by bob: never a negative; y is a negative once.
    assert len(negatives) == 1 and y.image_sha256 in negatives[0]
    assert data.stats["negatives_overruled"] == 1
    assert data.stats["also_positive"] == 1


def test_the_published_dataset_card_reports_the_annotators_agreement(store, settings, tmp_path):
    from mmdemo.hub.publish import DryRunPublisher, publish_dataset

    c, pairs = _pairs(store, settings, n=5)
    anchor = pairs[0]
    # Three candidates decided by both: agree, agree, disagree (alice neg / bob also).
    # p_o = 2/3; alice 3 neg; bob 2 neg, 1 also: p_e = 1·2/3 = 2/3, so kappa = 0.
    for other, bobs in (
        (pairs[1], "negative"),
        (pairs[2], "negative"),
        (pairs[3], "also-positive"),
    ):
        store.add_label(anchor.id, "negative", negative_sha256=other.image_sha256, author="alice")
        store.add_label(anchor.id, bobs, negative_sha256=other.image_sha256, author="<i>bob</i>")
    store.add_label(pairs[1].id, "negative", negative_sha256=pairs[4].image_sha256, author="alice")
    folder = publish_dataset(
        DryRunPublisher(tmp_path / "dry"), store, settings, "team", "a/t"
    ).folder
    card = (folder / "README.md").read_text(encoding="utf-8")
    section = card.split("## Annotator agreement")[1].split("\n## ")[0]
    assert "| alice | 2 | 4 | 0 |" in section
    assert "| &lt;i&gt;bob&lt;/i&gt; | 1 | 2 | 1 |" in section and "<i>" not in card
    assert "**0.00** (3 candidates on 1 pair; 2 of 3 decisions agree)" in section

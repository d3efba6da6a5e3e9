"""The subject-to-shard-and-slice rule of sharded training."""

from __future__ import annotations

import pytest

from medunlearn_monai.sisa.plan import ShardPlan, shard_dir, stage_indices


def items_of(subjects):
    return [{"subject": subject, "image": f"{subject}.png"} for subject in subjects]


def test_a_subject_keeps_its_place_whoever_else_is_in_the_data():
    plan = ShardPlan(shards=4, slices=3, seed=7)
    subjects = [f"patient{number:03d}" for number in range(200)]
    full = plan.slice_indices(items_of(subjects))
    without = plan.slice_indices(items_of(subjects[1:]))  # patient000 forgotten
    place_full = {subjects[p]: (k, r) for k, shard in enumerate(full) for r, slc in enumerate(shard) for p in slc}
    place_without = {
        subjects[1:][p]: (k, r) for k, shard in enumerate(without) for r, slc in enumerate(shard) for p in slc
    }
    assert all(place_full[subject] == place for subject, place in place_without.items())
    assert len(place_full) == 200 and len(place_without) == 199


def test_all_items_of_a_subject_share_one_slice_and_shards_are_roughly_balanced():
    plan = ShardPlan(shards=5, slices=2, seed=0)
    items = items_of([f"p{number}" for number in range(500)] * 2)  # two images per subject
    indices = plan.slice_indices(items)
    for shard in indices:
        for positions in shard:
            assert {items[position]["subject"] for position in positions}.isdisjoint(
                {items[position]["subject"] for other in shard if other is not positions for position in other}
            )
    sizes = [sum(len(positions) for positions in shard) for shard in indices]
    assert sum(sizes) == 1000 and min(sizes) > 150  # 200 each on average


def test_another_seed_gives_another_partition():
    subjects = [f"p{number}" for number in range(50)]
    assert [ShardPlan(3, 2, 0).locate(s) for s in subjects] != [ShardPlan(3, 2, 1).locate(s) for s in subjects]


def test_stages_grow_slice_by_slice():
    slices = [[0, 4], [2], [1, 3]]
    assert stage_indices(slices, 0) == [0, 4]
    assert stage_indices(slices, 1) == [0, 2, 4]
    assert stage_indices(slices, 2) == [0, 1, 2, 3, 4]


def test_an_empty_shard_and_bad_sizes_are_refused():
    with pytest.raises(ValueError, match=r"too few for 50 shards; lower sisa_shards"):
        ShardPlan(50, 1).slice_indices(items_of(["a", "b", "c"]))
    for shards, slices in ((0, 1), (2, 0), (2.5, 1)):
        with pytest.raises(ValueError, match="whole number"):
            ShardPlan(shards, slices)


def test_slice_digests_name_no_subject_and_change_with_the_items():
    plan = ShardPlan(2, 2, 0)
    items = items_of([f"p{number}" for number in range(40)])
    indices = plan.slice_indices(items)[0]
    digests = plan.slice_digests(items, indices, b"salt", "/data")
    assert len(digests) == 2 and all(len(digest) == 64 for digest in digests)
    dropped = [list(indices[0][1:]), indices[1]]
    assert plan.slice_digests(items, dropped, b"salt", "/data") == [
        plan.slice_digests(items, [dropped[0]], b"salt", "/data")[0],
        digests[1],
    ]
    assert plan.slice_digests(items, dropped, b"salt", "/data")[0] != digests[0]


def test_shard_folder_sits_beside_the_model():
    assert shard_dir("models/sisa.pt") == "models/sisa.shards"

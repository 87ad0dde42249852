"""Aspect-ratio grouping (detectron2's DATALOADER.ASPECT_RATIO_GROUPING): batches of one orientation, formed
from the sampled stream, the same batches after a resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from goodtransfer.data.coco import CocoRecord
from goodtransfer.data.samplers import IterationSampler, detection_sampler, orientation_groups
from goodtransfer.data.voc import VocRecord
from goodtransfer.transfer import coco_instance, voc_detection

# 11 images, 4 wide and 7 not (a square one among them), so that batches of 3 rarely come out pure by chance.
SIZES = [(64, 48), (48, 64), (50, 50), (80, 40), (40, 80), (30, 60), (60, 30), (45, 90), (90, 45), (32, 96),
         (70, 71)]  # fmt: skip
BATCH, SEED, ITERATIONS = 3, 5, 40


def _stream(length: int) -> list[int]:
    """The first ``length`` positions of the sampled stream (ungrouped, one per batch)."""
    sampler = IterationSampler(len(SIZES), 1, SEED, 0, length, False)
    return [batch[0][0] for batch in sampler]


def _grouped(start: int = 0, stop: int = ITERATIONS) -> list[list[tuple[int, bool]]]:
    return list(IterationSampler(len(SIZES), BATCH, SEED, start, stop, True, orientation_groups(SIZES)))


def test_square_images_join_the_tall_ones():
    assert orientation_groups([(4, 3), (3, 4), (5, 5)]) == [0, 1, 1]


def test_batches_hold_one_orientation_and_take_the_stream_in_order():
    groups = orientation_groups(SIZES)
    plain = IterationSampler(len(SIZES), BATCH, SEED, 0, ITERATIONS, True)
    assert any(len({groups[p] for p, _ in batch}) == 2 for batch in plain)  # the stream is mixed
    batches = [[p for p, _ in batch] for batch in _grouped()]
    assert len(batches) == ITERATIONS and all(len(b) == BATCH for b in batches)
    assert all(len({groups[p] for p in batch}) == 1 for batch in batches)
    # Two buckets filled from the stream; a batch leaves when its bucket fills (AspectRatioGroupedDataset).
    expected, buckets = [], {0: [], 1: []}
    for position in _stream(ITERATIONS * BATCH * 3):
        buckets[groups[position]].append(position)
        if len(buckets[groups[position]]) == BATCH:
            expected.append(buckets[groups[position]])
            buckets[groups[position]] = []
    assert batches == expected[:ITERATIONS]


def test_resumed_sampler_gives_the_batches_and_flips_of_an_uninterrupted_one():
    whole = _grouped()
    for start in (1, 17, ITERATIONS - 1):
        assert _grouped(start) == whole[start:]
    assert any(flip for batch in whole for _, flip in batch) and not all(f for b in whole for _, f in b)


def _voc_data(sizes: list[tuple[int, int]]) -> voc_detection.VocDetectionData:
    records = [VocRecord(f"{i:06d}", Path(f"{i}.jpg"), w, h, ()) for i, (w, h) in enumerate(sizes)]
    return voc_detection.VocDetectionData(records, ["aeroplane"])


def _coco_data(sizes: list[tuple[int, int]]) -> coco_instance.CocoInstanceData:
    records = [CocoRecord(i, Path(f"{i}.jpg"), w, h, ()) for i, (w, h) in enumerate(sizes)]
    return coco_instance.CocoInstanceData(records)


@pytest.mark.parametrize("data", [_voc_data, _coco_data], ids=["voc", "coco"])
def test_detection_training_batches_are_grouped_by_the_spec_key(data):
    spec, groups = {"ims_per_batch": BATCH, "aspect_ratio_grouping": True}, orientation_groups(SIZES)
    grouped = list(detection_sampler(data(SIZES), spec, SEED, 0, ITERATIONS))
    assert grouped == _grouped()
    plain = list(
        detection_sampler(data(SIZES), {**spec, "aspect_ratio_grouping": False}, SEED, 0, ITERATIONS)
    )
    assert plain == list(IterationSampler(len(SIZES), BATCH, SEED, 0, ITERATIONS, True))
    assert any(len({groups[p] for p, _ in batch}) == 2 for batch in plain)

"""Two CPU processes (torchrun, gloo) keep MoCo/Exemplar queue semantics: every rank enqueues the keys
and labels of the whole global batch, in the same order, exactly as one process would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest
import torch

from goodtransfer.checkpoint import load_torch
from goodtransfer.data.synthetic.imagenet import generate_imagenet
from tests.workflow import pretrain_command, tiny_moco_spec

SPEC = tiny_moco_spec(run="ddp-test")
IMAGES_PER_CLASS = 8  # 2 classes -> 16 images -> 2 global batches of 8 per epoch


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet") / "imagenet"
    generate_imagenet(
        root, num_classes=2, train_per_class=IMAGES_PER_CLASS, val_per_class=1, image_size=36, seed=0
    )
    return root


def _pretrain(data, out, method, processes):
    spec = dict(SPEC, method=method)
    launcher = (
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
    )
    command = pretrain_command(spec, data, out, launcher if processes > 1 else ())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GOODTRANSFER_KEEP_STATE": "1"}  # the queues are read
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("method", ["moco", "exemplar"])
def test_two_processes_enqueue_the_global_batch_like_one_process(data, tmp_path, method):
    two = _pretrain(data, tmp_path / "two", method, processes=2)
    one = _pretrain(data, tmp_path / "one", method, processes=1)
    rank0 = load_torch(two / "state/last.pt")["model"]
    single = load_torch(one / "state/last.pt")["model"]
    assert sorted(p.name for p in (two / "state").iterdir()) == ["last.pt"]  # rank 0 alone writes state
    enqueued = 2 * IMAGES_PER_CLASS
    assert int(rank0["queue_ptr"]) == int(single["queue_ptr"]) == enqueued
    # Each image's label was enqueued exactly once per epoch, as with one process: rank 0 alone sees
    # half of them, so this holds only if keys and labels are gathered from every rank.
    labels = Counter(rank0["queue_labels"][:enqueued].tolist())
    assert (
        labels
        == Counter(single["queue_labels"][:enqueued].tolist())
        == {0: IMAGES_PER_CLASS, 1: IMAGES_PER_CLASS}
    )
    assert rank0["queue_labels"][enqueued:].eq(-1).all()
    keys = rank0["queue"][:, :enqueued]
    torch.testing.assert_close(keys.norm(dim=0), torch.ones(enqueued))
    assert (two / "checkpoint.pt").is_file() and not (two / "state/checkpoint.pt").exists()

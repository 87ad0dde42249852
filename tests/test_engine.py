"""The one training loop: hooks in order around each step, a resumed run equal to an uninterrupted one,
the linear readout resuming after SIGKILL bit for bit, and TensorBoard scalars a researcher can read."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from goodtransfer.checkpoint import load_torch, save_backbone
from goodtransfer.data.synthetic.imagenet import generate_imagenet
from goodtransfer.device import Compute
from goodtransfer.engine import Hook, Trainer
from goodtransfer.engine.hooks import EpochCheckpoint, EpochEnd, History, LrSchedule, Reseed
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.resume import ResumeState, seed_everything
from tests.workflow import FP32_CPU, pretrain_command, protocol_spec, tiny_moco_spec

CPU = Compute.from_spec({"device": "cpu", "precision": "fp32", "channels_last": False})


class Recorder(Hook):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def before_train(self, trainer):
        self.calls.append("before_train")

    def before_epoch(self, trainer):
        self.calls.append(f"before_epoch {trainer.epoch}")

    def after_step(self, trainer):
        self.calls.append(f"step {trainer.iter} loss {trainer.loss:.1f}")

    def after_epoch(self, trainer):
        self.calls.append(f"after_epoch {trainer.epoch} mean {trainer.epoch_loss:.1f}")

    def after_train(self, trainer):
        self.calls.append("after_train")


def test_trainer_sums_the_loss_dict_and_calls_hooks_in_order():
    model = nn.Linear(1, 1, bias=False)
    calls: list[str] = []
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.0), CPU, epochs=2,
        loss=lambda m, batch: {"a": m(batch).sum() * 0 + 1.0, "b": m(batch).sum() * 0 + 2.0},
        batches=lambda epoch: [torch.ones(1, 1)] * 2, hooks=[Recorder(calls)],
    )  # fmt: skip
    trainer.train()
    assert calls == [
        "before_train", "before_epoch 0", "step 1 loss 3.0", "step 2 loss 3.0", "after_epoch 0 mean 3.0",
        "before_epoch 1", "step 3 loss 3.0", "step 4 loss 3.0", "after_epoch 1 mean 3.0", "after_train",
    ]  # fmt: skip
    assert trainer.losses == {"a": 1.0, "b": 2.0}


def _regression(state_dir: Path, stop_after: int | None = None) -> tuple[nn.Module, list[dict]]:
    """Four epochs of a noisy regression, resumable per epoch; ``stop_after`` kills it after that epoch."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(24, 3), torch.randn(24, 1))
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.3), nn.Linear(8, 1))  # dropout: draws RNG per step
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    resume, history, start = ResumeState(state_dir, {"spec": "regression"}), [], 0
    if (state := resume.load()) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["epoch"], state["history"]

    def killed(trainer):
        if stop_after is not None and trainer.epoch + 1 == stop_after:
            raise KeyboardInterrupt("killed")

    generator = lambda epoch: torch.Generator().manual_seed(epoch)  # noqa: E731
    Trainer(
        model, optimizer, CPU, epochs=4,
        loss=lambda m, batch: {"mse": nn.functional.mse_loss(m(batch[0]), batch[1])},
        batches=lambda epoch: DataLoader(data, batch_size=5, shuffle=True, generator=generator(epoch)),
        hooks=[Reseed(seed_everything), LrSchedule(lambda t: 0.1 / (1 + t.epoch)), History(history, 5),
               EpochCheckpoint(resume, 1, model=model.state_dict, extra=lambda: {"history": history}),
               EpochEnd(killed)],
    ).train(start_epoch=start, start_iter=start * 5)  # fmt: skip
    return model, history


def test_a_run_resumed_from_its_epoch_state_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    straight, history = _regression(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        _regression(tmp_path / "resumed", stop_after=2)
    assert load_torch(tmp_path / "resumed/last.pt")["epoch"] == 2
    resumed, resumed_history = _regression(tmp_path / "resumed")
    assert [entry["loss"] for entry in resumed_history] == [entry["loss"] for entry in history]
    assert [entry["lr"] for entry in history] == [0.1, 0.05, 0.1 / 3, 0.025]
    for ours, reference in zip(resumed.state_dict().values(), straight.state_dict().values(), strict=True):
        assert torch.equal(ours, reference)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet") / "imagenet"
    generate_imagenet(root, num_classes=2, train_per_class=12, val_per_class=4, image_size=36, seed=0)
    return root


@pytest.fixture(scope="module")
def random_backbone(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("backbone") / "random.pt"
    torch.manual_seed(0)
    save_backbone(
        path, backbone_state_dict(build_resnet("resnet10")), {"method": "random", "arch": "resnet10"}
    )
    return path


def _linear_command(spec: dict, backbone: Path, data: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "goodtransfer", "--threads", "1", "downstream", "--spec", json.dumps(spec),
        "--checkpoint", str(backbone), "--data", str(data), "--metrics", str(out / "metrics.json"),
        "--state-dir", str(out / "state"),
    ]  # fmt: skip


def test_linear_readout_killed_mid_run_resumes_to_the_same_numbers(imagenet, random_backbone, tmp_path):
    spec = protocol_spec("linear", "r", augment_train=True, epochs=24, milestones=[12, 18], batch_size=8,
                         **FP32_CPU)  # fmt: skip
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    subprocess.run(
        _linear_command(spec, random_backbone, imagenet, straight), check=True, capture_output=True
    )
    job = subprocess.Popen(
        _linear_command(spec, random_backbone, imagenet, interrupted), stderr=subprocess.DEVNULL
    )
    state, deadline = interrupted / "state/last.pt", time.time() + 120
    while time.time() < deadline and not (state.exists() and load_torch(state)["epoch"] >= 3):
        time.sleep(0.02)
    job.kill()  # SIGKILL
    job.wait()
    killed_at = load_torch(state)["epoch"]
    assert 3 <= killed_at < spec["epochs"], "the readout finished before it could be killed"
    assert not (interrupted / "metrics.json").exists()
    resumed = subprocess.run(_linear_command(spec, random_backbone, imagenet, interrupted), check=True,
                             capture_output=True, text=True)  # fmt: skip
    assert f"resuming r from epoch {killed_at}" in resumed.stderr
    ours, reference = (json.loads((d / "metrics.json").read_text()) for d in (interrupted, straight))
    assert ours["resumed_from"] == killed_at and reference["resumed_from"] == 0
    assert (ours["top1"], ours["train_loss"]) == (reference["top1"], reference["train_loss"])
    assert not state.parent.exists()


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_scalars_of_a_tiny_pretraining_and_readout_read_back(imagenet, random_backbone, tmp_path):
    spec = tiny_moco_spec(run="r", epochs=2, lr=0.03)
    done = subprocess.run(
        pretrain_command(spec, imagenet, tmp_path / "pretrain"), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    scalars = _scalars(tmp_path / "pretrain/tensorboard")
    log = json.loads((tmp_path / "pretrain/log.json").read_text())
    steps = 2 * (24 // 8)
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, steps + 1))
    assert [round(v, 4) for _, v in scalars["epoch/loss"]] == [round(e["loss"], 4) for e in log["history"]]
    assert {round(v, 6) for _, v in scalars["train/lr"]} == {round(e["lr"], 6) for e in log["history"]}

    linear = protocol_spec("linear", "r", epochs=3, milestones=[2], batch_size=8, **FP32_CPU)
    out = tmp_path / "linear"
    subprocess.run(_linear_command(linear, random_backbone, imagenet, out), check=True, capture_output=True)
    readout = _scalars(out / "tensorboard")
    assert len(readout["train/loss"]) == 3 * 3 and len(readout["epoch/loss"]) == 3
    assert readout["train/lr"][-1][1] == pytest.approx(0.01)  # milestone 2: lr 0.1 -> 0.01
    final = json.loads((out / "metrics.json").read_text())["train_loss"]
    assert readout["epoch/loss"][-1][1] == pytest.approx(final, rel=1e-6)


def test_parameter_groups_give_norm_layers_their_own_weight_decay():
    from goodtransfer.engine.optim import sgd

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    model[2].weight.requires_grad_(False)  # frozen parameters are left out
    optimizer = sgd(model, {"base_lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "weight_decay_norm": 0.0})
    decayed, norm = optimizer.param_groups
    assert {id(p) for p in norm["params"]} == {id(model[1].weight), id(model[1].bias)}
    assert norm["weight_decay"] == 0.0 and decayed["weight_decay"] == 1e-4
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[0].bias), id(model[2].bias)}
    plain = sgd(model, {"base_lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4})  # unset: norms decay too
    assert [group["weight_decay"] for group in plain.param_groups] == [1e-4, 1e-4]


def test_precise_bn_sets_running_statistics_to_the_mean_of_the_batch_statistics():
    from goodtransfer.engine.precise_bn import update_bn_stats

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    batches = [torch.randn(8, 3) * (k + 1) + k for k in range(5)]
    with torch.no_grad():
        hidden = [model[0](batch) for batch in batches]
    count = update_bn_stats(model, batches, lambda m, batch: m(batch))
    assert count == 5 and model[1].momentum == 0.1  # momentum restored
    torch.testing.assert_close(model[1].running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0))
    torch.testing.assert_close(model[1].running_var, torch.stack([h.var(0) for h in hidden]).mean(0))


def _tiny_step(precision: str, scale: float) -> tuple[torch.Tensor, Trainer]:
    """One SGD step on a linear layer whose loss is ``scale`` x its output (summed in fp32, as losses are):
    the weight's gradient as the optimizer saw it (unscaled)."""
    torch.manual_seed(0)
    model, inputs = nn.Linear(8, 4), torch.randn(16, 8)
    compute = Compute(torch.device("cpu"), False, precision)
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=1.0), compute,
        loss=lambda m, batch: {"loss": scale * m(batch).float().sum()}, batches=lambda epoch: [inputs],
        epochs=1,
    )  # fmt: skip
    trainer.train()
    return model.weight.grad.detach().clone(), trainer


def test_fp16_steps_scale_the_loss_so_tiny_gradients_do_not_underflow(tmp_path):
    tiny = 1e-8  # below fp16's smallest subnormal (6e-8): unscaled, the fp16 output gradient is 0
    reference, _ = _tiny_step("fp32", tiny)
    gradient, trainer = _tiny_step("fp16", tiny)
    assert reference.abs().min() > 0 and trainer.scaler.is_enabled()
    assert torch.allclose(gradient, reference, rtol=1e-2, atol=0), (gradient - reference).abs().max()
    # the same step without loss scaling: the gradient underflows and nothing is learnt
    torch.manual_seed(0)
    model, inputs = nn.Linear(8, 4), torch.randn(16, 8)
    with torch.autocast("cpu", dtype=torch.float16):
        (tiny * model(inputs).float().sum()).backward()
    assert model.weight.grad.abs().max() == 0
    # the loss scale is part of the resumable state, and a resumed fp16 run continues from it
    state = trainer.state()
    assert set(state) == {"scaler"} and state["scaler"]["scale"] > 0
    assert _tiny_step("bf16", tiny)[1].state() == {}  # bf16 keeps fp32's range: no scaler
    resumed = Trainer(
        nn.Linear(8, 4), torch.optim.SGD(nn.Linear(8, 4).parameters(), lr=1.0),
        Compute(torch.device("cpu"), False, "fp16"), loss=lambda m, b: {"loss": m(b).sum()},
        batches=lambda epoch: [], epochs=1,
    )  # fmt: skip
    resumed.train(resumed={"scaler": {**state["scaler"], "scale": 1024.0}})
    assert resumed.scaler.get_scale() == 1024.0

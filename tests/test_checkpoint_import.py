"""Importing backbones from MoCo, torchvision, DDP and our own checkpoint layouts, verified key by key."""

from __future__ import annotations

import argparse
import re

import pytest
import torch

from goodtransfer.checkpoint import save_backbone
from goodtransfer.checkpoint_import import load_any_backbone
from goodtransfer.io import InputError
from goodtransfer.models.backbone import backbone_state_dict, build_resnet

SIDE_EFFECTS: list[str] = []


def _record_side_effect(*args: object) -> list[str]:
    """Would run if a refused pickle were unpickled anyway."""
    SIDE_EFFECTS.append("called")
    return SIDE_EFFECTS


class Settings:
    """An ordinary custom class: not in the weights_only allow-list either."""

    def __init__(self) -> None:
        self.lr = 0.1


class Payload:
    """A custom class whose unpickling calls a function: weights_only must refuse it before that."""

    def __reduce__(self):
        return (_record_side_effect, ("payload",))


@pytest.fixture(scope="module")
def backbones() -> dict[str, dict[str, torch.Tensor]]:
    """Randomly initialised backbone weights (no fc), with running stats changed so they are not defaults."""
    torch.manual_seed(0)
    weights = {}
    for arch in ("resnet10", "resnet18"):
        state_dict = backbone_state_dict(build_resnet(arch))
        for key, value in state_dict.items():
            if key.endswith(("running_mean", "running_var")):
                value.uniform_(0.5, 1.5)
            elif key.endswith("num_batches_tracked"):
                value.fill_(7)
        weights[arch] = state_dict
    return weights


def _head(width: int = 512) -> dict[str, torch.Tensor]:
    """A 1000-way torchvision classifier."""
    return {"fc.weight": torch.randn(1000, width), "fc.bias": torch.randn(1000)}


def _moco(
    backbone: dict[str, torch.Tensor], prefix: str, mlp: bool, arch: str = "resnet10"
) -> dict[str, object]:
    """main_moco.py's checkpoint: query and key encoders with their head, the queue, optimizer state."""
    width = backbone["layer4.0.conv1.weight"].shape[0]
    if mlp:
        head = {"fc.0.weight": torch.randn(width, width), "fc.0.bias": torch.randn(width)}
        head |= {"fc.2.weight": torch.randn(128, width), "fc.2.bias": torch.randn(128)}
    else:
        head = {"fc.weight": torch.randn(128, width), "fc.bias": torch.randn(128)}
    state_dict = {}
    for encoder in ("encoder_q", "encoder_k"):
        for key, value in (backbone | head).items():
            state_dict[f"{prefix}{encoder}.{key}"] = value + (encoder == "encoder_k")
    state_dict[f"{prefix}queue"] = torch.randn(128, 64)
    state_dict[f"{prefix}queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 200, "arch": arch, "state_dict": state_dict, "optimizer": {"state": {}}}


def _assert_same_backbone(state_dict: dict[str, torch.Tensor], original: dict[str, torch.Tensor]) -> None:
    assert not any(key.startswith("fc.") for key in state_dict)
    assert sorted(state_dict) == sorted(original)
    for key, value in original.items():
        assert torch.equal(state_dict[key], value), key


def test_moco_checkpoint_keeps_only_query_encoder_without_head(tmp_path, backbones):
    path = tmp_path / "moco_v2_imagenet.pth"
    torch.save(_moco(backbones["resnet10"], "module.", mlp=True), path)
    state_dict, meta = load_any_backbone(path)
    _assert_same_backbone(state_dict, backbones["resnet10"])  # encoder_k weights differ by +1: not taken
    assert meta["source_format"] == "moco" and meta["method"] == "moco"
    assert meta["arch"] == "resnet10" and meta["epoch"] == 200 and meta["projection_head"] == "mlp"
    assert meta["prefix"] == "module.encoder_q." and meta["wrapper"] == "state_dict"


def test_moco_v1_checkpoint_with_linear_head_drops_the_head(tmp_path, backbones):
    path = tmp_path / "moco_v1.pth.tar"
    torch.save(_moco(backbones["resnet10"], "module.", mlp=False), path)
    state_dict, meta = load_any_backbone(path)
    _assert_same_backbone(state_dict, backbones["resnet10"])
    assert meta["projection_head"] == "linear"


def test_single_gpu_moco_checkpoint_without_module_prefix_is_read(tmp_path, backbones):
    path = tmp_path / "moco_single_gpu.pth"
    torch.save(_moco(backbones["resnet10"], "", mlp=True), path)
    state_dict, meta = load_any_backbone(path)
    _assert_same_backbone(state_dict, backbones["resnet10"])
    assert meta["prefix"] == "encoder_q."


def test_moco_checkpoint_with_an_unknown_extra_module_fails_naming_it(tmp_path, backbones):
    checkpoint = _moco(backbones["resnet10"], "module.", mlp=True)
    checkpoint["state_dict"]["module.queue2"] = torch.randn(128, 64)
    path = tmp_path / "densecl_like.pth"
    torch.save(checkpoint, path)
    with pytest.raises(InputError, match=r"densecl_like\.pth: .*unexpected keys \['module\.queue2'\]"):
        load_any_backbone(path)


def _openmmlab(backbone: dict[str, torch.Tensor], memory_bank: bool) -> dict[str, object]:
    """mmselfsup 1.x's published layout (NPID, SimCLR): meta and one state dict holding the backbone under
    ``backbone.`` beside the projection neck, the loss head and NPID's memory bank."""
    width = backbone["layer4.0.conv1.weight"].shape[0]
    state_dict = {f"backbone.{key}": value for key, value in backbone.items()}
    state_dict |= {"neck.mlp.0.weight": torch.randn(128, width), "neck.mlp.0.bias": torch.randn(128)}
    if memory_bank:
        state_dict["memory_bank.feature_bank"] = torch.randn(64, 128)
    meta = {"epoch": 200, "iter": 1000, "mmengine_version": "0.1.0", "dataset_meta": {}}
    return {"meta": meta, "state_dict": state_dict}


@pytest.mark.parametrize("memory_bank", [True, False], ids=["npid", "simclr"])
def test_openmmlab_selfsup_checkpoint_keeps_only_the_backbone(tmp_path, backbones, memory_bank):
    path = tmp_path / "npid_resnet50_8xb32-steplr-200e_in1k_20220825-a67c5440.pth"
    # mmselfsup's publish_model.py saves in the legacy (pre-zip) format
    torch.save(_openmmlab(backbones["resnet18"], memory_bank), path, _use_new_zipfile_serialization=False)
    state_dict, meta = load_any_backbone(path)
    _assert_same_backbone(state_dict, backbones["resnet18"])
    assert meta["source_format"] == "openmmlab" and meta["arch"] == "resnet18"
    assert meta["prefix"] == "backbone." and meta["wrapper"] == "state_dict"


def test_openmmlab_checkpoint_with_an_unknown_part_fails_naming_it(tmp_path, backbones):
    obj = _openmmlab(backbones["resnet10"], memory_bank=False)
    obj["state_dict"]["predictor.weight"] = torch.zeros(3)
    path = tmp_path / "byol.pth"
    torch.save(obj, path)
    with pytest.raises(InputError, match=r"byol\.pth.*predictor\.weight"):
        load_any_backbone(path)


def test_plain_torchvision_state_dict_drops_classifier_and_infers_arch(tmp_path, backbones):
    path = tmp_path / "resnet10-plain.pth"
    torch.save(backbones["resnet10"] | _head(), path)
    state_dict, meta = load_any_backbone(path)
    _assert_same_backbone(state_dict, backbones["resnet10"])
    assert meta["arch"] == "resnet10" and meta["source_format"] == "torchvision"
    assert meta["wrapper"] is None and meta["prefix"] == "" and "method" not in meta


def test_ddp_module_prefixed_state_dict_is_unprefixed(tmp_path, backbones):
    path = tmp_path / "supervised_imagenet.pth"
    full = backbones["resnet18"] | _head()
    torch.save({f"module.{key}": value for key, value in full.items()}, path)
    state_dict, meta = load_any_backbone(path)
    _assert_same_backbone(state_dict, backbones["resnet18"])
    assert meta["arch"] == "resnet18" and meta["prefix"] == "module."


def test_torchvision_reference_script_model_wrapper_is_unwrapped(tmp_path, backbones):
    """torchvision's references/classification/train.py stores ``args`` as an argparse.Namespace."""
    path = tmp_path / "model_89.pth"
    checkpoint = {
        "model": backbones["resnet10"] | _head(),
        "optimizer": {"state": {}, "param_groups": []},
        "lr_scheduler": {"last_epoch": 90},
        "epoch": 89,
        "args": argparse.Namespace(model="resnet10", lr=0.1, epochs=90),
    }
    torch.save(checkpoint, path)
    state_dict, meta = load_any_backbone(path)
    _assert_same_backbone(state_dict, backbones["resnet10"])
    assert meta["wrapper"] == "model" and meta["epoch"] == 89 and meta["arch"] == "resnet10"


def test_state_dict_wrapper_with_module_prefix_is_unwrapped(tmp_path, backbones):
    path = tmp_path / "exemplar_v2.pth"
    full = backbones["resnet10"] | _head()
    torch.save({"state_dict": {f"module.{key}": value for key, value in full.items()}, "epoch": 5}, path)
    state_dict, meta = load_any_backbone(path)
    _assert_same_backbone(state_dict, backbones["resnet10"])
    assert meta["wrapper"] == "state_dict" and meta["prefix"] == "module." and meta["arch"] == "resnet10"


def test_our_backbone_format_is_delegated_to_load_backbone(tmp_path, backbones):
    path = tmp_path / "ours.pt"
    run_meta = {"method": "supervised", "run": "sup-f", "config_hash": "abc", "epoch": 3, "arch": "resnet10"}
    save_backbone(path, backbones["resnet10"], run_meta)
    state_dict, meta = load_any_backbone(path)
    _assert_same_backbone(state_dict, backbones["resnet10"])
    assert meta["source_format"] == "goodtransfer-backbone/1"
    assert meta["method"] == "supervised" and meta["epoch"] == 3 and meta["arch"] == "resnet10"


def test_bottleneck_resnet50_depth_is_inferred_from_the_keys(tmp_path):
    torch.manual_seed(1)
    original = backbone_state_dict(build_resnet("resnet50"))
    path = tmp_path / "resnet50-plain.pth"
    torch.save(original | {"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, path)
    state_dict, meta = load_any_backbone(path)
    assert meta["arch"] == "resnet50"
    _assert_same_backbone(state_dict, original)


def test_pre_0_4_torchvision_checkpoint_without_batchnorm_counters_gets_zero_counters(tmp_path, backbones):
    """Like resnet50-19c8e357.pth, saved before BatchNorm had ``num_batches_tracked``."""
    old = {k: v for k, v in backbones["resnet10"].items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet10-old.pth"
    torch.save(old | _head(), path)
    state_dict, meta = load_any_backbone(path)
    counters = [key for key in backbones["resnet10"] if key.endswith("num_batches_tracked")]
    assert meta["filled_num_batches_tracked"] == len(counters) > 0
    assert all(state_dict[key].item() == 0 for key in counters)
    assert all(torch.equal(state_dict[key], value) for key, value in old.items())


def test_explicit_arch_is_used_for_verification(tmp_path, backbones):
    path = tmp_path / "resnet18.pth"
    torch.save(backbones["resnet18"], path)
    assert load_any_backbone(path, arch="resnet18")[1]["arch"] == "resnet18"
    with pytest.raises(
        InputError, match=r"resnet18\.pth: .*torchvision resnet10: unexpected keys \['layer1\.1\."
    ):
        load_any_backbone(path, arch="resnet10")


def test_arch_argument_conflicting_with_the_checkpoint_arch_field_fails(tmp_path, backbones):
    path = tmp_path / "moco.pth"
    torch.save(_moco(backbones["resnet10"], "module.", mlp=True), path)
    with pytest.raises(
        InputError, match=r"moco\.pth: checkpoint field arch is 'resnet10' but arch 'resnet50'"
    ):
        load_any_backbone(path, arch="resnet50")


def test_missing_key_fails_naming_the_key(tmp_path, backbones):
    broken = dict(backbones["resnet10"])
    del broken["layer3.0.bn2.weight"]
    path = tmp_path / "missing.pth"
    torch.save(broken, path)
    with pytest.raises(InputError, match=r"missing\.pth: .*missing keys \['layer3\.0\.bn2\.weight'\]"):
        load_any_backbone(path)


def test_extra_key_fails_naming_the_key(tmp_path, backbones):
    path = tmp_path / "extra.pth"
    torch.save(backbones["resnet10"] | {"layer2.0.attention.weight": torch.ones(3)}, path)
    with pytest.raises(InputError, match=r"extra\.pth: .*unexpected keys \['layer2\.0\.attention\.weight'\]"):
        load_any_backbone(path)


def test_wrong_shape_fails_naming_the_key_and_both_shapes(tmp_path, backbones):
    path = tmp_path / "shape.pth"
    torch.save(backbones["resnet10"] | {"conv1.weight": torch.zeros(64, 1, 7, 7)}, path)
    expected = r"shape\.pth: .*wrong shapes \['conv1\.weight: \[64, 1, 7, 7\] \(expected \[64, 3, 7, 7\]\)'\]"
    with pytest.raises(InputError, match=expected):
        load_any_backbone(path)


def test_non_tensor_value_fails_naming_the_key(tmp_path, backbones):
    path = tmp_path / "scalar.pth"
    torch.save(backbones["resnet10"] | {"bn1.weight": 1.0}, path)
    with pytest.raises(InputError, match=r"bn1\.weight: not a tensor \(float\)"):
        load_any_backbone(path)


def test_offending_keys_are_listed_at_most_eight(tmp_path, backbones):
    path = tmp_path / "many.pth"
    torch.save(backbones["resnet10"] | {f"extra.{i}": torch.ones(1) for i in range(11)}, path)
    with pytest.raises(InputError) as info:
        load_any_backbone(path)
    message = str(info.value)
    assert "extra.7'" in message and "extra.8'" not in message and "(+3 more)" in message


def test_depth_matching_no_known_arch_fails_naming_the_stages(tmp_path, backbones):
    odd = {k: v for k, v in backbones["resnet18"].items() if not k.startswith("layer4.1.")}
    path = tmp_path / "odd.pth"
    torch.save(odd, path)
    with pytest.raises(
        InputError, match=r"odd\.pth: cannot infer .*BasicBlock blocks per stage \[2, 2, 2, 1\]"
    ):
        load_any_backbone(path)


def test_unknown_layout_fails_naming_file_and_found_keys(tmp_path):
    path = tmp_path / "vit.pth"
    torch.save({"teacher": {"blocks.0.attn.qkv.weight": torch.zeros(3)}, "epoch": 1}, path)
    with pytest.raises(InputError) as info:
        load_any_backbone(path)
    message = str(info.value)
    assert "vit.pth: unrecognised checkpoint layout" in message
    assert "top-level keys ['teacher', 'epoch']" in message
    assert "MoCo" in message and "torchvision" in message and "goodtransfer-backbone/1" in message


def test_non_dict_checkpoint_fails_naming_the_file(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(
        InputError, match=r"tensor\.pth: unrecognised checkpoint layout: found a top-level Tensor"
    ):
        load_any_backbone(path)


def test_truncated_file_fails_naming_the_file(tmp_path, backbones):
    path = tmp_path / "truncated.pth"
    torch.save(backbones["resnet10"], path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(InputError, match=r"truncated\.pth: not a readable PyTorch checkpoint"):
        load_any_backbone(path)


@pytest.mark.parametrize(
    "smuggled",
    [
        pytest.param(_record_side_effect, id="function"),
        pytest.param(Settings(), id="custom-object"),
        pytest.param(Payload(), id="object-with-reduce"),
    ],
)
def test_pickle_with_code_objects_is_refused_without_running_them(tmp_path, backbones, smuggled):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": backbones["resnet10"], "hook": smuggled}, path)
    SIDE_EFFECTS.clear()
    with pytest.raises(InputError, match=re.escape(f"{path}: not read: it pickles Python objects")) as caught:
        load_any_backbone(path)
    assert SIDE_EFFECTS == []
    assert "tests.test_checkpoint_import." in str(caught.value)  # the refused global is named


def test_a_narrowed_resnet_width_is_inferred_from_the_stem(tmp_path):
    torch.manual_seed(2)
    original = backbone_state_dict(build_resnet("resnet10-w32"))
    path = tmp_path / "narrow.pth"
    torch.save(original | _head(256), path)
    state_dict, meta = load_any_backbone(path)
    assert meta["arch"] == "resnet10-w32"
    _assert_same_backbone(state_dict, original)


def test_a_checkpoint_of_another_width_than_requested_fails_naming_the_shapes(tmp_path, backbones):
    path = tmp_path / "wide.pth"
    torch.save(backbones["resnet10"], path)
    shapes = r"wrong shapes \['conv1\.weight: \[64, 3, 7, 7\] \(expected \[32, 3, 7, 7\]\)'"
    with pytest.raises(InputError, match=rf"wide\.pth: .*resnet10-w32: {shapes}"):
        load_any_backbone(path, arch="resnet10-w32")

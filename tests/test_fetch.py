"""Released checkpoints are fetched atomically with their SHA-256 recorded; a bad address loses nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from goodtransfer.fetch import fetch, released_sha256, released_url
from goodtransfer.io import InputError, read_json, read_yaml
from tests.workflow import ROOT

REGISTRY = ROOT / "paper/reference/released_checkpoints.yaml"


def test_fetch_copies_the_file_and_records_url_and_sha256(tmp_path):
    source = tmp_path / "moco_v2_imagenet.pth"
    source.write_bytes(b"weights" * 1000)
    out = tmp_path / "checkpoints/released/moco_v2_imagenet.pth"
    digest = fetch(source.as_uri(), out)
    assert out.read_bytes() == source.read_bytes()
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    assert read_json(f"{out}.json") == {"url": source.as_uri(), "sha256": digest}


def test_unreachable_address_fails_naming_it_and_writes_nothing(tmp_path):
    out = tmp_path / "x.pth"
    missing = (tmp_path / "absent.pth").as_uri()
    with pytest.raises(InputError, match="absent.pth: could not fetch") as caught:
        fetch(missing, out)
    assert f"copy the file to {out} by hand" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_registry_gives_the_authors_address_and_rejects_unknown_names():
    assert released_url("exemplar_v2", REGISTRY).endswith("/good_transfer/exemplar_v2.pth")
    with pytest.raises(InputError, match="exemplar_v3"):
        released_url("exemplar_v3", REGISTRY)


def _moco_file(path, epoch: int = 200):
    import torch

    from goodtransfer.models.backbone import build_resnet

    torch.manual_seed(0)
    weights = {f"module.encoder_q.{k}": v for k, v in build_resnet("resnet10").state_dict().items()}
    torch.save({"epoch": epoch, "state_dict": {k: v for k, v in weights.items() if ".fc." not in k}}, path)


def test_import_verifies_the_checksum_recorded_at_fetch_and_refuses_a_changed_file(tmp_path):
    from goodtransfer.pretrain.train import import_backbone

    source = tmp_path / "released.pth"
    _moco_file(source)
    fetched = tmp_path / "checkpoints/released/moco.pth"
    fetch(source.as_uri(), fetched)
    spec = {"run": "r", "arch": "resnet10", "import_from": str(fetched)}
    import_backbone(spec, tmp_path / "ok.pt", tmp_path / "ok.json")
    assert read_json(tmp_path / "ok.json")["imported_from"] == str(fetched)
    fetched.write_bytes(fetched.read_bytes() + b"tampered")
    with pytest.raises(InputError, match="SHA-256 differs"):
        import_backbone(spec, tmp_path / "bad.pt", tmp_path / "bad.json")
    assert not (tmp_path / "bad.pt").exists()


def test_import_verifies_the_md5_of_a_dvc_imported_file(tmp_path):
    from goodtransfer.pretrain.train import import_backbone

    released = tmp_path / "moco.pth"
    _moco_file(released)
    md5 = hashlib.md5(released.read_bytes(), usedforsecurity=False).hexdigest()
    (tmp_path / "moco.pth.dvc").write_text(f"outs:\n- md5: {md5}\n  path: moco.pth\n")
    spec = {"run": "r", "arch": "resnet10", "import_from": str(released)}
    import_backbone(spec, tmp_path / "ok.pt", tmp_path / "ok.json")
    (tmp_path / "moco.pth.dvc").write_text(
        "outs:\n- md5: 0123456789abcdef0123456789abcdef\n  path: moco.pth\n"
    )
    with pytest.raises(InputError, match="MD5 differs"):
        import_backbone(spec, tmp_path / "bad.pt", tmp_path / "bad.json")


def test_every_released_checkpoint_has_a_dvc_import_url_line():
    from goodtransfer.fetch import dvc_import_commands

    lines = dvc_import_commands(REGISTRY)
    assert (
        "dvc import-url " + released_url("exemplar_v2", REGISTRY) + " checkpoints/released/exemplar_v2.pth"
        in lines
    )
    assert len(lines) == len(set(lines)) >= 20


def test_every_lpips_file_of_the_paper_preset_has_an_address():
    figures = read_yaml(ROOT / "presets/paper.yaml")["figures"]
    named = {
        path
        for entry in figures.values()
        for key in ("lpips_weights", "lpips_linear")
        if (path := entry.get("settings", {}).get(key))
    }
    assert named == {"checkpoints/lpips/squeezenet1_1-b8a52dc0.pth", "checkpoints/lpips/squeeze.pth"}
    lpips = ROOT / "paper/reference/lpips_weights.yaml"
    for path in named:
        assert released_url(Path(path).stem, lpips).endswith(f"/{Path(path).name}")


def test_a_published_digest_is_checked_and_a_different_file_is_refused_unwritten(tmp_path):
    source = tmp_path / "npid.pth"
    source.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    out = tmp_path / "checkpoints/released/npid.pth"
    assert fetch(source.as_uri(), out, expected_sha256=digest[:8]) == digest
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:8]
    refused = tmp_path / "checkpoints/released/other.pth"
    with pytest.raises(InputError, match=f"does not start with {wrong}.*nothing was written to {refused}"):
        fetch(source.as_uri(), refused, expected_sha256=wrong)
    assert sorted(path.name for path in refused.parent.iterdir()) == ["npid.pth", "npid.pth.json"]


def test_figure2_checkpoints_are_registered_with_address_and_published_digest():
    runs = read_yaml(ROOT / "presets/paper.yaml")["pretrain"]["runs"]
    for run, method in (("instdisc-mmselfsup", "npid"), ("simclr-mmselfsup", "simclr")):
        name = Path(runs[run]["import_from"]).stem
        url = released_url(name, REGISTRY)
        assert url.startswith(f"https://download.openmmlab.com/mmselfsup/1.x/{method}/") and url.endswith(
            f"/{name}.pth"
        )
        # mmselfsup's publish_model.py ends each name with the first 8 hex digits of the file's SHA-256
        assert released_sha256(name, REGISTRY) == name.rsplit("-", 1)[1]
    assert released_sha256("exemplar_v2", REGISTRY) == ""  # the authors publish no digest


def test_a_malformed_registry_digest_is_named(tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text("base_url: https://example.org/\nfiles:\n  model: {sha256: A67C}\n")
    with pytest.raises(InputError, match=r"files.model.sha256 is 'A67C'; expected 8 to 64 lowercase hex"):
        released_sha256("model", registry)


def test_an_openmmlab_file_fetched_with_its_digest_imports_as_a_run(tmp_path):
    import torch

    from goodtransfer.checkpoint import load_backbone
    from goodtransfer.models.backbone import backbone_state_dict, build_resnet
    from goodtransfer.pretrain.train import import_backbone

    torch.manual_seed(0)
    weights = backbone_state_dict(build_resnet("resnet10"))
    source = tmp_path / "published.pth"
    state_dict = {f"backbone.{key}": value for key, value in weights.items()}
    state_dict["neck.mlp.0.weight"] = torch.zeros(4, 512)
    torch.save(
        {"meta": {"epoch": 200}, "state_dict": state_dict}, source, _use_new_zipfile_serialization=False
    )
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    fetched = tmp_path / "checkpoints/released/simclr.pth"
    fetch(source.as_uri(), fetched, expected_sha256=digest[:8])
    spec = {"run": "simclr-mmselfsup", "arch": "resnet10", "import_from": str(fetched)}
    import_backbone(spec, tmp_path / "checkpoint.pt", tmp_path / "train_log.json")
    imported, meta = load_backbone(tmp_path / "checkpoint.pt")
    assert meta["method"] == "imported:openmmlab" and meta["source_checksum"] == f"sha256 {digest}"
    assert sorted(imported) == sorted(weights)
    assert all(torch.equal(imported[key], value) for key, value in weights.items())


def test_a_file_named_with_its_digest_must_have_it_however_it_arrived(tmp_path):
    from goodtransfer.pretrain.train import import_backbone
    from goodtransfer.publish import verify_named_digest

    source = tmp_path / "published.pth"
    for extra in range(100):  # a digest whose 8 digits are all decimal would read as a date: take another
        _moco_file(source, epoch=extra)
        digits = hashlib.sha256(source.read_bytes()).hexdigest()[:8]
        if any(c in "abcdef" for c in digits):
            break
    released = tmp_path / "checkpoints/released"
    released.mkdir(parents=True)
    right = released / f"npid_resnet50_20220825-{digits}.pth"  # copied by hand: no fetch record
    right.write_bytes(source.read_bytes())
    assert verify_named_digest(right) == digits
    spec = {"run": "r", "arch": "resnet10", "import_from": str(right)}
    import_backbone(spec, tmp_path / "ok.pt", tmp_path / "ok.json")
    wrong = released / "npid_resnet50_20220825-0abc1234.pth"  # another file under a published name
    wrong.write_bytes(source.read_bytes())
    with pytest.raises(InputError, match=r"ends with -0abc1234, the start of the SHA-256 it was published"):
        import_backbone({**spec, "import_from": str(wrong)}, tmp_path / "bad.pt", tmp_path / "bad.json")
    assert not (tmp_path / "bad.pt").exists()
    for name in ("moco_v2_imagenet.pth", "run-20220825.pth"):  # no digest in the name; a date is not one
        plain = released / name
        plain.write_bytes(source.read_bytes())
        assert verify_named_digest(plain) is None

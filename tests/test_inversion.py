"""Deep-image-prior feature inversion (Fig. 2/6) and the LPIPS-style distance, on tiny random networks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import models

from goodtransfer.checkpoint import save_backbone
from goodtransfer.cli import main
from goodtransfer.device import Compute
from goodtransfer.evaluate import inversion
from goodtransfer.evaluate.inversion import SkipGenerator, invert, layer4_features, run_inversion
from goodtransfer.evaluate.perceptual import NETWORKS, PerceptualDistance
from goodtransfer.io import InputError
from goodtransfer.models.backbone import backbone_state_dict, build_resnet
from goodtransfer.report.paper_figures import make_inversion_figure

CPU = Compute.from_spec({"device": "cpu"})
TINY = {
    "noise_channels": 8,
    "noise_size": 32,
    "noise_scale": 0.1,
    "resize": 32,
    "crop": 32,
    "channels_down": [8, 16],
    "channels_up": [8, 16],
    "channels_skip": [4, 4],
    "kernel_sizes": [3, 3],
    "output": "normalised",
    "iterations": 30,
    "lr": 0.01,
    "seed": 0,
    "device": "cpu",
    "precision": "fp32",
    "lpips_net": "squeeze",
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The pipeline runs one thread per job; two threads on a shared 2-core machine are many times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight torchvision state dicts (``features.*`` only) standing in for the real files."""
    folder = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    files = {}
    for net, build in (("alex", models.alexnet), ("squeeze", models.squeezenet1_1)):
        state = {k: v for k, v in build().state_dict().items() if k.startswith("features.")}
        files[net] = folder / f"{net}.pth"
        torch.save(state, files[net])
    return files


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_resnet("resnet10").eval()


def test_generator_output_has_noise_size_and_sigmoid_keeps_it_in_unit_range() -> None:
    noise = torch.rand(2, 8, 32, 32) * 0.1
    generator = SkipGenerator(8, [8, 16], [8, 16], [4, 0], [5, 3], sigmoid=True)
    out = generator(noise)
    assert out.shape == (2, 3, 32, 32)
    assert out.min() > 0 and out.max() < 1
    # the paper's widths: six halvings of the noise, back up to its size
    paper = SkipGenerator(
        32, [16, 32, 64, 128, 128, 128], [16, 32, 64, 128, 128, 128], [4] * 6, [7, 7, 5, 5, 3, 3]
    )
    assert paper(torch.rand(1, 32, 128, 128) * 0.1).shape == (1, 3, 128, 128)


def test_inversion_reduces_layer4_feature_mse_by_a_factor(backbone: torch.nn.Module) -> None:
    torch.manual_seed(1)
    target = torch.rand(3, 32, 32)
    result = invert(backbone, target, TINY, CPU)
    assert len(result.losses) == TINY["iterations"] + 1
    assert result.losses[-1] < result.losses[0] / 10  # 38x to 86x over seeds 0-4
    assert result.image.shape == (3, 32, 32)
    assert result.image.min() >= 0 and result.image.max() <= 1
    with torch.no_grad():  # the reported loss is the true feature MSE of the returned (clipped) image
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        norm = lambda x: ((x - mean[:, None, None]) / std[:, None, None])[None]  # noqa: E731
        mse = torch.mean(
            (layer4_features(backbone, norm(result.image)) - layer4_features(backbone, norm(target))) ** 2
        )
    assert float(mse) < result.losses[0] / 3


def test_inversion_is_seeded_and_leaves_the_backbone_untouched(backbone: torch.nn.Module) -> None:
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    spec = {**TINY, "iterations": 2, "output": "sigmoid"}
    target = torch.rand(3, 32, 32)
    first, second = invert(backbone, target, spec, CPU), invert(backbone, target, spec, CPU)
    assert torch.equal(first.image, second.image) and first.losses == second.losses
    assert not backbone.training
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert not invert(backbone, target, {**spec, "seed": 1}, CPU).image.equal(first.image)


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_perceptual_distance_is_zero_for_identical_symmetric_and_grows_with_noise(
    net: str, lpips_files: dict[str, Path]
) -> None:
    distance = PerceptualDistance(net, lpips_files[net])
    torch.manual_seed(2)
    x = torch.rand(2, 3, 48, 48)
    slightly = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    noisier = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    with torch.no_grad():
        assert torch.all(distance(x, x) == 0)
        assert torch.allclose(distance(x, slightly), distance(slightly, x))
        assert torch.all(distance(x, slightly) > 0)
        assert torch.all(distance(x, noisier) > distance(x, slightly))


def test_learned_linear_weights_scale_each_channel(lpips_files: dict[str, Path], tmp_path: Path) -> None:
    channels = NETWORKS["alex"].channels
    ones, twos = tmp_path / "ones.pth", tmp_path / "twos.pth"
    torch.save({f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1) for k, c in enumerate(channels)}, ones)
    torch.save(
        {f"lin{k}.model.1.weight": torch.full((1, c, 1, 1), 2.0) for k, c in enumerate(channels)}, twos
    )
    x, y = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40)
    uniform = PerceptualDistance("alex", lpips_files["alex"])(x, y)
    assert torch.allclose(PerceptualDistance("alex", lpips_files["alex"], ones)(x, y), uniform)
    assert torch.allclose(PerceptualDistance("alex", lpips_files["alex"], twos)(x, y), 2 * uniform)
    torch.save({"lin0.model.1.weight": torch.ones(1, 3, 1, 1)}, ones)
    with pytest.raises(InputError, match=r"ones\.pth: key lin0\.model\.1\.weight is \[1, 3, 1, 1\]"):
        PerceptualDistance("alex", lpips_files["alex"], ones)


def test_missing_or_mismatched_lpips_weights_name_the_file(
    lpips_files: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "alexnet-owt-7be5be79.pth"
    with pytest.raises(InputError, match=rf"{missing}: lpips_weights file not found"):
        PerceptualDistance("alex", missing)
    with pytest.raises(InputError, match=rf"{tmp_path / 'alex.pth'}: lpips_linear file not found"):
        PerceptualDistance("alex", lpips_files["alex"], tmp_path / "alex.pth")
    with pytest.raises(InputError, match=rf"{lpips_files['alex']}: not a torchvision squeeze state_dict"):
        PerceptualDistance("squeeze", lpips_files["alex"])


def _inputs(tmp_path: Path, lpips_files: dict[str, Path]) -> tuple[dict, dict[str, Path], list[Path]]:
    checkpoints = {}
    for seed, label in enumerate(("supervised", "moco")):
        torch.manual_seed(seed)
        checkpoints[label] = tmp_path / f"{label}.pt"
        state = backbone_state_dict(build_resnet("resnet10"))
        save_backbone(checkpoints[label], state, {"method": label, "arch": "resnet10"})
    images = []
    for index, color in enumerate(((200, 30, 30), (20, 90, 220))):
        images.append(tmp_path / f"img{index}.png")
        Image.new("RGB", (48, 40), color).save(images[-1])
    spec = {**TINY, "iterations": 3, "lpips_weights": str(lpips_files["squeeze"]), "lpips_linear": None}
    return spec, checkpoints, images


def test_run_inversion_writes_pngs_metrics_and_grid_and_a_rerun_recomputes_nothing(
    tmp_path: Path, lpips_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, checkpoints, images = _inputs(tmp_path, lpips_files)
    out, metrics_out = tmp_path / "out", tmp_path / "metrics.json"
    run_inversion(spec, checkpoints, images, out, metrics_out)
    pngs = sorted(out.rglob("*.png"))
    assert [p.relative_to(out).as_posix() for p in pngs] == [
        "inputs/0000_img0.png", "inputs/0001_img1.png",
        "reconstructions/moco/0000_img0.png", "reconstructions/moco/0001_img1.png",
        "reconstructions/supervised/0000_img0.png", "reconstructions/supervised/0001_img1.png",
    ]  # fmt: skip
    metrics = json.loads(metrics_out.read_text())
    assert set(metrics) == {"supervised", "moco"}
    for entry in metrics.values():
        assert len(entry["lpips_per_image"]) == 2 and all(v > 0 for v in entry["lpips_per_image"])
        assert entry["lpips_mean"] == pytest.approx(sum(entry["lpips_per_image"]) / 2)
    pdf = (out / "reconstructions.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"CreationDate" not in pdf

    stamps = {p: p.stat().st_mtime_ns for p in pngs}
    calls: list[int] = []
    monkeypatch.setattr(inversion, "invert", lambda *args: calls.append(1) or invert(*args))
    run_inversion(spec, checkpoints, images, out, metrics_out)
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in pngs if "reconstructions" in p.parts} == {
        p: t for p, t in stamps.items() if "reconstructions" in p.parts
    }
    assert json.loads(metrics_out.read_text()) == metrics
    assert (out / "reconstructions.pdf").read_bytes() == pdf  # deterministic figure

    run_inversion({**spec, "iterations": 2}, checkpoints, images, out, metrics_out)
    assert len(calls) == 4  # other settings: every reconstruction is redone


def test_run_inversion_rejects_incomplete_spec_and_folder_unsafe_labels(
    tmp_path: Path, lpips_files: dict[str, Path]
) -> None:
    spec, checkpoints, images = _inputs(tmp_path, lpips_files)
    without_lr = {k: v for k, v in spec.items() if k != "lr"}
    with pytest.raises(InputError, match=r"missing key\(s\) \['lr'\]"):
        run_inversion(without_lr, checkpoints, images, tmp_path / "out", tmp_path / "m.json")
    with pytest.raises(InputError, match="'noise_size' is 30"):
        run_inversion({**spec, "noise_size": 30}, checkpoints, images, tmp_path / "out", tmp_path / "m.json")
    with pytest.raises(InputError, match="labels"):
        run_inversion(spec, {"moco/v2": checkpoints["moco"]}, images, tmp_path / "out", tmp_path / "m.json")


def _figure_entry(labels: list[str]) -> dict:
    return {
        "kind": "inversion",
        "caption": "Reconstructions from res5 features.",
        "runs": [{"run": f"{label}-run", "label": label} for label in labels],
        "images": {"dataset": "imagenet", "split": "val", "count": 2},
    }


def test_invert_command_writes_work_dir_outputs_and_the_figure_only_reads_them(
    tmp_path: Path, lpips_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, checkpoints, images = _inputs(tmp_path, lpips_files)
    for index, image in enumerate(images):  # an ImageNet-style split: one class folder per image
        (tmp_path / "data" / "val" / f"n{index}").mkdir(parents=True)
        image.rename(tmp_path / "data" / "val" / f"n{index}" / image.name)
    entry = _figure_entry(list(checkpoints))
    work = tmp_path / "inversion" / "figure2"
    command = ["invert", "--name", "figure2", "--spec", json.dumps({**entry, "settings": spec}),
               "--checkpoints", *map(str, checkpoints.values()), "--data", str(tmp_path / "data"),
               "--work-dir", str(work), "--metrics", str(work / "metrics.json"),
               "--out-pdf", str(work / "reconstructions.pdf")]  # fmt: skip
    assert main(command) == 0
    metrics = json.loads((work / "metrics.json").read_text())
    assert set(metrics) == set(checkpoints) and len(list((work / "reconstructions").rglob("*.png"))) == 4

    monkeypatch.setattr(inversion, "run_inversion", lambda *args, **kwargs: pytest.fail("figure reran it"))
    out = tmp_path / "figures"
    command = ["figure", "--name", "figure2", "--spec", json.dumps(entry),
               "--inversion-metrics", str(work / "metrics.json"), "--grid", str(work / "reconstructions.pdf"),
               "--out-pdf", str(out / "figure2.pdf"), "--out-json", str(out / "figure2.json")]  # fmt: skip
    assert main(command) == 0
    record = json.loads((out / "figure2.json").read_text())
    assert record["means"]["ours"] == {label: metrics[label]["lpips_mean"] for label in checkpoints}
    assert record["ours"] == {label: metrics[label]["lpips_per_image"] for label in checkpoints}
    assert record["paper"] is None  # Fig. 2: the paper shows images, no values
    assert record["runs"]["moco"] == {"run": "moco-run", "checkpoint": str(checkpoints["moco"])}
    assert [Path(p).name for p in record["images"]] == ["img0.png", "img1.png"]
    assert (out / "figure2.pdf").read_bytes() == (work / "reconstructions.pdf").read_bytes()


def test_inversion_figure_refuses_metrics_of_other_runs(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"supervised": {"lpips_mean": 0.5, "images": [], "checkpoint": "s.pt"}}))
    grid = tmp_path / "grid.pdf"
    grid.write_bytes(b"%PDF-1.4")
    entry = _figure_entry(["supervised", "moco"])
    with pytest.raises(InputError, match=rf"{metrics}: inversions of \['supervised'\]; expected one per run"):
        make_inversion_figure("figure2", entry, metrics, grid, tmp_path / "f.pdf", tmp_path / "f.json")
    assert not (tmp_path / "f.pdf").exists()


def test_lpips_network_file_named_with_a_digest_must_have_it(
    lpips_files: dict[str, Path], tmp_path: Path
) -> None:
    # torchvision publishes squeezenet1_1-b8a52dc0.pth: a file under such a name that is another network is
    # refused before it measures anything
    impostor = tmp_path / "squeezenet1_1-b8a52dc0.pth"
    impostor.write_bytes(lpips_files["squeeze"].read_bytes())
    with pytest.raises(InputError, match=r"squeezenet1_1-b8a52dc0.pth: its name ends with -b8a52dc0"):
        PerceptualDistance("squeeze", impostor)

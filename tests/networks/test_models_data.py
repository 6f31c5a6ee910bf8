"""Models and data: the ImageNet folder path, custom factories, hub-cache weights, accuracy."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from pipeline.measurement.accuracy import topk_correct
from pipeline.networks.data import IMAGENET_MEAN, IMAGENET_STD, DataConfig, DataError, load_eval_data
from pipeline.networks.models import ModelConfig, ModelError, build_model
from tests.cli import run_pipeline, runs

# class folders are created out of order: ImageFolder sorts them, n01 -> 0, n02 -> 1, n03 -> 2
PURE = {"n03": (0, 0, 255), "n01": (255, 0, 0), "n02": (0, 255, 0)}

TINY_NET = textwrap.dedent(
    '''
    """A 3-class net outside the package: a 1x1 identity conv, ReLU, global average pool."""
    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1, bias=False)
            self.relu = nn.ReLU()
            with torch.no_grad():
                self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

        def forward(self, x):
            return self.relu(self.conv(x)).mean((2, 3))  # logits = mean of each channel after ReLU

    def build(scale: float = 1.0):
        net = Tiny()
        with torch.no_grad():
            net.conv.weight.mul_(scale)
        return net
    '''
)


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    """6 JPEGs in 3 class folders. n02 holds one green and one red image (the red one is a miss).

    Every image is 300 (H) x 400 (W) with a 40-px blue stripe at its left edge: resize 256 makes
    it 256 x 341 (stripe 34 px), and the center crop 224 starts at column (341-224)//2 = 58,
    so the stripe is cropped away and each crop is one solid color.
    """
    root = tmp_path_factory.mktemp("val")
    for wnid, color in PURE.items():
        folder = root / wnid
        folder.mkdir()
        colors = [color, (255, 0, 0)] if wnid == "n02" else [color, color]
        for i, c in enumerate(colors):
            image = Image.new("RGB", (400, 300), c)
            image.paste((0, 0, 255), (0, 0, 40, 300))
            image.save(folder / f"{wnid}_{i}.JPEG", quality=100, subsampling=0)
    return root


def test_imagenet_labels_order_and_transform(imagenet_root):
    data = load_eval_data(DataConfig(name="imagenet", root=str(imagenet_root), batch_size=4, cache=False))
    assert data.size == 6 and data.image_shape == (3, 224, 224)
    images, labels = (torch.cat(t) for t in zip(*data.batches(4), strict=True))
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]  # sorted wnids
    assert images.shape == (6, 3, 224, 224)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    expected = {0: (255, 0, 0), 2: (0, 255, 0), 3: (255, 0, 0), 4: (0, 0, 255)}
    for index, rgb in expected.items():
        want = (torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1) / 255 - mean) / std
        # JPEG keeps solid colors within a couple of levels; the blue stripe would be off by ~4 std
        assert torch.allclose(images[index], want.expand(3, 224, 224), atol=0.05), index


def test_imagenet_limit_spreads_over_the_classes(imagenet_root):
    data = load_eval_data(DataConfig(name="imagenet", root=str(imagenet_root), limit=3, batch_size=8, cache=False))
    assert data.size == 3
    assert torch.cat([labels for _, labels in data.batches(8)]).tolist() == [0, 1, 2]  # images 0, 2, 4


@pytest.mark.parametrize("root", [None, "/nonexistent/imagenet", "EMPTY"])
def test_wrong_imagenet_root_is_a_clear_error(root, tmp_path):
    if root == "EMPTY":
        root = str(tmp_path)
    with pytest.raises(DataError, match=r"<root>/<wnid>/\*\.JPEG"):
        load_eval_data(DataConfig(name="imagenet", root=root, cache=False))


def test_custom_factory_outside_the_package_runs_end_to_end_on_imagenet_folders(imagenet_root, tmp_path):
    (tmp_path / "tinynet.py").write_text(TINY_NET)
    checkpoint = tmp_path / "tiny.pt"
    # a checkpoint that doubles the identity: logits scale, argmax (and accuracy) do not change
    torch.save({"conv.weight": 2 * torch.eye(3).view(3, 3, 1, 1)}, checkpoint)
    result = run_pipeline(
        tmp_path, "model=custom", "model.target=tinynet:build", f"model.checkpoint={checkpoint}",
        "model.input_size=[3,224,224]", "model.num_classes=3", "data=imagenet", f"data.root={imagenet_root}",
        "data.num_workers=0", "window=2", env={"PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run,) = runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "custom:tinynet:build"  # labelled by its factory: two nets stay apart
    assert "custom:tinynet:build window=2 layer=all" in result.stdout
    # 5 of 6 images are argmax-correct (the red image in n02 is predicted n01); with 3 classes,
    # top-5 is capped at top-3: all correct.
    assert run.data.metrics["top1"] == pytest.approx(5 / 6)
    assert run.data.metrics["top5"] == 1.0
    # one predictable layer (conv -> relu) on 224x224 maps, 3 channels, 6 images
    assert run.data.metrics["layer/conv/sparsity"] == run.data.metrics["sparsity"]
    assert run.data.metrics["model_conv_macs_per_image"] == 3 * 224 * 224 * 3


def test_custom_with_hydra_target_spelling(tmp_path):
    (tmp_path / "tinynet2.py").write_text(TINY_NET)
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        model = build_model(ModelConfig(name="custom", _target_="tinynet2.build", kwargs={"scale": 3.0}))
    finally:
        sys.path.remove(str(tmp_path))
    assert torch.equal(model.conv.weight.view(3, 3), 3 * torch.eye(3))


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (ModelConfig(name="custom"), "model.target=package.module:function"),
        (ModelConfig(name="custom", target="no_such_module_xyz:build"), "cannot import"),
        (ModelConfig(name="custom", target="torch:no_such_factory"), "has no 'no_such_factory'"),
        (ModelConfig(name="resnet18", weights="IMAGENET1K_V9"), "IMAGENET1K_V1"),
        (ModelConfig(name="alexnet_fmnist", checkpoint="/nonexistent.pt", num_classes=10), "does not exist"),
        (ModelConfig(name="lenet"), "known: alexnet"),
    ],
)
def test_model_errors_say_what_to_do(cfg, message):
    with pytest.raises(ModelError, match=message):
        build_model(cfg)


def test_pretrained_weights_load_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / "resnet18-f37072fd.pth")
    model = build_model(ModelConfig(name="resnet18", weights="IMAGENET1K_V1"))
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name


def test_checkpoints_never_run_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": Payload()}, path)
    with pytest.raises(ModelError, match="weights_only=True"):
        build_model(ModelConfig(name="alexnet_fmnist", checkpoint=str(path), num_classes=10))


def reference_accuracy(output, target, topk=(1,)):
    """torchvision references/classification/utils.py accuracy(), verbatim."""
    with torch.inference_mode():
        maxk = max(topk)
        batch_size = target.size(0)
        if target.ndim == 2:
            target = target.max(dim=1)[1]
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target[None])
        res = []
        for k in topk:
            correct_k = correct[:k].flatten().sum(dtype=torch.float32)
            res.append(correct_k * (100.0 / batch_size))
        return res


def test_topk_by_hand_and_against_torchvision_reference():
    logits = torch.tensor([[0.1, 0.9, 0.0, 0.3, 0.2, 0.5], [0.8, 0.1, 0.05, 0.02, 0.01, 0.03]])
    # image 0: target 3 is 3rd largest (0.9, 0.5, 0.3): top-1 miss, top-5 hit
    # image 1: target 5 (0.03) is 4th largest after 0.8, 0.1, 0.05: top-1 miss, top-5 hit
    target = torch.tensor([3, 5])
    assert topk_correct(logits, target).tolist() == [0, 2]
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        output = torch.randn(37, 100, generator=generator)
        target = torch.randint(0, 100, (37,), generator=generator)
        top1, top5 = reference_accuracy(output, target, (1, 5))
        correct = topk_correct(output, target)
        assert correct[0].item() == round(top1.item() * 37 / 100)
        assert correct[1].item() == round(top5.item() * 37 / 100)


def test_a_failed_fashion_mnist_download_says_why(tmp_path, monkeypatch):
    """No files in data.root and the download refused (a proxy on a closed port: the real download, made
    to fail the same way everywhere): the error names the download's own error, not only that it failed."""
    import urllib.request

    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen's opener reads the proxies again
    with pytest.raises(DataError) as raised:
        load_eval_data(DataConfig(name="fashion_mnist", root=str(tmp_path)))
    message, cause = str(raised.value), raised.value.__cause__
    assert "torchvision could not download them (RuntimeError: Error downloading" in message
    assert "Connection refused" in message and "\n" not in message
    assert cause is not None and " ".join(str(cause).split()) in message

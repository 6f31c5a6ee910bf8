"""Evaluation data: Fashion-MNIST (the offline default), ImageNet validation folders, synthetic images.

:func:`load_eval_data` returns the evaluated subset (``data.limit`` images spread evenly over the
whole set, the same for every job) and keeps preprocessed tensors in memory, so the jobs of a
sequential sweep decode and transform the images once.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import MISSING
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from pipeline.errors import PipelineError

SPLITS = ("test", "calibration", "train")  # the evaluation images; the training split's two disjoint parts


@dataclass
class DataConfig:
    """Which images to evaluate (conf/data/*.yaml)."""

    name: str = MISSING  # fashion_mnist, imagenet, synthetic
    split: str = "test"  # test: the evaluation images; calibration, train: the training split's two parts
    calibration_images: int = 10000  # the training split's held-out part (searches), spread over it
    root: Optional[str] = None
    train_root: Optional[str] = None  # imagenet: the training images' class folders (split=train)
    limit: Optional[int] = None  # evaluate a fixed subset of N images spread over the classes
    batch_size: int = 256
    num_workers: int = 0
    size: int = 512  # synthetic: images in the set
    num_classes: int = 1000  # synthetic: label range
    image_size: list[int] = field(default_factory=lambda: [3, 224, 224])  # synthetic: (C, H, W)
    download: bool = True  # fashion_mnist: fall back to torchvision's download
    cache: bool = True  # keep preprocessed images in memory for the next job of a sweep

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"data.split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.calibration_images < 1:
            raise ValueError(f"data.calibration_images must be >= 1, got {self.calibration_images}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"data.limit must be a positive number of images or null (all), got {self.limit}")
        if self.batch_size <= 0:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.size < 1 or self.num_classes < 1:
            raise ValueError(f"data.size and data.num_classes must be >= 1, got {self.size} and {self.num_classes}")


DEBIAN_FASHION_MNIST = Path(os.environ.get("CNP_FASHION_MNIST_SYSTEM_DIR", "/usr/share/datasets/fashion-mnist"))
FMNIST_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FMNIST_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATASETS = ("fashion_mnist", "imagenet", "synthetic")
CACHE_BYTES = 4 << 30  # preprocessed images kept in memory across the jobs of a sweep


class DataError(PipelineError):
    """Data cannot be found or read; the message says what to put where."""


@dataclass
class EvalData:
    """The images one job evaluates: in memory (``images``/``labels``) or streamed (``dataset``)."""

    name: str
    size: int
    image_shape: tuple[int, ...]
    images: Tensor | None = None  # (N, C, H, W) float32, preprocessed
    labels: Tensor | None = None  # (N,) int64
    dataset: Dataset | None = None
    num_classes: int | None = None  # labels are 0..num_classes-1
    indices: list[int] | None = None  # each evaluated image's index in its split, in evaluation order

    def batches(self, batch_size: int, num_workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, labels) batches in a fixed order."""
        if self.images is not None and self.labels is not None:
            for start in range(0, self.size, batch_size):
                yield self.images[start : start + batch_size], self.labels[start : start + batch_size]
            return
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        try:
            yield from loader
        except DataError as exc:  # from a loader worker: its message carries the worker's traceback
            raise DataError(str(exc).rstrip().rsplit("DataError: ", 1)[-1]) from None


_CACHE: dict[tuple, EvalData] = {}


def load_eval_data(cfg: DataConfig, seed: int = 0) -> EvalData:
    """The evaluated images of ``cfg`` (its ``split``: test = evaluation, train = calibration and
    training), served from the in-memory cache when already prepared."""
    key = (cfg.name, cfg.split, cfg.root, cfg.train_root, cfg.limit, cfg.calibration_images, tuple(cfg.image_size),
           cfg.size, cfg.num_classes, seed)  # fmt: skip
    if cfg.cache and key in _CACHE:
        return _CACHE[key]
    if cfg.name == "fashion_mnist":
        data = _fashion_mnist(cfg)
    elif cfg.name == "imagenet":
        data = _imagenet(cfg)
    elif cfg.name == "synthetic":
        data = _synthetic(cfg, seed)
    else:
        raise DataError(f"unknown data set {cfg.name!r}; known: {', '.join(DATASETS)}")
    if cfg.cache and data.images is None and data.size * _image_bytes(data.image_shape) <= CACHE_BYTES:
        data = _materialize(data, cfg.batch_size, cfg.num_workers)
    if cfg.cache:
        _CACHE[key] = data
    return data


def check_limit(limit: int | None, available: int, what: str) -> None:
    """``data.limit`` may not ask for more images than the set has (the run would record a false limit)."""
    if limit is not None and limit > available:
        raise DataError(
            f"data.limit={limit} but {what} has only {available} images: use data.limit<={available}, "
            "or data.limit=null for all of them"
        )


def split_indices(size: int, cfg: DataConfig, what: str) -> list[int]:
    """The indices ``cfg`` evaluates among ``size`` images of its split.

    ``test``: ``data.limit`` images spread over the evaluation set. The training split is cut in two
    disjoint parts: ``calibration``, ``data.calibration_images`` images spread over it (what searches
    choose on), and ``train``, all the others (what recovery and predictor training fit on), so nothing
    is fitted on the images its choices are checked on. ``data.limit`` then spreads within the part.
    """
    if cfg.split == "test":
        part = list(range(size))
    else:
        held_out = spread_indices(size, min(cfg.calibration_images, size // 2))
        if cfg.split == "calibration":
            part = held_out
        else:
            taken = set(held_out)
            part = [i for i in range(size) if i not in taken]
    label = what if cfg.split == "test" else f"the {cfg.split} part of {what}"
    check_limit(cfg.limit, len(part), label)
    return [part[i] for i in spread_indices(len(part), cfg.limit)]


def spread_indices(size: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(size)`` (every size/limit-th), or all of them.

    Class-sorted folders therefore contribute images of every class, and every job picks the same.
    """
    if limit is None or limit >= size:
        return list(range(size))
    return [i * size // limit for i in range(limit)]


def _image_bytes(shape: tuple[int, ...]) -> int:
    return 4 * int(np.prod(shape))


def _materialize(data: EvalData, batch_size: int, num_workers: int) -> EvalData:
    images, labels = zip(*data.batches(batch_size, num_workers), strict=True)
    return EvalData(
        data.name, data.size, data.image_shape, torch.cat(images), torch.cat(labels), num_classes=data.num_classes,
        indices=data.indices,
    )  # fmt: skip


# Fashion-MNIST ------------------------------------------------------------------------------


def find_fashion_mnist(root: str | None, split: str = "test") -> Path | None:
    """The folder holding the Fashion-MNIST IDX files of ``split``: in data.root when given, else Debian's package."""
    files = FMNIST_TEST if split == "test" else FMNIST_TRAIN
    candidates = [Path(root), Path(root) / "FashionMNIST" / "raw"] if root else [DEBIAN_FASHION_MNIST]
    for folder in candidates:
        if all(_idx_file(folder, name) is not None for name in files):
            return folder
    return None


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array of unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}")
    return data.reshape(dims)


def read_fashion_mnist(folder: Path, split: str = "test") -> tuple[Tensor, Tensor]:
    """(images uint8 (N, 28, 28), labels int64 (N,)) of one split."""
    images_name, labels_name = FMNIST_TEST if split == "test" else FMNIST_TRAIN
    images_path, labels_path = _idx_file(folder, images_name), _idx_file(folder, labels_name)
    if images_path is None or labels_path is None:
        raise DataError(f"Fashion-MNIST {split} split not found in {folder}")
    images = torch.from_numpy(read_idx(images_path).copy())
    labels = torch.from_numpy(read_idx(labels_path).astype(np.int64))
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{images_path} and {labels_path} disagree on the number of images")
    return images, labels


def normalize_fashion_mnist(images: Tensor) -> Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), scaled to [0, 1] and normalized."""
    from pipeline.networks.fmnist import FMNIST_MEAN, FMNIST_STD

    return ((images.float() / 255.0 - FMNIST_MEAN[0]) / FMNIST_STD[0]).unsqueeze(1)


def _fashion_mnist(cfg: DataConfig) -> EvalData:
    if cfg.root and not Path(cfg.root).is_dir():  # never fall back to another copy than the one asked for
        raise DataError(
            f"data.root={cfg.root} is not a folder: put the Fashion-MNIST files in a folder and pass "
            "data.root=FOLDER (torchvision downloads them into it when data.download=true and the internet "
            f"is reachable), or leave data.root unset to use Debian's copy in {DEBIAN_FASHION_MNIST}"
        )
    folder = find_fashion_mnist(cfg.root, cfg.split)
    failure: Exception | None = None
    if folder is None and cfg.download:
        folder, failure = _download_fashion_mnist(cfg.root or "outputs/data", cfg.split)
    if folder is None:
        where = f"data.root={cfg.root}" if cfg.root else str(DEBIAN_FASHION_MNIST)
        files = FMNIST_TEST if cfg.split == "test" else FMNIST_TRAIN
        tried = (
            f"torchvision could not download them ({type(failure).__name__}: {' '.join(str(failure).split())})"
            if failure is not None
            else "torchvision's download did not give them"
            if cfg.download
            else "data.download=false"
        )
        raise DataError(
            f"Fashion-MNIST {cfg.split} files ({files[0]}.gz, {files[1]}.gz) not found in "
            f"{where}, and {tried}. Either install "
            f"Debian's package (apt-get install dataset-fashion-mnist), or put the files in a folder "
            f"and pass data.root=FOLDER (torchvision's download works where the internet is reachable)."
        ) from failure
    images, labels = read_fashion_mnist(folder, "test" if cfg.split == "test" else "train")
    index = torch.tensor(split_indices(len(labels), cfg, f"the Fashion-MNIST {cfg.split} split in {folder}"))
    return EvalData(
        "fashion_mnist",
        len(index),
        (1, 28, 28),
        normalize_fashion_mnist(images[index]),
        labels[index],
        num_classes=10,
        indices=index.tolist(),
    )


def _download_fashion_mnist(root: str, split: str = "test") -> tuple[Path | None, Exception | None]:
    """The folder torchvision downloaded the files into, or None and why it could not."""
    import torchvision

    try:
        torchvision.datasets.FashionMNIST(root, train=split == "train", download=True)
    except Exception as exc:  # offline, or a proxy refusing: reported by the caller with this cause
        return None, exc
    return find_fashion_mnist(root, split), None


# ImageNet -----------------------------------------------------------------------------------


def imagenet_transform():
    """torchvision's standard ImageNet eval transform: resize 256, center crop 224, normalize."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _imagenet(cfg: DataConfig) -> EvalData:
    from torchvision.datasets import ImageFolder

    key, folder, what = (
        ("data.root", cfg.root, "validation")
        if cfg.split == "test"
        else ("data.train_root", cfg.train_root, "training")
    )  # fmt: skip (calibration and train are the two parts of the training split)
    hint = (
        f"{key} must be the ILSVRC-2012 {what} set (or a spread subset of it) as class sub-folders, "
        "<root>/<wnid>/*.JPEG (torchvision's ImageFolder layout; class order = torchvision's indices)"
    )
    if not folder:
        raise DataError(f"data=imagenet with data.split={cfg.split} needs {key}. {hint}")
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{key}={root} is not a folder. {hint}")
    try:
        dataset = ImageFolder(str(root), transform=imagenet_transform(), loader=read_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{key}={root} holds no images in class folders ({exc}). {hint}") from exc
    index = split_indices(len(dataset), cfg, f"{key}={root}")
    return EvalData(
        "imagenet", len(index), (3, 224, 224), dataset=Subset(dataset, index), num_classes=len(dataset.classes),
        indices=list(index),
    )  # fmt: skip


def read_image(path: str):
    """An image file as RGB (torchvision's loader), or a :class:`DataError` naming the file."""
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL: unidentified, truncated, corrupt
        raise DataError(
            f"cannot decode the image {path} ({type(exc).__name__}: {exc}): remove or replace the file, then rerun"
        ) from None


# Synthetic ----------------------------------------------------------------------------------


def _synthetic(cfg: DataConfig, seed: int) -> EvalData:
    """Deterministic standard-normal images and uniform labels from ``seed``: ``data.size`` of them for
    the evaluation set, another ``data.size`` (another stream) for the training split."""
    generator = torch.Generator().manual_seed(seed if cfg.split == "test" else seed + 7919)
    index = torch.tensor(split_indices(cfg.size, cfg, "the synthetic set (data.size)"))
    images = torch.randn((cfg.size, *cfg.image_size), generator=generator)[index]
    labels = torch.randint(0, cfg.num_classes, (cfg.size,), generator=generator)[index]
    return EvalData(
        "synthetic", len(index), tuple(cfg.image_size), images, labels, num_classes=cfg.num_classes,
        indices=index.tolist(),
    )  # fmt: skip

"""Model registry: torchvision ImageNet models, the project's Fashion-MNIST twins, and custom factories.

Every checkpoint is read with ``torch.load(..., weights_only=True)``: a checkpoint never runs code.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torchvision
from omegaconf import MISSING
from torch import nn

from pipeline.errors import PipelineError
from pipeline.networks.layers import keep_as_leaves


@dataclass
class ModelConfig:
    """Which network to evaluate (conf/model/*.yaml)."""

    name: str = MISSING  # registry name: alexnet, vgg16, resnet18, *_fmnist, custom
    weights: Optional[str] = None  # torchvision weights enum name (IMAGENET1K_V1) or null = random init
    checkpoint: Optional[str] = None  # a state_dict file, loaded with weights_only=True
    target: Optional[str] = None  # custom factory "package.module:function"
    _target_: Optional[str] = None  # the same, Hydra's spelling "package.module.function"
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the factory
    input_size: list[int] = field(default_factory=lambda: [3, 224, 224])  # (C, H, W)
    leaf_modules: list[str] = field(default_factory=list)  # submodule names or classes torch.fx keeps whole
    num_classes: int = 1000


CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
TORCHVISION_MODELS = ("alexnet", "vgg16", "resnet18")
FMNIST_MODELS = ("alexnet_fmnist", "vgg16_fmnist", "resnet18_fmnist")
MODELS = (*TORCHVISION_MODELS, *FMNIST_MODELS, "custom")


class ModelError(PipelineError):
    """A model cannot be built or its weights cannot be found; the message says what to do."""


def build_model(cfg: ModelConfig, reads: list[Path] | None = None) -> nn.Module:
    """The model named by ``cfg``, with its weights, in eval mode; the weights file it loads is appended
    to ``reads`` (a job's identity hashes exactly the files it read)."""
    reads = [] if reads is None else reads
    if cfg.name in TORCHVISION_MODELS:
        model = _torchvision_model(cfg, reads)
    elif cfg.name in FMNIST_MODELS:
        model = _fmnist_model(cfg, reads)
    elif cfg.name == "custom":
        model = _custom_model(cfg, reads)
    else:
        raise ModelError(f"unknown model {cfg.name!r}; known: {', '.join(MODELS)}")
    if cfg.leaf_modules:
        keep_as_leaves(model, cfg.leaf_modules)
    return model.eval()


def _torchvision_model(cfg: ModelConfig, reads: list[Path]) -> nn.Module:
    builder = torchvision.models.get_model_builder(cfg.name)
    model = builder(weights=None, num_classes=cfg.num_classes, **cfg.kwargs)
    if cfg.checkpoint:
        return _load_checkpoint(model, cfg.checkpoint, reads)
    if cfg.weights:
        model.load_state_dict(torchvision_state_dict(cfg.name, cfg.weights, reads))
    return model


def checkpoint_path(name: str | None, checkpoint: str | Path) -> Path:
    """The file ``model.checkpoint`` names: as given, or under pipeline/checkpoints/ for the *_fmnist twins."""
    path = Path(checkpoint)
    if name in FMNIST_MODELS and not path.is_absolute() and not path.exists():
        return CHECKPOINTS / path
    return path


def torchvision_state_dict(name: str, weights: str, reads: list[Path] | None = None) -> dict[str, torch.Tensor]:
    """Pretrained torchvision weights from the torch hub cache (downloaded there when online)."""
    enum = torchvision.models.get_model_weights(name)
    try:
        entry = enum[weights]
    except KeyError:
        known = ", ".join(w.name for w in enum)
        raise ModelError(f"unknown weights {weights!r} for {name}; known: {known}, or null for random init") from None
    filename = os.path.basename(entry.url)
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / filename
    if not path.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(entry.url, str(path), progress=False)
        except Exception as exc:  # offline: URLError, timeouts, proxies refusing
            raise ModelError(
                f"pretrained weights for {name} ({weights}) are not in the torch hub cache and could "
                f"not be downloaded ({type(exc).__name__}). Put {filename} (from {entry.url}) in "
                f"{folder}/ (or set TORCH_HOME), or use model.weights=null for a random init."
            ) from exc
    state = torch.load(path, map_location="cpu", weights_only=True)
    if reads is not None:
        reads.append(path)
    return state


def _fmnist_model(cfg: ModelConfig, reads: list[Path]) -> nn.Module:
    from pipeline.networks.fmnist import FMNIST_MODELS as factories

    model = factories[cfg.name](num_classes=cfg.num_classes, **cfg.kwargs)
    if cfg.checkpoint:
        return _load_checkpoint(model, checkpoint_path(cfg.name, cfg.checkpoint), reads)
    return model


def _custom_model(cfg: ModelConfig, reads: list[Path]) -> nn.Module:
    spec = cfg.target or cfg._target_
    if not spec:
        raise ModelError(
            "model=custom needs a factory: model.target=package.module:function "
            "(or model._target_=package.module.function)"
        )
    factory = import_factory(spec)
    model = factory(**cfg.kwargs)
    if not isinstance(model, nn.Module):
        raise ModelError(f"factory {spec} returned {type(model).__name__}, not a torch.nn.Module")
    return _load_checkpoint(model, cfg.checkpoint, reads) if cfg.checkpoint else model


def import_factory(spec: str) -> Callable[..., nn.Module]:
    """``package.module:function`` or ``package.module.function`` -> the callable."""
    module_name, _, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not module_name or not attr:
        raise ModelError(f"model factory {spec!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"cannot import {module_name!r} for model factory {spec!r} ({exc}); "
            "is its folder on PYTHONPATH (or the package installed)?"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ModelError(f"module {module_name!r} has no {attr!r} (model factory {spec!r})") from None


def _load_checkpoint(model: nn.Module, path: str | Path, reads: list[Path]) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist; set model.checkpoint to a state_dict file, or null")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"cannot read checkpoint {path} as a plain state_dict with weights_only=True ({exc})"
        ) from exc
    reads.append(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ModelError(
            f"checkpoint {path} holds a {type(state).__name__}, not a state_dict (a dict of parameter name -> "
            "tensor): save it with torch.save(model.state_dict(), PATH)"
        )
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"checkpoint {path} does not fit the model: {exc}") from None
    return model

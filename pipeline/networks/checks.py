"""Checks that need the built model and the loaded data; they run before a job's run is created.

- The window is bounded by the largest predictable map: at that size every map is one tile, and a
  larger tile reaches past every map (with the diagonal pattern it measures exactly the same; it
  only costs memory, tiles being padded to a multiple of the window on the pure-torch path).
- The model predicts as many classes as the data has, and returns (N, classes) logits.

:func:`map_sizes` gives each predictable layer's output map size from one traced forward of a zero
image, so the bound can also be applied per layer (:func:`check_window` takes any subset).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from pipeline.errors import PipelineError
from pipeline.networks.layers import discover_layers, trace


@dataclass(frozen=True)
class ModelShapes:
    """What one forward of a single image shows: each predictable map (name -> (H, W)) and the logits."""

    maps: dict[str, tuple[int, int]]
    output: tuple[int, ...] | None  # None when the output is not one tensor


def model_shapes(model: nn.Module, input_size: Sequence[int], device: torch.device | str = "cpu",
                 graph: torch.fx.GraphModule | None = None) -> ModelShapes:  # fmt: skip
    """Run one zero image of ``input_size`` (C, H, W) through ``model``'s traced forward (``graph``, or
    traced here), recording the shapes on its nodes."""
    graph = graph if graph is not None else trace(model)
    layers = discover_layers(model, graph)
    try:
        with torch.no_grad():
            ShapeProp(graph).propagate(torch.zeros((1, *input_size), device=device))
    except Exception as exc:  # the model's own forward failed on an input of this size
        raise PipelineError(
            f"{type(model).__name__} fails on one {tuple(input_size)} image ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}): set model.input_size to the (C, H, W) it expects"
        ) from None
    nodes = {node.name: node for node in graph.graph.nodes}
    maps = {}
    for layer in layers:
        meta = nodes[layer.node].meta.get("tensor_meta")
        if meta is not None and len(meta.shape) == 4:
            maps[layer.name] = (int(meta.shape[2]), int(meta.shape[3]))
    output = next(node for node in graph.graph.nodes if node.op == "output").args[0]
    meta = output.meta.get("tensor_meta") if isinstance(output, torch.fx.Node) else None
    shape = tuple(int(d) for d in meta.shape) if meta is not None and hasattr(meta, "shape") else None
    return ModelShapes(maps, shape)


def largest_map(maps: Mapping[str, tuple[int, int]]) -> int:
    """The largest side of any map: the largest window that still means something."""
    return max((max(h, w) for h, w in maps.values()), default=1)


def check_window(window: int, maps: Mapping[str, tuple[int, int]], model: str = "the model") -> None:
    """Reject a window larger than every map of ``maps`` (layer name -> (H, W)), saying why."""
    bound = largest_map(maps)
    if maps and window > bound:
        name, (h, w) = max(maps.items(), key=lambda item: max(item[1]))
        raise PipelineError(
            f"window={window} is larger than the largest predictable map of {model} ({h}x{w}, layer {name}): "
            f"at window {bound} every map is already one tile, and a larger tile reaches past every map (with "
            f"the diagonal it measures the same and only costs memory). Use window <= {bound}"
        )


def check_classes(output: tuple[int, ...] | None, data_classes: int | None, model: str, data: str) -> None:
    """The model's logits are (N, classes) with as many classes as the data's labels."""
    if output is None or len(output) != 2:
        raise PipelineError(
            f"model {model} returns {'no single tensor' if output is None else f'a tensor of shape {output}'}; "
            "the evaluation needs (N, classes) logits: make forward() return them"
        )
    if data_classes is not None and output[1] != data_classes:
        raise PipelineError(
            f"model {model} predicts {output[1]} classes but data {data} has {data_classes}: "
            f"use a model with {data_classes} outputs (model.num_classes={data_classes} and a checkpoint trained "
            "for it), or data with as many classes as the model"
        )


def check_model(model: nn.Module, model_name: str, input_size: Sequence[int], window: int,
                data_name: str, data_classes: int | None, device: torch.device,
                graph: torch.fx.GraphModule | None = None) -> None:  # fmt: skip
    """Every check of this module, for one job (``graph``: the model's traced forward, if traced already)."""
    shapes = model_shapes(model, input_size, device, graph)
    check_classes(shapes.output, data_classes, model_name, data_name)
    check_window(window, shapes.maps, model_name)

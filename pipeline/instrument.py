"""The instrumented forward: a model whose normal forward pass applies window prediction.

``instrument(model, predictor, layer)`` traces ``model`` with torch.fx into a new graph module
that shares the model's parameters, and inserts one probe after every predictable ReLU. Each probe
reduces that layer's output to integer counts (all layers) and applies the prediction (layers in
scope), so every later consumer sees the predicted zeros. The original model is never modified:
no hook is registered and no graph of it is changed, so nothing survives the context.

    with instrument(model, TilePredictor(3), layer="all") as net:
        for images, _ in loader:
            logits = net(images)
    counts = net.layer_counts()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from pipeline.counts import MEASURED_KEYS, LayerCounts, measure
from pipeline.layers import PredictableLayer, discover_layers, resolve_scope, trace
from pipeline.prediction import Predictor


class Probe(nn.Module):
    """Measures one predictable layer's output and applies its prediction."""

    def __init__(self, layer: PredictableLayer, predictor: Predictor | None) -> None:
        super().__init__()
        self.layer = layer
        self.predictor = predictor
        self.calls = 0
        self.total: Tensor | None = None  # int64 (len(MEASURED_KEYS),), on the activation's device

    def forward(self, activation: Tensor) -> Tensor:
        output, counts = measure(activation, self.predictor)
        self.total = counts if self.total is None else self.total + counts
        self.calls += 1
        return output


class InstrumentedModel(nn.Module):
    """A traced copy of a model's forward (sharing its parameters) with a probe per layer."""

    def __init__(self, model: nn.Module, predictor: Predictor | None, layer: str | int = "all") -> None:
        super().__init__()
        graph_module = trace(model)
        self.layers = discover_layers(model, graph_module)
        if not self.layers:
            raise ValueError(
                f"{type(model).__name__} has no predictable layer (a ReLU fed by Conv2d through "
                "BatchNorm2d, Identity or adds only): nothing to measure"
            )
        self.scope = resolve_scope(self.layers, layer)
        self.probes: list[Probe] = []
        nodes = {node.name: node for node in graph_module.graph.nodes}
        for spec in self.layers:
            probe = Probe(spec, predictor if spec.index in self.scope else None)
            target = f"cnp_probe_{spec.index}"
            graph_module.add_submodule(target, probe)
            relu = nodes[spec.node]
            with graph_module.graph.inserting_after(relu):
                probed = graph_module.graph.call_module(target, (relu,))
            relu.replace_all_uses_with(probed, delete_user_cb=lambda user, probed=probed: user is not probed)
            self.probes.append(probe)
        graph_module.recompile()
        self.graph_module = graph_module
        self.forwards = 0

    def forward(self, x: Tensor) -> Tensor:
        output = self.graph_module(x)
        self.forwards += 1
        return output

    def layer_counts(self) -> list[LayerCounts]:
        """The summed counts of every predictable layer, as Python integers."""
        for probe in self.probes:
            if probe.calls != self.forwards:
                raise RuntimeError(
                    f"layer {probe.layer.index} ({probe.layer.name}) ran {probe.calls} times in "
                    f"{self.forwards} forward passes: its counts would be wrong"
                )
        totals = [p.total if p.total is not None else torch.zeros(len(MEASURED_KEYS)) for p in self.probes]
        values = torch.stack([t.cpu() for t in totals]).tolist() if totals else []
        result = []
        for spec, row in zip(self.layers, values, strict=True):
            counts = LayerCounts(spec.index, spec.name, spec.convs, spec.macs_per_act)
            counts.add(row)
            result.append(counts)
        return result


@contextmanager
def instrument(
    model: nn.Module, predictor: Predictor | None, layer: str | int = "all"
) -> Iterator[InstrumentedModel]:
    """Yield an instrumented forward of ``model``; it is unusable after the context ends."""
    net = InstrumentedModel(model, predictor, layer)
    try:
        yield net
    finally:
        net.graph_module = _Closed()  # type: ignore[assignment]


class _Closed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("this instrumented model was used outside its `with instrument(...)` block")


__all__ = ["InstrumentedModel", "Probe", "instrument"]

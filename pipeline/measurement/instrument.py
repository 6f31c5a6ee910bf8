"""The instrumented forward: a model whose normal forward pass applies the prediction.

``instrument(model, predictors, layer)`` traces ``model`` with torch.fx into a new graph module
that shares the model's parameters, and inserts one probe after every predictable ReLU. Each probe
owns its layer's predictor (a submodule: learned parameters follow ``.to()`` and ``state_dict``),
reduces that layer's output to counts (all layers) and applies the prediction (layers in scope),
so every later consumer sees the predicted zeros. The original model is never modified: no hook is
registered and no graph of it is changed, so nothing survives the context.

    with instrument(model, uniform("tile", window=3), layer="all") as net:
        for images, _ in loader:
            logits = net(images)
    counts = net.layer_counts()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.fx as fx
from torch import Tensor, nn

from pipeline.measurement.counts import MASS_KEYS, MEASURED_KEYS, LayerCounts, measure, predict
from pipeline.networks.layers import PredictableLayer, discover_layers, resolve_scope, trace
from pipeline.predictors import Predictor, PredictorFactory


class Probe(nn.Module):
    """Measures one predictable layer's output and applies its prediction."""

    def __init__(self, layer: PredictableLayer, predictor: Predictor | None) -> None:
        super().__init__()
        self.layer = layer
        self.predictor = predictor
        self.calls = 0
        self.images = 0  # images seen so far: the next batch's first image index
        self.total: Tensor | None = None  # int64 (len(MEASURED_KEYS),), on the activation's device
        self.masses: Tensor | None = None  # float64 (len(MASS_KEYS),)
        self.measuring = True  # False: only predict (recovery passes)

    def forward(self, activation: Tensor) -> Tensor:
        if not self.measuring:
            output = predict(activation, self.predictor, first_image=self.images)
            self.images += activation.shape[0]  # the next batch's draws (random kind) are new ones too
            return output
        result = measure(activation, self.predictor, first_image=self.images)
        self.total = result.counts if self.total is None else self.total + result.counts
        self.masses = result.masses if self.masses is None else self.masses + result.masses
        self.calls += 1
        self.images += activation.shape[0]
        return result.output

    def reset(self) -> None:
        """Forget the counts (e.g. after a calibration pass)."""
        self.calls, self.images, self.total, self.masses = 0, 0, None, None


class InstrumentedModel(nn.Module):
    """A traced copy of a model's forward (sharing its parameters) with a probe per layer.

    ``predictors`` is called with the model's layers and the indices in scope and returns one
    predictor per layer (:func:`pipeline.predictors.factory`, :func:`pipeline.predictors.uniform`);
    None measures without predicting.
    """

    def __init__(
        self, model: nn.Module, predictors: PredictorFactory | None = None, layer: str | int = "all",
        graph: fx.GraphModule | None = None, layers: list[PredictableLayer] | None = None,
    ) -> None:  # fmt: skip
        """``graph`` and ``layers``: the model's traced forward and its layers when a job has them
        already (the probes are inserted into that graph); traced and discovered here otherwise."""
        super().__init__()
        graph_module = graph if graph is not None else trace(model)
        self.layers = layers if layers is not None else discover_layers(model, graph_module)
        if not self.layers:
            raise ValueError(
                f"{type(model).__name__} has no predictable layer (a ReLU fed by Conv2d through "
                "BatchNorm2d, Identity or adds only): nothing to measure"
            )
        self.scope = resolve_scope(self.layers, layer)
        built = predictors(self.layers, self.scope) if predictors is not None else [None] * len(self.layers)
        self.probes: list[Probe] = []
        nodes = {node.name: node for node in graph_module.graph.nodes}
        for spec, predictor in zip(self.layers, built, strict=True):
            probe = Probe(spec, predictor)
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
        masses = [p.masses if p.masses is not None else torch.zeros(len(MASS_KEYS)) for p in self.probes]
        values = torch.stack([t.cpu() for t in totals]).tolist() if totals else []
        sums = torch.stack([m.cpu().double() for m in masses]).tolist() if masses else []
        result = []
        for probe, row, mass in zip(self.probes, values, sums, strict=True):
            spec = probe.layer
            counts = LayerCounts(spec.index, spec.name, spec.convs, spec.macs_per_act)
            counts.add(row, mass)
            if probe.predictor is not None:
                counts.setting = probe.predictor.setting()
            result.append(counts)
        return result

    def predictors(self) -> list[Predictor | None]:
        """The predictor of every layer, in index order."""
        return [probe.predictor for probe in self.probes]

    def reset(self) -> None:
        """Forget every probe's counts."""
        for probe in self.probes:
            probe.reset()
        self.forwards = 0

    def measuring(self, on: bool) -> None:
        """Count (the default) or only predict: recovery passes predict without counting."""
        for probe in self.probes:
            probe.measuring = on


@contextmanager
def instrument(
    model: nn.Module, predictors: PredictorFactory | None = None, layer: str | int = "all"
) -> Iterator[InstrumentedModel]:
    """Yield an instrumented forward of ``model``; it is unusable after the context ends."""
    net = InstrumentedModel(model, predictors, layer)
    try:
        yield net
    finally:
        net.graph_module = _Closed()  # type: ignore[assignment]


class _Closed(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("this instrumented model was used outside its `with instrument(...)` block")


__all__ = ["InstrumentedModel", "Probe", "instrument"]

"""Layer discovery and MAC accounting (measurement contract, sections 1 and 2).

A *predictable layer* is one application of ReLU whose input is produced by one or more
``nn.Conv2d`` reached only through ``nn.BatchNorm2d``, ``nn.Identity`` and elementwise adds.
Discovery works on the model's forward graph as traced by ``torch.fx``, so a ReLU module called
twice (torchvision's ``BasicBlock.relu``) gives two layers and functional ReLUs are found too.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError

RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.relu_)
RELU_METHODS = ("relu", "relu_")
ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
ADD_METHODS = ("add", "add_")
PASS_THROUGH_MODULES = (nn.BatchNorm2d, nn.Identity)


@dataclass(frozen=True)
class PredictableLayer:
    """One ReLU application after conv(s): where window prediction can be applied."""

    index: int  # order in which its ReLU runs in forward
    name: str  # qualified name of the main-branch conv
    convs: tuple[str, ...]  # every feeding conv, main branch first
    macs_per_act: int  # sum over feeding convs of (in_channels / groups) * kh * kw
    node: str  # name of the ReLU node in the traced graph
    channels: int = 0  # output channels of the main-branch conv (the layer's C)


class TraceError(PipelineError):
    """The model cannot be traced by torch.fx, so its layers cannot be discovered."""


_LEAVES: weakref.WeakKeyDictionary[nn.Module, tuple[str, ...]] = weakref.WeakKeyDictionary()


def keep_as_leaves(model: nn.Module, leaves: Sequence[str]) -> None:
    """Have :func:`trace` keep these submodules of ``model`` whole (``model.leaf_modules``): each entry a
    qualified submodule name (``features.3``) or a class name (``MyBlock``, or ``package.module.MyBlock``).
    A leaf is called as one node: torch.fx does not trace into its forward (data-dependent control flow
    there is fine), and no layer inside it is predictable."""
    names = {name for name, _ in model.named_modules()}
    classes = {cls.__name__ for _, m in model.named_modules() for cls in type(m).__mro__} | {
        f"{cls.__module__}.{cls.__qualname__}" for _, m in model.named_modules() for cls in type(m).__mro__
    }
    unknown = [leaf for leaf in leaves if leaf not in names and leaf not in classes]
    if unknown:
        raise TraceError(
            f"model.leaf_modules: {', '.join(map(repr, unknown))} is neither a submodule name nor a module class "
            f"of {type(model).__name__}: give qualified names as in model.named_modules() (e.g. features.3) or "
            "class names (MyBlock or package.module.MyBlock)"
        )
    _LEAVES[model] = tuple(leaves)


class _LeafTracer(fx.Tracer):
    def __init__(self, leaves: tuple[str, ...]) -> None:
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if qualified_name in self.leaves:
            return True
        for cls in type(module).__mro__:
            if cls.__name__ in self.leaves or f"{cls.__module__}.{cls.__qualname__}" in self.leaves:
                return True
        return super().is_leaf_module(module, qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` (keeping the leaves :func:`keep_as_leaves` named); a clear error
    when the model is not fx-traceable."""
    leaves = _LEAVES.get(model, ())
    try:
        if not leaves:
            return fx.symbolic_trace(model)
        tracer = _LeafTracer(leaves)
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:  # fx raises many kinds of errors on data-dependent control flow
        raise TraceError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(exc).__name__}: {exc}). "
            "Layer discovery needs an fx-traceable forward: move data-dependent Python control "
            "flow out of forward(), or keep the module that has it whole: "
            "model.leaf_modules=[NAME_OR_CLASS] (its layers are then not predicted)."
        ) from exc


def is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True for every spelling of ReLU: module, F.relu, torch.relu, Tensor.relu (in place too)."""
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.ReLU)
    if node.op == "call_function":
        return node.target in RELU_FUNCTIONS
    if node.op == "call_method":
        return node.target in RELU_METHODS
    return False


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in ADD_FUNCTIONS
    if node.op == "call_method":
        return node.target in ADD_METHODS
    return False


def feeding_convs(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, ...]:
    """Convs that produce ``node`` through BatchNorm2d, Identity and elementwise adds only.

    Every operand of an add is followed; an operand that reaches no conv (the identity shortcut
    of a ResNet block carries the previous ReLU's output) contributes none. The main-branch conv,
    reached through the first operand of each add, comes first. Empty when no conv is reached.
    """
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.Conv2d):
            return (node.target,)
        if isinstance(module, PASS_THROUGH_MODULES) and node.args and isinstance(node.args[0], fx.Node):
            return feeding_convs(node.args[0], modules)
        return ()
    if _is_add(node) and node.kwargs.get("alpha", 1) == 1:
        operands = [*node.args, *([node.kwargs["other"]] if "other" in node.kwargs else [])]
        convs: list[str] = []
        for operand in operands:
            if isinstance(operand, fx.Node):
                convs.extend(c for c in feeding_convs(operand, modules) if c not in convs)
        return tuple(convs)
    return ()


def conv_macs_per_act(conv: nn.Conv2d) -> int:
    """MACs to compute one output activation of ``conv``: (in_channels/groups) * kh * kw."""
    kh, kw = conv.kernel_size
    return (conv.in_channels // conv.groups) * kh * kw


def discover_layers(model: nn.Module, graph: fx.GraphModule | None = None) -> list[PredictableLayer]:
    """The predictable layers of ``model`` in forward order (contract section 1)."""
    graph = graph if graph is not None else trace(model)
    modules = dict(graph.named_modules())
    layers: list[PredictableLayer] = []
    for node in graph.graph.nodes:
        if not is_relu(node, modules):
            continue
        source = node.args[0] if node.args else node.kwargs.get("input")
        if not isinstance(source, fx.Node):
            continue
        convs = feeding_convs(source, modules)
        if not convs:
            continue
        macs = sum(conv_macs_per_act(modules[c]) for c in convs)
        layers.append(PredictableLayer(len(layers), convs[0], convs, macs, node.name, modules[convs[0]].out_channels))
    return layers


def model_conv_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Conv MACs per image of every Conv2d call in ``model`` for one input of ``input_shape`` (C, H, W).

    Runs one forward pass on a zero image to learn each conv's output size.
    """
    total = 0

    def count(module: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += (output.numel() // output.shape[0]) * conv_macs_per_act(module)

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return total


def resolve_scope(layers: list[PredictableLayer], layer: str | int) -> set[int]:
    """Indices of the layers in scope: ``all``, a layer name, or an index (contract section 3)."""
    if isinstance(layer, str) and layer == "all":
        return {spec.index for spec in layers}
    valid = ", ".join(f"{spec.index}={spec.name}" for spec in layers)
    if isinstance(layer, int) or (isinstance(layer, str) and layer.lstrip("-").isdigit()):
        index = int(layer)
        if not 0 <= index < len(layers):
            raise ValueError(
                f"layer index {index} is out of range: this model has {len(layers)} predictable "
                f"layers, indices 0..{len(layers) - 1} ({valid}); or use layer=all"
            )
        return {index}
    matches = {spec.index for spec in layers if spec.name == layer}
    if not matches:
        raise ValueError(f"unknown layer {layer!r}: valid layers are all, or one of {valid}")
    return matches


def capture(model: nn.Module) -> tuple[list[PredictableLayer], fx.GraphModule]:
    """A traced copy of ``model`` (sharing its parameters) whose forward returns, instead of the
    logits, a copy of every predictable layer's output in index order: the unmodified network's
    activations (what a learned predictor is trained on). Copies, because ReLUs may run in place."""
    graph_module = trace(model)
    layers = discover_layers(model, graph_module)
    nodes = {node.name: node for node in graph_module.graph.nodes}
    copies = []
    for spec in layers:
        relu = nodes[spec.node]
        with graph_module.graph.inserting_after(relu):
            copies.append(graph_module.graph.call_method("clone", (relu,)))
    output = next(node for node in graph_module.graph.nodes if node.op == "output")
    output.args = (tuple(copies),)
    graph_module.graph.eliminate_dead_code()
    graph_module.recompile()
    return layers, graph_module

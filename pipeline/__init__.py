"""Cross-neuron prediction of zero-valued CNN activations: measurement core and experiment pipeline."""

__version__ = "0.1.0"

"""The measurement core (contract sections 1-8): the instrumented forward pass, the per-layer counts,
the fused counting kernel, and a model's evaluation over a data set."""

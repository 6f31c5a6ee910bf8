"""Tracking and runtime machinery: the MLflow store, runs, claims, the tracked keys, redaction, signals
and the sweep callbacks. The only part of the pipeline that imports mlflow, and none of it imports torch,
so the analysis can share it (``pipeline.tracking.keys``, ``pipeline.tracking.store``)."""

"""Analysis stage: the paper's figures and a summary table rebuilt from the job runs in MLflow.

``python -m analysis`` (Hydra, ``conf/analysis.yaml``) -> :func:`analysis.report.run`, which uses
:mod:`analysis.load` (runs -> tidy DataFrame), :mod:`analysis.summary` (drops, best window, paper
values), :mod:`analysis.figures` (seaborn figures) and :mod:`analysis.record` (the analysis run).
It reads MLflow only and never imports the measurement code (``pipeline``).
"""

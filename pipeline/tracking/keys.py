"""Every tracked key: MLflow tags, params and metrics, and the columns of ``layers.csv``.

The pipeline writes these keys and the analysis reads them; both import this module, which imports
neither torch nor mlflow, so the analysis stays light. The meaning of every number is in
``docs/measurements.md`` (and the measurement contract it follows).
"""

from __future__ import annotations

WINDOW_SIZES = (1, 2, 3, 4, 5)  # all-zero window sizes s of contract section 4
GROUP_SIZES = (1, 2, 4, 8, 16, 32)  # decision granularities g of contract section 10: g channels agree
INDEPENDENT_SIZES = (2, 3, 4, 5)  # window sizes whose all-zero count is set against random placement (section 10)

# tags --------------------------------------------------------------------------------------------
SWEEP_TAG = "sweep"  # the multirun's sweep dir: parent and children share it
PARENT_TAG = "sweep.parent"  # "true" on a sweep's parent run
PARENT_RUN_TAG = "mlflow.parentRunId"
CONFIG_HASH_TAG = "config_hash"  # a job's identity (resume)
ANALYSIS_TAG = "analysis"  # "true" on an analysis run
BASELINE_TAG = "baseline"  # "true" when the job predicts nothing in any layer (the drops' reference)
COUNTING_TAG = "counting_backend"  # kernel (the fused C kernel, float32 CPU tensors) or torch (the reference)
MEASUREMENT_VERSION_TAG = "measurement_version"  # pipeline.job.identity.MEASUREMENT_VERSION of the run
# the process that owns a RUNNING run (pipeline.tracking.claims): how a run left by a dead process is recognized
OWNER_HOST = "owner.host"
OWNER_PID = "owner.pid"
OWNER_START = "owner.start"  # the PID's start time in clock ticks after boot (Linux), or empty
HEARTBEAT = "owner.heartbeat"  # ms since the epoch
CLOSED_TAG = "owner.closed"  # why a stale run was closed

# the predictor kinds (pipeline.predictors registers them; tests/predictors/test_prediction.py checks the two agree)
PREDICTOR_KINDS = ("none", "tile", "tile_oracle", "random", "oracle", "learned")

# params ------------------------------------------------------------------------------------------
# The swept keys by their short names; ``predictor`` is the kind, ``predictor.<field>`` its parameters
# (``predictor.layers``: the per-layer table as compact JSON, ``{}`` when there is none).
JOB_PARAMS = ("model", "data", "window", "layer", "limit", "seed", "predictor")
PREDICTOR_PARAMS = ("predictor.pattern", "predictor.threshold", "predictor.group", "predictor.layers",
                    "predictor.checkpoint")  # fmt: skip
SPLIT_PARAM = "split"  # which split of the data was evaluated (test = evaluation, train = calibration)
RECOVER_PARAM = "recover"  # none, bn, finetune (contract section 9)
OPERATING_POINT_PARAM = "operating_point"  # the preset's name, when the run is an operating point
# ... and what it was found for: its top-1 budget (points) and the budget's confidence ("None": the point estimate)
OPERATING_POINT_BUDGET_PARAM = "operating_point.budget"
OPERATING_POINT_CONFIDENCE_PARAM = "operating_point.confidence"

# a search's parent run (pipeline.search): tags and metrics
SEARCH_TAG = "search"  # "true"
SEARCH_TAGS = ("model", "operating_point", "budget", "calibration")  # what was searched for
SEARCH_CONFIDENCE_TAG = "confidence"  # the budget's one-sided confidence, "None": the point estimate
SEARCH_METRICS = ("calibration/top1_drop", "calibration/net_mac_saving", "test/top1_drop", "test/net_mac_saving")
# ... and the paired statistics of both drops (contract section 11; absent from searches recorded before them)
SEARCH_PAIRED = tuple(
    f"{split}/{key}"
    for split in ("calibration", "test")
    for key in ("flips_worse", "flips_better", "top1_drop_low", "top1_drop_high", "top1_drop_upper", "mcnemar_p")
)
SEARCH_EVALUATIONS = "evaluations"  # tracked evaluations the search ran or reused
SEARCH_SECONDS = "search_seconds"

# metrics (contract sections 5, 7, 8) --------------------------------------------------------------
BREAKDOWN_KEYS = ("pred_hit", "pred_miss", "zero_diag", "others")
RATE_METRICS = (
    "sparsity",
    *(f"zero_window/{s}" for s in WINDOW_SIZES),
    *(f"frac/{key}" for key in BREAKDOWN_KEYS),
    "frac/miss_mass",
    "mac_saving",
    "predictor_mac_cost",
    "net_mac_saving",
    *(f"skip/g{g}" for g in GROUP_SIZES),  # the MAC saving hardware keeps when g channels must agree
    *(f"zero_window_corr/{s}" for s in INDEPENDENT_SIZES),  # all-zero windows over random placement's
)
RUN_METRICS = ("top1", "top5", *RATE_METRICS, "images", "model_conv_macs_per_image")


def layer_metric(name: str, key: str) -> str:
    """The per-layer metric of ``key`` at layer ``name``: ``layer/<name>/<key>``."""
    return f"layer/{name}/{key}"


# artifacts of a run ---------------------------------------------------------------------------------
LAYERS_ARTIFACT = "layers.csv"  # one row per predictable layer (the columns below)
PREDICTIONS_ARTIFACT = "predictions.csv"  # one row per evaluated image (contract section 11)
PREDICTIONS_COLUMNS = ("image", "label", "pred", "top5")

# layers.csv (contract sections 5, 7, 8, 9) ---------------------------------------------------------
COUNT_COLUMNS = (
    "acts", "zeros", "zero_diag", "pred_hit", "pred_miss", "others", "macs_saved",
    *(f"zero_windows_{s}" for s in WINDOW_SIZES),
    *(f"windows_{s}" for s in WINDOW_SIZES),
)  # fmt: skip
SKIP_COLUMNS = tuple(f"skip_cells_g{g}" for g in GROUP_SIZES)  # contract section 10, integers
INDEPENDENT_COLUMNS = tuple(f"zero_windows_indep_{s}" for s in INDEPENDENT_SIZES)  # section 10, floats
SETTING_COLUMNS = ("predictor", "window", "pattern", "threshold", "group")  # what was applied at the layer
CSV_COLUMNS = (
    "index", "name", "convs", "macs_per_act", *COUNT_COLUMNS,
    *SETTING_COLUMNS, "mass", "miss_mass", "predictor_macs", *SKIP_COLUMNS, *INDEPENDENT_COLUMNS,
)  # fmt: skip

"""The paired statistics of contract section 11 on vectors worked by hand, and against a bootstrap."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from pipeline.measurement.paired import PairedDrop, mcnemar_p, paired_drop, z_one_sided


def test_a_drop_its_interval_and_mcnemar_by_hand() -> None:
    # 10 images: the baseline right on 1-6, the run right on 4-7 (b = images 1, 2, 3; c = image 7)
    base = [0, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    run = [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]
    d = paired_drop([bool(v) for v in base], [bool(v) for v in run])
    assert (d.flips_worse, d.flips_better, d.images) == (3, 1, 10)
    assert d.drop == pytest.approx(0.2)  # (3 - 1) / 10 = 0.6 - 0.4, the accuracies' difference
    assert d.se == pytest.approx(math.sqrt((0.4 - 0.04) / 10))  # 0.18974
    assert d.low == pytest.approx(0.2 - 1.959964 * 0.189737, abs=1e-6)
    assert d.high == pytest.approx(0.2 + 1.959964 * 0.189737, abs=1e-6)
    assert d.upper(0.95) == pytest.approx(0.2 + 1.644854 * 0.189737, abs=1e-6)
    assert d.mcnemar_p == pytest.approx(2 * (1 + 4) / 16)  # 2 P(X <= 1), X ~ Bin(4, 1/2) = 10/16


def test_mcnemar_edges_by_hand() -> None:
    assert mcnemar_p(0, 0) == 1.0  # no flips: nothing against the null
    assert mcnemar_p(5, 0) == pytest.approx(2 / 32)  # 2 P(X = 0), X ~ Bin(5, 1/2)
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32)  # symmetric
    assert mcnemar_p(3, 3) == 1.0  # 2 P(X <= 3) of Bin(6, 1/2) = 2 * 42/64 > 1: capped
    assert mcnemar_p(1, 2) == 1.0  # 2 * (1 + 3) / 8 = 1
    assert mcnemar_p(100, 60) == pytest.approx(0.0019537280340644, rel=1e-9)  # scipy's binomtest(60, 160): logs
    no_flips = PairedDrop(0, 0, 50)
    assert (no_flips.drop, no_flips.se, no_flips.low, no_flips.high) == (0.0, 0.0, 0.0, 0.0)


def test_bad_counts_and_confidences_are_refused() -> None:
    for b, c, n in [(1, 0, 0), (-1, 0, 5), (3, 3, 5)]:
        with pytest.raises(ValueError):
            PairedDrop(b, c, n)
    with pytest.raises(ValueError, match="the baseline has 2 images and the run 3"):
        paired_drop([True, False], [True, True, False])
    for q in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            z_one_sided(q)
    assert z_one_sided(0.95) == pytest.approx(1.644854, abs=1e-6)


def test_the_interval_covers_as_a_bootstrap_of_the_images_does() -> None:
    """On 4,000 images where 2 % flip one way and 1 % the other, the paired standard error equals the
    spread of the drop over bootstrap resamples of the images (to a few percent)."""
    rng = random.Random(0)
    n = 4000
    outcome = [rng.random() for _ in range(n)]
    base = [u >= 0.2 for u in outcome]  # 80 % right
    run = [not (0.2 <= u < 0.22) and (u >= 0.2 or u < 0.01) for u in outcome]  # 2 % worse, 1 % better
    d = paired_drop(base, run)
    assert (d.flips_worse, d.flips_better) == (sum(0.2 <= u < 0.22 for u in outcome), sum(u < 0.01 for u in outcome))
    base_right, run_right = np.array(base), np.array(run)
    pick = np.random.default_rng(1).integers(0, n, size=(2000, n))  # 2,000 resamples of the images
    drops = (base_right[pick] & ~run_right[pick]).mean(1) - (run_right[pick] & ~base_right[pick]).mean(1)
    spread = drops.std(ddof=1)
    assert spread == pytest.approx(d.se, rel=0.06)


def test_outcomes_are_read_from_a_predictions_csv_and_checked_against_their_run():
    from pipeline.measurement.paired import read_outcomes

    text = "image,label,pred,top5\n7,1,1,1\n3,2,0,1\n9,0,0,1\n"
    outcomes = read_outcomes(text, 3, 2 / 3)
    assert outcomes.right == (True, False, True) and outcomes.top1 == pytest.approx(2 / 3)
    # the same images and labels pair whatever was predicted; other images or labels do not
    assert read_outcomes("image,label,pred,top5\n7,1,0,0\n3,2,2,1\n9,0,0,1\n", 3, 2 / 3).images == outcomes.images
    assert read_outcomes("image,label,pred,top5\n7,1,1,1\n3,2,2,1\n8,0,0,1\n", 3, 1.0).images != outcomes.images
    with pytest.raises(ValueError, match="it has 3 rows with top-1 0.6667; the run has 4 images"):
        read_outcomes(text, 4, 2 / 3)
    with pytest.raises(ValueError, match="the run has 3 images and top-1 1.0000"):
        read_outcomes(text, 3, 1.0)
    with pytest.raises(ValueError, match="its columns are image,label,pred, not image,label,pred,top5"):
        read_outcomes("image,label,pred\n7,1,1\n", 1, 1.0)
    with pytest.raises(ValueError, match="a row is not four integers"):
        read_outcomes("image,label,pred,top5\n7,1,x,1\n", 1, 1.0)

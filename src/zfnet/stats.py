"""The few statistics the findings are judged with: means with standard errors, and sign tests.

Every claim of the paper is judged on a statistic and its noise (docs/findings.md): a difference
counts only when it exceeds ``Z`` (2) standard errors, i.e. about the 5% two-sided level.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Z = 2.0  # standard errors a difference must exceed to count


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample sd / sqrt(n); 0 for one value, NaN for none)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0
    return float(x.mean()), se


def sign_test(values: Sequence[float]) -> float:
    """Two-sided exact sign test that the median of ``values`` is 0 (zeros dropped); returns the p-value."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x) & (x != 0)]
    n, k = len(x), int((x > 0).sum())
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def binomial_se(error_percent: float, n: int) -> float:
    """Standard error (in % points) of an error rate measured on ``n`` images, the rate at least 1/n."""
    p = min(max(error_percent / 100, 1 / n), 1 - 1 / n)
    return 100 * math.sqrt(p * (1 - p) / n)

"""Independent transcriptions used only as test oracles (never imported by the library)."""

from __future__ import annotations

import numpy as np
import pandas as pd

UNIFORM_VARIANCE = 0.0841


def rank_first_uniform(x: np.ndarray) -> np.ndarray:
    """pandas ``rank(method="first")`` → ``(rank − 0.5)/n``."""
    s = pd.Series(x)
    return ((s.rank(method="first") - 0.5) / s.count()).to_numpy()


def neutralize_with_constant(u: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The 2020 ``neutralize_series``: residual of an OLS fit of u on ``[m, 1]`` (lstsq)."""
    exposures = np.column_stack([m, np.ones_like(m)])
    beta = np.linalg.lstsq(exposures, u, rcond=None)[0]
    return u - exposures @ beta


def literal_mmc(preds: np.ndarray, stakes: np.ndarray, targets: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """DESIGN §2.1 transcribed step by step: a loop over users and draws, no shared algebra."""
    stakers = [i for i in range(len(stakes)) if stakes[i] > 0]
    n_models = preds.shape[0]
    out = np.zeros(n_models)
    for user in range(n_models):
        scores = []
        for draw in samples:
            weighted = np.zeros(preds.shape[1])
            total = 0.0
            for pick in draw:  # a staker drawn twice counts twice
                i = stakers[pick]
                weighted += stakes[i] * rank_first_uniform(preds[i])
                total += stakes[i]
            mm = rank_first_uniform(weighted / total)
            u = rank_first_uniform(preds[user])
            residual = neutralize_with_constant(u, mm)
            scores.append(np.cov(residual, targets)[0, 1] / UNIFORM_VARIANCE)
        out[user] = np.mean(scores)
    return out

"""Training weights that keep legitimate out-of-province applicants from being over-alerted.

Origin is not a model feature (docs/model.md, "Out-of-province applicants"). But the rings the
model learns recruit far from home, so the features that find their recruits also find the
legitimate migrants who look like them: a household-register address back home, fellow
villagers arriving in the same weeks. Left alone, the model alerts legitimate out-of-province
applicants several times as often as locals (3.0-4.7 times in the top 1 % on the generated
banks when the address and fellow-villager features were first added, docs/model.md).

So every fit weighs each legitimate out-of-province application ``OUT_OF_PROVINCE_LEGIT_WEIGHT``
times (cost-sensitive learning: a false alert on a migrant costs the fit more than one on a
local). Origin is read at training time only, from the monitored ``applicant_out_of_province``
column; scoring never sees it, and calibration is fitted unweighted, so scores stay probabilities
for the bank's whole population.
"""

from __future__ import annotations

import numpy as np

ORIGIN = "applicant_out_of_province"
OUT_OF_PROVINCE_LEGIT_WEIGHT = 8.0  # rolling backtest, docs/model.md: the ratio falls below today's


def origin_weights(out_of_province: np.ndarray, label: np.ndarray, factor: float) -> np.ndarray:
    """Each row's weight for origin: ``factor`` for a legitimate out-of-province application, else 1.

    Parameters
    ----------
    out_of_province : numpy.ndarray
        1 where the applicant's home province is not the branch's (NaN or 0 elsewhere).
    label : numpy.ndarray
        1 for a mule, 0 for a legitimate application.
    factor : float
        The weight of a legitimate out-of-province application; 1 turns the weighting off.

    Raises
    ------
    ValueError
        If ``factor`` is not positive.
    """
    if not factor > 0:
        raise ValueError(f"the out-of-province weight must be positive, not {factor}")
    legit_outsider = (np.asarray(out_of_province) == 1) & (np.asarray(label) == 0)
    return np.where(legit_outsider, float(factor), 1.0)

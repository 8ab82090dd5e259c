"""Survival ground truth: a Weibull proportional-hazards model of age and findings.

``h(t | x) = (k / s) (t / s)^(k-1) exp(beta . x)`` with shape ``k = 1.3`` and scale ``s = 18``
years, so a 60-year-old without findings has a median survival of ~13.6 years. Covariates ``x``:
``(age - 60) / 10``, ever-smoker, and the findings in :data:`HAZARD_LOG_RATIOS` (a nodule counts
only when its largest diameter is >= 8 mm; coronary calcium enters as ``log1p(score) / 5``).
Follow-up ends administratively after ``U(2, 10)`` years (staggered enrolment) and patients drop
out at random with an exponential rate of 0.03 per year; ``time`` is the earliest of event,
administrative end and drop-out, ``event = 1`` when the event came first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIBULL_SHAPE = 1.3
WEIBULL_SCALE_YEARS = 18.0
BETA_AGE_PER_DECADE = 0.55
BETA_SMOKER = 0.35
BETA_CALCIUM = 0.30  # per log1p(score) / 5
HAZARD_LOG_RATIOS: dict[str, float] = {
    "emphysema": 0.55,
    "cardiomegaly": 0.60,
    "pleural_effusion": 0.70,
    "pericardial_effusion": 0.35,
    "lymphadenopathy": 0.40,
    "consolidation": 0.30,
    "large_nodule": 0.80,
}
DROPOUT_RATE = 0.03
FOLLOW_UP_YEARS = (2.0, 10.0)


@dataclass(frozen=True)
class SurvivalOutcome:
    time: float
    event: int
    risk_score: float  # beta . x, the true linear predictor


def linear_predictor(age: float, smoker: int, findings: dict[str, int], largest_nodule_mm: float,
                     calcium_score: float) -> float:
    x = BETA_AGE_PER_DECADE * (age - 60.0) / 10.0 + BETA_SMOKER * smoker
    x += BETA_CALCIUM * np.log1p(calcium_score) / 5.0
    for name, beta in HAZARD_LOG_RATIOS.items():
        present = largest_nodule_mm >= 8.0 if name == "large_nodule" else findings.get(name, 0) == 1
        x += beta * present
    return float(x)


def sample_survival(rng: np.random.Generator, risk: float) -> SurvivalOutcome:
    """Draw (time, event) by inverting the Weibull PH survival function, then censor."""
    u = rng.random()
    t_event = WEIBULL_SCALE_YEARS * (-np.log(u) / np.exp(risk)) ** (1.0 / WEIBULL_SHAPE)
    t_admin = rng.uniform(*FOLLOW_UP_YEARS)
    t_drop = rng.exponential(1.0 / DROPOUT_RATE)
    time = min(t_event, t_admin, t_drop)
    return SurvivalOutcome(round(float(max(time, 0.01)), 3), int(t_event <= min(t_admin, t_drop)), round(risk, 4))

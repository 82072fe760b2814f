"""Scaling: rules that grow a searched architecture (stack, stretch, widen, fit_to_params), scaling-law fits
with bootstrap intervals, rank transfer between sizes, and ladders that train architectures at several
sizes."""

from scaling.laws import PowerLawFit, fit_power_law, predict
from scaling.rules import fit_to_params, param_count, stack, stretch, widen
from scaling.transfer import kendall_tau, noise_floor, pairwise_accuracy, spearman

__all__ = [
    "PowerLawFit",
    "fit_power_law",
    "fit_to_params",
    "kendall_tau",
    "noise_floor",
    "pairwise_accuracy",
    "param_count",
    "predict",
    "spearman",
    "stack",
    "stretch",
    "widen",
]

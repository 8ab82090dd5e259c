"""Training losses that are not in torch: the Cox partial likelihood with tie handling."""

from __future__ import annotations

import torch

from voxelfm.core.errors import ConfigError


def cox_partial_likelihood(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor, ties: str = "efron") -> torch.Tensor:
    """Negative Cox partial log-likelihood of ``risk`` (log hazard ratios), divided by #events.

    ``ties="breslow"`` treats tied event times as if each saw the full risk set; ``"efron"``
    removes a growing fraction of the tied events' hazard from the risk set (more accurate with
    many ties). The original computed a Breslow-like loss whose tie handling depended on sort order
    (docs/original.md §4.4). Returns 0 (with a gradient path) for a batch without events.
    """
    if ties not in ("efron", "breslow"):
        raise ConfigError(f"unknown ties method {ties!r} (use 'efron' or 'breslow')")
    r = risk.reshape(-1)
    t = time.reshape(-1).to(r.dtype)
    e = event.reshape(-1).to(torch.bool)
    if not bool(e.any()):
        return r.sum() * 0.0
    # Distinct event times, and for every subject the index of its time among all distinct times.
    uniq, inv = torch.unique(t, sorted=True, return_inverse=True)
    n_t = uniq.numel()
    shift = r.detach().max()  # log-sum-exp stabilisation
    exp_r = torch.exp(r - shift)
    # Risk set at time u = subjects with t >= u: reverse cumulative sum over the sorted times.
    sum_at = torch.zeros(n_t, dtype=r.dtype).index_add(0, inv, exp_r)
    risk_sum = torch.flip(torch.cumsum(torch.flip(sum_at, [0]), 0), [0])
    ev = e.to(r.dtype)
    d = torch.zeros(n_t, dtype=r.dtype).index_add(0, inv, ev)  # events per time
    sum_r_events = (r * ev).sum()
    has_event = d > 0
    if ties == "breslow":
        log_terms = d[has_event] * (torch.log(risk_sum[has_event]) + shift)
        loglik = sum_r_events - log_terms.sum()
    else:
        tie_sum = torch.zeros(n_t, dtype=r.dtype).index_add(0, inv, exp_r * ev)  # hazard of tied events
        # For an event time with d tied events, subtract l/d of their hazard for l = 0..d-1.
        idx = torch.nonzero(has_event).reshape(-1)
        d_ev = d[idx]
        max_d = int(d_ev.max().item())
        ell = torch.arange(max_d, dtype=r.dtype).unsqueeze(0)  # (1, max_d)
        valid = ell < d_ev.unsqueeze(1)
        frac = ell / d_ev.unsqueeze(1)
        denom = risk_sum[idx].unsqueeze(1) - frac * tie_sum[idx].unsqueeze(1)
        denom = torch.where(valid, denom, torch.ones_like(denom))
        log_terms = torch.where(valid, torch.log(denom) + shift, torch.zeros_like(denom))
        loglik = sum_r_events - log_terms.sum()
    return -loglik / ev.sum()


__all__ = ["cox_partial_likelihood"]

"""Statistics of a comparison: per method over its seeds, and each method against a reference.

A run's score is its best val_bpb. Per method: mean, standard deviation and median of that
over seeds, a 95 % bootstrap interval of the mean, the failed share of trials, the share of
the cost spent on failed trials, the cost to reach a target (median over seeds; None where a
seed never got there), tokens and dollars. Against the reference method: a paired, one-sided
Wilcoxon signed-rank test over the seeds both ran (H1: the method's best is lower), with its
p-value -- with 3 seeds the smallest possible p is 0.125, so a small bench cannot settle a
ranking, and the report says so. Last, the acceptance gate's sequential paired t-test (its
rule and error rate: agent/loop/gate.py).
"""

from __future__ import annotations

import functools
import statistics

import numpy as np

BOOTSTRAP_RESAMPLES = 2000


def best_so_far(notes) -> list[float | None]:
    """The incumbent's val_bpb after each trial (None before the first ok trial), at the
    session's seed: confirmation runs (other seeds, agent/loop/gate.py) add cost, not values."""
    best, out = None, []
    for n in sorted(notes, key=lambda n: n.trial):
        if n.status == "ok" and n.method != "confirm" and (best is None or n.val_bpb < best):
            best = n.val_bpb
        out.append(best)
    return out


def cost_to_reach(notes, target: float) -> float | None:
    """Summed cost_s of the trials up to the first ok one at or below `target`."""
    spent = 0.0
    for n in sorted(notes, key=lambda n: n.trial):
        spent += n.cost_s or 0.0
        if n.status == "ok" and n.method != "confirm" and n.val_bpb <= target:
            return spent
    return None


def bootstrap_mean_ci(values: list[float]) -> list[float] | None:
    """A 95 % percentile bootstrap interval of the mean; None for fewer than 2 values or
    values that do not vary."""
    from scipy.stats import bootstrap

    if len(values) < 2 or len(set(values)) < 2:
        return None
    res = bootstrap((np.asarray(values),), np.mean, n_resamples=BOOTSTRAP_RESAMPLES,
                    confidence_level=0.95, method="percentile", random_state=0)
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def paired_wilcoxon(ours: dict[int, float], ref: dict[int, float]) -> dict:
    """One-sided Wilcoxon signed-rank test, paired by seed, of H1: ours < ref."""
    from scipy.stats import wilcoxon

    seeds = sorted(set(ours) & set(ref))
    pairs = [(ours[s], ref[s]) for s in seeds]
    out = {"pairs": len(pairs), "statistic": None, "p_value": None}
    diffs = [a - b for a, b in pairs]
    if len(pairs) < 2 or not any(diffs):
        return out
    res = wilcoxon([a for a, _ in pairs], [b for _, b in pairs], alternative="less")
    out["statistic"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out


def method_stats(rows: list[dict], notes_of: dict[str, list], target: float | None,
                 ref_rows: list[dict] | None) -> dict:
    """The summary of one method's runs (`rows`: compare rows of one method)."""
    bests = [r["best_val_bpb"] for r in rows if r["best_val_bpb"] is not None]
    trials = sum(r["trials"] for r in rows)
    failed = sum(r["failed_share"] * r["trials"] for r in rows)
    cost = sum(r["cost_s"] for r in rows)
    lost = sum(r["failed_cost_share"] * r["cost_s"] for r in rows)
    reach = [cost_to_reach(notes_of[r["run"]], target) for r in rows] if target else []
    reached = [c for c in reach if c is not None]
    stats = {
        "runs": len(rows), "seeds": sorted(r["seed"] for r in rows),
        "mean_best": statistics.fmean(bests) if bests else None,
        "std_best": statistics.stdev(bests) if len(bests) > 1 else None,
        "median_best": statistics.median(bests) if bests else None,
        "ci95_mean_best": bootstrap_mean_ci(bests),
        "trials": trials, "failed_share": failed / trials if trials else 0.0,
        "cost_s": cost, "failed_cost_share": lost / cost if cost else 0.0,
        "target": target, "reached_target": len(reached),
        "cost_to_target_s": statistics.median(reached) if len(reached) == len(rows) and
        reached else None,
        "tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows),
        "cost_usd": sum(r["cost_usd"] for r in rows),
    }
    if ref_rows is not None:
        ours = {r["seed"]: r["best_val_bpb"] for r in rows if r["best_val_bpb"] is not None}
        theirs = {r["seed"]: r["best_val_bpb"] for r in ref_rows
                  if r["best_val_bpb"] is not None}
        stats["vs_ref"] = paired_wilcoxon(ours, theirs)
    return stats


def default_target(rows: list[dict]) -> float | None:
    """The worst of the methods' median best val_bpb: a level every method reached on most
    seeds, so the cost to get there compares them all."""
    by_method: dict[str, list[float]] = {}
    for r in rows:
        if r["best_val_bpb"] is not None:
            by_method.setdefault(r["method"], []).append(r["best_val_bpb"])
    medians = [statistics.median(v) for v in by_method.values() if v]
    return max(medians) if medians else None


def paired_differences(values: list, base: list) -> tuple[float | None, float | None]:
    """Mean and standard deviation of the per-seed differences values - base, over the
    seeds where both ran (None where none did; no std from one difference)."""
    d = [v - b for v, b in zip(values, base, strict=True) if v is not None and b is not None]
    if not d:
        return None, None
    return statistics.fmean(d), statistics.stdev(d) if len(d) > 1 else None


# -- the acceptance gate's sequential test (agent/loop/gate.py states the rule) -------------

def gate_looks(k: int) -> list[int]:
    """The numbers of seeds at which the gate's test may promote: 3 .. k (2 when k is 2).
    A look at two seeds has one degree of freedom: its bound (t above 60) would spend alpha
    on a promotion that hardly ever comes."""
    return list(range(3, k + 1)) if k >= 3 else [k]


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (scipy, imported on first use as above)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def sequential_paired_test(diffs: list[float], k: int,
                           alpha: float) -> tuple[bool | None, float, float | None]:
    """One look of the gate's truncated group-sequential paired t-test on `diffs` (candidate
    minus incumbent, per seed, the session's seed first): (True: promote, False: refuse,
    None: run another pair), the mean difference, and the margin it had to clear (None where
    this number of seeds is no look). Promote when mean + t_(1-alpha/L, m-1) s / sqrt(m) < 0
    at a look (L looks, alpha split evenly); refuse at the k-th seed, or earlier when the
    differences after the first do not favour the candidate (their mean >= 0)."""
    m = len(diffs)
    if m < 2:  # the session's seed alone: what made it a candidate
        return None, statistics.fmean(diffs), None
    mean = statistics.fmean(diffs)
    margin = None
    looks = gate_looks(k)
    if m in looks:
        margin = t_quantile(1 - alpha / len(looks), m - 1) * statistics.stdev(diffs) / m ** 0.5
        if mean + margin < 0:
            return True, mean, margin
    if m >= k or statistics.fmean(diffs[1:]) >= 0:
        return False, mean, margin
    return None, mean, margin

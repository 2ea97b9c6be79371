"""Fit the surrogate to the collected trials, say how good it is, ship it small (issue 25).

Reads data.jsonl (benchmarks/surrogate/collect.py); fits, with scikit-learn on the features
of folder/surrogate.py:
- val_bpb of the trials that finished: GradientBoostingRegressor;
- the peak memory of a configuration (log MiB; an out-of-memory trial counts as the limit):
  GradientBoostingRegressor; a configuration whose predicted peak reaches MEMORY_SHARE of the
  cpu preset's memory limit is out of memory (how trials fail on this space: by memory);
- whether a configuration fails otherwise (oom, timeout, diverged, crash):
  GradientBoostingClassifier (none when the data holds fewer than 5 failures);
- the noise: the pooled standard deviation of val_bpb over the seeds of repeated configs.
How good: 5-fold cross-validation over configurations (a configuration's seeds stay in one
fold, so every score is on configurations the model was not fitted on): Spearman's rho and
the mean absolute error of val_bpb, the failure model's accuracy against always saying "ok".
The final model, fitted on everything, goes to folder/surrogate.json as plain trees (no
pickle), the report to fit.json. Regenerate both with one command:

    python benchmarks/surrogate/fit.py [--data benchmarks/surrogate/data.jsonl]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "folder"
SEED = 0
MEMORY_SHARE = 0.9  # a predicted peak above 90 % of the limit: out of memory (a margin for
# the peaks a trial's allocator reaches between the resident samples it is measured by)


def runtime():
    """folder/surrogate.py, the code trials run, imported from its file."""
    spec = importlib.util.spec_from_file_location("surrogate_runtime", FOLDER / "surrogate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def feature_spec(rows: list[dict], space) -> dict:
    numeric = sorted(n for n, p in space.params.items() if p.type != "categorical")
    categorical = {n: list(p.choices) for n, p in sorted(space.params.items())
                   if p.type == "categorical"}
    return {"numeric": numeric, "categorical": categorical,
            "token_budget": rows[0]["token_budget"], "seq_len": space.fixed["SEQ_LEN"]}


def trees_of(model, rate: float) -> dict:
    """A fitted gradient-boosting model as plain lists; its start value read back so that
    `ensemble` reproduces model's raw output exactly."""
    trees = []
    for est in model.estimators_[:, 0]:
        t = est.tree_
        trees.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                      "feature": t.feature.tolist(),
                      "threshold": [round(float(v), 9) for v in t.threshold],
                      "value": [round(float(v), 9) for v in t.value[:, 0, 0]]})
    return {"init": 0.0, "rate": rate, "trees": trees}


def start_value(model, packed: dict, x: np.ndarray, raw: float, rt) -> float:
    return float(raw - rt.ensemble(packed, list(map(float, x))))


def same(packed: dict, X: np.ndarray, raw: np.ndarray, rt) -> None:
    """The shipped trees say what the fitted model says, on every row (to rounding)."""
    worst = max(abs(rt.ensemble(packed, list(map(float, x))) - r)
                for x, r in zip(X, raw, strict=True))
    if worst > 1e-6:
        raise AssertionError(f"the packed trees differ from the model by {worst:.2e}")


def statuses_of(rows: list[dict]) -> np.ndarray:
    return np.array([r["status"] for r in rows])


def noise_std(rows: list[dict]) -> float:
    groups: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault(json.dumps(r["config"], sort_keys=True), []).append(r["val_bpb"])
    spreads = [statistics.variance(v) for v in groups.values() if len(v) > 1]
    return float(np.sqrt(np.mean(spreads))) if spreads else 0.0


def memory_target(rows: list[dict], limit_mb: float) -> np.ndarray | None:
    """log peak MiB per row (an out-of-memory trial: the limit); None where the data does not
    record peaks (fewer than 20 finished trials with one)."""
    peaks = [r.get("peak_memory_mb") for r in rows]
    if sum(1 for r, p in zip(rows, peaks, strict=True) if r["status"] == "ok" and p) < 20:
        return None
    return np.array([np.log(p) if r["status"] == "ok" and p else
                     np.log(limit_mb) if r["status"] == "oom" else np.nan
                     for r, p in zip(rows, peaks, strict=True)])


def fit(rows: list[dict], space, rt, folds: int = 5) -> tuple[dict, dict]:
    from scipy.stats import spearmanr
    from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
    from sklearn.model_selection import GroupKFold

    spec = feature_spec(rows, space)
    X = np.array([rt.features(r["config"], spec) for r in rows])
    ok = np.array([r["status"] == "ok" for r in rows])
    y = np.array([r["val_bpb"] if r["status"] == "ok" else np.nan for r in rows])
    groups = np.array([json.dumps(r["config"], sort_keys=True) for r in rows])
    regress = dict(n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8,
                   random_state=SEED)
    classify = dict(n_estimators=150, max_depth=2, learning_rate=0.1, random_state=SEED)
    failures = int((~ok).sum())
    from sandbox.base import parse_memory

    limit_mb = parse_memory(space.memory) / 2**20
    mem = memory_target(rows, limit_mb)
    has_mem = None if mem is None else ~np.isnan(mem)
    predicted, fail_hit = np.full(len(rows), np.nan), np.zeros(len(rows), bool)
    said_oom = np.zeros(len(rows), bool)  # held out, the memory model says: out of memory
    peak = np.full(len(rows), np.nan)
    for train, held in GroupKFold(n_splits=folds).split(X, groups=groups):
        tr = train[ok[train]]
        model = GradientBoostingRegressor(**regress).fit(X[tr], y[tr])
        predicted[held] = model.predict(X[held])
        if mem is not None:
            tm = train[has_mem[train]]
            peak[held] = GradientBoostingRegressor(**regress).fit(X[tm], mem[tm]).predict(
                X[held])
            said_oom[held] = peak[held] >= np.log(MEMORY_SHARE * limit_mb)
        if failures >= 5 and len(set(ok[train])) == 2:
            clf = GradientBoostingClassifier(**classify).fit(X[train], ~ok[train])
            fail_hit[held] = (clf.predict(X[held]) | said_oom[held]) == ~ok[held]
        else:
            fail_hit[held] = said_oom[held] == ~ok[held]
    rho = float(spearmanr(predicted[ok], y[ok]).statistic)
    report = {
        "trials": len(rows), "configurations": len(set(groups)), "finished": int(ok.sum()),
        "failed": failures, "statuses": {s: sum(r["status"] == s for r in rows)
                                         for s in sorted({r["status"] for r in rows})},
        "token_budget": spec["token_budget"], "eval_tokens": rows[0]["eval_tokens"],
        "cost_s": round(sum(r["wall_s"] for r in rows), 1),
        "cv_folds": folds, "spearman_rho": round(rho, 4),
        "mae": round(float(np.mean(np.abs(predicted[ok] - y[ok]))), 4),
        "val_bpb_range": [round(float(np.min(y[ok])), 4), round(float(np.max(y[ok])), 4)],
        "failure_accuracy": round(float(fail_hit.mean()), 4),
        "always_ok_accuracy": round(float(ok.mean()), 4),
        "false_alarms": int((said_oom & ok).sum()),
        "noise_std": round(noise_std(rows), 5)}
    if mem is not None:
        measured = has_mem & ok
        report["memory"] = {
            "limit_mb": limit_mb, "share": MEMORY_SHARE,
            "spearman_rho": round(float(spearmanr(peak[measured], mem[measured]).statistic), 4),
            "median_relative_error": round(float(np.median(np.abs(np.exp(
                peak[measured] - mem[measured]) - 1))), 4),
            "oom_caught": f"{int((said_oom & (statuses_of(rows) == 'oom')).sum())} of "
                          f"{int((statuses_of(rows) == 'oom').sum())}"}
    final = GradientBoostingRegressor(**regress).fit(X[ok], y[ok])
    value = trees_of(final, regress["learning_rate"])
    value["init"] = start_value(final, value, X[0], float(final.predict(X[:1])[0]), rt)
    same(value, X, final.predict(X), rt)
    surrogate = {"spec": spec, "value": value, "failure": None, "memory": None,
                 "noise_std": report["noise_std"], "report": report}
    if mem is not None:
        model = GradientBoostingRegressor(**regress).fit(X[has_mem], mem[has_mem])
        packed = trees_of(model, regress["learning_rate"])
        packed["init"] = start_value(model, packed, X[0], float(model.predict(X[:1])[0]), rt)
        same(packed, X, model.predict(X), rt)
        surrogate["memory"] = {**packed, "limit_mb": limit_mb, "share": MEMORY_SHARE}
    if failures >= 5:
        clf = GradientBoostingClassifier(**classify).fit(X, ~ok)
        packed = trees_of(clf, classify["learning_rate"])
        packed["init"] = start_value(clf, packed, X[0], float(clf.decision_function(X[:1])[0]),
                                     rt)
        same(packed, X, clf.decision_function(X), rt)
        statuses = [r["status"] for r in rows if r["status"] != "ok"]
        packed["status"] = max(set(statuses), key=statuses.count)  # what a failure says
        surrogate["failure"] = packed
    return surrogate, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / "data.jsonl")
    parser.add_argument("--out", type=Path, default=FOLDER / "surrogate.json")
    parser.add_argument("--report", type=Path, default=HERE / "fit.json")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parents[1]))
    from agent.edit.space import load_space

    rows = [json.loads(x) for x in args.data.read_text().splitlines() if x.strip()]
    space = load_space(FOLDER / "search_space.toml", "cpu")
    surrogate, report = fit(rows, space, runtime())
    args.out.write_text(json.dumps(surrogate, separators=(",", ":")) + "\n")
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written: {args.out} ({args.out.stat().st_size / 1024:.0f} KB), {args.report}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fit the surrogate to the collected trials, say how good it is, ship it small (issue 25).

Reads data.jsonl (benchmarks/surrogate/collect.py); fits, with scikit-learn on the features
of folder/surrogate.py:
- val_bpb of the trials that finished: GradientBoostingRegressor;
- whether a configuration fails (oom, timeout, diverged, crash): GradientBoostingClassifier
  (none when the data holds fewer than 5 failures);
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


def noise_std(rows: list[dict]) -> float:
    groups: dict[str, list[float]] = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault(json.dumps(r["config"], sort_keys=True), []).append(r["val_bpb"])
    spreads = [statistics.variance(v) for v in groups.values() if len(v) > 1]
    return float(np.sqrt(np.mean(spreads))) if spreads else 0.0


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
    predicted, fail_hit = np.full(len(rows), np.nan), np.zeros(len(rows), bool)
    for train, held in GroupKFold(n_splits=folds).split(X, groups=groups):
        tr = train[ok[train]]
        model = GradientBoostingRegressor(**regress).fit(X[tr], y[tr])
        predicted[held] = model.predict(X[held])
        if failures >= 5 and len(set(ok[train])) == 2:
            clf = GradientBoostingClassifier(**classify).fit(X[train], ~ok[train])
            fail_hit[held] = clf.predict(X[held]) == ~ok[held]
        else:
            fail_hit[held] = ok[held]  # "always ok"
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
        "noise_std": round(noise_std(rows), 5)}
    final = GradientBoostingRegressor(**regress).fit(X[ok], y[ok])
    value = trees_of(final, regress["learning_rate"])
    value["init"] = start_value(final, value, X[0], float(final.predict(X[:1])[0]), rt)
    same(value, X, final.predict(X), rt)
    surrogate = {"spec": spec, "value": value, "failure": None,
                 "noise_std": report["noise_std"], "report": report}
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

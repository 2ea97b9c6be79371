"""The surrogate's model at run time: features of a configuration, and the fitted trees.

Pure Python and the standard library (a trial of the surrogate folder starts in well under a
second and needs no numpy, torch or scikit-learn). benchmarks/surrogate/fit.py fits the trees
with scikit-learn on the very same features (it imports this file) and writes them, with
everything else the model needs, to surrogate.json beside it.
"""

import json
import math
import random
from pathlib import Path

MODEL = Path(__file__).with_name("surrogate.json")


def features(config, spec):
    """The configuration as numbers, in the order of spec["features"]: each hyperparameter
    (a categorical one as one indicator per choice), then what the trials' cost and capacity
    turn on: optimizer steps within the token budget, micro-batches per step, model width,
    a size that grows like the parameter count, and one that grows like the activations a
    micro-batch keeps for its backward pass (what the memory a trial needs turns on)."""
    out = []
    for name in spec["numeric"]:
        out.append(float(config[name]))
    for name, choices in spec["categorical"].items():
        out += [1.0 if config[name] == choice else 0.0 for choice in choices]
    steps = math.ceil(spec["token_budget"] / config["TOTAL_BATCH_SIZE"])  # as train.py runs
    micro = config["TOTAL_BATCH_SIZE"] / (config["DEVICE_BATCH_SIZE"] * spec["seq_len"])
    width = config["DEPTH"] * config["ASPECT_RATIO"]
    activations = config["DEVICE_BATCH_SIZE"] * spec["seq_len"] * width * config["DEPTH"]
    out += [steps, micro, width, math.log(config["DEPTH"] * width * width),
            math.log(activations)]
    return out


def feature_names(spec):
    return (list(spec["numeric"]) + [f"{n}={c}" for n, cs in spec["categorical"].items()
                                     for c in cs] + ["steps", "micro_batches", "width",
                                                     "log_size", "log_activations"])


def tree_value(tree, x):
    node = 0
    left, right = tree["left"], tree["right"]
    while left[node] != -1:
        node = left[node] if x[tree["feature"][node]] <= tree["threshold"][node] \
            else right[node]
    return tree["value"][node]


def ensemble(model, x):
    """A gradient-boosted ensemble's raw score: its start value plus the scaled trees."""
    return model["init"] + model["rate"] * sum(tree_value(t, x) for t in model["trees"])


def load(path=MODEL):
    return json.loads(Path(path).read_text())


def predict(config, surrogate, seed=None):
    """(status, val_bpb): "oom" where the memory model puts the configuration's peak above
    its share of the trial's memory limit, or where the failure model says it fails; else
    the regression's val_bpb plus noise of the measured seed spread, drawn from a generator
    seeded by `seed` and the configuration (None: no noise)."""
    x = features(config, surrogate["spec"])
    memory = surrogate.get("memory")
    if memory is not None and \
            math.exp(ensemble(memory, x)) >= memory["share"] * memory["limit_mb"]:
        return "oom", None
    fail = surrogate.get("failure")
    if fail is not None and 1.0 / (1.0 + math.exp(-ensemble(fail, x))) > 0.5:
        return fail["status"], None
    value = ensemble(surrogate["value"], x)
    if seed is not None:
        key = json.dumps(config, sort_keys=True) + f" {seed}"
        value += surrogate["noise_std"] * random.Random(key).gauss(0.0, 1.0)
    return "ok", value

"""session.toml: everything needed to resume a session (DESIGN.md, "The run folder")."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from agent.config.runspec import data_problem
from agent.errors import UserError
from agent.watch import DEFAULT_POINTS
from sandbox.base import Limits

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# Defaults that parts below the session read too, so they are named here once:
# a trial's training seconds when neither the options, the folder's [run] table nor the search
# space's preset say (agent/loop/plan.py; what the packaged train.py trains for by itself),
# and the sampling temperature of the LLM methods (agent/llm/client.py's LLMConfig).
FALLBACK_TIME_BUDGET = 60.0
TEMPERATURE = 0.7
# --min-steps under a time budget: a trial whose probe predicts fewer steps in the budget is
# refused there (a demo's 5 M-parameter trial at 11 s a step: 2 steps in 30 s, 94 s in all)
MIN_STEPS = 10
TRACKERS = ("mlflow", "wandb", "optuna")  # --track NAME[:WHERE] (agent/track/)


class ConfigError(UserError):
    """session.toml cannot be read; the message names the key."""


class SessionConfig(BaseModel):
    """One session's settings. Defaults live here, once; the CLI only overrides them."""

    method: str = "tpe"
    seed: int = 0
    # trials after the baseline; None with budget_s means "until the budget is spent"
    trials: int | None = Field(None, ge=0)
    budget_s: float | None = Field(None, gt=0, allow_inf_nan=False)  # the whole session
    # equal cost: stop proposing once the trials' summed cost_s (sandbox + LLM seconds) is spent
    cost_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    preset: str | None = None  # None: the search space's default preset, train.py as it is
    train_dir: str = ""  # where the baseline came from (informational once the repo exists)
    model: str | None = None
    api_base: str | None = None
    sandbox: Literal["auto", "docker", "local"] = "auto"
    # TIME_BUDGET of each trial; None: the [run] table's, else the preset's, else
    # FALLBACK_TIME_BUDGET
    time_budget: float | None = Field(None, gt=0, allow_inf_nan=False)
    token_budget: int | None = Field(None, gt=0)  # AR_TOKEN_BUDGET instead of a time budget
    # hard limit per trial; None: 3 * time budget + 120
    trial_timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    memory: str | None = None  # host memory per trial; None: the preset's, else Limits'
    disk: str = Limits.disk  # what a trial may write into its out/ folder
    gpus: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    gpu_mem_fraction: float | None = Field(None, gt=0, le=1)
    workers: int = Field(1, ge=1)  # trials at once
    executor: Literal["serial", "pool", "ray"] = "pool"  # pool with 1 worker runs serially
    ray_address: str | None = None  # --executor ray: "auto", "ray://HOST:PORT"; None: local
    # GPUs each trial gets: of --gpus on this host (default 1), or from Ray (default none)
    gpus_per_trial: int | None = Field(None, ge=1)
    cpus: float | None = Field(None, gt=0, allow_inf_nan=False)  # CPU share of each trial
    data_dir: str | None = None  # the prepared data, filled in at session start
    # the folder's preparation (agent/config/data.py) may use the network: only when the user passes
    # --prepare-network to this command, never from session.toml (a run folder may be
    # someone else's), so it is neither saved nor read
    prepare_network: bool = Field(False, exclude=True)
    # the local backend's isolation of a root session's trials (sandbox/local.py): "none" runs
    # them as root; like prepare_network only ever from this command's own --isolation
    isolation: Literal["auto", "none"] = Field("auto", exclude=True)
    eval_tokens: int | None = Field(None, gt=0)  # AR_EVAL_TOKENS (None: prepare.py's)
    llm_ratio: float = Field(0.2, ge=0, le=1)  # centaur: LLM share of post-warm-up trials
    llm_warmup: int = Field(10, ge=0)  # centaur: trials CMA-ES proposes alone first
    max_repairs: int = Field(2, ge=0)  # LLM methods: repair turns after an invalid answer
    preflight_steps: int = Field(2, ge=0)  # steps of the preflight probe; 0: no preflight
    repair_oom: bool | None = None  # halve DEVICE_BATCH_SIZE after a preflight OOM; None:
    # on for the gpu preset
    # refuse a trial its probe predicts to run fewer steps; None: MIN_STEPS for CPU trials
    # under a time budget, none under a token budget (which fixes the steps) or on GPUs; 0: never
    min_steps: int | None = Field(None, ge=0)
    # acceptance gate: a trial that beats the incumbent becomes best only once up to K seeds
    # of it, paired with the incumbent's, pass a sequential test (agent/loop/gate.py); 1: off
    confirm: int = Field(1, ge=1, le=20)
    # early stopping (agent/watch.py): an Optuna pruner asked at these progress points, once
    # this many trials completed; the divergence guard stops non-finite or far-worse curves
    prune: str = "none"
    prune_at: list[Annotated[float, Field(gt=0, lt=1)]] = list(DEFAULT_POINTS)
    prune_min_trials: int = Field(3, ge=0)
    guard: bool = True
    # who computes the ranking val_bpb; None: "harness" for the code agent, else "printed"
    score: Literal["printed", "harness"] | None = None
    temperature: float = Field(TEMPERATURE, ge=0, allow_inf_nan=False)
    # stop rules (agent/loop/standing.py, StopRules): this many failed or rejected trials in
    # a row end the session (0: never); so does no new best (under the gate: no promotion) in
    # plateau_trials trials, or in plateau_s seconds of trial time per slot
    stop_after_failures: int = Field(8, ge=0)
    plateau_trials: int | None = Field(None, ge=1)
    plateau_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    # money (agent/loop/money.py): no LLM call or trial that could take the spend (LLM calls +
    # gpu_usd_per_hour x each trial's cost_s) past max_usd; llm_usd_per_mtok: [IN, OUT], the
    # prices of a model litellm's list lacks (agent/llm/pricing.py)
    max_usd: float | None = Field(None, gt=0, allow_inf_nan=False)
    gpu_usd_per_hour: float | None = Field(None, ge=0, allow_inf_nan=False)
    llm_usd_per_mtok: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = Field(
        None, min_length=2, max_length=2)
    # earlier runs on the same baseline whose trials the optimizer starts from (read once, at
    # creation, into RUN/warm_start.json: agent/record/warmstart.py)
    warm_start: list[str] = Field(default_factory=list)
    # experiment trackers fed as trials are recorded (agent/track/): NAME or NAME:WHERE
    track: list[str] = Field(default_factory=list)
    # what session.toml asked to track to and was not honoured (SessionConfig.load): a
    # tracker with a store of its own outside the run folder must be named by this command
    track_dropped: list[str] = Field(default_factory=list, exclude=True)

    @field_validator("memory", "disk")
    @classmethod
    def _size(cls, v):
        if v is not None:
            from sandbox.base import parse_memory

            parse_memory(v)  # ValueError with the reason
        return v

    @field_validator("prune")
    @classmethod
    def _prune(cls, v):
        from agent.watch import parse_rule

        parse_rule(v)  # ValueError with what to write
        return v

    @field_validator("track")
    @classmethod
    def _track(cls, v):
        for spec in v:
            if spec.partition(":")[0] not in TRACKERS:
                raise ValueError(f"--track {spec}: use mlflow[:URI], wandb[:PROJECT] or "
                                 "optuna[:STORAGE]")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _slots(self):
        per = self.gpus_per_trial or 1
        if self.gpus and self.executor != "ray" and self.workers * per > len(self.gpus):
            raise ValueError(f"{self.workers} workers x {per} GPUs per trial need "
                             f"{self.workers * per} GPUs, --gpus names {len(self.gpus)}")
        return self

    @property
    def scoring(self) -> str:
        """The score in force: methods that can change code outside the block are scored
        by the harness unless the user says otherwise."""
        return self.score or ("harness" if self.method == "code-agent" else "printed")

    @property
    def steps_floor(self) -> int:
        """The --min-steps in force (0: none): see min_steps."""
        if self.min_steps is not None:
            return self.min_steps
        # not on GPUs: there a compiled model's probe steps still pay for compiling, and the
        # step time they give would refuse trials that train many steps
        on_gpu = bool(self.gpus or self.gpus_per_trial)
        return 0 if self.token_budget or on_gpu else MIN_STEPS

    def save(self, path: Path) -> None:
        lines = ["# autoresearch session: `autoresearch resume` reads this file"]
        for key, value in self.model_dump().items():
            if value is not None:
                lines.append(f"{key} = {toml_value(value)}")
        path.write_text("\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: Path) -> SessionConfig:
        """Read session.toml; a broken file is one line naming the key and what is wrong."""
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid TOML ({e}): fix it by hand") from None
        data.pop("prepare_network", None)
        data.pop("isolation", None)
        data.pop("track_dropped", None)
        # a run folder may be someone else's: only trackers whose store lies in the folder
        # (a bare name) are honoured from it; a URI, project or storage of its own is sent
        # to only when this command's --track names it again
        track = data.get("track")
        if isinstance(track, list) and all(isinstance(t, str) for t in track):
            data["track"] = [t for t in track if t in TRACKERS]
            data["track_dropped"] = [t for t in track if t not in TRACKERS]
        if isinstance(data.get("data_dir"), str):  # trials read it: not any host folder
            problem = data_problem(data["data_dir"])
            if problem:
                raise ConfigError(f"{path}: data_dir = {data['data_dir']!r}: {problem}; "
                                  "delete the line to prepare the data again")
        try:
            return cls(**data)
        except ValidationError as e:
            first = e.errors()[0]
            key = ".".join(str(x) for x in first["loc"]) or "?"
            raise ConfigError(f"{path}: {key} = {data.get(key)!r}: {first['msg']} (fix the "
                              "value, or delete the line to use the default)") from None


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms]?)")


def parse_duration(text: str) -> float:
    """'2h', '90m', '1h30m', '45s', '3600' -> seconds."""
    text = text.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos or not m.group(0):
            break
        total += float(m.group(1)) * {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or total <= 0:
        raise ValueError(f"budget {text!r} is not a duration like 2h, 90m, 1h30m or 3600")
    return total


def parse_plateau(text: str) -> dict:
    """--stop-on-plateau: '30' (trials) or a duration like '2h' (trial time per slot); the
    SessionConfig fields it sets."""
    text = text.strip()
    if text.isdigit() and int(text) > 0:
        return {"plateau_trials": int(text), "plateau_s": None}
    try:
        return {"plateau_trials": None, "plateau_s": parse_duration(text)}
    except ValueError:
        raise ValueError(f"--stop-on-plateau {text!r}: give a trial count like 30 or a "
                         "duration like 2h") from None

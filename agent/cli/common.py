"""What the commands share: their common options, the one error handler, a SessionConfig from
options, and a session's records."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from agent.errors import UserError, fail

SANDBOX_HELP = "auto, docker or local (default: the session's)."
# off by default: a folder's preparation is its code, and may only download when you say so
PREPARE_NETWORK = "Give the folder's prepare.py or [run] prepare (sandboxed) the network."

# Options several commands take, each spelled once with its default (SessionConfig's where it
# has the field: `default`); a command's signature says `sandbox: str = SANDBOX`.
def default(name: str):
    """An option's default: SessionConfig's field `name` (defaults are defined once)."""
    from agent.config.settings import SessionConfig

    return SessionConfig.model_fields[name].default


SANDBOX = typer.Option(default("sandbox"), "--sandbox", help="auto, docker or local.")
SEED = typer.Option(default("seed"), "--seed", help="AR_SEED of the trials.")
DISK = typer.Option(default("disk"), "--disk", help="What a trial may write into its out/.")
GPUS = typer.Option("", "--gpus", help="GPU ids, e.g. 0,1.")
TRAIN_DIR = typer.Option(None, "--train-dir", help="Your training folder.")
PRESET = typer.Option(None, "--preset", help="cpu or gpu: rewrites the block.")
TIME_BUDGET = typer.Option(None, "--time-budget", help="Training seconds per trial.")
TOKEN_BUDGET = typer.Option(None, "--token-budget", help="Tokens per trial.")
EVAL_TOKENS = typer.Option(None, "--eval-tokens", hidden=True)
PREPARE = typer.Option(False, "--prepare-network", help=PREPARE_NETWORK)
ISOLATION = typer.Option(
    "auto", "--isolation", help="auto: a root session's local trials run as an unprivileged "
    "user in namespaces of their own, or the session refuses where they cannot; none: as "
    "root, with this machine's files and network in reach (README, Sandbox).")
QUIET = typer.Option(False, "--quiet", help="No live progress.")
WIDE = typer.Option(False, "--wide", help="Every column, rows unbroken (default: fit the "
                    "terminal, or 80 columns in a pipe).")
PRUNE = typer.Option(default("prune"), "--prune",
                     help="Early stopping: none, median, percentile[:P], hyperband, threshold:X.")
PRUNE_AT = typer.Option(",".join(f"{p:g}" for p in default("prune_at")), "--prune-at",
                        help="Progress points where the pruner decides (before warm-down).")
PRUNE_MIN_TRIALS = typer.Option(default("prune_min_trials"), "--prune-min-trials",
                                help="Completed trials before the pruner decides.")
TRACK = typer.Option([], "--track", help="Feed a tracker as trials finish: mlflow[:URI], "
                     "wandb[:PROJECT] or optuna[:STORAGE]; repeat for several.")
GUARD = typer.Option(default("guard"), "--guard/--no-guard",
                     help="Stop a non-finite or far-worse learning curve early.")
STOP_FAILURES = typer.Option(default("stop_after_failures"), "--stop-after-failures",
                             help="Stop after N failed or rejected trials in a row (0: never).")
STOP_PLATEAU = typer.Option(None, "--stop-on-plateau",
                            help="Stop after no new best in T trials (30) or T of trial time "
                                 "per slot (2h).")


MAX_USD = typer.Option(None, "--max-usd",
                       help="Stop before the LLM calls (+ --gpu-usd-per-hour) could cost more.")


def prices_or_fail(text: str | None) -> list[float] | None:
    """--llm-usd-per-mtok 'IN,OUT' -> [IN, OUT] (USD per million tokens), or one line."""
    if text is None:
        return None
    try:
        prices = [float(x) for x in text.split(",")]
    except ValueError:
        prices = []
    if len(prices) != 2 or not all(0 <= x < float("inf") for x in prices):
        raise fail(f"--llm-usd-per-mtok {text!r}: give two prices in USD per million tokens, "
                   "prompt then answer, like 0.15,0.60", 2)
    return prices


def plateau_or_fail(text: str | None) -> dict:
    """--stop-on-plateau's SessionConfig fields ({} when not given), or one line."""
    from agent.config.settings import parse_plateau

    if text is None:
        return {}
    try:
        return parse_plateau(text)
    except ValueError as e:
        raise fail(str(e), 2) from None


# ---------------------------------------------------------------------------------------------
# SIGTERM (what a scheduler or `kill` sends) ends a command that runs sessions like Ctrl-C:
# the trial is stopped and removed, the built-in model's server stopped, nothing is lost

class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be; the command exits 143 rather than 130."""


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    import signal

    def on_sigterm(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------
# The one error handler

class Failure(UserError):
    """A UserError whose exit code and message `failing` has settled."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def handled(command: Callable, code: int = 2) -> Callable:
    """`command` as the CLI registers it: a UserError it lets out is one line `error: ...`
    and exit `code` (2: bad input, the default; 1: the command's own work failed), or the
    code `failing` gave it. Anything else is our bug and keeps its traceback."""

    @functools.wraps(command)  # typer reads the options from the wrapped signature
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            raise fail(str(e), e.code if isinstance(e, Failure) else code) from None

    return run


@contextmanager
def failing(code: int, then: str = "") -> Iterator[None]:
    """Inside, a UserError exits `code` rather than the command's, `then` (what is kept, how
    to go on) after its message."""
    try:
        yield
    except Failure:
        raise
    except UserError as e:
        raise Failure(f"{e} ({then})" if then else str(e), code) from None


# ---------------------------------------------------------------------------------------------
# Options into settings

OPTION_OF = {"budget_s": "--budget", "cost_s": "--cost"}


def config_or_fail(options: dict[str, str] | None = None, **values):
    """A SessionConfig from the options, or one line naming the option that is wrong
    (`options`: a field's option where its name is not the field's, e.g. --timeout)."""
    from pydantic import ValidationError

    from agent.config.settings import SessionConfig

    try:
        return SessionConfig(**values)
    except ValidationError as e:
        first = e.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a rule between options
            raise fail(msg, 2) from None
        key = str(first["loc"][0])
        option = {**OPTION_OF, **(options or {})}.get(key, "--" + key.replace("_", "-"))
        raise fail(f"{option} {values.get(key)!r}: {msg}", 2) from None


def fractions(text: str, option: str) -> list[float]:
    """'0.25,0.45' -> [0.25, 0.45]; each strictly between 0 and 1."""
    points = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise fail(f"{option} {text!r}: give progress fractions like 0.25,0.45", 2) from None
        if not 0 < value < 1:
            raise fail(f"{option} {text!r}: each point must be between 0 and 1", 2)
        points.append(value)
    return points


def gpu_ids(text: str) -> list[int]:
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise fail(f"--gpus {text!r}: give GPU ids as nvidia-smi numbers them, like 0,1", 2)
        ids.append(int(part))
    return ids


# ---------------------------------------------------------------------------------------------
# A session's records

def records(run_dir: Path, rebuild: bool = False) -> list:
    """The session's TrialNotes from the ledger; from the git notes when asked (rewriting the
    ledger, under the folder's lock) or when the ledger cannot be read (nothing written)."""
    from agent.record.ledger import Ledger
    from agent.record.rundir import RunDir

    rd = RunDir(run_dir)
    if not rd.exists():
        raise fail(f"{run_dir} is not a session folder (no session.toml): check the path", 2)
    ledger = Ledger(run_dir)
    missing = not ledger.jsonl.exists()

    def broken(_error: Exception) -> None:
        typer.echo(f"warning: {ledger.jsonl} has a broken line: read from the git notes; "
                   f"`autoresearch replay {run_dir} --rebuild` repairs it", err=True)

    notes = rd.notes(from_git=rebuild, broken=broken)
    if rebuild or missing:
        with rd:
            ledger.rewrite(notes)
    return notes


def cost_line(notes, gpu_usd_per_hour: float = 0.0, cut_usd: float = 0.0) -> str:
    """What the trials cost, the share of it spent on trials that failed, what the trials
    stopped early (pruned: on purpose, not a failure) cost, and the dollars spent (LLM calls,
    those of asks the money cap cut short included, and the sandbox at `gpu_usd_per_hour`)
    when any were."""
    notes = list(notes.values()) if isinstance(notes, dict) else list(notes)
    total = sum(n.cost_s or 0.0 for n in notes)
    lost = sum(n.cost_s or 0.0 for n in notes if n.status not in ("ok", "pruned")
               and n.trial > 0)
    pruned = [n for n in notes if n.status == "pruned"]
    share = 100 * lost / total if total else 0.0
    line = f"cost {total:,.0f} s, {share:.1f} % of it lost to failed trials"
    if pruned:
        spent = sum(n.cost_s or 0.0 for n in pruned)
        line += f"; {len(pruned)} stopped early ({spent:,.0f} s)"
    llm_usd = sum(n.cost_usd or 0.0 for n in notes) + cut_usd
    gpu_usd = gpu_usd_per_hour * total / 3600
    if llm_usd or gpu_usd:
        cut = f" of it ${cut_usd:,.4f} on an ask the cap cut short" if cut_usd else ""
        line += (f"; ${llm_usd + gpu_usd:,.4f} (LLM ${llm_usd:,.4f}{cut}, sandbox "
                 f"${gpu_usd:,.4f})")
    return line


def trackers_or_fail(specs: list[str]) -> list[str]:
    """--track's values, each checked (a known tracker, its library installed)."""
    from agent.track import missing_extra, parse_track

    for spec in specs:
        try:
            name, _ = parse_track(spec)
        except UserError as e:
            raise fail(str(e), 2) from None
        problem = missing_extra(name)
        if problem:
            raise fail(problem, 2)
    return list(specs)

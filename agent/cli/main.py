"""The `autoresearch` command line (DESIGN.md, "Command line"): the typer app, the session
commands (run, resume, init), and where every other module's commands are registered."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import typer

from agent.cli import explain, history, research, sandbox
from agent.cli.common import (
    DISK,
    EVAL_TOKENS,
    GPUS,
    GUARD,
    ISOLATION,
    MAX_USD,
    PREPARE,
    PRESET,
    PRUNE,
    PRUNE_AT,
    PRUNE_MIN_TRIALS,
    QUIET,
    SANDBOX,
    SEED,
    STOP_FAILURES,
    STOP_PLATEAU,
    TIME_BUDGET,
    TOKEN_BUDGET,
    TRACK,
    TRAIN_DIR,
    Terminated,
    config_or_fail,
    cost_line,
    default,
    failing,
    fractions,
    gpu_ids,
    handled,
    plateau_or_fail,
    prices_or_fail,
    sigterm_as_ctrl_c,
    trackers_or_fail,
)
from agent.config.settings import MIN_STEPS
from agent.errors import fail
from agent.text import Hanging, markup


def package_version() -> str:
    try:
        return version("autoresearch-sandbox")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"autoresearch-sandbox {package_version()}")
        raise typer.Exit()


def main(
    version_: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """autoresearch-sandbox."""


# ---------------------------------------------------------------------------------------------
# Sessions

def _run_session(session, quiet: bool) -> None:
    from rich.console import Console

    from agent.llm.pricing import cut_usd

    console = Console()
    try:
        with sigterm_as_ctrl_c(), failing(1, f"finished trials are kept; `autoresearch resume "
                                             f"{session.run_dir}` continues"):
            outcome = session.run()
    except KeyboardInterrupt as e:
        console.print(f"[yellow]{'terminated' if isinstance(e, Terminated) else 'interrupted'}"
                      f"[/yellow]: every finished trial is in git and the ledger; continue "
                      f"with `autoresearch resume {markup(session.run_dir)}`")
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    best = "-" if outcome.best_val_bpb is None else f"{outcome.best_val_bpb:.6f}"
    cost = cost_line(session.notes, session.config.gpu_usd_per_hour or 0.0,
                     cut_usd(session.rd.cut_calls))
    console.print(Hanging("done: ", f"{outcome.trials_run} trials (stopped by "
                          f"{outcome.stopped_by}), best val_bpb {best} at "
                          f"{markup(outcome.best_commit[:7])}"))
    console.print(Hanging("", cost))
    if outcome.why and quiet:  # else the session said it as it stopped
        console.print(Hanging("[yellow]stopped[/yellow]: ", markup(outcome.why)))
    more = outcome.trials_run if outcome.stopped_by == "trials" else None
    for line in what_next(session.run_dir, more):
        typer.echo(line)


def _pasteable(command: str, width: int = 80) -> list[str]:
    """`command` as lines of at most `width` columns that a shell still reads as one: broken
    between words with a trailing backslash (a single word wider than that stays whole)."""
    import shlex

    lines, line = [], "  "
    for word in map(shlex.quote, shlex.split(command)):
        if line.strip() and len(line) + 1 + len(word) + 2 > width:
            lines.append(line + " \\")
            line = "    "
        line += (" " if line.strip() else "") + word
    return lines + [line]


def what_next(run_dir: Path, more: int | None = None) -> list[str]:
    """The end of `run` and `resume`: the commands to run next on this folder, as they can be
    pasted, each with what it shows on the line below, and where the README goes on; with
    `more` (the session ran all its trials), the resume that runs that many more. No line but
    a command is longer than 80 columns."""
    import shlex

    from agent.text import clean

    folder = shlex.quote(clean(run_dir, one_line=True))
    steps = [(f"autoresearch replay {folder}",
              "every trial: what it changed, status, val_bpb, cost"),
             (f"autoresearch diff {folder}", "the best train.py against the baseline")]
    if more:
        steps.append((f"autoresearch resume {folder} --trials {2 * more}",
                      f"{more} more trials, from where this session stopped"))
    lines = ["next:"]
    for command, what in steps:
        lines += _pasteable(command) + [f"      {what}"]
    return lines + ['README.md: "A session" (these commands) and "Leaving it alone overnight"',
                    "(a night's session: --budget, --max-usd, stop rules, steer, stop)"]


def run(
    method: str = typer.Option(default("method"), "--method",
                               help="random, tpe, cmaes, centaur, llm-hpo, code-agent."),
    trials: int | None = typer.Option(None, "--trials", help="Trials after the baseline."),
    budget: str | None = typer.Option(None, "--budget", help="Wall clock, e.g. 2h, 90m."),
    cost: str | None = typer.Option(None, "--cost", help="Summed trial cost, e.g. 2h."),
    seed: int = SEED,
    sandbox: str = SANDBOX,
    preset: str | None = PRESET,
    train_dir: Path | None = TRAIN_DIR,
    model: str | None = typer.Option(None, "--model", help="litellm model (LLM methods)."),
    api_base: str | None = typer.Option(None, "--api-base"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Default runs/METHOD-TIME."),
    time_budget: float | None = TIME_BUDGET,
    token_budget: int | None = TOKEN_BUDGET,
    trial_timeout: float | None = typer.Option(None, "--trial-timeout", help="Hard s/trial."),
    memory: str | None = typer.Option(None, "--memory",
                                      help="Host memory per trial (default: the preset's)."),
    disk: str = DISK,
    gpus: str = GPUS,
    workers: int = typer.Option(default("workers"), "--workers", help="Trials at once."),
    gpus_per_trial: int | None = typer.Option(None, "--gpus-per-trial",
                                              help="GPUs each trial gets (default 1)."),
    cpus: float | None = typer.Option(None, "--cpus", help="CPU cores per trial."),
    executor: str = typer.Option(default("executor"), "--executor",
                                 help="serial, pool (this host) or ray (a cluster)."),
    ray_address: str | None = typer.Option(None, "--ray-address",
                                           help="auto or ray://HOST:PORT (default: local)."),
    eval_tokens: int | None = EVAL_TOKENS,
    llm_ratio: float = typer.Option(default("llm_ratio"), "--llm-ratio",
                                    help="centaur: LLM share of trials."),
    llm_warmup: int = typer.Option(default("llm_warmup"), "--llm-warmup",
                                   help="centaur: CMA-ES-only trials."),
    max_repairs: int = typer.Option(default("max_repairs"), "--max-repairs",
                                    help="LLM repair turns per trial."),
    score: str | None = typer.Option(
        None, "--score", help="printed or harness (default: harness for code-agent)."),
    preflight_steps: int = typer.Option(default("preflight_steps"), "--preflight-steps",
                                        help="Steps of the preflight probe; 0: none."),
    repair_oom: bool | None = typer.Option(None, "--repair-oom/--no-repair-oom",
                                           help="Halve the batch after a preflight OOM."),
    min_steps: int | None = typer.Option(
        None, "--min-steps", help="Refuse a trial whose probe predicts fewer steps in the "
                                  f"budget (default {MIN_STEPS} for CPU trials under a time "
                                  "budget; 0: never)."),
    confirm: int = typer.Option(default("confirm"), "--confirm",
                                help="A new best must hold over up to K seeds (1: off)."),
    prune: str = PRUNE,
    prune_points: str = PRUNE_AT,
    prune_min_trials: int = PRUNE_MIN_TRIALS,
    guard: bool = GUARD,
    stop_after_failures: int = STOP_FAILURES,
    stop_on_plateau: str | None = STOP_PLATEAU,
    max_usd: float | None = MAX_USD,
    gpu_usd_per_hour: float | None = typer.Option(
        None, "--gpu-usd-per-hour", help="What an hour of one trial's slot costs (for --max-usd)."),
    llm_usd_per_mtok: str | None = typer.Option(
        None, "--llm-usd-per-mtok", help="IN,OUT: USD per million tokens of a model litellm "
                                         "has no price for."),
    warm_start: list[Path] = typer.Option(
        [], "--warm-start", help="Start from this earlier run's trials (same baseline); "
                                 "repeat for several."),
    estimate: bool = typer.Option(False, "--estimate",
                                  help="Print the trials, hours and dollars these options come "
                                       "to (the baseline is run once to time it); no session."),
    estimate_from: Path | None = typer.Option(
        None, "--estimate-from", help="Estimate from this previous run's trials instead."),
    prepare_network: bool = PREPARE,
    isolation: str = ISOLATION,
    track: list[str] = TRACK,
    quiet: bool = QUIET,
) -> None:
    """Start an autonomous research session (the embedded default with no options)."""
    from datetime import datetime

    from agent.config.settings import parse_duration
    from agent.loop.progress import QuietReporter, RichReporter
    from agent.loop.session import Session
    from agent.optimizers import METHODS

    if method not in METHODS:
        raise fail(f"unknown method {method!r}: use one of {', '.join(METHODS)}", 2)
    if confirm == 2:  # one degree of freedom: the gate's test could promote almost nothing
        raise fail("--confirm 2 cannot confirm a gain (two seeds give the test one degree of "
                   "freedom): use --confirm 3 or more (5 is a good start), or 1 for no gate", 2)
    try:
        budget_s = parse_duration(budget) if budget else None
        cost_s = parse_duration(cost) if cost else None
    except ValueError as e:
        raise fail(str(e), 2) from None
    if trials is None and budget_s is None and cost_s is None:
        trials = 3  # the embedded default: a short session
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = run_dir or Path("runs") / f"{method}-{stamp}"
    config = config_or_fail(
        method=method, seed=seed, trials=trials, budget_s=budget_s, cost_s=cost_s,
        preset=preset,
        train_dir=str(train_dir) if train_dir else "", model=model, api_base=api_base,
        sandbox=sandbox, time_budget=time_budget, token_budget=token_budget,
        trial_timeout=trial_timeout, memory=memory, disk=disk, gpus=gpu_ids(gpus),
        workers=workers, gpus_per_trial=gpus_per_trial, cpus=cpus, executor=executor,
        ray_address=ray_address, eval_tokens=eval_tokens, llm_ratio=llm_ratio,
        llm_warmup=llm_warmup, max_repairs=max_repairs, score=score,
        preflight_steps=preflight_steps, repair_oom=repair_oom, min_steps=min_steps,
        confirm=confirm, prepare_network=prepare_network, prune=prune,
        prune_at=fractions(prune_points, "--prune-at"), prune_min_trials=prune_min_trials,
        guard=guard, isolation=isolation, track=trackers_or_fail(track),
        stop_after_failures=stop_after_failures, **plateau_or_fail(stop_on_plateau),
        max_usd=max_usd, gpu_usd_per_hour=gpu_usd_per_hour,
        llm_usd_per_mtok=prices_or_fail(llm_usd_per_mtok),
        warm_start=[str(p) for p in warm_start])
    if estimate or estimate_from:
        _estimate(config, estimate_from)
        return
    reporter = QuietReporter() if quiet else RichReporter()
    session = Session.create(run_dir, config, reporter)
    if not quiet:
        which = "" if preset else " (search_space.toml's default)"
        from rich.console import Console

        Console().print(Hanging("session ", markup(
            f"{run_dir}: {method}, seed {seed}, preset {session.space.preset or 'none'}"
            f"{which}, {f'{trials} trials' if trials is not None else budget}")))
    _run_session(session, quiet)


def _estimate(config, previous: Path | None) -> None:
    from agent.analysis.estimate import estimate, measure_baseline, measure_run
    from agent.cli.common import records
    from agent.llm.client import is_local
    from agent.llm.local import builtin_name
    from agent.llm.pricing import pricing_for
    from agent.optimizers import LLM_METHODS
    from agent.record.rundir import RunDir

    if previous is not None:
        measured = measure_run(records(previous, False), RunDir(previous).load_clock(),
                               str(previous))
    else:
        typer.echo("timing the baseline: one trial as a session runs it" + (
            f" ({config.method}'s LLM calls are not in it: --estimate-from RUN takes a "
            "previous run's)" if config.method in LLM_METHODS else ""))
        measured = measure_baseline(config)
    llm = config.method in LLM_METHODS
    local = builtin_name(config.model) is not None or is_local(config.api_base)
    pricing = pricing_for((config.model or "builtin") if llm else None, local,
                          config.llm_usd_per_mtok, config.gpu_usd_per_hour)
    got = estimate(config, measured, pricing)
    tokens = "measured" if measured.tokens_measured else "assumed"
    typer.echo(f"a trial: {measured.trial_s:.2f} s ({markup(measured.basis)}); start-up "
               f"{measured.start_s:.1f} s")
    typer.echo(f"trials:  {got.trials} after the baseline (the limit: {got.limited_by})")
    hours = f"{got.hours:.2f} h" if got.hours >= 1 else f"{got.hours * 60:.1f} min"
    typer.echo(f"time:    {hours} with {config.workers} worker{'s' * (config.workers != 1)}")
    typer.echo(f"dollars: {usd(got.llm_usd + got.sandbox_usd)} = LLM {usd(got.llm_usd)} "
               f"({got.llm_calls:.0f} calls x {measured.tokens[0]:.0f} + "
               f"{measured.tokens[1]:.0f} tokens, {tokens}; {markup(pricing.source)}) + sandbox "
               f"{usd(got.sandbox_usd)}"
               + ("" if config.gpu_usd_per_hour else " (no --gpu-usd-per-hour)"))


def usd(x: float) -> str:
    return f"${x:,.2f}" if x >= 1 else f"${x:.4f}"


def resume(
    run_dir: Path = typer.Argument(..., help="The session folder, e.g. runs/NAME."),
    model: str | None = typer.Option(None, "--model", help="Switch to this litellm model."),
    api_base: str | None = typer.Option(None, "--api-base", help="The model's new address."),
    trials: int | None = typer.Option(None, "--trials", help="Raise the trial count."),
    stop_after_failures: int | None = typer.Option(
        None, "--stop-after-failures", help="Raise the failed-in-a-row limit (0: never)."),
    stop_on_plateau: str | None = STOP_PLATEAU,
    max_usd: float | None = typer.Option(None, "--max-usd", help="Raise the money cap."),
    prepare_network: bool = PREPARE,
    isolation: str = ISOLATION,
    track: list[str] = TRACK,
    quiet: bool = QUIET,
) -> None:
    """Continue a stopped or killed session exactly where it stopped."""
    from agent.loop.progress import QuietReporter, RichReporter
    from agent.loop.session import Session

    session = Session.open(run_dir, QuietReporter() if quiet else RichReporter(),
                           trackers_or_fail(track))
    changes = {k: v for k, v in (("model", model), ("api_base", api_base), ("trials", trials),
                                 ("stop_after_failures", stop_after_failures),
                                 ("max_usd", max_usd))
               if v is not None} | plateau_or_fail(stop_on_plateau)
    if changes:
        new = config_or_fail(**{**session.config.model_dump(), **changes})
        new.save(session.rd.session_toml)
        session.config = new.model_copy(update={"track_dropped": session.config.track_dropped})
    session.config = session.config.model_copy(update={"prepare_network": prepare_network,
                                                       "isolation": isolation})
    _run_session(session, quiet)


def steer(
    run_dir: Path = typer.Argument(..., help="The session folder, e.g. runs/NAME."),
    text: str | None = typer.Argument(None, help="What the LLM methods should hear."),
    clear: bool = typer.Option(False, "--clear", help="Remove the guidance."),
) -> None:
    """Show TEXT to the LLM methods' next prompts (RUN/guidance.md; works while it runs)."""
    from agent.config.settings import SessionConfig
    from agent.loop.session import GUIDANCE_CHARS
    from agent.optimizers import LLM_METHODS
    from agent.record.ledger import atomic_write
    from agent.record.newrun import require_session
    from agent.record.rundir import RunDir

    rd = RunDir(run_dir)
    require_session(rd)
    if clear == bool(text and text.strip()):
        raise fail("give the guidance text, or --clear to remove it", 2)
    if clear:
        rd.guidance_md.unlink(missing_ok=True)
        typer.echo(f"removed {rd.guidance_md}: the next LLM prompts have no guidance")
        return
    if len(text) > GUIDANCE_CHARS:
        raise fail(f"the guidance has {len(text)} characters; a prompt shows at most "
                   f"{GUIDANCE_CHARS}: shorten it", 2)
    atomic_write(rd.guidance_md, (text.strip() + "\n").encode())
    method = SessionConfig.load(rd.session_toml).method
    holder = rd.holder()
    typer.echo(f"wrote {rd.guidance_md}: "
               + ("the next LLM prompt shows it" if method in LLM_METHODS else
                  f"{method} asks no LLM, so no prompt shows it (llm-hpo, centaur and "
                  "code-agent do)")
               + ("" if holder else "; no session runs there now: `autoresearch resume "
                  f"{run_dir}` uses it"))


def stop(
    run_dir: Path = typer.Argument(..., help="The session folder, e.g. runs/NAME."),
    wait: bool = typer.Option(False, "--wait", help="Return once the session has ended."),
) -> None:
    """Ask a running session to finish the trials in flight and stop (from any shell)."""
    import time

    from agent.record.newrun import require_session
    from agent.record.rundir import RunDir

    rd = RunDir(run_dir)
    require_session(rd)
    holder = rd.holder()
    if holder is None:
        raise fail(f"no session runs in {run_dir}: nothing to stop", 1)
    rd.stop_request.write_text(f"asked at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    typer.echo(f"asked the session in {run_dir} ({markup(holder)}) to stop: it proposes no "
               "more trials, records those in flight and exits; `autoresearch resume "
               f"{run_dir}` continues")
    while wait and rd.holder() is not None:
        time.sleep(0.5)
    if wait:
        typer.echo("it has stopped")


def init(
    train_dir: Path = typer.Option(..., "--train-dir", help="Your training folder."),
    force: bool = typer.Option(False, "--force", help="Replace its search_space.toml."),
) -> None:
    """Write the search_space.toml (hyperparameters, gpu preset, run table) a folder needs."""
    from agent.config.init_folder import init_folder

    path, text, found = init_folder(train_dir, force)
    typer.echo(f"wrote {path}:")
    for line in found:
        typer.echo(f"  - {line}")
    typer.echo(f"check it, then: autoresearch run --train-dir {train_dir} --gpus 0")


# ---------------------------------------------------------------------------------------------
# The app: every command, and the exit code of a UserError it lets out (agent/cli/common.py,
# `handled`): 2 where it means bad input, 1 where the command's own work failed

app = typer.Typer(
    help="Let classical optimizers and LLM agents tune a training script, one git commit "
    "and one sandboxed trial at a time.",
    no_args_is_help=True,
    add_completion=False,
)
app.callback()(main)
for command, code in ((run, 2), (resume, 2), (steer, 2), (stop, 2), (history.replay, 2),
                      (history.diff, 2), (init, 2), (research.compare, 2), (research.noise, 1),
                      (research.bench, 2), (research.prune_check, 2), (research.track, 2),
                      (explain.rerun, 2), (explain.attribute, 2), (explain.finalize, 2),
                      (explain.report, 2)):
    app.command()(handled(command, code))

sandbox_app = typer.Typer(help="Build, check and try the trial sandbox.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
for name, command in (("build", sandbox.build), ("check", sandbox.check),
                      ("try", sandbox.try_)):
    sandbox_app.command(name)(handled(command, 1))

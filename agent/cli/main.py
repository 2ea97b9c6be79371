"""The `autoresearch` command line (DESIGN.md, "Command line")."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import typer

from agent.cli.explain import PREPARE_NETWORK
from agent.cli.sandbox import sandbox_app
from agent.errors import UserError, fail
from agent.text import clean, markup

app = typer.Typer(
    help="Let classical optimizers and LLM agents tune a training script, one git commit "
    "and one sandboxed trial at a time.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(sandbox_app, name="sandbox")


def package_version() -> str:
    try:
        return version("autoresearch-sandbox")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"autoresearch-sandbox {package_version()}")
        raise typer.Exit()


@app.callback()
def main(
    version_: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """autoresearch-sandbox."""


# ---------------------------------------------------------------------------------------------
# Sessions

class Terminated(KeyboardInterrupt):
    """SIGTERM: handled like Ctrl-C (the trial is stopped and removed, nothing is lost)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _run_session(session) -> None:
    import signal

    from rich.console import Console

    console = Console()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        outcome = session.run()
    except KeyboardInterrupt as e:
        console.print(f"[yellow]{'terminated' if isinstance(e, Terminated) else 'interrupted'}"
                      f"[/yellow]: every finished trial is in git and the ledger; continue "
                      f"with `autoresearch resume {markup(session.run_dir)}`")
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    except UserError as e:
        raise fail(f"{e} (finished trials are kept; `autoresearch resume {session.run_dir}` "
                   "continues)") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    best = "-" if outcome.best_val_bpb is None else f"{outcome.best_val_bpb:.6f}"
    run_dir = markup(session.run_dir)
    console.print(f"done: {outcome.trials_run} trials (stopped by {outcome.stopped_by}), best "
                  f"val_bpb {best} at {markup(outcome.best_commit[:7])}; "
                  f"{cost_line(session.notes)}; see `autoresearch replay {run_dir}` and "
                  f"`autoresearch diff {run_dir}`")


def cost_line(notes) -> str:
    """What the trials cost, and the share of it spent on trials that failed."""
    notes = list(notes.values()) if isinstance(notes, dict) else list(notes)
    total = sum(n.cost_s or 0.0 for n in notes)
    lost = sum(n.cost_s or 0.0 for n in notes if n.status != "ok" and n.trial > 0)
    share = 100 * lost / total if total else 0.0
    return f"cost {total:,.0f} s, {share:.1f} % of it lost to failed trials"


def _config_or_fail(**values):
    """A SessionConfig from the options, or one line naming the option that is wrong."""
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
        option = OPTION_OF.get(key, "--" + key.replace("_", "-"))
        raise fail(f"{option} {values.get(key)!r}: {msg}", 2) from None


OPTION_OF = {"budget_s": "--budget", "cost_s": "--cost"}


def _default(name: str):
    """A run option's default: the one in SessionConfig (defaults are defined once)."""
    from agent.config.settings import SessionConfig

    return SessionConfig.model_fields[name].default


def _gpu_ids(text: str) -> list[int]:
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise fail(f"--gpus {text!r}: give GPU ids as nvidia-smi numbers them, like 0,1", 2)
        ids.append(int(part))
    return ids


@app.command()
def run(
    method: str = typer.Option("tpe", "--method",
                               help="random, tpe, cmaes, centaur, llm-hpo, code-agent."),
    trials: int | None = typer.Option(None, "--trials", help="Trials after the baseline."),
    budget: str | None = typer.Option(None, "--budget", help="Wall clock, e.g. 2h, 90m."),
    cost: str | None = typer.Option(None, "--cost", help="Summed trial cost, e.g. 2h."),
    seed: int = typer.Option(0, "--seed"),
    sandbox: str = typer.Option("auto", "--sandbox", help="auto, docker or local."),
    preset: str | None = typer.Option(None, "--preset", help="cpu or gpu: rewrites the block."),
    train_dir: Path | None = typer.Option(None, "--train-dir", help="Your training folder."),
    model: str | None = typer.Option(None, "--model", help="litellm model (LLM methods)."),
    api_base: str | None = typer.Option(None, "--api-base"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="Default runs/METHOD-TIME."),
    time_budget: float | None = typer.Option(None, "--time-budget", help="Training s/trial."),
    token_budget: int | None = typer.Option(None, "--token-budget", help="Tokens per trial."),
    trial_timeout: float | None = typer.Option(None, "--trial-timeout", help="Hard s/trial."),
    memory: str | None = typer.Option(None, "--memory",
                                      help="Host memory per trial (default: the preset's)."),
    disk: str = typer.Option(_default("disk"), "--disk", help="What a trial may write."),
    gpus: str = typer.Option("", "--gpus", help="GPU ids, e.g. 0,1."),
    workers: int = typer.Option(_default("workers"), "--workers", help="Trials at once."),
    gpus_per_trial: int | None = typer.Option(None, "--gpus-per-trial",
                                              help="GPUs each trial gets (default 1)."),
    cpus: float | None = typer.Option(None, "--cpus", help="CPU cores per trial."),
    executor: str = typer.Option(_default("executor"), "--executor",
                                 help="serial, pool (this host) or ray (a cluster)."),
    ray_address: str | None = typer.Option(None, "--ray-address",
                                           help="auto or ray://HOST:PORT (default: local)."),
    eval_tokens: int | None = typer.Option(None, "--eval-tokens", hidden=True),
    llm_ratio: float = typer.Option(_default("llm_ratio"), "--llm-ratio",
                                    help="centaur: LLM share of trials."),
    llm_warmup: int = typer.Option(_default("llm_warmup"), "--llm-warmup",
                                   help="centaur: CMA-ES-only trials."),
    max_repairs: int = typer.Option(_default("max_repairs"), "--max-repairs",
                                    help="LLM repair turns per trial."),
    score: str | None = typer.Option(
        None, "--score", help="printed or harness (default: harness for code-agent)."),
    preflight_steps: int = typer.Option(_default("preflight_steps"), "--preflight-steps",
                                        help="Steps of the preflight probe; 0: none."),
    repair_oom: bool | None = typer.Option(None, "--repair-oom/--no-repair-oom",
                                           help="Halve the batch after a preflight OOM."),
    min_steps: int | None = typer.Option(None, "--min-steps",
                                         help="Refuse trials predicted to run fewer."),
    confirm: int = typer.Option(_default("confirm"), "--confirm",
                                help="A new best must hold over K seeds (1: off)."),
    prepare_network: bool = typer.Option(False, "--prepare-network", help=PREPARE_NETWORK),
    quiet: bool = typer.Option(False, "--quiet", help="No live progress."),
) -> None:
    """Start an autonomous research session (the embedded default with no options)."""
    from datetime import datetime

    from agent.config.settings import parse_duration
    from agent.loop.progress import QuietReporter, RichReporter
    from agent.loop.session import Session
    from agent.optimizers import METHODS

    if method not in METHODS:
        raise fail(f"unknown method {method!r}: use one of {', '.join(METHODS)}", 2)
    try:
        budget_s = parse_duration(budget) if budget else None
        cost_s = parse_duration(cost) if cost else None
    except ValueError as e:
        raise fail(str(e), 2) from None
    if trials is None and budget_s is None and cost_s is None:
        trials = 3  # the embedded default: a short session
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = run_dir or Path("runs") / f"{method}-{stamp}"
    config = _config_or_fail(
        method=method, seed=seed, trials=trials, budget_s=budget_s, cost_s=cost_s,
        preset=preset,
        train_dir=str(train_dir) if train_dir else "", model=model, api_base=api_base,
        sandbox=sandbox, time_budget=time_budget, token_budget=token_budget,
        trial_timeout=trial_timeout, memory=memory, disk=disk, gpus=_gpu_ids(gpus),
        workers=workers, gpus_per_trial=gpus_per_trial, cpus=cpus, executor=executor,
        ray_address=ray_address, eval_tokens=eval_tokens, llm_ratio=llm_ratio,
        llm_warmup=llm_warmup, max_repairs=max_repairs, score=score,
        preflight_steps=preflight_steps, repair_oom=repair_oom, min_steps=min_steps,
        confirm=confirm, prepare_network=prepare_network)
    reporter = QuietReporter() if quiet else RichReporter()
    try:
        session = Session.create(run_dir, config, reporter)
    except UserError as e:
        raise fail(str(e), 2) from None
    if not quiet:
        which = "" if preset else " (search_space.toml's default)"
        typer.echo(f"session {run_dir}: {method}, seed {seed}, preset "
                   f"{session.space.preset or 'none'}{which}, "
                   f"{f'{trials} trials' if trials is not None else budget}")
    _run_session(session)


@app.command()
def resume(
    run_dir: Path = typer.Argument(..., help="The session folder, e.g. runs/NAME."),
    model: str | None = typer.Option(None, "--model", help="Switch to this litellm model."),
    api_base: str | None = typer.Option(None, "--api-base", help="The model's new address."),
    trials: int | None = typer.Option(None, "--trials", help="Raise the trial count."),
    prepare_network: bool = typer.Option(False, "--prepare-network", help=PREPARE_NETWORK),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Continue a stopped or killed session exactly where it stopped."""
    from agent.loop.progress import QuietReporter, RichReporter
    from agent.loop.session import Session

    try:
        session = Session.open(run_dir, QuietReporter() if quiet else RichReporter())
    except UserError as e:
        raise fail(str(e), 2) from None
    changes = {k: v for k, v in (("model", model), ("api_base", api_base),
                                 ("trials", trials)) if v is not None}
    if changes:
        new = _config_or_fail(**{**session.config.model_dump(), **changes})
        session.config = new
        new.save(session.rd.session_toml)
    session.config = session.config.model_copy(update={"prepare_network": prepare_network})
    _run_session(session)


def _records(run_dir: Path, rebuild: bool = False) -> list:
    """The session's TrialNotes from the ledger; from the git notes when asked (rewriting the
    ledger, under the folder's lock) or when the ledger cannot be read (nothing written)."""
    from agent.record.ledger import Ledger
    from agent.record.note import TrialNote
    from agent.record.rundir import RunDir
    from agent.record.workspace import Workspace

    rd = RunDir(run_dir)
    if not rd.exists():
        raise fail(f"{run_dir} is not a session folder (no session.toml): check the path", 2)
    ledger = Ledger(run_dir)
    if not rebuild and ledger.jsonl.exists():
        try:
            return ledger.records()
        except (ValueError, TypeError):
            typer.echo(f"warning: {ledger.jsonl} has a broken line: read from the git notes; "
                       f"`autoresearch replay {run_dir} --rebuild` repairs it", err=True)
    try:
        notes = sorted((TrialNote.from_dict(r) for r in Workspace(rd.repo).notes().values()),
                       key=lambda n: n.trial)
        if rebuild or not ledger.jsonl.exists():
            with rd:
                ledger.rewrite(notes)
    except UserError as e:
        raise fail(str(e), 2) from None
    return notes


@app.command()
def replay(
    run_dir: Path = typer.Argument(..., help="The session folder."),
    trial: int | None = typer.Option(None, "--trial", help="Show one trial."),
    show_diff: bool = typer.Option(False, "--diff", help="With --trial: its diff and log."),
    as_json: bool = typer.Option(False, "--json", help="Stable JSON rows (see README)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild the ledger from git."),
) -> None:
    """The session's trials, from the ledger (or from git with --rebuild)."""
    import json

    from rich.console import Console
    from rich.syntax import Syntax

    from agent.analysis.report import replay_rows, replay_table, replay_text
    from agent.record.rundir import RunDir

    records = _records(run_dir, rebuild)
    rows = replay_rows(records)
    if trial is not None:
        picked = [r for r in records if r.trial == trial]
        if not picked:
            raise fail(f"{run_dir} has no trial {trial} (it has 0..{len(records) - 1})", 2)
        if as_json:
            typer.echo(json.dumps(picked[0].to_dict(), sort_keys=True))
            return
        console = Console()
        console.print(replay_table(replay_rows(picked), f"{run_dir} trial {trial}",
                                   console.width))
        if show_diff:
            console.print(Syntax(clean(picked[0].diff or "(no diff: the baseline)"), "diff"))
            log = RunDir(run_dir).trial_log(trial, picked[0].result)  # inside the folder
            if log is not None:
                tail = log.read_text(errors="replace").splitlines()[-25:]
                console.print("[bold]train.log (last 25 lines)[/bold]")
                console.print(clean("\n".join(tail)), markup=False, highlight=False)
        return
    if as_json:
        typer.echo(json.dumps(rows, sort_keys=True))
        return
    console = Console()
    title = f"{run_dir}: {len(rows)} trials; {cost_line(records)}"
    if len(rows) > 200:  # a rich Table is too slow for thousands of rows
        import sys

        sys.stdout.write(replay_text(rows, title + " (* = new best)", console.width))
        return
    console.print(replay_table(rows, title, console.width))


@app.command()
def diff(
    run_dir: Path = typer.Argument(..., help="The session folder."),
    a: str = typer.Argument("baseline", help="From: a trial number, baseline, best or a rev."),
    b: str = typer.Argument("best", help="To: a trial number, baseline, best or a rev."),
) -> None:
    """The code change between two trials (default: baseline .. best)."""
    from rich.console import Console
    from rich.syntax import Syntax

    from agent.record.workspace import Workspace, WorkspaceError

    try:
        ws = Workspace(run_dir / "repo")
        revs = []
        for name in (a, b):
            sha = ws.trial_commit(int(name)) if name.isdigit() else ws.rev(name)
            if sha is None:
                raise WorkspaceError(f"{run_dir} has no trial {name}")
            revs.append(sha)
    except UserError as e:
        raise fail(str(e), 2) from None
    text = clean(ws.diff(*revs))  # code a model wrote: no escape reaches the terminal
    console = Console()
    if console.is_terminal:
        console.print(Syntax(text or "(no change)", "diff"))
    else:
        typer.echo(text)


@app.command()
def init(
    train_dir: Path = typer.Option(..., "--train-dir", help="Your training folder."),
    force: bool = typer.Option(False, "--force", help="Replace its search_space.toml."),
) -> None:
    """Write the search_space.toml (hyperparameters, gpu preset, [run]) a folder needs."""
    from agent.config.init_folder import init_folder

    try:
        path, text, found = init_folder(train_dir, force)
    except UserError as e:
        raise fail(str(e), 2) from None
    typer.echo(f"wrote {path}:")
    for line in found:
        typer.echo(f"  - {line}")
    typer.echo(f"check it, then: autoresearch run --train-dir {train_dir} --gpus 0")


# compare, noise and bench live in agent/cli/research.py
from agent.cli.research import bench, compare, noise  # noqa: E402

app.command()(compare)
app.command()(noise)
app.command()(bench)
from agent.cli.explain import attribute, rerun  # noqa: E402

app.command()(rerun)
app.command()(attribute)

"""`autoresearch finalize RUN`: the session's result as changes you can review and merge.

The changes from the baseline to the best trial are measured (`attribute`, K seeds; a recorded
attribution of the same two commits with at least K seeds is used instead), and a change is
kept when it helped beyond its noise: on its own on the baseline (add-one) it lowered val_bpb
by more than twice its standard error over the seeds (where it cannot run on its own: taking
it out of the best raised val_bpb by that much, leave-one-out). Each kept change becomes a
branch `finalize/N-NAME` on top of the baseline, and all of them together `finalize/all`
(measured too when there are several), each commit message carrying its measured effect;
FINDINGS.md in the run folder holds the table, the plot and the commands to reproduce;
`--export DIR` writes the branches as patch files (`git am` in another repository).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from agent.analysis.attribution import attribute, problem, split_changes, with_changes
from agent.analysis.reruns import RecordedRun
from agent.errors import UserError
from agent.record.ledger import atomic_write
from agent.stats import paired_differences
from agent.text import clean

BRANCHES = "refs/heads/finalize/"


def recorded(root: Path, start: str, end: str, k: int) -> dict | None:
    """The newest attribution.json of these two commits with at least k seeds (None: none)."""
    found = []
    for path in (root / "attribution").glob("*/attribution.json"):
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(table, dict) and table.get("from_commit") == start and \
                table.get("to_commit") == end and len(table.get("seeds") or []) >= k and \
                isinstance(table.get("changes"), list):
            found.append((path.stat().st_mtime, table))
    return max(found, key=lambda f: f[0])[1] if found else None


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def decide(row: dict, k: int) -> tuple[bool, str]:
    """Whether a change is kept, and the evidence in words."""
    for key, sign, what in (("add_one", -1, "add-one"), ("leave_one_out", 1, "leave-one-out")):
        mean, std = _num(row.get(key)), _num(row.get(f"{key}_std"))
        if mean is None:
            continue
        gain, se = sign * mean, (std or 0.0) / math.sqrt(k)
        if gain > 0 and gain > 2 * se:
            return True, f"{what} gain {gain:.4f} > 2 x s.e. {se:.4f}"
        return False, f"{what} gain {gain:+.4f}, s.e. {se:.4f}: within its noise"
    return False, "could not be measured"


def slug(name: str) -> str:
    text = re.sub(r"[^a-z0-9.]+", "-", clean(name, True).lower()).strip("-.")
    text = re.sub(r"\.+", ".", text)[:40].strip("-.").removesuffix(".lock")  # git refuses it
    return text or "change"


def _effect(row: dict) -> str:
    parts = []
    for key, what in (("add_one", "add-one (baseline + this change)"),
                      ("leave_one_out", "leave-one-out (best without it)")):
        mean, std = _num(row.get(key)), _num(row.get(f"{key}_std"))
        parts.append(f"{what}: " + ("unappliable" if mean is None else
                                    f"delta val_bpb {mean:+.4f}" +
                                    ("" if std is None else f" +- {std:.4f}")))
    return "\n".join(parts)


def finalize(run_dir: Path, k: int = 3, export: Path | None = None,
             sandbox: str | None = None, progress=None, prepare_network: bool = False,
             isolation: str = "auto") -> dict:
    """Branches for the kept changes, FINDINGS.md, and patches in `export`; a summary."""
    say = progress or (lambda text: None)
    with RecordedRun.open(run_dir, sandbox, prepare_network, isolation) as rec:
        start, end = rec.ws.baseline, rec.ws.best
    if start == end:
        raise UserError(f"{run_dir}: its best is the baseline: no change to finalize")
    table = recorded(Path(run_dir), start, end, k)
    if table is None:
        say(f"measuring each change from the baseline to the best ({k} seeds)")
        table = attribute(run_dir, "baseline", "best", k, sandbox, progress,
                          prepare_network=prepare_network, isolation=isolation)
    else:
        say(f"using the attribution in {table.get('folder')} ({len(table['seeds'])} seeds)")
    seeds = [int(s) for s in table["seeds"]]
    with RecordedRun.open(run_dir, sandbox, prepare_network, isolation) as rec:
        before, after = rec.ws.source(start), rec.ws.source(end)
        changes = split_changes(rec.space, before, after)
        rows = table["changes"]
        if [c.name for c in changes] != [r.get("change") for r in rows]:
            raise UserError(f"the attribution in {table.get('folder')} does not list the changes "
                            "of these commits: run `autoresearch attribute` again")
        decisions = [decide(r, len(seeds)) for r in rows]
        kept = [i for i, (keep, _) in enumerate(decisions) if keep]
        best = rec.notes.get(next((n for n, note in rec.notes.items() if note.commit == end),
                                  -1))
        origin = (f"From {rec.rd.root.name}, best trial {best.trial if best else '?'} "
                  f"(commit {end[:12]}); measured with {len(seeds)} seeds "
                  "by `autoresearch finalize`.")
        branches = []
        for i in kept:
            if changes[i].only is None:  # it cannot run alone: at most in finalize/all
                continue
            name = f"{i + 1}-{slug(rows[i]['change'])}"
            sha = rec.ws.write_commit(start, f"finalize: {rows[i]['change']}\n\n"
                                             f"{_effect(rows[i])}\n\n{origin}",
                                      with_changes(rec.space, before, after, {i}))
            rec.ws.set_ref(BRANCHES + name, sha)
            branches.append({"branch": f"finalize/{name}", "commit": sha,
                             "change": rows[i]["change"]})
        together = None
        alone = [i for i in kept if changes[i].only is not None]
        text = with_changes(rec.space, before, after, set(kept)) if kept else ""
        if kept != alone and problem(rec.space, text):  # one needs a change that was not kept
            kept, text = alone, with_changes(rec.space, before, after, set(alone))
        for i in {i for i, (keep, _) in enumerate(decisions) if keep} - set(alone):
            where = "in finalize/all only" if i in kept else "in no branch: it needs a " \
                "change that was not kept"
            decisions[i] = (True, f"{decisions[i][1]}; it cannot run alone ("
                            f"{clean(changes[i].why_not.get('only', ''), True)[:60]}): {where}")
        if kept and problem(rec.space, text):
            say(f"the kept changes together cannot run: {problem(rec.space, text)}; no "
                "finalize/all")
        elif kept:
            effect = "the kept changes, each measured alone above"
            sha = rec.ws.write_commit(start, "finalize: all kept changes", text)
            if len(kept) > 1:
                say(f"measuring the {len(kept)} kept changes together ({len(seeds)} seeds)")
                out = rec.rd.root / "finalize" / time.strftime("%Y%m%d-%H%M%S")
                results = rec.run([(sha, out / f"all-seed-{s}", s) for s in seeds])
                mean, std = paired_differences([r.val_bpb for r in results],
                                               table["from_val_bpb"])
                together = {"delta": mean, "std": std}
                effect = ("all kept changes on the baseline: " + (
                    "did not run" if mean is None else f"delta val_bpb {mean:+.4f}" +
                    ("" if std is None else f" +- {std:.4f}")))
            names = "\n".join(f"- {rows[i]['change']}" for i in kept)
            sha = rec.ws.write_commit(start, f"finalize: all kept changes\n\n{names}\n\n"
                                             f"{effect}\n\n{origin}", text)
            rec.ws.set_ref(BRANCHES + "all", sha)
            branches.append({"branch": "finalize/all", "commit": sha, "change": "all kept"})
        patches = []
        if export is not None:
            export.mkdir(parents=True, exist_ok=True)
            for n, b in enumerate(branches, 1):
                path = export / f"{n:02d}-{b['branch'].split('/', 1)[1]}.patch"
                path.write_bytes(rec.ws.git.run("format-patch", "-1", "--stdout",
                                                b["commit"]).stdout)
                patches.append(str(path))
        summary = {"run": str(rec.rd.root), "seeds": seeds, "baseline": start, "best": end,
                   "changes": [{"change": r["change"], "kept": keep, "why": why,
                                "add_one": r.get("add_one"),
                                "leave_one_out": r.get("leave_one_out")}
                               for r, (keep, why) in zip(rows, decisions, strict=True)],
                   "branches": branches, "together": together, "patches": patches,
                   "plot": table.get("plot") or str(Path(table["folder"]) /
                                                    "attribution.png")}
        atomic_write(rec.rd.root / "FINDINGS.md", findings(summary, table).encode())
        summary["findings"] = str(rec.rd.root / "FINDINGS.md")
        return summary


def _cell(text: object) -> str:
    return clean(text, True).replace("|", "\\|")


def findings(summary: dict, table: dict) -> str:
    run, k = Path(summary["run"]), len(summary["seeds"])
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    start = [v for v in table["from_val_bpb"] if v is not None]
    end = [v for v in table["to_val_bpb"] if v is not None]
    lines = [f"# Findings: {run.name}", "",
             f"Baseline val_bpb {mean(start):.4f} -> best {mean(end):.4f} (means over {k} "
             f"seeds: {', '.join(map(str, summary['seeds']))}); commits "
             f"{summary['baseline'][:12]} -> {summary['best'][:12]}. A change is kept when, "
             "alone on the baseline, it lowered val_bpb by more than twice its standard error "
             "over the seeds (leave-one-out where it cannot run alone).", "",
             "| change | add-one Δ | leave-one-out Δ | kept | why | branch |",
             "|---|---:|---:|---|---|---|"]
    by_change = {b["change"]: b["branch"] for b in summary["branches"]}
    for c in summary["changes"]:
        cells = [f"{v:+.4f}" if _num(v) is not None else "-" for v in (c["add_one"],
                                                                          c["leave_one_out"])]
        lines.append(f"| {_cell(c['change'])} | {cells[0]} | {cells[1]} | "
                     f"{'yes' if c['kept'] else 'no'} | {_cell(c['why'])} | "
                     f"{by_change.get(c['change'], '-')} |")
    if summary["together"] and summary["together"]["delta"] is not None:
        lines += ["", f"All kept changes together on the baseline: Δ val_bpb "
                      f"{summary['together']['delta']:+.4f} (branch finalize/all)."]
    plot = Path(summary["plot"])
    try:
        plot = plot.relative_to(run)
    except ValueError:
        pass
    lines += ["", f"![each change's effect]({plot})", "", "## Reproduce", "", "```",
              f"git -C {run}/repo branch --list 'finalize/*'",
              f"git -C {run}/repo diff baseline finalize/all",
              f"autoresearch attribute {run} --seeds {k}",
              f"autoresearch finalize {run} --seeds {k} --export PATCHES",
              "git -C YOUR_REPO am PATCHES/*.patch   # --directory=SUBDIR if train.py is not "
              "at its root", "```", ""]
    return "\n".join(lines)

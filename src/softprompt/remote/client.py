"""`RemoteEvaluator`: the `PromptEvaluator` protocol over HTTP, against `softprompt serve-lm`.

The client holds no weights and no tokenizer: it renders examples with the task's template, has the endpoint
tokenise them once (cached per example list), then sends only token ids and prompt embeddings. Label scores are
computed exactly as `Scorer` does locally:

* single-token label words: the logits of the C label tokens at the answer position;
* multi-token label words: each example is expanded once per label with the label's tokens teacher-forced; the
  endpoint returns full-vocabulary log-probabilities of the label tokens and the client sums each label's own.

Connection errors, timeouts and 5xx answers are retried with exponential backoff and jitter within a bounded total
wait, so a search survives a restart of the endpoint; a 4xx means the request itself is wrong and is raised at once.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import torch

from softprompt.models.inputs import PromptInputs
from softprompt.remote.wire import EXTRA_PREFIX, MEDIA_TYPE, batch_tensors_from_json, decode, encode
from softprompt.tasks.base import Example, Task


class EndpointUnavailable(ConnectionError):
    """The endpoint stayed unreachable (or kept failing with 5xx) for the whole retry window."""


class EndpointError(ValueError):
    """The endpoint answered, but refused the request (4xx) or changed under us."""


@dataclass
class _Encoded:
    tensors: dict[str, torch.Tensor]  # the batch as /v1/scores takes it
    num_examples: int
    # multi-token only: per row (example x label) and position, which returned column to read, and whether it counts
    pick: torch.Tensor | None = None
    pick_mask: torch.Tensor | None = None


class RemoteEvaluator:
    def __init__(
        self,
        url: str,
        task: Task,
        *,
        timeout: float = 120.0,
        retries: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_wait: float = 120.0,
        cache_size: int = 16,
        http_client: httpx.Client | None = None,
        api_key: str | None = None,
    ) -> None:
        """`retries`: attempts per request; `backoff`: first delay, doubled per attempt up to `max_backoff`, with
        jitter; `max_wait`: cap on the total time spent sleeping between attempts of one request; `api_key`: sent
        as `Authorization: Bearer` to an endpoint started with --api-key-env."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint URL must look like http://127.0.0.1:8765, got {url!r}")
        if task.kind != "classification":
            raise NotImplementedError(f"remote scoring covers classification tasks; {task.name!r} is {task.kind}")
        if retries < 1:
            raise ValueError(f"retries must be at least 1, got {retries}")
        self.url = url.rstrip("/")
        self.task = task
        self.retries, self.backoff, self.max_backoff, self.max_wait = retries, backoff, max_backoff, max_wait
        self._http = http_client or httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))
        self._auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._cache: OrderedDict[tuple[str, ...], _Encoded] = OrderedDict()
        self._cache_size = cache_size
        self._info: dict[str, Any] | None = None
        self._labels: tuple[list[list[int]], bool] | None = None
        self._embedding_std: float | None = None

    # --- the protocol ------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.info["hidden_size"])

    @property
    def num_layers(self) -> int:
        return int(self.info["num_layers"])

    def describe(self) -> dict[str, Any]:
        return {**self.info["model"], "endpoint": self.url}

    def embedding_std(self) -> float:
        if self._embedding_std is None:  # a property of the weights: one request per client is enough
            self._embedding_std = float(self._json("POST", "/v1/embedding_std")["std"])
        return self._embedding_std

    def vocab_embeddings(self, n: int, pool: int, seed: int) -> tuple[torch.Tensor, list[int]]:
        raise ValueError("a remote endpoint exposes no weights, so it cannot embed tokens: use init='normal'")

    def text_embeddings(self, text: str, n: int) -> torch.Tensor:
        raise ValueError("a remote endpoint exposes no weights, so it cannot embed text: use another init")

    def hidden_state_stds(self, examples: Sequence[Example], prompt: PromptInputs) -> list[float]:
        plain = prompt.deep is None and prompt.text_delta is None and prompt.gate is None
        if prompt.embeds is None or prompt.num_rows != 1 or not plain:
            raise ValueError("the endpoint measures hidden-state statistics with one plain input-layer prompt")
        texts = [self.task.render(ex) for ex in examples]
        tensors = batch_tensors_from_json(self._json("POST", "/v1/tokenize", json={"texts": texts})["batch"])
        tensors["prompt"] = prompt.embeds[0].detach().float()
        return [float(s) for s in self._json("POST", "/v1/hidden_state_stds", content=encode(tensors))["stds"]]

    def label_scores(
        self,
        examples: Sequence[Example],
        candidates: PromptInputs,
        shared_layers: int = 0,
    ) -> torch.Tensor:
        parts = (candidates.prefix_keys, candidates.text_delta, candidates.lengths, candidates.gate)
        if any(part is not None for part in parts):
            raise ValueError("the endpoint takes input-layer prompts of one length and deep prompts only (no key/value "
                             "prefix, text update or gate)")  # fmt: skip
        if candidates.embeds is None:
            raise ValueError("the endpoint scores candidate prompts: pass at least one input-layer vector")
        prompts, deep = candidates.embeds, candidates.deep
        enc = self._encode(examples)
        label_tokens, single = self.label_tokens
        if single:
            token_ids = torch.tensor([ids[0] for ids in label_tokens])
        else:
            token_ids = torch.tensor(sorted({t for ids in label_tokens for t in ids}))
        meta: dict[str, Any] = {"output": "logits" if single else "logprobs"}
        if shared_layers > 0 and deep is not None:  # the endpoint checks the promise and runs lower layers once
            meta["shared_layers"] = shared_layers
        parts = []
        for group in self._request_groups(prompts, deep, enc.tensors, len(token_ids)):
            tensors = {**enc.tensors, "token_ids": token_ids, "prompts": prompts[group].detach().float()}
            if deep is not None:
                tensors["deep"] = deep[:, group].detach().float()
            parts.append(self._binary("/v1/scores", encode(tensors, meta)))  # (P_group, rows, S, C)
        scores = torch.cat(parts)
        p = prompts.shape[0]
        if single:
            return scores[:, :, 0, :]
        picked = scores.gather(-1, enc.pick.expand(p, -1, -1).unsqueeze(-1)).squeeze(-1)  # (P, K*C, S)
        return (picked * enc.pick_mask).sum(-1).view(p, enc.num_examples, len(label_tokens))

    def generate(self, examples: Sequence[Example], prompt: PromptInputs, **options: object) -> list[str]:
        raise NotImplementedError("the remote endpoint scores label words; it does not generate text")

    def _request_groups(
        self, prompts: torch.Tensor, deep: torch.Tensor | None, batch: dict[str, torch.Tensor], columns: int
    ) -> list[slice]:
        """Candidates per request, so each stays within the endpoint's published limits on body size, rows, token
        positions and returned scores (a BBTv2 population for a 30-layer model is ~70 MB of deep prompts: more than
        one request may take)."""
        limits = self.info.get("limits", {})
        rows = len(batch["input_ids"])
        positions = prompts.shape[1] + sum(
            t.shape[1] for k, t in batch.items() if k == "input_ids" or k.startswith(EXTRA_PREFIX)
        )
        per_candidate = 4 * prompts[0].numel() * (1 + (deep.shape[0] if deep is not None else 0))
        room = limits.get("max_request_bytes", 64 * 2**20) - 4 * rows * 1024 - 2**16  # ids, masks and header
        fit = min(
            room // per_candidate,
            limits.get("max_rows", 8192) // rows,
            limits.get("max_work_tokens", 2**62) // (rows * positions),
            limits.get("max_output_values", 2**62) // (rows * batch["score_index"].shape[1] * columns),
        )
        return [slice(start, start + max(1, fit)) for start in range(0, prompts.shape[0], max(1, fit))]

    # --- what the endpoint knows -------------------------------------------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self._json("GET", "/v1/info")
        return self._info

    @property
    def label_tokens(self) -> tuple[list[list[int]], bool]:
        """Token ids of each verbalizer word (as `Scorer` tokenises them) and whether all are single tokens."""
        if self._labels is None:
            words = list(self.task.verbalizer)
            tokens = self._json("POST", "/v1/tokenize", json={"words": words})["words"]
            for word, ids in zip(words, tokens, strict=True):
                if not ids:
                    raise ValueError(f"verbalizer word {word!r} has no tokens")
            single = all(len(ids) == 1 for ids in tokens)
            if single and len({ids[0] for ids in tokens}) != len(tokens):
                raise ValueError(f"verbalizer words {words} map to the same token")
            if not single and len({tuple(ids) for ids in tokens}) != len(tokens):
                raise ValueError(f"verbalizer words {words} tokenise identically")
            self._labels = (tokens, single)
        return self._labels

    def _encode(self, examples: Sequence[Example]) -> _Encoded:
        texts = tuple(self.task.render(ex) for ex in examples)
        if texts in self._cache:
            self._cache.move_to_end(texts)
            return self._cache[texts]
        label_tokens, single = self.label_tokens
        if single:
            batch = self._json("POST", "/v1/tokenize", json={"texts": list(texts)})["batch"]
            enc = _Encoded(batch_tensors_from_json(batch), len(texts))
        else:
            c = len(label_tokens)
            body = {"texts": [t for t in texts for _ in range(c)], "continuations": label_tokens * len(texts)}
            batch = self._json("POST", "/v1/tokenize", json=body)["batch"]
            # Column of each label token among the sorted unique ids the endpoint returns scores for.
            column = {t: i for i, t in enumerate(sorted({t for ids in label_tokens for t in ids}))}
            width = len(batch["score_index"][0])
            pick = torch.zeros(len(texts) * c, width, dtype=torch.long)
            mask = torch.zeros(len(texts) * c, width)
            for row in range(len(texts) * c):
                ids = label_tokens[row % c]
                pick[row, : len(ids)] = torch.tensor([column[t] for t in ids])
                mask[row, : len(ids)] = 1.0
            enc = _Encoded(batch_tensors_from_json(batch), len(texts), pick, mask)
        self._cache[texts] = enc
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return enc

    # --- transport ---------------------------------------------------------------------------------------------
    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _binary(self, path: str, body: bytes) -> torch.Tensor:
        response = self._request("POST", path, content=body)
        tensors, meta = decode(response.content)
        if meta.get("fingerprint") != self.info["model"]["fingerprint"]:
            raise EndpointError(
                f"the endpoint at {self.url} now serves a different model (fingerprint {meta.get('fingerprint')}, "
                f"was {self.info['model']['fingerprint']}); scores from two models cannot be mixed in one search"
            )
        return tensors["scores"]

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        kwargs["headers"] = {**self._auth, **({"content-type": MEDIA_TYPE} if "content" in kwargs else {})}
        waited, last = 0.0, ""
        for attempt in range(1, self.retries + 1):
            try:
                response = self._http.request(method, self.url + path, **kwargs)
            except httpx.TransportError as err:  # refused, reset, timed out: the endpoint may be restarting
                last = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            else:
                if response.status_code < 400:
                    return response
                if response.status_code < 500:
                    raise EndpointError(f"{method} {path} failed with {response.status_code}: {_detail(response)}")
                last = f"HTTP {response.status_code}: {_detail(response)}"
            if attempt == self.retries or waited >= self.max_wait:
                break
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            delay = min(delay, self.max_wait - waited)
            time.sleep(delay)
            waited += delay
        port = urlsplit(self.url).port or 8765
        raise EndpointUnavailable(
            f"cannot reach softprompt endpoint at {self.url} after {attempt} tries (last error: {last}): "
            f"start it with `softprompt serve-lm --model MODEL --port {port}`"
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemoteEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else str(detail)[:500]

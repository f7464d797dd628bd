"""`softprompt.Client`: the prompt server's HTTP API from Python (httpx).

    client = softprompt.Client("http://127.0.0.1:8000", api_key=KEY)
    client.register("sst2", "runs/sst2")                # an artifact folder, a PromptArtifact, or its bytes
    client.classify("sst2", ["a gorgeous, witty film"])  # [{"index": 0, "label": "positive", "scores": {...}}]
    client.complete("sst2", "The movie was", max_tokens=8, temperature=0)
    client.prompts(); client.delete("sst2")

Errors come back as `ServerError` (a ValueError) carrying the HTTP status and the server's one-line message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from softprompt.artifact import PromptArtifact


class ServerError(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        import httpx

        api_key = api_key or os.environ.get("SOFTPROMPT_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    # --- prompts ------------------------------------------------------------------------------------------------------
    def register(self, name: str, artifact: PromptArtifact | bytes | str | os.PathLike[str], *,
                 public: bool = False) -> dict[str, Any]:  # fmt: skip
        """Upload a prompt under `name` (a new version if it exists). A folder is read here, never by the server."""
        if isinstance(artifact, str | os.PathLike):
            artifact = PromptArtifact.from_pretrained(Path(artifact))
        blob = artifact.to_bytes() if isinstance(artifact, PromptArtifact) else bytes(artifact)
        return self._call("POST", f"/v1/prompts/{name}", content=blob, params={"public": str(public).lower()},
                          headers={"Content-Type": "application/octet-stream"})  # fmt: skip

    def prompts(self, include_public: bool = True) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/prompts", params={"include_public": str(include_public).lower()})["data"]

    def prompt(self, ref: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/prompts/{ref}")

    def download(self, ref: str) -> PromptArtifact:
        response = self._http.get(f"/v1/prompts/{ref}/content")
        _raise_for(response)
        return PromptArtifact.from_bytes(response.content)

    def set_public(self, name: str, public: bool) -> dict[str, Any]:
        return self._call("PATCH", f"/v1/prompts/{name}", json={"public": public})

    def delete(self, name: str, version: int | None = None) -> int:
        params = {} if version is None else {"version": version}
        return self._call("DELETE", f"/v1/prompts/{name}", params=params)["deleted"]

    # --- inference ----------------------------------------------------------------------------------------------------
    def classify(self, prompt: str, texts: list[str]) -> list[dict[str, Any]]:
        return self._call("POST", "/v1/classify", json={"model": prompt, "texts": list(texts)})["data"]

    def complete(self, prompt: str, text: str, **options: Any) -> str:
        """The completion text; `options` are OpenAI's (max_tokens, temperature, top_p, stop, seed) or use_template."""
        body = {"model": prompt, "prompt": text, **options}
        return self._call("POST", "/v1/completions", json=body)["choices"][0]["text"]

    def chat(self, prompt: str, messages: list[dict[str, str]], **options: Any) -> str:
        body = {"model": prompt, "messages": messages, **options}
        return self._call("POST", "/v1/chat/completions", json=body)["choices"][0]["message"]["content"]

    # --- admin --------------------------------------------------------------------------------------------------------
    def create_tenant(self, tenant: str) -> str:
        """A new tenant's API key (admin key needed)."""
        return self._call("POST", "/v1/tenants", json={"tenant": tenant})["api_key"]

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/healthz")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        _raise_for(response)
        return response.json()


def _raise_for(response: Any) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500]
    raise ServerError(response.status_code, message)

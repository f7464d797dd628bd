"""`softprompt serve`: serve every prompt in a registry on one frozen model over HTTP (OpenAI-compatible).

    softprompt serve --registry sqlite:///prompts.db --port 8000 --admin-key-env SOFTPROMPT_ADMIN_KEY

Tenants' API keys come from the registry (create them with the admin key: POST /v1/tenants, or `softprompt registry
tenant create`). Several replicas may share one PostgreSQL registry (--registry postgresql://...) behind any load
balancer: prompts registered through one are served by the others within a second. Binds 127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import os

from softprompt.cli.common import add_model_args, backbone_from_args
from softprompt.cli.options import port_number

DEFAULT_REGISTRY = "sqlite:///./registry.db"


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="serve registered prompts over HTTP (OpenAI-compatible)", description=__doc__)
    add_model_args(p)
    p.add_argument("--registry", default=os.environ.get("SOFTPROMPT_REGISTRY", DEFAULT_REGISTRY),
                   help=f"registry URL: sqlite:///PATH or postgresql://... (default $SOFTPROMPT_REGISTRY, else "
                   f"{DEFAULT_REGISTRY})")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--admin-key-env", default="SOFTPROMPT_ADMIN_KEY",
                   help="environment variable holding the admin key that manages tenants and reads /metrics "
                   "(default SOFTPROMPT_ADMIN_KEY; unset: no tenant management over HTTP)")  # fmt: skip
    p.add_argument("--max-batch", type=int, default=64, help="rows per forward pass (default 64)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill (default 5 ms)")
    p.add_argument("--max-queue", type=int, default=4096, help="rows waiting before requests get 429 (default 4096)")
    p.add_argument("--prefix-cache-mb", type=int, default=1024,
                   help="memory for cached prompt keys/values (default 1024; 0: off)")  # fmt: skip
    p.add_argument("--prompt-cache", type=int, default=1024, help="loaded artifacts kept in memory (default 1024)")
    p.add_argument("--max-texts", type=int, default=64, help="texts per request (default 64)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="largest max_tokens accepted (default 512)")
    p.add_argument("--max-body-mb", type=float, default=8.0, help="largest request body (default 8 MB)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a request answers 504 (default 120)")
    p.add_argument("--body-timeout", type=float, default=60.0,
                   help="seconds a client has to send its whole request body, else 408 (default 60)")  # fmt: skip
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.serving.app import ServerLimits, create_app
    from softprompt.serving.engine import Engine, EngineConfig

    if min(args.max_batch, args.max_queue, args.prompt_cache, args.max_texts, args.max_new_tokens) < 1:
        raise ValueError("--max-batch, --max-queue, --prompt-cache, --max-texts and --max-new-tokens must be positive")
    if args.max_wait_ms < 0 or args.prefix_cache_mb < 0 or min(args.max_body_mb, args.timeout, args.body_timeout) <= 0:
        raise ValueError("--max-wait-ms and --prefix-cache-mb must be >= 0, --max-body-mb, --timeout and "
                         "--body-timeout positive")  # fmt: skip
    admin_key = os.environ.get(args.admin_key_env) or None
    registry = open_registry(args.registry)
    backbone = backbone_from_args(args)
    config = EngineConfig(max_batch_rows=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue_rows=args.max_queue,
                          prefix_cache=args.prefix_cache_mb > 0,
                          prefix_cache_bytes=args.prefix_cache_mb << 20)  # fmt: skip
    limits = ServerLimits(max_body_bytes=int(args.max_body_mb * 2**20), max_texts=args.max_texts,
                          max_new_tokens=args.max_new_tokens, request_timeout_s=args.timeout,
                          body_timeout_s=args.body_timeout)  # fmt: skip
    engine = Engine(backbone, prompt_cache(registry, args.prompt_cache), config)
    app = create_app(engine, registry, admin_key=admin_key, limits=limits)
    print(f"serving prompts from {args.registry} on {backbone.name} (fingerprint {backbone.fingerprint}) at "
          f"http://{args.host}:{args.port}" + ("" if admin_key else f" (no admin key: ${args.admin_key_env} unset)"),
          flush=True)  # fmt: skip
    import uvicorn

    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        engine.close()
        registry.close()
    return 0


def open_registry(url: str):
    from softprompt.serving.registry import open_registry as open_url

    return open_url(url)


def prompt_cache(registry, capacity: int):
    from softprompt.serving.registry import PromptCache

    return PromptCache(registry, capacity)

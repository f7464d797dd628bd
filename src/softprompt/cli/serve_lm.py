"""`softprompt serve-lm`: serve a frozen model as a forward-only inference API for black-box prompt search.

Clients (`softprompt.remote.client.RemoteEvaluator`, `softprompt blackbox --endpoint`) send token ids and prompt
embeddings and get label scores back; weights and gradients never leave the process. It binds 127.0.0.1 and
answers only requests whose Host header names an allowed host (loopback names, plus --allowed-host). With
--api-key-env NAME every route but /healthz needs `Authorization: Bearer <the key in $NAME>`. There is no TLS: to
serve beyond this machine, put it behind a proxy that adds TLS.
"""

from __future__ import annotations

import argparse

from softprompt.cli.common import add_api_key_arg, add_model_args, api_key_from_env, backbone_from_args
from softprompt.cli.options import port_number, positive_int


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="serve a frozen model for remote black-box tuning", description=__doc__)
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8765, help="port to listen on, 1-65535 (default 8765)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="also accept requests whose Host header names NAME (repeatable; '*': any host)")  # fmt: skip
    add_api_key_arg(p, "require")
    p.add_argument(
        "--chunk-rows", type=positive_int, default=64, help="rows per forward pass (bounds memory; default 64)"
    )
    p.add_argument("--max-rows", type=positive_int, default=8192, help="prompts x examples accepted per request")
    p.add_argument("--max-work-tokens", type=positive_int, default=2**20,
                   help="token positions (rows x (prompt + text)) one request may send through the model")  # fmt: skip
    p.add_argument("--concurrency", type=positive_int, default=4, help="requests doing model work at once (default 4)")
    p.add_argument("--body-timeout", type=float, default=60.0, help="seconds a client has to send its request body")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from softprompt.remote.server import LOOPBACK_HOSTS, Limits, create_app

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    api_key = api_key_from_env(args.api_key_env)
    limits = Limits(max_rows=args.max_rows, chunk_rows=args.chunk_rows, max_work_tokens=args.max_work_tokens,
                    concurrency=args.concurrency, body_timeout_s=args.body_timeout)  # fmt: skip
    hosts = [*LOOPBACK_HOSTS, *([args.host] if args.host not in ("0.0.0.0", "::") else []), *args.allowed_host]
    backbone = backbone_from_args(args)
    app = create_app(backbone, limits, allowed_hosts=hosts, api_key=api_key)
    print(
        f"serving {backbone.name} (D={backbone.hidden_size}, {backbone.num_layers} layers, "
        f"fingerprint {backbone.fingerprint}) at http://{args.host}:{args.port}"
        f"{'; API key required' if api_key else ''}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_keep_alive=5)
    return 0

"""`softprompt serve-lm`: serve a frozen model as a forward-only inference API for black-box prompt search.

Clients (`softprompt.remote.client.RemoteEvaluator`) send token ids and prompt embeddings and get label scores
back; weights and gradients never leave the process. There is no authentication: keep it on 127.0.0.1 or behind
a proxy that adds it.
"""

from __future__ import annotations

import argparse

from softprompt.cli.common import add_model_args, backbone_from_args
from softprompt.cli.options import port_number, positive_int


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="serve a frozen model for remote black-box tuning", description=__doc__)
    add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8765, help="port to listen on (default 8765)")
    p.add_argument(
        "--chunk-rows", type=positive_int, default=64, help="rows per forward pass (bounds memory; default 64)"
    )
    p.add_argument("--max-rows", type=positive_int, default=8192, help="prompts x examples accepted per request")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from softprompt.remote.server import Limits, create_app

    if args.chunk_rows < 1 or args.max_rows < 1:
        raise ValueError("--chunk-rows and --max-rows must be positive")
    backbone = backbone_from_args(args)
    app = create_app(backbone, Limits(max_rows=args.max_rows, chunk_rows=args.chunk_rows))
    print(
        f"serving {backbone.name} (D={backbone.hidden_size}, {backbone.num_layers} layers, "
        f"fingerprint {backbone.fingerprint}) at http://{args.host}:{args.port}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0

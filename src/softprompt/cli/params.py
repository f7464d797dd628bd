"""`softprompt params --model CONFIG`: trainable parameters of every prompt method on a model, from its config alone.

No weights are loaded: the model's shape comes from a shipped config (t5-small/base/large, bloomz-560m/1b7/3b,
smollm2-135m, gemma-3-270m), a config.json (file or folder) or a hub id, and each method counts itself
(`PromptConfig.count_parameters`), so a new method appears here without any change to this file. Besides each
method's defaults, the settings the ULPT paper reports are listed (`PAPER_SETTINGS`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

# Extra rows at the ULPT paper's settings (each method also gets a row with its own defaults).
PAPER_SETTINGS: dict[str, list[dict[str, Any]]] = {
    "ulpt": [{"rank": r} for r in (2, 16, 64, 256)],
    "dpt": [{"rank": r} for r in (10, 64, 256)],
    "dept": [{"prompt_len": 60, "rank": 30}],
}


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="parameter counts of every method on a model (config only)", description=__doc__)
    p.add_argument("--model", required=True, help="shipped config name, config.json file or folder, or hub id")
    p.add_argument("--prompt-len", type=int, default=100, help="prompt length n (default 100, the paper's)")
    p.add_argument("--max-length", type=int, default=256, help="max text tokens (DePT's s; default 256)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def rows(model: str, prompt_len: int = 100, max_length: int = 256) -> list[dict[str, Any]]:
    """One row per method (its defaults at `prompt_len`) and per paper setting."""
    from softprompt.models.shapes import load_shape
    from softprompt.prompts import REGISTRY

    if prompt_len <= 0:
        raise ValueError(f"--prompt-len must be positive, got {prompt_len}")
    shape = load_shape(model, max_length)
    out = []
    for method, (config_class, _) in REGISTRY.items():
        own = {"prompt_len": prompt_len} if "prompt_len" not in config_class.__dataclass_fields__ else {}
        settings = [{}, *PAPER_SETTINGS.get(method, [])]
        for options in settings:
            values = {"prompt_len": prompt_len, **own, **options}
            if method == "dept" and not options:
                values.pop("prompt_len")  # DePT's own default m (60): its budget equals PT's at n = 100
            config = config_class(**values)
            try:
                count: int | str = config.count_parameters(shape)
            except ValueError as err:  # a setting the model cannot take (rank above D, ...)
                count = f"n/a: {err}"
            shown = {k: v for k, v in config.settings().items() if k in ("prompt_len", *options, "rank", "dim")}
            row = {"method": method, "settings": shown, "trainable_parameters": count}
            if row not in out:  # a method's defaults may be one of the paper's settings
                out.append(row)
    return out


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from softprompt.models.shapes import load_shape

    shape = load_shape(args.model, args.max_length)
    table = rows(args.model, args.prompt_len, args.max_length)
    if args.json:
        print(json.dumps({"model": {"name": args.model, **asdict(shape)}, "rows": table}))
        return 0
    print(f"{args.model}: D={shape.hidden_size}, {shape.num_layers} layers, "
          f"{shape.num_kv_heads} key/value heads of width {shape.head_dim}; n={args.prompt_len}, "
          f"max text length {args.max_length}")  # fmt: skip
    width = max(len(r["method"]) for r in table)
    for r in table:
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
        count = r["trainable_parameters"]
        shown = f"{count:>12,}" if isinstance(count, int) else f"{count:>12}"
        print(f"{r['method']:<{width}}  {shown}  {settings}")
    return 0

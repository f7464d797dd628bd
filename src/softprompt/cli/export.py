"""`softprompt export DIR --to peft|embeds OUT`: a saved prompt in another engine's format.

    --to peft     a PEFT prompt-tuning adapter: PeftModel.from_pretrained(model, OUT) gives the same scores
    --to embeds   the materialised (n, D) prompt as safetensors, with the lines a vLLM user runs (prompt_embeds)

Only prompts that are input-layer vectors in front of a causal LM's text (prompt_tuning, ulpt, bbt) fit these
formats; others are refused with one line.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="export a saved prompt to PEFT or to prompt_embeds (vLLM)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("dir", help="artifact folder")
    p.add_argument("--to", required=True, choices=("peft", "embeds"), help="the format to write")
    p.add_argument("out", help="output folder")
    p.add_argument("--base-model", help="peft: base_model_name_or_path to record (default: the tuned-on model's name)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in OUT")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from softprompt.artifact import PromptArtifact
    from softprompt.cli import print_json
    from softprompt.serving.export import export_embeds, export_peft

    artifact = PromptArtifact.from_pretrained(args.dir)
    if args.to == "peft":
        out = export_peft(artifact, args.out, base_model=args.base_model, overwrite=args.overwrite)
    else:
        out = export_embeds(artifact, args.out, overwrite=args.overwrite)
    print_json({"format": args.to, "method": artifact.method, "prompt_len": artifact.prompt.prompt_len,
                "out": str(out)})  # fmt: skip
    return 0

"""`softprompt registry add|list|show|rm|public|export|import|tenant`: manage the prompt registry a server reads.

The registry is a database (default sqlite:///./registry.db, or $SOFTPROMPT_REGISTRY, or --registry URL; a
postgresql://... URL for several server replicas). A running server sees every change within a second: adding a
prompt never needs a restart. Prompts are addressed as NAME, NAME@VERSION or OWNER/NAME[@VERSION] (another tenant's
public prompt). Every command prints JSON.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_REGISTRY = "sqlite:///./registry.db"


def registry_url(args: argparse.Namespace) -> str:
    return args.registry or os.environ.get("SOFTPROMPT_REGISTRY") or DEFAULT_REGISTRY


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    from softprompt.cli.common import add_model_args

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        metavar="URL",
        help=f"sqlite:///PATH, a path, or postgresql://... (default: $SOFTPROMPT_REGISTRY, else {DEFAULT_REGISTRY})",
    )
    owner = argparse.ArgumentParser(add_help=False, parents=[common])
    owner.add_argument("--tenant", required=True, help="the tenant the prompt belongs to (or is seen by)")

    p = sub.add_parser(name, help="manage the prompt registry (add, list, show, rm, export, import, tenant)",
                       description=__doc__)  # fmt: skip
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    a = actions.add_parser("add", parents=[owner], help="store an artifact folder as the next version of a prompt")
    a.add_argument("dir", help="artifact folder (prompt.json + prompt.safetensors)")
    a.add_argument("--name", required=True, help="prompt name (letters, digits, '.', '_', '-')")
    a.add_argument("--public", action="store_true", default=None,
                   help="readable by every tenant, never writable (default: as the earlier versions)")  # fmt: skip
    a.set_defaults(run=run_add)

    ls = actions.add_parser("list", parents=[owner], help="the latest version of each prompt the tenant sees")
    ls.add_argument("--own", action="store_true", help="only the tenant's own prompts, not others' public ones")
    ls.set_defaults(run=run_list)

    s = actions.add_parser("show", parents=[owner], help="one prompt: record, method, config, task, metrics")
    s.add_argument("ref", help="NAME, NAME@VERSION or OWNER/NAME[@VERSION]")
    s.add_argument("--versions", action="store_true", help="list every stored version of the tenant's own prompt")
    s.set_defaults(run=run_show)

    rm = actions.add_parser("rm", parents=[owner], help="delete a prompt (every version, or --version)")
    rm.add_argument("name")
    rm.add_argument("--version", type=int, help="only this version")
    rm.set_defaults(run=run_rm)

    pub = actions.add_parser("public", parents=[owner], help="make a prompt public (or private with --off)")
    pub.add_argument("name")
    pub.add_argument("--off", action="store_true", help="make it private again")
    pub.set_defaults(run=run_public)

    e = actions.add_parser("export", parents=[owner], help="write a stored prompt as an artifact folder")
    e.add_argument("ref", help="NAME, NAME@VERSION or OWNER/NAME[@VERSION]")
    e.add_argument("out", help="folder to write (prompt.json + prompt.safetensors)")
    e.add_argument("--overwrite", action="store_true", help="replace an artifact already in OUT")
    e.set_defaults(run=run_export)

    i = actions.add_parser("import", parents=[owner], help="register a PEFT prompt-tuning adapter")
    i.add_argument("dir", help="PEFT adapter folder (adapter_config.json + adapter_model.safetensors)")
    i.add_argument("--name", required=True, help="prompt name")
    i.add_argument("--task", help="built-in task the adapter was tuned for (template, labels, verbalizer)")
    i.add_argument("--public", action="store_true", default=None, help="readable by every tenant")
    i.add_argument("--allow-other-base-model", action="store_true",
                   help="import although the adapter was made for another model than --model")  # fmt: skip
    add_model_args(i, default=None)
    i.set_defaults(run=run_import)

    t = actions.add_parser("tenant", help="create, rotate, delete or list tenants (API keys are printed once)")
    t_actions = t.add_subparsers(dest="tenant_action", required=True, metavar="ACTION")
    for action, text in (
        ("create", "new tenant; prints its API key (the only time it is shown)"),
        ("rotate", "new API key for a tenant; the old one stops working"),
        ("rm", "delete a tenant, its key and all its prompts"),
    ):
        ta = t_actions.add_parser(action, parents=[common], help=text)
        ta.add_argument("tenant")
        ta.set_defaults(run=run_tenant)
    t_actions.add_parser("list", parents=[common], help="every tenant").set_defaults(run=run_tenant)


def _open(args: argparse.Namespace):
    from softprompt.serving.registry import open_registry

    return open_registry(registry_url(args))


def _summary(record) -> dict:
    from softprompt.artifact import PromptArtifact

    artifact = PromptArtifact.from_bytes(record.blob)
    return {
        **record.describe(),
        "config": artifact.prompt.config.to_dict(),
        "model": artifact.model,
        "task": artifact.task.name if artifact.task else None,
        "metrics": artifact.metrics,
    }


def run_add(args: argparse.Namespace) -> int:
    from softprompt.artifact import PromptArtifact
    from softprompt.cli import print_json

    blob = PromptArtifact.from_pretrained(args.dir).to_bytes()
    with _open(args) as registry:
        print_json(registry.put(args.tenant, args.name, blob, public=args.public).describe())
    return 0


def run_list(args: argparse.Namespace) -> int:
    from softprompt.cli import print_json

    with _open(args) as registry:
        for record in registry.list(args.tenant, include_public=not args.own):
            print_json(record.describe())
    return 0


def run_show(args: argparse.Namespace) -> int:
    from softprompt.cli import print_json

    with _open(args) as registry:
        if args.versions:
            for record in registry.versions(args.tenant, args.ref):
                print_json(record.describe())
        else:
            print_json(_summary(registry.resolve(args.tenant, args.ref)))
    return 0


def run_rm(args: argparse.Namespace) -> int:
    from softprompt.cli import print_json

    with _open(args) as registry:
        removed = registry.delete(args.tenant, args.name, args.version)
    print_json({"tenant": args.tenant, "name": args.name, "version": args.version, "removed": removed})
    return 0


def run_public(args: argparse.Namespace) -> int:
    from softprompt.cli import print_json

    with _open(args) as registry:
        registry.set_public(args.tenant, args.name, not args.off)
    print_json({"tenant": args.tenant, "name": args.name, "public": not args.off})
    return 0


def run_export(args: argparse.Namespace) -> int:
    from softprompt.artifact import METADATA, TENSORS, PromptArtifact
    from softprompt.cli import print_json

    out = Path(args.out)
    present = [name for name in (METADATA, TENSORS) if (out / name).exists()]
    if present and not args.overwrite:
        raise FileExistsError(f"{out} already holds an artifact ({', '.join(present)}); pass --overwrite to replace")
    with _open(args) as registry:
        record = registry.resolve(args.tenant, args.ref)
    PromptArtifact.from_bytes(record.blob).save_pretrained(out)
    print_json({**record.describe(), "out": str(out)})
    return 0


def run_import(args: argparse.Namespace) -> int:
    from softprompt.cli import print_json
    from softprompt.cli.common import backbone_from_args
    from softprompt.serving.export import import_peft

    if not args.model:
        raise ValueError("registry import needs --model: the model the adapter was tuned for")
    task = None
    if args.task:
        from softprompt.tasks.builtin import get_task

        task = get_task(args.task)
    artifact = import_peft(
        args.dir, backbone_from_args(args), task=task, allow_other_base_model=args.allow_other_base_model
    )
    with _open(args) as registry:
        print_json(registry.put(args.tenant, args.name, artifact.to_bytes(), public=args.public).describe())
    return 0


def run_tenant(args: argparse.Namespace) -> int:
    from softprompt.cli import print_json

    with _open(args) as registry:
        if args.tenant_action == "create":
            print_json({"tenant": args.tenant, "api_key": registry.create_tenant(args.tenant)})
        elif args.tenant_action == "rotate":
            print_json({"tenant": args.tenant, "api_key": registry.rotate_key(args.tenant)})
        elif args.tenant_action == "rm":
            registry.delete_tenant(args.tenant)
            print_json({"tenant": args.tenant, "deleted": True})
        else:
            for tenant in registry.tenants():
                print_json({"tenant": tenant})
    return 0

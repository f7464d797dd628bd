"""`softprompt registry ...` and `softprompt export ...` end to end on a tiny model saved to disk."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from softprompt.artifact import PromptArtifact
from softprompt.cli import main
from softprompt.prompts import REGISTRY, build_prompt
from softprompt.serving.registry import open_registry


def save_artifact(folder, method: str, seed: int, model: dict):
    config_class = REGISTRY[method][0]
    extra = {"num_layers": 2, "dim": 4, "projection_stds": [0.05, 0.05]} if method == "bbtv2" else {}
    prompt = build_prompt(config_class(prompt_len=4, **extra), model["hidden_size"])
    with torch.no_grad():
        for tensor in prompt.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=torch.Generator().manual_seed(seed)))
    artifact = PromptArtifact(prompt, model, metrics={"seed": seed})
    artifact.save_pretrained(folder)
    return artifact


MODEL = {"name": "tiny", "kind": "causal", "hidden_size": 32, "num_layers": 2, "fingerprint": "0123456789abcdef"}


def run_cli(capsys, *argv: str) -> tuple[int, list[dict], str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def test_registry_commands(capsys, tmp_path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path}/reg.db"
    reg = ["--registry", url]
    one = save_artifact(tmp_path / "one", "ulpt", 1, MODEL)
    save_artifact(tmp_path / "two", "prompt_tuning", 2, MODEL)

    code, [created], _ = run_cli(capsys, "registry", "tenant", "create", "acme", *reg)
    assert code == 0 and created["tenant"] == "acme" and len(created["api_key"]) >= 43
    with open_registry(url) as registry:
        assert registry.tenant_for_key(created["api_key"]) == "acme"

    code, [rec], _ = run_cli(capsys, "registry", "add", tmp_path / "one", "--tenant", "acme", "--name", "s", *reg)
    assert code == 0 and rec["key"] == "acme/s@1" and rec["method"] == "ulpt" and not rec["public"]
    code, [rec], _ = run_cli(capsys, "registry", "add", tmp_path / "two", "--tenant", "acme", "--name", "s", *reg)
    assert rec["key"] == "acme/s@2" and rec["method"] == "prompt_tuning"
    run_cli(capsys, "registry", "tenant", "create", "globex", *reg)
    run_cli(capsys, "registry", "add", tmp_path / "one", "--tenant", "globex", "--name", "g", "--public", *reg)

    # the environment variable names the registry when --registry is not given
    monkeypatch.setenv("SOFTPROMPT_REGISTRY", url)
    code, listed, _ = run_cli(capsys, "registry", "list", "--tenant", "acme")
    assert code == 0 and [r["key"] for r in listed] == ["acme/s@2", "globex/g@1"]
    _, listed, _ = run_cli(capsys, "registry", "list", "--tenant", "acme", "--own")
    assert [r["key"] for r in listed] == ["acme/s@2"]

    code, [shown], _ = run_cli(capsys, "registry", "show", "s@1", "--tenant", "acme")
    assert code == 0 and shown["config"]["method"] == "ulpt" and shown["metrics"] == {"seed": 1}
    _, versions, _ = run_cli(capsys, "registry", "show", "s", "--tenant", "acme", "--versions")
    assert [v["version"] for v in versions] == [1, 2]

    code, _, _ = run_cli(capsys, "registry", "export", "s@1", tmp_path / "back", "--tenant", "acme")
    assert code == 0
    back = PromptArtifact.from_pretrained(tmp_path / "back")
    assert torch.equal(back.prompt.vectors(), one.prompt.vectors())
    code, _, err = run_cli(capsys, "registry", "export", "s@1", tmp_path / "back", "--tenant", "acme")
    assert code == 2 and "--overwrite" in err

    # isolation and errors: one line, exit 2
    code, _, err = run_cli(capsys, "registry", "show", "acme/s", "--tenant", "globex")
    assert code == 2 and "not found" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "registry", "rm", "s", "--tenant", "globex")
    assert code == 2 and "not found" in err
    code, _, err = run_cli(capsys, "registry", "add", tmp_path / "nothing", "--tenant", "acme", "--name", "x")
    assert code == 2 and "not a softprompt artifact" in err
    code, _, err = run_cli(capsys, "registry", "add", tmp_path / "one", "--tenant", "acme", "--name", "a/b")
    assert code == 2 and "invalid prompt name" in err
    code, _, err = run_cli(capsys, "registry", "tenant", "create", "acme")
    assert code == 2 and "already exists" in err

    code, [pub], _ = run_cli(capsys, "registry", "public", "s", "--tenant", "acme")
    assert code == 0 and pub["public"]
    _, [shown], _ = run_cli(capsys, "registry", "show", "acme/s", "--tenant", "globex")
    assert shown["key"] == "acme/s@2"

    code, [removed], _ = run_cli(capsys, "registry", "rm", "s", "--tenant", "acme", "--version", "1")
    assert code == 0 and removed["removed"] == 1
    code, [rotated], _ = run_cli(capsys, "registry", "tenant", "rotate", "acme")
    assert code == 0 and rotated["api_key"] != created["api_key"]
    code, _, _ = run_cli(capsys, "registry", "tenant", "rm", "acme")
    _, tenants, _ = run_cli(capsys, "registry", "tenant", "list")
    assert code == 0 and tenants == [{"tenant": "globex"}]
    _, listed, _ = run_cli(capsys, "registry", "list", "--tenant", "acme")
    assert [r["key"] for r in listed] == ["globex/g@1"]


def test_registry_add_for_an_unknown_tenant_is_refused(capsys, tmp_path) -> None:
    """No prompt without an owner: a tenant created later under that name does not find (take over) it."""
    reg = ["--registry", f"sqlite:///{tmp_path}/reg.db"]
    save_artifact(tmp_path / "a", "ulpt", 1, MODEL)
    code, out, err = run_cli(capsys, "registry", "add", tmp_path / "a", "--tenant", "ghost", "--name", "orphan", *reg)
    assert code == 2 and out == [] and len(err.strip().splitlines()) == 1
    assert "unknown tenant 'ghost'; create it with `softprompt registry tenant create ghost`" in err
    _, tenants, _ = run_cli(capsys, "registry", "tenant", "list", *reg)
    assert tenants == []
    code, [created], _ = run_cli(capsys, "registry", "tenant", "create", "ghost", *reg)
    assert code == 0 and created["tenant"] == "ghost"
    code, listed, _ = run_cli(capsys, "registry", "list", "--tenant", "ghost", "--own", *reg)
    assert code == 0 and listed == []
    code, [rec], _ = run_cli(capsys, "registry", "add", tmp_path / "a", "--tenant", "ghost", "--name", "orphan", *reg)
    assert code == 0 and rec["key"] == "ghost/orphan@1"


def test_export_command_and_refusals(capsys, tmp_path) -> None:
    artifact = save_artifact(tmp_path / "ulpt", "ulpt", 3, MODEL)
    code, [done], _ = run_cli(capsys, "export", tmp_path / "ulpt", "--to", "peft", tmp_path / "peft")
    assert code == 0 and done["prompt_len"] == 4
    torch.testing.assert_close(
        load_file(tmp_path / "peft" / "adapter_model.safetensors")["prompt_embeddings"], artifact.prompt.vectors()
    )
    code, _, _ = run_cli(capsys, "export", tmp_path / "ulpt", "--to", "embeds", tmp_path / "emb")
    assert code == 0 and (tmp_path / "emb" / "README.md").exists()
    save_artifact(tmp_path / "deep", "bbtv2", 4, MODEL)
    code, _, err = run_cli(capsys, "export", tmp_path / "deep", "--to", "peft", tmp_path / "p2")
    assert code == 2 and "deep prompts" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p2").exists()


def test_registry_import_of_a_peft_adapter(capsys, tmp_path, tiny_model_dir) -> None:
    pytest.importorskip("peft")
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=6),
    )
    model.save_pretrained(tmp_path / "adapter")
    url = f"sqlite:///{tmp_path}/reg.db"
    with open_registry(url) as registry:
        registry.create_tenant("acme")
    argv = ["registry", "import", tmp_path / "adapter", "--tenant", "acme", "--name", "pt", "--model", tiny_model_dir]
    code, [rec], err = run_cli(capsys, *argv, "--registry", url, "--task", "sst2")
    assert code == 0, err
    assert rec["key"] == "acme/pt@1" and rec["method"] == "prompt_tuning"
    with open_registry(url) as registry:
        artifact = PromptArtifact.from_bytes(registry.get("acme", "pt").blob)
    stored = load_file(tmp_path / "adapter" / "adapter_model.safetensors")["prompt_embeddings"]
    torch.testing.assert_close(artifact.prompt.materialize().embeds[0], stored)
    assert artifact.task is not None and artifact.task.name == "sst2"
    code, _, err = run_cli(capsys, "registry", "import", tmp_path / "adapter", "--tenant", "acme", "--name", "pt",
                           "--registry", url)  # fmt: skip
    assert code == 2 and "--model" in err


def test_registry_import_refuses_an_adapter_exported_from_another_model(capsys, tmp_path) -> None:
    """`export --to peft` of a tiny-llama prompt, imported with --model tiny-gemma3 (same hidden size): refused with
    one line naming both models and the opt-out, which then imports it."""
    from softprompt.models.tiny import tiny_backbone_named

    llama = tiny_backbone_named("tiny-llama").describe()
    save_artifact(tmp_path / "a", "ulpt", 5, llama)
    reg = ["--registry", f"sqlite:///{tmp_path}/reg.db", "--tenant", "acme"]
    assert run_cli(capsys, "export", tmp_path / "a", "--to", "peft", tmp_path / "out_peft")[0] == 0
    assert run_cli(capsys, "registry", "tenant", "create", "acme", *reg[:2])[0] == 0
    argv = ["registry", "import", tmp_path / "out_peft", "--name", "imp", *reg]
    code, out, err = run_cli(capsys, *argv, "--model", "tiny-gemma3")
    [error] = [line for line in err.splitlines() if "error:" in line]  # (beside the model's dtype line)
    assert code == 2 and out == [] and error.endswith("pass --allow-other-base-model to import it anyway")
    assert "exported from 'tiny-llama'" in error and "not from 'tiny-gemma3'" in error
    assert run_cli(capsys, "registry", "list", *reg)[1] == []
    code, [rec], err = run_cli(capsys, *argv, "--model", "tiny-llama")
    assert code == 0 and rec["key"] == "acme/imp@1", err
    code, [rec], err = run_cli(capsys, *argv, "--model", "tiny-gemma3", "--allow-other-base-model")
    assert code == 0 and rec["key"] == "acme/imp@2", err
    with open_registry(reg[1]) as registry:
        stored = [PromptArtifact.from_bytes(registry.get("acme", "imp", v).blob).model for v in (1, 2)]
    assert [m["name"] for m in stored] == ["tiny-llama", "tiny-gemma3"]
    assert stored[0]["fingerprint"] == llama["fingerprint"]

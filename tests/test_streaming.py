"""Streaming generation: `Backbone.generate(on_step=...)` reports each row's tokens from the one decoding loop, and
`TextStream` turns them into deltas that join to exactly the finished text (multi-byte characters split over tokens,
stop strings never sent in part)."""

from __future__ import annotations

import pytest
import torch

from softprompt.models import GenerationOptions
from softprompt.models.backbone import TextStream, cut_at_stop
from softprompt.models.inputs import PromptInputs
from softprompt.models.tiny import tiny_backbone


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_on_step_reports_every_token_of_every_row_from_the_decoding_loop(arch: str) -> None:
    bb = tiny_backbone(arch, init_scale=0.5) if arch == "llama" else tiny_backbone(arch)
    texts = ["the movie was good", "bad", "it is not fun at all"]
    prompt = PromptInputs(embeds=torch.randn(3, 2, bb.hidden_size, generator=torch.Generator().manual_seed(0)))
    options = GenerationOptions(max_new_tokens=6)
    calls: list[tuple[int, list[int]]] = []
    with torch.no_grad():
        outs = bb.generate(texts, prompt, options=options, on_step=lambda row, ids: calls.append((row, list(ids))))
        assert outs == bb.generate(texts, prompt, options=options)  # the callback changes nothing
    for row, out in enumerate(outs):
        seen = [ids for r, ids in calls if r == row]
        assert [len(ids) for ids in seen] == list(range(1, len(seen) + 1))  # one call per new token, in order
        assert len(seen) <= options.max_new_tokens
        assert bb.tokenizer.decode(seen[-1] if seen else [], skip_special_tokens=True) == out  # none: EOS at once
    lengths = [sum(1 for r, _ in calls if r == row) for row in range(len(texts))]
    assert max(lengths) == options.max_new_tokens  # a row that never ends is reported at every step
    # rows are reported step by step, interleaved, not one finished row after another
    assert len({r for r, _ in calls[: len(texts)]}) > 1


def stream_all(tokenizer, ids: list[int], stop: tuple[str, ...]) -> tuple[list[str], str]:
    """Feed `ids` one token at a time as a decoding loop would (stopping at a stop string); the deltas and the text
    the loop returns."""
    stream, deltas, upto = TextStream(tokenizer, stop), [], len(ids)
    for k in range(1, len(ids) + 1):
        deltas.append(stream.push(ids[:k]))
        if cut_at_stop(tokenizer.decode(ids[:k], skip_special_tokens=True), stop)[1]:
            upto = k
            break
    final = cut_at_stop(tokenizer.decode(ids[:upto], skip_special_tokens=True), stop)[0]
    deltas.append(stream.finish(final))
    return deltas, final


@pytest.fixture(scope="module")
def byte_bpe():
    """A byte-level BPE tokenizer (as GPT-2, Llama 3, SmolLM2): characters beyond ASCII span several tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<eos>"])  # fmt: skip
    tok.train_from_iterator(["the movie was good and the film was bad", "STOP sign"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")


@pytest.mark.parametrize("stop", [(), ("STOP",), ("wörld 🙂 x",), ("🙂",)])
def test_text_stream_deltas_join_to_the_final_text_with_multibyte_tokens_and_stops(byte_bpe, stop) -> None:
    text = "the movie was gööd 🙂 and the wörld 🙂 was STOP bad — 日本"
    ids = byte_bpe(text)["input_ids"]
    assert len(byte_bpe("🙂")["input_ids"]) > 1  # the emoji's bytes are split over tokens: U+FFFD while partial
    deltas, final = stream_all(byte_bpe, ids, stop)
    assert "".join(deltas) == final
    assert not any("\ufffd" in d for d in deltas)
    sent = ""
    for d in deltas[:-1]:  # before the row ended: never a stop string, whole or in part at the end
        sent += d
        assert not any(s in sent for s in stop)
    assert sum(1 for d in deltas if d) > 3  # streamed in pieces, not held to the end
    if stop and stop[0] in text:
        assert final == text[: text.find(stop[0])]


def test_text_stream_holds_back_the_start_of_a_stop_string_until_it_is_decided() -> None:
    tok = tiny_backbone().tokenizer
    ids = tok("the movie was good and fun")["input_ids"]
    stream = TextStream(tok, ("good and bad",))
    pieces = [stream.push(ids[:k]) for k in range(1, len(ids) + 1)]
    # "good", "good and" might begin the stop string: held until "fun" shows it does not
    assert pieces == ["the", " movie", " was", "", "", " good and fun"]
    assert stream.finish("the movie was good and fun") == ""

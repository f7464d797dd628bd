"""Encoder-decoder LMs (T5, Flan-T5, mT5, BART, ...): the prompt is prepended to the encoder input embeddings.

Encoder row: [prompt (n)] [text tokens (T5's tokenizer appends </s>)] [padding].
Decoder row: [decoder start] [continuation tokens except the last] [padding] — the answer is read on the decoder
side: position j predicts continuation token j, so the first decoder step predicts the label word.
Deep prompts and key/value prefixes go into the encoder blocks only (the prefix into each block's self-attention,
where T5's relative position bias sees its slots as the positions before the text; BART-style learned positions
are computed inside the encoder, so there the slots have no position and the text keeps its own); the decoder sees
the prompt through cross-attention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from softprompt.models.backbone import (
    Backbone,
    Decoded,
    EncodedBatch,
    GenerationOptions,
    Inserted,
    OnStep,
    cache_keyword,
    gather_positions,
    pad_2d,
)
from softprompt.models.inputs import PromptInputs


class Seq2SeqBackbone(Backbone):
    kind = "seq2seq"
    prompt_offset = 0

    _output_scale: float | None = None

    def _find_layers(self) -> nn.ModuleList:
        encoder = self.model.get_encoder()
        for name in ("block", "layers", "layer"):  # T5 family, BART family, others
            stack = getattr(encoder, name, None)
            if isinstance(stack, nn.ModuleList):
                return stack
        raise ValueError(f"cannot find the encoder blocks of {type(self.model).__name__}")

    @property
    def decoder_start_token_id(self) -> int:
        start = getattr(self.config, "decoder_start_token_id", None)
        return self.tokenizer.pad_token_id if start is None else start

    def encode(self, texts: Sequence[str], continuations: Sequence[Sequence[int]] | None = None) -> EncodedBatch:
        continuations = continuations or [[] for _ in texts]
        rows, dec_rows, positions, truncated = [], [], [], 0
        for text, cont in zip(texts, continuations, strict=True):
            ids, cut = self._truncate(self._token_ids(text), reserve=0)
            truncated += cut
            rows.append(ids)
            dec_rows.append([self.decoder_start_token_id, *cont[:-1]])  # the last token is predicted, never fed
            positions.append(list(range(max(1, len(cont)))))
        input_ids, attention_mask = pad_2d(rows, self.tokenizer.pad_token_id)
        decoder_input_ids, decoder_attention_mask = pad_2d(dec_rows, self.tokenizer.pad_token_id)
        score_index, score_mask = pad_2d(positions, 0)
        extras = {"decoder_input_ids": decoder_input_ids, "decoder_attention_mask": decoder_attention_mask}
        return EncodedBatch(input_ids, attention_mask, score_index, score_mask.bool(), extras, truncated)

    def _run(self, x: Inserted, batch: EncodedBatch) -> torch.Tensor:
        encoded = self.model.get_encoder()(inputs_embeds=x.embeds, attention_mask=x.mask).last_hidden_state
        return self._decode(encoded, x.mask, batch.extras["decoder_input_ids"], batch.extras["decoder_attention_mask"])

    def _read_out(self, hidden: torch.Tensor, batch: EncodedBatch, x: Inserted) -> torch.Tensor:
        return gather_positions(hidden, batch.score_index.to(self.device))  # decoder positions: the prompt is not there

    def logits(self, hidden: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        # Some T5 variants rescale decoder states by d_model**-0.5 before the LM head; apply the same factor.
        out = super().logits(hidden * self.output_scale, token_ids)
        bias = getattr(self.model, "final_logits_bias", None)  # BART family: a (1, V) buffer added after the head
        if bias is not None:
            out = out + (bias[0] if token_ids is None else bias[0, token_ids.to(self.device)])
        return out

    @property
    def output_scale(self) -> float:
        """The factor the model applies to decoder states before its LM head.

        Original T5 scales by d_model**-0.5 (T5 v1.1 does not; transformers keys this on `scale_decoder_outputs`,
        older versions and UMT5 on `tie_word_embeddings`, mT5 never scales). Rather than mirror every family's rule,
        measure it once on a one-token input by watching what reaches the LM head.
        """
        if self._output_scale is None:
            ids = torch.tensor([[self.decoder_start_token_id]], device=self.device)
            seen: dict[str, torch.Tensor] = {}
            hook = self.model.get_output_embeddings().register_forward_pre_hook(lambda _m, a: seen.update(x=a[0]))
            try:
                with torch.no_grad():
                    self.model(input_ids=ids, decoder_input_ids=ids, use_cache=False)
                    encoded = self.model.get_encoder()(input_ids=ids).last_hidden_state
                    raw = self._decode(encoded, torch.ones_like(ids), ids, torch.ones_like(ids))
            finally:
                hook.remove()
            for scale in (1.0, self.config.d_model**-0.5):
                # The candidates differ by a factor >= 2, so a loose tolerance is safe (and works in bf16/fp16).
                if torch.allclose(seen["x"].float(), raw.float() * scale, rtol=1e-2, atol=1e-6):
                    self._output_scale = scale
                    break
            else:
                raise ValueError(
                    f"{type(self.model).__name__} transforms decoder states before its LM head in a way "
                    "this adapter does not know"
                )
        return self._output_scale

    @torch.no_grad()
    def _generate(
        self, texts: list[str], prompt: PromptInputs | None, options: GenerationOptions, on_step: OnStep | None = None
    ) -> list[str]:
        """Batched decoding: the encoder runs once with the prompt in front of each text, the decoder steps with a
        key/value cache."""
        from transformers import DynamicCache, EncoderDecoderCache

        batch = self.encode(texts)
        x = self.insert(batch, prompt)
        plan = self._plan(x) if x.deep is not None or x.prefix is not None else None
        encoder = self.model.get_encoder()
        encoded = self._with_plan(plan, lambda: encoder(inputs_embeds=x.embeds, attention_mask=x.mask))
        cache = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        rows = len(texts)
        decoder = self.model.get_decoder()
        cache_name = cache_keyword(decoder.forward)
        token = torch.full((rows,), self.decoder_start_token_id, dtype=torch.long, device=self.device)
        choose = options.sampler()
        decoded = Decoded(self.tokenizer, rows, options.stop, on_step)
        for _ in range(options.max_new_tokens):
            hidden = decoder(
                input_ids=token[:, None],
                encoder_hidden_states=encoded.last_hidden_state,
                encoder_attention_mask=x.mask,
                use_cache=True,
                **{cache_name: cache},
            ).last_hidden_state[:, -1]
            token = choose(self.logits(hidden).float())
            if decoded.add(token):
                break
        return decoded.texts()

    # --- helpers -----------------------------------------------------------------------------------------------
    def _decode(
        self, encoded: torch.Tensor, encoder_mask: torch.Tensor, decoder_ids: torch.Tensor, decoder_mask: torch.Tensor
    ) -> torch.Tensor:
        out = self.model.get_decoder()(
            input_ids=decoder_ids.to(self.device),
            attention_mask=decoder_mask.to(self.device),
            encoder_hidden_states=encoded,
            encoder_attention_mask=encoder_mask,
            use_cache=False,
        )
        return out.last_hidden_state

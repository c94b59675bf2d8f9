"""Adaptive Co-attention Network for multimodal NER in tweets (Zhang, Fu, Liu, Huang, AAAI 2018).

The paper's section 3, top to bottom: outputs, character CNN, text encoder (word embeddings or a pretrained
transformer, then the BiLSTM), co-attention (word-guided visual attention, image-guided textual attention, gated
multimodal fusion, filtration gate), CRF, the pre-trained base and the heads. The image trunks that give the regions
(VGG-16, ResNet-152, CLIP ViT-B/32) and the precision they run in are in `vision_acn.py`; int8 quantisation of a
trunk is in `quantization_acn.py`; what `torch.export` traces instead of the eager input checks and BiLSTM is in
`torch_export_acn.py`.

How this file reads the paper where its text is ambiguous or garbled, each choice stated once here:
- The attention energies are written `tanh(W_v v_I ⊕ (W_h h_t + b))` with `W_α ∈ R^{1×2k}`, i.e. concatenation.
  Taken literally the word term is the same for every region and cancels in the softmax, so the attention could
  not depend on the word. The equation is the stacked-attention form of Yang et al. (2016), where `⊕` adds the
  vector to every column of the matrix; we use that sum (`W_α ∈ R^{1×k}`), which makes the attention word-guided.
  `k` defaults to the hidden size: the paper sets every dimension to it (its Table 4).
- `m̂_t = W_m̂ (h_t ⊕ u_t)` is linear in the decoder input, so `W_m̂` maps straight to the tag scores (the
  CRF's emission potentials); a second linear layer in between would add nothing.
- The character CNN computes `max_i tanh(C · chars[i:i+l] + b)`. tanh is increasing, so this equals tanh of the
  max-pooled convolution, which is what runs (one tanh per filter instead of one per window).
- CBCFiC ("no fusion gate ... directly concatenates the features from different modalities", then the filtration
  gate): `m_t = [v̂_t ; ĥ_t]`, the attended features themselves; the fusion's `tanh(W v̂_t + b)` and
  `tanh(W ĥ_t + b)` belong to the gate they feed and go with it. The filtration gate and `u_t` follow as in ACN.
- CBCFuC ("without the filtration gate ... we concatenate the fusion feature with the word feature"):
  `u_t = m_t`, the fused feature itself; `tanh(W_m m_t + b_m)` is part of the filtration step and goes with it.
- The paper truncates and pads every tweet to 35 words. Here every word of every tweet is encoded and scored, in
  training and evaluation (no gold entity is lost to truncation); `--max_train_length` in the training script
  truncates training tweets only, when asked.
Missing images: co-attention runs only on the tweets whose `image_mask` is True. A tweet without an image keeps
the multimodal feature `u_t = 0`, as if its filtration gate were closed (its attention maps and gates read 0), so
its tags come from `h_t` alone, the text-only model's path; its (absent) features are never read, so nothing can
become NaN.
"""

import contextlib
import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Concatenate, Literal, NamedTuple, ParamSpec, Protocol, TypeVar, cast, overload

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_acn import IGNORE_INDEX, INT8_CALIBRATION_FIELDS, AcnConfig, check_int8_calibration
from .pipeline_acn import custom_pipelines_entry, save_pipeline_code
from .quantization_acn import AcnInt8Calibration, int8_calibration, is_int8_calibrated
from .torch_export_acn import bilstm_for_export, check_in_graph, is_exporting
from .vision_acn import (
    AcnDerivedTrunks,
    backbone_regions,
    build_vision_backbone,
    check_pixel_values,
    effective_vision_precision,
    load_vision_state,
    parameter_versions,
    runnable_vision_precision,
    trunk_digest,
)

# Score given to forbidden transitions in constrained decoding; finite so that a row of them cannot give NaN.
FORBIDDEN_SCORE = -1e4
# Initial range of the embeddings and CRF scores, from the paper's U(-0.25, 0.25) for out-of-vocabulary words.
EMBEDDING_INIT_RANGE = 0.25
CRF_INIT_RANGE = 0.1
# Xavier gain of w_α. At gain 1 the attention over the 49 regions starts almost uniform, so every word of a tweet sees
# the same image average; the gates then learn to shut the image out long before the attention becomes selective
# (on the demo corpus ACN stayed at chance on image-decided entities for 40+ epochs). Starting selective, it found the
# figure there after about ten epochs and reached dev F1 100 by epoch 15-17.
VISUAL_SCORE_INIT_GAIN = 10.0
# Keyword arguments that transformers' Trainer passes to any model whose forward takes **kwargs.
TRAINER_KEYWORDS = frozenset({"num_items_in_batch"})


@dataclass
class AcnModelOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch, seq_len, decoder_input_size)`):
        The decoder input `[h_t ; u_t]` (text-only variants: `h_t`).
    visual_attentions (`torch.FloatTensor` of shape `(batch, seq_len, num_regions)`, with `output_attentions`):
        Word-guided attention over the image regions (row-major 7 x 7); padding rows are 0.
    textual_attentions (`torch.FloatTensor` of shape `(batch, seq_len, seq_len)`, with `output_attentions`):
        Image-guided attention of each word over all words of its tweet; padding rows and columns are 0.
    fusion_gates (`torch.FloatTensor` of shape `(batch, seq_len, hidden_size)`, with `output_attentions`):
        Weight of the visual feature in the fused feature (`fusion="gate"` only).
    filtration_gates (`torch.FloatTensor` of shape `(batch, seq_len)`, with `output_attentions`):
        How much of the multimodal feature reaches the decoder; 0 for tweets without an image.
    """

    last_hidden_state: torch.Tensor | None = None
    visual_attentions: torch.Tensor | None = None
    textual_attentions: torch.Tensor | None = None
    fusion_gates: torch.Tensor | None = None
    filtration_gates: torch.Tensor | None = None


@dataclass
class AcnTokenClassifierOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, when `labels` are given):
        Negative CRF log-likelihood (softmax decoder: token cross-entropy), averaged over the batch.
    logits (`torch.FloatTensor` of shape `(batch, seq_len, num_labels)`):
        Per-word tag scores, the CRF's emission potentials; decode them with `decode`.
    Then the fields of `AcnModelOutput`. `loss` and `logits` come first, as in transformers' heads: `Trainer` reads
    the loss from the first field and the predictions from the next ones.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    visual_attentions: torch.Tensor | None = None
    textual_attentions: torch.Tensor | None = None
    fusion_gates: torch.Tensor | None = None
    filtration_gates: torch.Tensor | None = None


class AcnCharCNN(nn.Module):
    """Character CNN, `tanh(C · chars + b)` with max-over-time pooling; padding never changes a word's vector."""

    def __init__(self, config: AcnConfig):
        super().__init__()
        self.pad_id = config.char_pad_id
        self.kernel_sizes = config.char_kernel_sizes
        self.activation = nn.Tanh() if config.char_activation == "tanh" else nn.Identity()
        self.embedding = nn.Embedding(config.char_vocab_size, config.char_embedding_dim, padding_idx=config.char_pad_id)
        self.convs = nn.ModuleList(
            nn.Conv1d(config.char_embedding_dim, config.char_num_filters, width) for width in config.char_kernel_sizes
        )

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        batch, seq_len, word_len = char_ids.shape
        shortfall = max(self.kernel_sizes) - word_len
        if shortfall > 0:  # every window must fit, so a short word sees the same padding at any tensor width
            char_ids = nn.functional.pad(char_ids, (0, shortfall), value=self.pad_id)
        words = char_ids.reshape(batch * seq_len, -1)  # (words, word_len)
        word_lengths = (words != self.pad_id).sum(-1)  # (words,)
        chars = self.embedding(words).transpose(1, 2)  # (words, char_dim, word_len)
        pooled = [
            self._max_over_valid_windows(conv(chars), width, word_lengths)
            for conv, width in zip(self.convs, self.kernel_sizes, strict=True)
        ]
        # tanh is increasing, so tanh after the max equals the paper's max over tanh'd windows
        features = self.activation(torch.cat(pooled, dim=-1))  # (words, filters * num_widths)
        return features.reshape(batch, seq_len, -1)  # (batch, seq_len, filters * num_widths)

    @staticmethod
    def _max_over_valid_windows(features: torch.Tensor, width: int, word_lengths: torch.Tensor) -> torch.Tensor:
        # A window is valid when it starts inside the word; a word shorter than the window keeps its first window.
        last_start = (word_lengths - width).clamp(min=0)  # (words,)
        starts = torch.arange(features.shape[-1], device=features.device)  # (num_windows,)
        invalid = starts[None, :] > last_start[:, None]  # (words, num_windows)
        masked = features.masked_fill(invalid[:, None, :], float("-inf"))  # (words, filters, num_windows)
        return masked.max(dim=-1).values  # (words, filters)


class AcnTextEncoder(nn.Module):
    """Word vectors ⊕ character CNN, then a BiLSTM: the contextual word features `h_t`.

    Word vectors come from word embeddings (the paper's `text_encoder="cnn-bilstm"`) or from a pretrained
    transformer (`AutoModel`), whose subword states are pooled to one vector per word; the BiLSTM is then optional.
    """

    def __init__(self, config: AcnConfig):
        super().__init__()
        self.word_embeddings: nn.Module | None
        self.subword_encoder: PreTrainedModel | None
        if config.text_config is not None:  # a pretrained text encoder
            self.word_embeddings = None
            self.subword_encoder = AutoModel.from_config(config.text_config)
            if getattr(self.subword_encoder, "pooler", None) is not None:  # the sentence pooler is never read
                self.subword_encoder.pooler = None
            word_size = config.text_config.hidden_size
        else:
            self.word_embeddings = nn.Embedding(
                config.vocab_size, config.word_embedding_dim, padding_idx=config.pad_token_id
            )
            self.subword_encoder = None
            word_size = config.word_embedding_dim
        self.word_pooling = config.word_pooling
        self.subword_lstm = None
        if config.uses_pretrained_text_encoder and config.word_pooling == "lstm":
            self.subword_lstm = nn.LSTM(word_size, word_size // 2, batch_first=True, bidirectional=True)
        self.window = config.text_encoder_window
        self.char_cnn = AcnCharCNN(config) if config.use_char_cnn else None
        char_size = config.char_num_filters * len(config.char_kernel_sizes) if config.use_char_cnn else 0
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = None
        if config.use_lstm:
            self.lstm = nn.LSTM(word_size + char_size, config.hidden_size // 2, batch_first=True, bidirectional=True)

    def input_embeddings(self) -> nn.Module:
        if self.subword_encoder is not None:
            return self.subword_encoder.get_input_embeddings()
        assert self.word_embeddings is not None  # __init__ builds one of the two
        return self.word_embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        char_ids: torch.Tensor | None,
        lengths: torch.Tensor,
        subwords: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if self.subword_encoder is None:
            assert self.word_embeddings is not None  # __init__ builds one of the two
            words = self.word_embeddings(input_ids)  # (batch, seq_len, word_dim)
        else:
            assert subwords is not None  # AcnModel._check_subword_inputs requires them with a pretrained encoder
            words = self._pooled_subword_states(*subwords, input_ids.shape[1])  # (batch, seq_len, encoder_hidden)
        if self.char_cnn is not None:
            assert char_ids is not None  # AcnModel._check_text_inputs requires them with the character CNN
            words = torch.cat([words, self.char_cnn(char_ids)], dim=-1)  # (batch, seq_len, word_size + char_size)
        words = self.dropout(words)
        if self.lstm is None:
            return words  # (batch, seq_len, hidden)
        if is_exporting():
            return self.dropout(bilstm_for_export(self.lstm, words, lengths))  # (batch, seq_len, hidden)
        packed = pack_padded_sequence(words, lengths.cpu(), batch_first=True, enforce_sorted=False)
        encoded, _ = self.lstm(packed)
        hidden, _ = pad_packed_sequence(encoded, batch_first=True, total_length=input_ids.shape[1])
        return self.dropout(hidden)  # (batch, seq_len, hidden)

    def _pooled_subword_states(
        self,
        subword_ids: torch.Tensor,
        subword_attention_mask: torch.Tensor,
        subword_to_word: torch.Tensor,
        num_words: int,
    ) -> torch.Tensor:
        states = self._subword_states(subword_ids, subword_attention_mask)  # (batch, subwords, encoder_hidden)
        if self.subword_lstm is not None:
            return lstm_pool_subwords(
                self.subword_lstm, states, subword_to_word, num_words
            )  # (batch, num_words, encoder_hidden)
        return pool_subwords(
            states, subword_to_word, num_words, self.word_pooling
        )  # (batch, num_words, encoder_hidden)

    def _subword_states(self, subword_ids: torch.Tensor, subword_attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden states; a tweet longer than one window arrives as whole-word pieces, each
        `[CLS] ... [SEP]` padded to the window, and every piece is encoded on its own."""
        # called only with a pretrained encoder, for which AcnConfig sets the window
        assert self.subword_encoder is not None and self.window is not None
        batch, length = subword_ids.shape
        if length <= self.window:
            return self.subword_encoder(input_ids=subword_ids, attention_mask=subword_attention_mask).last_hidden_state
        shortfall = -length % self.window
        ids = nn.functional.pad(subword_ids, (0, shortfall)).view(-1, self.window)  # (batch * pieces, window)
        mask = nn.functional.pad(subword_attention_mask, (0, shortfall)).view(
            -1, self.window
        )  # (batch * pieces, window)
        used = mask[:, 0].bool()  # (batch * pieces,): a piece starts with its special token
        aligned = (
            ids[:, 0] == subword_ids[:, :1].repeat_interleave(ids.shape[0] // batch)
        ) | ~used  # (batch * pieces,)
        if not aligned.all():
            raise ValueError(
                f"subword_ids of length {length} must come in pieces of text_encoder_window={self.window} subwords, "
                "each starting with the tokenizer's start token: the tokenizer's subword_window must equal it"
            )
        encoded = self.subword_encoder(input_ids=ids[used], attention_mask=mask[used]).last_hidden_state
        states = encoded.new_zeros(ids.shape[0], self.window, encoded.shape[-1])  # (batch * pieces, window, hidden)
        states[used] = encoded
        return states.view(batch, -1, encoded.shape[-1])[:, :length]  # (batch, subwords, hidden)


def pool_subwords(
    states: torch.Tensor, subword_to_word: torch.Tensor, num_words: int, pooling: str = "first"
) -> torch.Tensor:
    """One vector per word from its subwords' states: the first subword's, or their mean.

    Args:
        states (`torch.FloatTensor` of shape `(batch, subwords, hidden)`): the encoder's states.
        subword_to_word (`torch.LongTensor` of shape `(batch, subwords)`): 1-based position of the word each subword
            belongs to, 0 for special tokens and padding (so zero-padding stays valid).
        num_words (`int`): words per tweet in the padded batch.
        pooling (`str`): `"first"` or `"mean"`.
    Returns:
        `torch.FloatTensor` of shape `(batch, num_words, hidden)`; words without subwords (padding) are 0.
    """
    if pooling == "first":  # a word's first subword is where the word position changes
        previous = nn.functional.pad(subword_to_word[:, :-1], (1, 0))  # (batch, subwords)
        keep = (subword_to_word != previous) & (subword_to_word > 0)  # (batch, subwords)
    else:
        keep = subword_to_word > 0  # (batch, subwords)
    index = subword_to_word.masked_fill(~keep, 0)[..., None].expand_as(states)  # (batch, subwords, hidden)
    sums = states.new_zeros(states.shape[0], num_words + 1, states.shape[-1])  # (batch, 1 + num_words, hidden)
    sums = sums.scatter_add(1, index, states * keep[..., None])  # slot 0 collects what is not kept
    counts = keep.new_zeros(states.shape[0], num_words + 1, dtype=states.dtype)  # (batch, 1 + num_words)
    counts = counts.scatter_add(1, subword_to_word.masked_fill(~keep, 0), keep.to(states.dtype))
    return (sums / counts.clamp(min=1)[..., None])[:, 1:]  # (batch, num_words, hidden)


def lstm_pool_subwords(
    lstm: nn.LSTM, states: torch.Tensor, subword_to_word: torch.Tensor, num_words: int
) -> torch.Tensor:
    """One vector per word from a BiLSTM run over that word's subwords alone: the forward direction's state after
    its last subword joined to the backward direction's after its first (LSTM pooling, Ács et al. 2021).

    Args:
        lstm (`nn.LSTM`): bidirectional, batch-first, `hidden // 2` units per direction.
        states, subword_to_word, num_words: as `pool_subwords`; a word's subwords are consecutive.
    Returns:
        `torch.FloatTensor` of shape `(batch, num_words, hidden)`; words without subwords (padding) are 0.
    """
    if is_exporting():
        raise NotImplementedError(
            "word_pooling='lstm' cannot be exported (its words have data-dependent lengths): use 'first' or 'mean'"
        )
    batch, _, hidden = states.shape
    counts = subword_to_word.new_zeros(batch, num_words + 1).scatter_add(
        1, subword_to_word, torch.ones_like(subword_to_word)
    )
    counts = counts[:, 1:]  # (batch, num_words): subwords per word
    present = counts > 0  # (batch, num_words)
    pieces = states[subword_to_word > 0]  # (subwords of all words, hidden), word after word
    words = pack_sequence(list(torch.split(pieces, counts[present].tolist())), enforce_sorted=False)
    _, (last, _) = lstm(words)  # last: (2, words, hidden // 2)
    pooled = states.new_zeros(batch, num_words, hidden)  # (batch, num_words, hidden)
    pooled[present] = torch.cat([last[0], last[1]], dim=-1).to(states.dtype)  # (words, hidden)
    return pooled


class AcnAttentionScore(nn.Linear):
    """w_α of the word-guided visual attention: energy (..., attention) -> score (...,).

    No bias: the paper's b_α is the same for every region and cancels in the softmax. Initialised larger than the
    other layers (see `VISUAL_SCORE_INIT_GAIN`).
    """

    def __init__(self, attention_size: int) -> None:
        super().__init__(attention_size, 1, bias=False)


class AcnCoAttentionOutput(NamedTuple):
    """What the co-attention computes per word; the same fields hold zeros for tweets without an image."""

    # The attention maps and gates are None in the zeros of a forward that did not ask for them.
    multimodal: torch.Tensor  # (batch, seq_len, hidden): u_t
    visual_attentions: torch.Tensor | None  # (batch, seq_len, regions): α_t
    textual_attentions: torch.Tensor | None  # (batch, seq_len, seq_len): β_t
    fusion_gates: torch.Tensor | None  # (batch, seq_len, hidden): g_t; None with fusion="concat"
    filtration_gates: torch.Tensor | None  # (batch, seq_len): s_t, 1 without the filtration gate


class AcnCoAttention(nn.Module):
    """Image projection, word-guided visual attention, image-guided textual attention, fusion and filtration."""

    def __init__(self, config: AcnConfig):
        super().__init__()
        hidden, attention = config.hidden_size, config.attention_size
        self.image_projection = nn.Linear(config.image_feature_dim, hidden)
        # word-guided visual attention
        self.visual_region_proj = nn.Linear(hidden, attention, bias=False)
        self.visual_word_proj = nn.Linear(hidden, attention)
        self.visual_score = AcnAttentionScore(attention)
        # image-guided textual attention
        self.textual_word_proj = nn.Linear(hidden, attention, bias=False)
        self.textual_image_proj = nn.Linear(hidden, attention)
        self.textual_score = nn.Linear(attention, 1, bias=False)  # likewise b_β
        # gated multimodal fusion; CBCFiC (fusion="concat") concatenates v̂_t and ĥ_t as they are
        if config.fusion == "gate":
            self.visual_transform = nn.Linear(hidden, hidden)
            self.textual_transform = nn.Linear(hidden, hidden)
            self.fusion_gate = nn.Linear(2 * hidden, hidden, bias=False)
        fused_size = hidden if config.fusion == "gate" else 2 * hidden
        # filtration gate; CBCFuC (use_filtration_gate=False) passes m_t itself
        if config.use_filtration_gate:
            self.filtration_gate = nn.Linear(hidden + fused_size, 1)
            self.multimodal_transform = nn.Linear(fused_size, hidden)
        self.fusion = config.fusion
        self.use_filtration_gate = config.use_filtration_gate
        self.output_size = hidden if config.use_filtration_gate else fused_size  # size of u_t

    def forward(
        self, hidden: torch.Tensor, word_mask: torch.Tensor, image_features: torch.Tensor
    ) -> AcnCoAttentionOutput:
        regions = torch.tanh(self.image_projection(image_features))  # (batch, regions, hidden): v_I

        # Only real words attend: a padding query would cost as much as a word and be thrown away. Words are
        # gathered with index_select, whose backward is an index_add (5x cheaper here than boolean indexing's).
        word_position = word_mask.flatten().nonzero().squeeze(1)  # (words,): flat index into (batch * seq_len)
        example_of_word = word_position // word_mask.shape[1]  # (words,)
        words = _pack(hidden, word_position)  # (words, hidden)
        visual_attention = self._visual_attention(words, example_of_word, regions)  # (words, regions)
        visual_attention = _unpack(visual_attention, word_position, word_mask.shape)  # (batch, seq_len, regions)
        attended_image = visual_attention @ regions  # (batch, seq_len, hidden): v̂_t
        textual_attention = self._textual_attention(
            hidden, word_mask, _pack(attended_image, word_position), example_of_word
        )
        textual_attention = _unpack(textual_attention, word_position, word_mask.shape)  # (batch, seq_len, seq_len)
        attended_text = textual_attention @ hidden  # (batch, seq_len, hidden): ĥ_t

        fusion_gate, fused = self._fuse(attended_image, attended_text)  # fused: (batch, seq_len, fused_size): m_t
        filtration_gate, multimodal = self._filter(hidden, fused)  # multimodal: (batch, seq_len, output_size): u_t
        return AcnCoAttentionOutput(multimodal, visual_attention, textual_attention, fusion_gate, filtration_gate)

    def _fuse(
        self, attended_image: torch.Tensor, attended_text: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Gated multimodal fusion `m_t = g_t h_v̂ + (1 - g_t) h_ĥ`, or CBCFiC's `m_t = [v̂_t ; ĥ_t]`."""
        if self.fusion == "concat":
            return None, torch.cat([attended_image, attended_text], dim=-1)  # (batch, seq_len, 2 * hidden)
        visual = torch.tanh(self.visual_transform(attended_image))  # (batch, seq_len, hidden): h_v̂
        textual = torch.tanh(self.textual_transform(attended_text))  # (batch, seq_len, hidden): h_ĥ
        gate = torch.sigmoid(self.fusion_gate(torch.cat([visual, textual], dim=-1)))  # (batch, seq_len, hidden): g_t
        return gate, gate * visual + (1 - gate) * textual  # (batch, seq_len, hidden)

    def _filter(self, hidden: torch.Tensor, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Filtration gate `s_t = σ(W [h_t ; m_t] + b)`, `u_t = s_t tanh(W_m m_t + b_m)`, or CBCFuC's `u_t = m_t`."""
        if not self.use_filtration_gate:
            return torch.ones_like(hidden[..., 0]), fused  # (batch, seq_len), (batch, seq_len, fused_size)
        gate = torch.sigmoid(self.filtration_gate(torch.cat([hidden, fused], dim=-1))).squeeze(-1)  # (batch, seq_len)
        return gate, gate[..., None] * torch.tanh(self.multimodal_transform(fused))  # ..., (batch, seq_len, hidden)

    def _visual_attention(
        self, words: torch.Tensor, example_of_word: torch.Tensor, regions: torch.Tensor
    ) -> torch.Tensor:
        """Word-guided attention over the regions of the word's own image, per real word."""
        scores = additive_attention_scores(
            self.visual_word_proj(words),  # (words, attention)
            self.visual_region_proj(regions),  # (batch, regions, attention)
            example_of_word,
            self.visual_score.weight[0],
        )  # (words, regions)
        return scores.softmax(dim=-1)  # (words, regions)

    def _textual_attention(
        self, hidden: torch.Tensor, word_mask: torch.Tensor, attended_image: torch.Tensor, example_of_word: torch.Tensor
    ) -> torch.Tensor:
        """Image-guided attention of each real word over the words of its own tweet."""
        scores = additive_attention_scores(
            self.textual_image_proj(attended_image),  # (words, attention)
            self.textual_word_proj(hidden),  # (batch, seq_len_key, attention)
            example_of_word,
            self.textual_score.weight[0],
        )  # (words, seq_len_key)
        scores = scores.masked_fill(~word_mask[example_of_word], float("-inf"))
        return scores.softmax(dim=-1)  # (words, seq_len_key)


def additive_attention_scores(
    queries: torch.Tensor, keys: torch.Tensor, example_of_query: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Attention energies `w · tanh(q_n + k_j)` of each query over the keys of its own example: `(queries, keys)`.

    queries `(queries, attention)`, keys `(batch, num_keys, attention)`, example_of_query `(queries,)` long,
    weight `(attention,)`. Same value and gradients as the autograd composition of index_select, add, tanh and a
    linear layer, in less time and memory; its graph takes one backward pass. See `_AdditiveAttentionScores`.
    Under `torch.export` it is that composition: an exported graph has no backward to save memory for.
    """
    if is_exporting():
        energy = torch.tanh(keys.index_select(0, example_of_query) + queries[:, None, :])  # (queries, keys, attention)
        return energy @ weight.to(energy.dtype)  # (queries, keys)
    return _AdditiveAttentionScores.apply(queries, keys, example_of_query, weight)


class _AdditiveAttentionScores(torch.autograd.Function):
    """The (queries, keys, attention) energy tensor is the largest in the model, and autograd spends most of a
    training step allocating and reading its copies (sum, tanh, outer product of the score gradient, tanh backward).
    Here it is allocated once and updated in place, and tanh is evaluated as tanh(a) = 2 sigmoid(2a) - 1, because
    torch's CPU sigmoid runs several times faster than its tanh. The backward uses d tanh(a) / da = 1 - tanh(a)^2.
    """

    @staticmethod
    def forward(
        ctx: Any, queries: torch.Tensor, keys: torch.Tensor, example_of_query: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        ctx.num_examples, ctx.dtypes = keys.shape[0], (queries.dtype, keys.dtype, weight.dtype)
        ctx.backward_done = False
        dtype = torch.promote_types(queries.dtype, keys.dtype)  # bf16 under autocast
        weight = weight.to(dtype)
        doubled_keys, doubled_queries = 2 * keys.to(dtype), 2 * queries.to(dtype)  # (batch, keys, att), (queries, att)
        energy = doubled_keys.index_select(0, example_of_query)  # (queries, keys, attention): 2a
        energy.add_(doubled_queries[:, None, :]).sigmoid_().mul_(2).sub_(1)  # (queries, keys, attention): tanh(a)
        ctx.save_for_backward(energy, example_of_query, weight)
        return energy @ weight  # (queries, keys)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, torch.Tensor]:
        if ctx.backward_done:
            raise RuntimeError(
                "additive_attention_scores reuses its saved energies in place, so its graph supports one backward "
                "pass: run the forward again instead of backward(retain_graph=True)"
            )
        ctx.backward_done = True
        energy, example_of_query, weight = ctx.saved_tensors
        grad_scores = grad_scores.to(energy.dtype)  # (queries, keys)
        grad_weight = energy.flatten(0, 1).T @ grad_scores.flatten()  # (attention,)
        # d score / d a = (1 - tanh(a)^2) w, computed in the saved tensor (it is not needed afterwards)
        grad_energy = energy.square_().sub_(1)  # (queries, keys, attention): tanh(a)^2 - 1
        grad_energy.mul_(grad_scores[..., None]).mul_(-weight)  # (queries, keys, attention)
        grad_queries = grad_energy.sum(dim=1)  # (queries, attention)
        grad_keys = grad_energy.new_zeros(ctx.num_examples, *grad_energy.shape[1:])  # (batch, keys, attention)
        grad_keys.index_add_(0, example_of_query, grad_energy)
        queries_dtype, keys_dtype, weight_dtype = ctx.dtypes
        return grad_queries.to(queries_dtype), grad_keys.to(keys_dtype), None, grad_weight.to(weight_dtype)


def _scatter_rows(rows: torch.Tensor | None, row_mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Rows computed for the examples selected by `row_mask`, placed into `fill` (batch-sized zeros)."""
    if rows is None:  # an output this variant does not have (the fusion gate of fusion="concat")
        return fill
    # autocast may have computed the rows in bf16. On CUDA, autocast's type promotion for index_put raised "Unexpected
    # floating ScalarType in at::autocast::prioritize" under bf16 (torch 2.11, H200): the dtypes already agree here.
    device_type = fill.device.type
    no_autocast = (
        torch.autocast(device_type, enabled=False)
        if torch.amp.is_autocast_available(device_type)
        else contextlib.nullcontext()
    )
    with no_autocast:  # devices without autocast (meta) have nothing to turn off
        return fill.index_put((row_mask,), rows.to(fill.dtype))


def _pack(padded: torch.Tensor, word_position: torch.Tensor) -> torch.Tensor:
    """The rows of the real words: (batch, seq_len, width) -> (words, width)."""
    return padded.flatten(0, 1).index_select(0, word_position)


def _unpack(per_word: torch.Tensor, word_position: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Rows of the real words back into the padded layout; padding rows are zero."""
    padded = per_word.new_zeros(shape[0] * shape[1], per_word.shape[-1])  # (batch * seq_len, width)
    return padded.index_copy(0, word_position, per_word).view(*shape, per_word.shape[-1])


class AcnCrf(nn.Module):
    """Linear-chain CRF, vectorised over the batch, in log space.

    Index convention: `transitions[from_tag, to_tag]` scores moving from `from_tag` at step t-1 to `to_tag` at t.
    Masks are `(batch, seq_len)` booleans, left-aligned: real words first, then padding.
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))

    def log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-sequence log p(tags | emissions), shape `(batch,)`.

        A word tagged `-100` (transformers' mark of a position the loss ignores) has no known tag: every tag is
        allowed there and marginalised, so the likelihood is that of the known tags, `log Z(paths agreeing with the
        known tags) - log Z(all paths)`; a sequence without known tags has likelihood 1. With every tag known the
        first term is the gold path's score.
        """
        unknown = (tags == IGNORE_INDEX) & mask  # (batch, seq_len)
        if not unknown.any():
            return self._path_score(emissions, tags.clamp(min=0), mask) - self.log_partition(emissions, mask)
        # Paths through another tag than a known one get score -inf, so only agreeing paths enter the sum.
        agrees = nn.functional.one_hot(tags.clamp(min=0), self.num_tags).bool() | unknown[..., None]
        constrained = emissions.masked_fill(~agrees, float("-inf"))  # (batch, seq_len, tags)
        both = self.log_partition(torch.cat([constrained, emissions]), mask.repeat(2, 1))  # (2 * batch,)
        known, total = both.chunk(2)  # (batch,), (batch,): one forward pass for the two sums
        return known - total

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-sequence log of the sum over all tag paths of exp(score), shape `(batch,)` (forward algorithm).

        Each step is logsumexp_from(alpha[from] + transitions[from, to]). Shifting alpha and the transitions by
        their maxima turns it into one matrix product of bounded exponentials, exp(alpha - a) @ exp(T - t), whose
        log plus a + t is exact and stable, and much cheaper than a logsumexp over a (batch, tags, tags) tensor.
        """
        transitions = self.transitions.to(emissions.dtype)  # a bf16/fp16 model's CRF sums in the emissions' float32
        transition_shift = transitions.max().detach()
        exp_transitions = (transitions - transition_shift).exp()  # (from, to), entries in (0, 1]
        # One view per step through unbind: its backward stacks the steps' gradients once, where indexing
        # `emissions[:, step]` would give each step a gradient of the whole tensor (quadratic in the length).
        steps, step_masks = emissions.unbind(1), mask.unbind(1)  # seq_len x (batch, tags), seq_len x (batch,)
        alpha = self.start_transitions + steps[0]  # (batch, tags)
        for step_emissions, step_mask in zip(steps[1:], step_masks[1:], strict=True):
            shift = alpha.max(dim=-1, keepdim=True).values.detach()  # (batch, 1)
            summed = ((alpha - shift).exp() @ exp_transitions).log() + shift + transition_shift  # (batch, to)
            alpha = torch.where(step_mask[:, None], summed + step_emissions, alpha)  # (batch, tags)
        return (alpha + self.end_transitions).logsumexp(dim=-1)  # (batch,)

    def decode(
        self,
        emissions: torch.Tensor,
        mask: torch.Tensor,
        allowed: torch.Tensor | None = None,
        allowed_start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Best tag path per sequence (Viterbi), as a `(batch, seq_len)` CPU tensor with `-100` at padding.

        `allowed` `(tags, tags)` and `allowed_start` `(tags,)` booleans forbid transitions when given.
        """
        return viterbi_decode(
            emissions, mask, self.transitions, self.start_transitions, self.end_transitions, allowed, allowed_start
        )

    def _path_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emission_scores = emissions.gather(-1, tags[..., None]).squeeze(-1)  # (batch, seq_len)
        transition_scores = self.transitions[tags[:, :-1], tags[:, 1:]]  # (batch, seq_len - 1)
        step_scores = emission_scores[:, 1:] + transition_scores  # (batch, seq_len - 1)
        last_tags = tags.gather(1, (mask.sum(-1) - 1)[:, None]).squeeze(1)  # (batch,)
        return (
            self.start_transitions[tags[:, 0]]
            + emission_scores[:, 0]
            + (step_scores * mask[:, 1:]).sum(-1)
            + self.end_transitions[last_tags]
        )  # (batch,)


def viterbi_decode(
    emissions: torch.Tensor,
    mask: torch.Tensor,
    transitions: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    allowed: torch.Tensor | None = None,
    allowed_start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Viterbi over a batch with length masks; see `AcnCrf.decode`. Returns `(batch, seq_len)` long.

    Runs in numpy on the CPU: decoding is a sequential loop of dozens of tiny (batch, tags, tags) steps, where torch's
    per-operation overhead would cost more than the arithmetic (benchmarks/speed.py compares it with pytorch-crf).
    """
    if (allowed is None) != (allowed_start is None):
        raise ValueError("allowed and allowed_start constrain decoding together: give both or neither")
    if allowed is not None and allowed_start is not None:
        transitions = transitions.masked_fill(~allowed, FORBIDDEN_SCORE)  # (from, to)
        start = start.masked_fill(~allowed_start, FORBIDDEN_SCORE)  # (tags,)
    scores, word_mask, table, first, last = (_as_numpy(tensor) for tensor in (emissions, mask, transitions, start, end))
    return torch.from_numpy(_viterbi_numpy(scores, word_mask, table, first, last))  # (batch, seq_len), on the CPU


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().float().numpy() if tensor.is_floating_point() else tensor.detach().cpu().numpy()


def _viterbi_numpy(
    emissions: np.ndarray,
    mask: np.ndarray,
    transitions: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    transposed: bool = False,
) -> np.ndarray:
    """`viterbi_decode`'s loops, on numpy arrays: `(batch, seq_len)` int64 paths, -100 at padding. `transposed`:
    `transitions` is already the contiguous `(to, from)` table (`AcnNumpyCrf` makes it once per model)."""
    batch, seq_len, num_tags = emissions.shape
    mask = mask.astype(bool, copy=False)
    # (to, from): the argmax runs over the contiguous axis
    incoming = transitions if transposed else np.ascontiguousarray(transitions.T)
    # Flat index of row (sequence, to) in a (batch, to, from) array, to read each row's best entry in one gather.
    row_starts = np.arange(batch * num_tags) * num_tags  # (batch * tags,)
    score = start + emissions[:, 0]  # (batch, tags)
    # After a sequence's last word its pointers are the identity, so backtracking from the final position walks
    # back unchanged to that word: one path for the whole batch, no per-sequence bookkeeping.
    stay = np.arange(num_tags)  # (tags,)
    # Up to the shortest sequence's length every sequence is active: no masking there (all of a batch of one).
    shortest = int(mask.sum(-1).min()) if batch else seq_len
    pointers = np.empty((seq_len - 1, batch, num_tags), dtype=np.int64)  # (seq_len - 1, batch, tags)
    for step in range(1, seq_len):
        candidates = score[:, None, :] + incoming  # (batch, to, from)
        best_from = candidates.argmax(axis=2)  # (batch, to)
        # (batch, to): each row's entry at best_from, in one gather (a second reduction, max, costs 1.7-8x more)
        best = candidates.reshape(-1)[row_starts + best_from.reshape(-1)].reshape(batch, num_tags)
        if step < shortest:
            pointers[step - 1] = best_from
            score = best + emissions[:, step]  # (batch, tags)
        else:
            active = mask[:, step, None]  # (batch, 1)
            pointers[step - 1] = np.where(active, best_from, stay)
            score = np.where(active, best + emissions[:, step], score)  # (batch, tags)

    rows = np.arange(batch)
    path = np.empty((batch, seq_len), dtype=np.int64)
    current = (score + end).argmax(axis=-1)  # (batch,)
    for step in range(seq_len - 1, 0, -1):
        path[:, step] = current
        current = pointers[step - 1, rows, current]  # (batch,): follow the pointer back
    path[:, 0] = current
    path[~mask] = IGNORE_INDEX
    return path  # (batch, seq_len)


_M = TypeVar("_M", bound="AcnPreTrainedModel")
_AcnModel = TypeVar("_AcnModel", bound="AcnModel")


class _AcnInputChecks(Protocol):
    """What `AcnModel`'s input checks read of the model; `AcnOnnxModel`, which has the same, runs them too."""

    @property
    def config(self) -> AcnConfig: ...

    def vision_trunk_id(self) -> str: ...


class AcnPreTrainedModel(PreTrainedModel):
    config_class = AcnConfig
    config: AcnConfig
    base_model_prefix = "acn"
    main_input_name = "input_ids"

    @overload
    @classmethod
    def from_pretrained(
        cls: type[_M], *args: Any, strict: bool = True, output_loading_info: Literal[False] = False, **kwargs: Any
    ) -> _M: ...

    @overload
    @classmethod
    def from_pretrained(
        cls: type[_M], *args: Any, strict: bool = True, output_loading_info: Literal[True], **kwargs: Any
    ) -> tuple[_M, dict[str, Any]]: ...

    @classmethod
    def from_pretrained(
        cls: type[_M], *args: Any, strict: bool = True, output_loading_info: bool = False, **kwargs: Any
    ) -> _M | tuple[_M, dict[str, Any]]:
        """As `PreTrainedModel.from_pretrained`, strictly: a checkpoint that lacks a weight of this model, holds one
        it does not have or of another shape, or holds NaN or infinite values is refused with a `ValueError` naming
        the tensors (a damaged file would otherwise load with fresh weights and tag differently, or tag every word
        `O`). `strict=False` keeps transformers' warnings only.

        What transformers means to happen is no damage, and loads as it does there, reported in its load report and
        in `output_loading_info`: the base model (`AcnModel`, `AutoModel`) from a head's checkpoint leaves out the
        head's weights (`classifier.*`, `crf.*`: unexpected keys), and `ignore_mismatched_sizes=True` re-initialises
        the weights whose shape differs (with another label set: the classifier and the CRF; mismatched keys)."""
        # transformers annotates the model alone; with output_loading_info=True it returns (model, info)
        model, info = cast(
            tuple[_M, dict[str, Any]], super().from_pretrained(*args, output_loading_info=True, **kwargs)
        )
        if strict:
            source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            expected = {
                "unexpected_keys": AcnForTokenClassification.is_head_key if model.base_model is model else None,
                "mismatched_keys": (lambda _: True) if kwargs.get("ignore_mismatched_sizes") else None,
            }
            _check_loaded_weights(model, info, source, expected)
        return (model, info) if output_loading_info else model

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            init.uniform_(module.weight, -EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE)  # paper's U(-0.25, 0.25)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, AcnAttentionScore):
            init.xavier_uniform_(module.weight, gain=VISUAL_SCORE_INIT_GAIN)
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):  # the VGG-16 / ResNet-152 trunk, when it gets no ImageNet weights
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LSTM):
            for name, parameter in module.named_parameters():
                if "weight" in name:
                    init.xavier_uniform_(parameter)
                else:
                    init.zeros_(parameter)
        elif isinstance(module, AcnCrf):
            for parameter in (module.start_transitions, module.end_transitions, module.transitions):
                init.uniform_(parameter, -CRF_INIT_RANGE, CRF_INIT_RANGE)
        elif isinstance(module, AcnInt8Calibration):  # the arrays of a 0.1.0 config.json, else placeholders
            for name, value in module.values(self.config.int8_calibration_arrays).items():
                init.copy_(getattr(module, name), value)
        elif isinstance(module, AcnForTokenClassification):  # non-persistent buffers are not in the checkpoint
            allowed, allowed_start = bio_transition_table(module.config.id2label)
            init.copy_(module.bio_allowed, allowed)
            init.copy_(module.bio_allowed_start, allowed_start)


class AcnModel(AcnPreTrainedModel):
    """Text encoder, image backbone and co-attention: the decoder input features of every word."""

    def __init__(self, config: AcnConfig):
        super().__init__(config)
        self.text_encoder = AcnTextEncoder(config)
        self.vision: nn.Module | None
        self.co_attention: AcnCoAttention | None
        if config.use_image:
            self.vision = build_vision_backbone(config.vision_backbone)
            self.vision.requires_grad_(not config.freeze_vision)
            self.co_attention = AcnCoAttention(config)
        else:
            self.vision = None
            self.co_attention = None
        self.vision_int8 = None  # the trunk's int8 calibration (`calibrate_vision`), saved with the weights
        if self.vision is not None and config.vision_int8_points is not None:
            self.vision_int8 = AcnInt8Calibration.for_trunk(
                self.vision, config.vision_backbone, config.vision_int8_points
            )
            if config.int8_calibration_arrays is not None:  # a config.json that holds the arrays: not in the weights
                self.vision_int8.values(config.int8_calibration_arrays)  # they fit this trunk (raises otherwise)
                self._keys_to_ignore_on_load_missing = [r"vision_int8\."]  # _init_weights moves them in
        self._derived_vision = AcnDerivedTrunks()  # the frozen trunk's bf16 or int8 copy
        # (parameter versions, id) of the last vision_trunk_id() call
        self._trunk_id: tuple[tuple[int, ...], str] | None = None
        self.post_init()

    def train(self: _AcnModel, mode: bool = True) -> _AcnModel:
        """As `nn.Module.train`; a frozen backbone stays in eval mode (its batch norm statistics never move)."""
        super().train(mode)
        if self.vision is not None and self.config.freeze_vision:
            self.vision.eval()
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.text_encoder.input_embeddings()

    def set_input_embeddings(self, embeddings: nn.Module) -> None:
        if self.text_encoder.subword_encoder is None:
            self.text_encoder.word_embeddings = embeddings
        else:
            self.text_encoder.subword_encoder.set_input_embeddings(embeddings)

    def load_text_encoder_weights(self, /, name_or_path: str | os.PathLike | None = None, **kwargs: Any) -> None:
        """Load the pretrained text encoder's weights, from `config.text_encoder` or another checkpoint of the same
        architecture (a folder or Hub id, through `AutoModel.from_pretrained`; `kwargs` go to it)."""
        if self.text_encoder.subword_encoder is None:
            raise ValueError("this model has no pretrained text encoder (text_encoder='cnn-bilstm')")
        source = name_or_path or self.config.text_encoder
        pretrained = AutoModel.from_pretrained(
            source, config=self.config.text_config, **{"trust_remote_code": False, **kwargs}
        )
        missing, _ = self.text_encoder.subword_encoder.load_state_dict(pretrained.state_dict(), strict=False)
        if missing:  # the unused sentence pooler may be in the checkpoint; every other weight must be
            raise ValueError(f"{source} lacks weights of the text encoder: {missing[:5]}")

    def load_vision_weights(self, path: str | os.PathLike | None = None) -> None:
        """Load pretrained weights into the image backbone (this invalidates an int8 calibration).

        With `path=None` the backbone's published weights: torchvision's `VGG16_Weights.IMAGENET1K_V1` or
        `ResNet152_Weights.IMAGENET1K_V1` (their cache, else a download), or CLIP's `openai/clip-vit-base-patch32`
        tower through transformers (the Hub cache, else a download). A local `.safetensors` file or a torch state
        dict (loaded with `weights_only=True`) of the full torchvision model or of the backbone alone also works;
        for CLIP, a folder or Hub id of a CLIP checkpoint too. A `.safetensors` file written by `cache-features`
        names its backbone and carries the int8 calibration the features were computed with.
        """
        if self.vision is None:
            raise ValueError("this model has no vision trunk (use_image=False)")
        state, metadata = load_vision_state(self.config.vision_backbone, path)
        backbone = metadata.get("vision_backbone", self.config.vision_backbone)
        if backbone != self.config.vision_backbone:
            raise ValueError(
                f"{path} holds a {backbone!r} backbone, this model has vision_backbone={self.config.vision_backbone!r}"
            )
        self.vision.load_state_dict(state)
        arrays = {name: json.loads(metadata[name]) for name in INT8_CALIBRATION_FIELDS if name in metadata}
        self.set_vision_calibration(arrays or None)

    def effective_vision_precision(self, device: torch.device | str | None = None) -> str:
        """The precision `get_image_features` runs in on `device` (default: the model's device).

        `"auto"` is int8 on an x86 CPU once calibrated (the CLIP tower needs no calibration: its linear layers
        quantise their inputs per batch), else bf16 where the device has bf16 kernels, else fp32. A forced `"bf16"`
        or `"int8"` the device cannot run falls back to fp32, as does int8 for a backbone that trains.
        """
        return effective_vision_precision(self.config, self._device(device))

    def needs_vision_calibration(self, device: torch.device | str | None = None) -> bool:
        """True when the int8 backbone would run on `device` but has no activation ranges yet (`calibrate_vision`)."""
        return runnable_vision_precision(self.config, self._device(device)) == "int8" and not is_int8_calibrated(
            self.config
        )

    @torch.no_grad()
    def calibrate_vision(self, pixel_values: torch.Tensor, batch_size: int = 8) -> None:
        """Calibrate the int8 backbone on these images (e.g. the first training images, so the result is
        deterministic) and keep the calibration with the weights (`set_vision_calibration`; see
        `quantization_acn.int8_calibration` and docs/int8.md). The CLIP tower needs none.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(images, 3, 224, 224)`): normalised RGB, as the image
                processor gives them.
        """
        if self.vision is None:
            raise ValueError("this model has no vision trunk (use_image=False)")
        check_pixel_values(pixel_values)
        chunks = pixel_values.cpu().contiguous(memory_format=torch.channels_last).split(batch_size)
        calibration = int8_calibration(self.vision, self.config.vision_backbone, chunks)
        if calibration is not None:  # CLIP's tower is quantised per batch
            self.set_vision_calibration(calibration, images=len(pixel_values))

    def set_vision_calibration(self, arrays: dict[str, list | None] | None, images: int | None = None) -> None:
        """Give the int8 backbone this calibration (None: none), kept in `vision_int8` and saved with the weights
        (`acn.vision_int8.*`); the config records its number of quantisation points (`vision_int8_points`) and of
        images.

        Args:
            arrays (`dict`): the lists that `INT8_CALIBRATION_FIELDS` names: `[min, max]` per quantisation point;
                for VGG-16, per conv, per output channel, the equalisation scales (each conv but the last; None: 1)
                and the bias corrections (None: 0). What `calibrate_vision` computes, `vision_int8.arrays()` gives,
                or a feature cache's trunk file records.
            images (`int`): how many images the calibration was computed on (`vision_int8_calibration_images`).
        """
        if self.vision is None:
            raise ValueError("this model has no vision trunk (use_image=False)")
        calibration = None
        if arrays is not None:
            checked = check_int8_calibration(self.config.vision_backbone, arrays)
            calibration = AcnInt8Calibration.from_arrays(self.vision, self.config.vision_backbone, checked)
        self.vision_int8 = None if calibration is None else calibration.to(self.device)
        self.config.vision_int8_points = None if calibration is None else len(calibration.ranges)
        self.config.vision_int8_calibration_images = None if calibration is None else images
        self.config.int8_calibration_arrays = None
        self._derived_vision.clear()

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The backbone's region features `(batch, 49, image_feature_dim)`, regions in row-major 7 x 7 order:
        VGG-16 pool5 (512), ResNet-152 layer4 (2048) or CLIP ViT-B/32 patch tokens without CLS (768).

        Runs in `effective_vision_precision()`: a frozen float32 trunk runs through its bf16 or int8 copy.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, 3, 224, 224)`): RGB normalised as the backbone's
                image processor does (`AcnImageProcessor.for_backbone`).
        """
        if self.vision is None:
            raise ValueError("this model has no vision trunk (use_image=False)")
        check_pixel_values(pixel_values)
        backbone = self.config.vision_backbone
        precision = self.effective_vision_precision(pixel_values.device)
        trunk_dtype = next(
            self.vision.parameters()
        ).dtype  # a model loaded with dtype=torch.bfloat16 has a bf16 backbone
        if backbone != "clip-vit-b32":
            pixel_values = pixel_values.contiguous(
                memory_format=torch.channels_last
            )  # oneDNN's fast convolution layout
        if trunk_dtype == torch.float32 and precision != "fp32" and self.config.freeze_vision:
            trunk = self._derived_vision.get(self.vision, self.config, precision, pixel_values, self.vision_int8)
            inputs = pixel_values.to(torch.bfloat16) if precision == "bf16" else pixel_values
            with torch.no_grad():
                return backbone_regions(trunk, backbone, inputs).float()  # (batch, 49, channels)
        pixel_values = pixel_values.to(trunk_dtype)  # image processors give float32; a 16-bit backbone runs as it is
        with (
            torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_vision),
            torch.autocast(
                pixel_values.device.type,
                dtype=torch.bfloat16,
                enabled=precision == "bf16" and trunk_dtype == torch.float32,
            ),
        ):
            regions = backbone_regions(self.vision, backbone, pixel_values)  # (batch, 49, channels)
        return regions.float()

    def vision_trunk_id(self) -> str:
        """`"<backbone>:<sha256 of the trunk's weights>"`: which trunk this model sees images through. A feature
        cache records the id of the trunk that computed it (`image_features_trunk`), and `forward` refuses features
        from another trunk. Computed once per change of the weights."""
        if self.vision is None:
            raise ValueError("this model has no vision trunk (use_image=False)")
        versions = parameter_versions(self.vision)
        if self._trunk_id is None or self._trunk_id[0] != versions:
            self._trunk_id = (versions, f"{self.config.vision_backbone}:{trunk_digest(self.vision)}")
        return self._trunk_id[1]

    def _device(self, device: torch.device | str | None) -> torch.device:
        return self.device if device is None else torch.device(device)

    def forward(
        self,
        input_ids: torch.Tensor,
        char_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        subword_ids: torch.Tensor | None = None,
        subword_attention_mask: torch.Tensor | None = None,
        subword_to_word: torch.Tensor | None = None,
        image_features_trunk: str | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> AcnModelOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`): word ids, any length.
            char_ids (`torch.LongTensor` of shape `(batch, seq_len, word_len)`): character ids per word;
                required with the character CNN.
            attention_mask (`torch.Tensor` of shape `(batch, seq_len)`): 1 for words, 0 for padding (left-aligned,
                at least one word per tweet). Defaults to all ones.
            pixel_values (`torch.FloatTensor` of shape `(batch, 3, 224, 224)`): images for the VGG-16 trunk.
            image_features (`torch.FloatTensor` of shape `(batch, 49, 512)`): precomputed pool5 features, instead
                of `pixel_values`. Give neither for a batch without images.
            image_mask (`torch.Tensor` of shape `(batch,)`): True where the tweet has a usable image. Defaults to
                all True when images are given, all False when not.
            subword_ids (`torch.LongTensor` of shape `(batch, subwords)`): the pretrained text encoder's input ids
                (required with `text_encoder` a checkpoint); a tweet longer than `text_encoder_window` comes as
                whole-word pieces, one per window (the tokenizer does this).
            subword_attention_mask (`torch.Tensor` of shape `(batch, subwords)`): 1 for subwords, 0 for padding.
            subword_to_word (`torch.LongTensor` of shape `(batch, subwords)`): 1-based position of each subword's
                word, 0 for special tokens and padding.
            image_features_trunk (`str`): the `vision_trunk_id()` of the trunk that computed `image_features` (a
                feature cache's `image_features_trunk` column, which `AcnDataCollator` passes on); features from
                another trunk than this model's are refused, since the model would learn, or be scored, on image
                features it cannot reproduce from pixels.
            output_attentions (`bool`): also return attention maps and gate values.
            return_dict (`bool`): False returns the output's non-None fields as a tuple.
            kwargs: only what transformers' `Trainer` passes to every model (`num_items_in_batch`, unused: the
                loss is a mean over tweets); anything else is refused, so a misspelt input is never ignored.
        """
        _refuse_unknown_arguments(kwargs)
        subwords = self._check_subword_inputs(subword_ids, subword_attention_mask, subword_to_word, input_ids)
        if image_features is not None and image_features_trunk is not None and self.vision is not None:
            self._check_features_trunk(image_features_trunk)
        outputs = self._features(
            input_ids, char_ids, attention_mask, subwords, pixel_values, image_features, image_mask, output_attentions
        )
        return outputs if return_dict is not False else outputs.to_tuple()

    def _check_features_trunk(self: _AcnInputChecks, image_features_trunk: str) -> None:
        own = self.vision_trunk_id()
        if image_features_trunk != own:
            raise ValueError(
                f"image_features were computed by the vision trunk {_short_id(image_features_trunk)}, and this model's "
                f"trunk is {_short_id(own)}: load the trunk that computed them, written beside the cached features by "
                "`acn-dataset cache-features`, with "
                "model.load_vision_weights('FEATURES_FOLDER/vgg16_trunk.safetensors') "
                "(or compute the features with this model's trunk)"
            )

    def _features(
        self,
        input_ids: torch.Tensor,
        char_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        subwords: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
        pixel_values: torch.Tensor | None,
        image_features: torch.Tensor | None,
        image_mask: torch.Tensor | None,
        output_attentions: bool | None,
    ) -> AcnModelOutput:
        word_mask = self._check_text_inputs(input_ids, char_ids, attention_mask)  # (batch, seq_len)
        hidden = self.text_encoder(input_ids, char_ids, word_mask.sum(-1), subwords)  # (batch, seq_len, hidden)
        if self.co_attention is None:
            return AcnModelOutput(last_hidden_state=hidden)

        image_mask = self._image_mask(image_mask, pixel_values, image_features, input_ids)  # (batch,)
        exporting = is_exporting()
        if exporting:
            too_long = (word_mask.sum(-1) > self.config.max_image_words) & image_mask  # (batch,)
            check_in_graph(
                ~too_long.any(),
                f"a tweet with an image has more than max_image_words={self.config.max_image_words} words",
            )
        else:
            self._check_image_tweet_lengths(word_mask.sum(-1), image_mask)
        images = self._image_features(pixel_values, image_features, image_mask)  # (images, regions, 512)
        # Co-attention runs on the tweets that have an image; the others keep u_t = 0, their text path.
        wanted = output_attentions if output_attentions is not None else self.config.output_attentions
        co_attended = self._empty_co_attention_outputs(hidden, wanted)
        if exporting or image_mask.any():  # an exported graph runs it on any number of images, none included
            computed = self.co_attention(hidden[image_mask], word_mask[image_mask], images)
            co_attended = AcnCoAttentionOutput._make(
                _scatter_rows(rows, image_mask, zeros) if zeros is not None else None
                for rows, zeros in zip(computed, co_attended, strict=True)
            )  # both are AcnCoAttentionOutput, so the fields pair up by name
        features = torch.cat([hidden, co_attended.multimodal], dim=-1)  # (batch, seq_len, hidden + output_size)
        if not wanted:
            return AcnModelOutput(last_hidden_state=features)
        return AcnModelOutput(
            last_hidden_state=features,
            visual_attentions=co_attended.visual_attentions,
            textual_attentions=co_attended.textual_attentions,
            fusion_gates=co_attended.fusion_gates,
            filtration_gates=co_attended.filtration_gates,
        )

    def _check_image_tweet_lengths(self: _AcnInputChecks, lengths: torch.Tensor, image_mask: torch.Tensor) -> None:
        """The textual attention's energies are `(words, words, attention_size)` per tweet with an image: refuse a
        tweet longer than `config.max_image_words` rather than ask for memory quadratic in its length."""
        longest = int(lengths[image_mask].max()) if image_mask.any() else 0
        if longest > self.config.max_image_words:
            row = int(((lengths > self.config.max_image_words) & image_mask).nonzero()[0])
            raise ValueError(
                f"tweet {row} has {longest} words and an image; co-attention reads at most max_image_words="
                f"{self.config.max_image_words} words (its memory grows with their square): tag it without its image"
            )

    def _empty_co_attention_outputs(self, hidden: torch.Tensor, with_attentions: bool) -> AcnCoAttentionOutput:
        """Zeros shaped like each co-attention output, for tweets without an image. The attention maps and gates only
        when asked for: the textual attentions are `(batch, seq_len, seq_len)`, quadratic in the tweet's length,
        where everything else on the text path is linear."""
        assert self.co_attention is not None  # called only by a model with images
        batch, seq_len, size = hidden.shape
        multimodal = hidden.new_zeros(batch, seq_len, self.co_attention.output_size)  # (batch, seq_len, output_size)
        if not with_attentions:
            return AcnCoAttentionOutput(multimodal, None, None, None, None)
        return AcnCoAttentionOutput(
            multimodal=multimodal,
            visual_attentions=hidden.new_zeros(batch, seq_len, self.config.num_image_regions),
            textual_attentions=hidden.new_zeros(batch, seq_len, seq_len),
            fusion_gates=hidden.new_zeros(batch, seq_len, size) if self.config.fusion == "gate" else None,
            filtration_gates=hidden.new_zeros(batch, seq_len),
        )

    def _check_text_inputs(
        self: _AcnInputChecks,
        input_ids: torch.Tensor,
        char_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be (batch, seq_len) with seq_len > 0, got shape {tuple(input_ids.shape)}")
        if self.config.use_char_cnn:
            if char_ids is None:
                raise ValueError("char_ids are required when use_char_cnn=True")
            if char_ids.dim() != 3 or char_ids.shape[:2] != input_ids.shape:
                raise ValueError(
                    f"char_ids must be (batch, seq_len, word_len) matching input_ids {tuple(input_ids.shape)}, "
                    f"got shape {tuple(char_ids.shape)}"
                )
        if attention_mask is None:
            return torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, "
                f"got shape {tuple(attention_mask.shape)}"
            )
        word_mask = attention_mask.bool()
        lengths = word_mask.sum(-1)  # (batch,)
        left_aligned = word_mask == (torch.arange(input_ids.shape[1], device=lengths.device) < lengths[:, None])
        if is_exporting():
            check_in_graph(left_aligned.all(), "attention_mask must be left-aligned: words first, then padding")
            check_in_graph((lengths > 0).all(), "every tweet needs at least one word")
            return word_mask
        if not left_aligned.all():
            raise ValueError("attention_mask must be left-aligned: words first, then padding")
        if (lengths == 0).any():
            raise ValueError(f"every tweet needs at least one word, got lengths {lengths.tolist()}")
        return word_mask

    def _check_subword_inputs(
        self: _AcnInputChecks,
        subword_ids: torch.Tensor | None,
        subword_attention_mask: torch.Tensor | None,
        subword_to_word: torch.Tensor | None,
        input_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The pretrained encoder's inputs as one tuple, or None for the paper's encoder (which ignores them)."""
        if not self.config.uses_pretrained_text_encoder:
            return None
        if subword_ids is None or subword_to_word is None:
            raise ValueError(
                f"text_encoder={self.config.text_encoder!r} needs subword_ids and subword_to_word (from AcnTokenizer "
                "with a subword_tokenizer)"
            )
        if (
            subword_ids.dim() != 2
            or subword_ids.shape[0] != input_ids.shape[0]
            or subword_to_word.shape != subword_ids.shape
        ):
            raise ValueError(
                f"subword_ids and subword_to_word must be (batch={input_ids.shape[0]}, subwords), got shapes "
                f"{tuple(subword_ids.shape)} and {tuple(subword_to_word.shape)}"
            )
        if subword_attention_mask is None:
            subword_attention_mask = torch.ones_like(subword_ids)
        if is_exporting():
            check_in_graph(subword_to_word.max() <= input_ids.shape[1], "subword_to_word points past the last word")
        elif subword_to_word.max() > input_ids.shape[1]:
            raise ValueError(
                f"subword_to_word points past the last of {input_ids.shape[1]} words: {subword_to_word.max().item()}"
            )
        return subword_ids, subword_attention_mask, subword_to_word

    def _image_mask(
        self: _AcnInputChecks,
        image_mask: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        image_features: torch.Tensor | None,
        input_ids: torch.Tensor,
    ) -> torch.Tensor:
        batch = input_ids.shape[0]
        if pixel_values is not None and image_features is not None:
            raise ValueError("pass pixel_values or image_features, not both")
        no_images = pixel_values is None and image_features is None
        if image_mask is None:  # no images at all: every tweet takes the text path
            return torch.full((batch,), not no_images, dtype=torch.bool, device=input_ids.device)
        if tuple(image_mask.shape) != (batch,):
            raise ValueError(f"image_mask must have shape ({batch},), got shape {tuple(image_mask.shape)}")
        message = "image_mask marks images present, but neither pixel_values nor image_features were given"
        if no_images and is_exporting():
            check_in_graph(~image_mask.any(), message)
        elif no_images and image_mask.any():
            raise ValueError(message)
        return image_mask.bool()

    def _image_features(
        self, pixel_values: torch.Tensor | None, image_features: torch.Tensor | None, image_mask: torch.Tensor
    ) -> torch.Tensor | None:
        """Pool5 features of the tweets that have an image; VGG runs on those only."""
        assert self.co_attention is not None  # called only by a model with images
        shape = (image_mask.shape[0], self.config.num_image_regions, self.config.image_feature_dim)
        dtype = self.co_attention.image_projection.weight.dtype
        if image_features is not None:
            if tuple(image_features.shape) != shape:
                raise ValueError(f"image_features must have shape {shape}, got shape {tuple(image_features.shape)}")
            return image_features[image_mask].to(dtype)  # (images, regions, 512)
        if pixel_values is None:
            return None
        check_pixel_values(pixel_values, batch=shape[0])
        if not is_exporting() and not image_mask.any():  # an exported graph takes any number of images
            return None
        return self.get_image_features(pixel_values[image_mask]).to(dtype)  # (images, regions, 512)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _base_model_method(
    method: Callable[Concatenate[AcnModel, _P], _R],
) -> Callable[Concatenate[AcnPreTrainedModel, _P], _R]:
    """`AcnModel`'s `method` for a head: the same signature and docstring, run on the head's `base_model` (the
    `AcnModel` at `base_model_prefix`), the way transformers' `get_input_embeddings` reaches it."""

    @functools.wraps(method)
    def on_base_model(self: AcnPreTrainedModel, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return getattr(self.base_model, method.__name__)(*args, **kwargs)

    return on_base_model


class AcnForTokenClassification(AcnPreTrainedModel):
    """ACN with its tag decoder: a CRF (paper) or independent softmax decisions (`decoder="softmax"`)."""

    bio_allowed: torch.Tensor  # buffers, registered in __init__
    bio_allowed_start: torch.Tensor
    # The head's modules beside the base model at `acn`; a base model loaded from this head's checkpoint leaves their
    # weights out (transformers reports them as unexpected keys).
    head_modules = ("classifier", "crf")

    def __init__(self, config: AcnConfig):
        super().__init__(config)
        self.acn = AcnModel(config)
        co_attention = self.acn.co_attention  # a model with images has one
        decoder_input_size = config.hidden_size + (co_attention.output_size if co_attention is not None else 0)
        self.classifier = nn.Linear(decoder_input_size, config.num_labels)  # W_m̂: emission potentials
        self.crf = AcnCrf(config.num_labels) if config.decoder == "crf" else None
        allowed, allowed_start = bio_transition_table(config.id2label)
        self.register_buffer("bio_allowed", allowed, persistent=False)  # (tags, tags), [from, to]
        self.register_buffer("bio_allowed_start", allowed_start, persistent=False)  # (tags,)
        self.post_init()

    @classmethod
    def is_head_key(cls, name: str) -> bool:
        """True for a weight of the head itself (`classifier.weight`, `crf.transitions`, ...), not of `acn`."""
        return name.split(".", 1)[0] in cls.head_modules

    def save_pretrained(
        self, save_directory: str | os.PathLike, is_main_process: bool = True, *args: Any, **kwargs: Any
    ) -> None:
        """As `PreTrainedModel.save_pretrained` (which `push_to_hub` calls), plus the pipeline's code and its entries
        in `config.custom_pipelines`: with the processor saved beside the model, the folder loads with
        `transformers.pipeline("token-classification", model=folder, trust_remote_code=True)` (or its alias `"ner"`,
        or `"multimodal-ner"`, which groups words into entities by default)."""
        self.config.custom_pipelines = custom_pipelines_entry()
        super().save_pretrained(save_directory, is_main_process, *args, **kwargs)
        if is_main_process:
            save_pipeline_code(save_directory)

    # AcnModel's public methods, run on `self.acn`. get_input_embeddings and set_input_embeddings need no line:
    # transformers' own reach `self.acn` through `base_model` (`base_model_prefix = "acn"`).
    load_text_encoder_weights = _base_model_method(AcnModel.load_text_encoder_weights)
    load_vision_weights = _base_model_method(AcnModel.load_vision_weights)
    calibrate_vision = _base_model_method(AcnModel.calibrate_vision)
    set_vision_calibration = _base_model_method(AcnModel.set_vision_calibration)
    effective_vision_precision = _base_model_method(AcnModel.effective_vision_precision)
    needs_vision_calibration = _base_model_method(AcnModel.needs_vision_calibration)
    get_image_features = _base_model_method(AcnModel.get_image_features)
    vision_trunk_id = _base_model_method(AcnModel.vision_trunk_id)

    def forward(
        self,
        input_ids: torch.Tensor,
        char_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
        subword_ids: torch.Tensor | None = None,
        subword_attention_mask: torch.Tensor | None = None,
        subword_to_word: torch.Tensor | None = None,
        image_features_trunk: str | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> AcnTokenClassifierOutput | tuple:
        r"""
        Args: as `AcnModel.forward`, plus
            labels (`torch.LongTensor` of shape `(batch, seq_len)`): tag ids, `-100` where the loss ignores the
                position (padding, and any word whose tag is unknown: the CRF sums over every tag there).
        """
        _refuse_unknown_arguments(kwargs)
        outputs = self.acn(
            input_ids,
            char_ids=char_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            image_features=image_features,
            image_mask=image_mask,
            subword_ids=subword_ids,
            subword_attention_mask=subword_attention_mask,
            subword_to_word=subword_to_word,
            image_features_trunk=image_features_trunk,
            output_attentions=output_attentions,
        )
        logits = self.classifier(outputs.last_hidden_state)  # (batch, seq_len, num_labels)
        loss = None
        if labels is not None:
            word_mask = _word_mask(attention_mask, input_ids)
            loss = self._loss(logits, _check_labels(labels, word_mask, self.config.num_labels), word_mask)
        outputs = AcnTokenClassifierOutput(loss=loss, logits=logits, **outputs)
        return outputs if return_dict is not False else outputs.to_tuple()

    def decode(
        self, logits: torch.Tensor, attention_mask: torch.Tensor | None = None, constrain_bio: bool = False
    ) -> list[list[int]]:
        """Best tag sequence per tweet.

        Args:
            logits (`torch.FloatTensor` of shape `(batch, seq_len, num_labels)`): from `forward`.
            attention_mask (`torch.Tensor` of shape `(batch, seq_len)`): 1 for words. Defaults to all ones.
            constrain_bio (`bool`): forbid `I-X` unless it follows `B-X` or `I-X` (and at the start).
        Returns:
            `list[list[int]]`: tag ids, one list per tweet, as long as the tweet.
        """
        word_mask = _word_mask(attention_mask, logits[..., 0])
        allowed = (self.bio_allowed, self.bio_allowed_start) if constrain_bio else (None, None)
        if self.crf is not None:
            paths = self.crf.decode(logits, word_mask, *allowed)  # (batch, seq_len)
        elif constrain_bio:  # best valid path under independent per-word probabilities
            no_transitions = logits.new_zeros(self.config.num_labels, self.config.num_labels)
            no_boundary = logits.new_zeros(self.config.num_labels)
            paths = viterbi_decode(
                logits.log_softmax(-1), word_mask, no_transitions, no_boundary, no_boundary, *allowed
            )
        else:
            paths = logits.argmax(-1)  # (batch, seq_len)
        return [path[:length].tolist() for path, length in zip(paths, word_mask.sum(-1).tolist(), strict=True)]

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # the forward algorithm sums many terms: float32 even under bf16 autocast
        with torch.autocast(logits.device.type, enabled=False):
            if self.crf is None:  # mean over the words with a known tag; 0 when no word has one
                known = word_mask & (labels != IGNORE_INDEX)  # (batch, seq_len)
                losses = nn.functional.cross_entropy(logits[known], labels[known], reduction="sum")
                return losses / known.sum().clamp(min=1)
            return -self.crf.log_likelihood(logits, labels, word_mask).mean()


def bio_transition_table(id2label: Mapping[int, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Which BIO transitions are valid: `(allowed[from, to], allowed_start[to])` as bool tensors."""
    labels = [id2label[index] for index in range(len(id2label))]
    inside_type = [label[2:] if label.startswith("I-") else None for label in labels]
    entity_type = [label[2:] if label[:2] in ("B-", "I-") else None for label in labels]
    allowed = torch.tensor(
        [[inside is None or entity_type[source] == inside for inside in inside_type] for source in range(len(labels))]
    )  # (tags, tags)
    allowed_start = torch.tensor([inside is None for inside in inside_type])  # (tags,)
    return allowed, allowed_start


def _check_loaded_weights(
    model: nn.Module,
    info: dict[str, Any],
    source: object,
    expected: Mapping[str, Callable[[str], bool] | None],
) -> None:
    """Refuse the load report's missing, unexpected and mismatched keys, less those that `expected[kind]` accepts,
    and non-finite weights."""
    problems = []
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        names = sorted(str(key[0] if isinstance(key, tuple) else key) for key in info.get(kind) or ())
        accepted = expected.get(kind)
        names = [name for name in names if accepted is None or not accepted(name)]
        if names:
            problems.append(
                f"{len(names)} {kind.replace('_', ' ')} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
            )
    non_finite = [
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and not tensor.is_meta and not torch.isfinite(tensor).all()
    ]
    if non_finite:
        problems.append(
            f"NaN or infinite values in {', '.join(non_finite[:5])}{', ...' if len(non_finite) > 5 else ''}"
        )
    if problems:
        raise ValueError(f"{source}: the checkpoint does not match the model: {'; '.join(problems)}")


def _short_id(trunk_id: str) -> str:
    backbone, _, digest = trunk_id.rpartition(":")
    return f"{backbone}:{digest[:12]}" if backbone else trunk_id[:12]


def _refuse_unknown_arguments(kwargs: Mapping[str, Any]) -> None:
    unknown = sorted(set(kwargs) - TRAINER_KEYWORDS)
    if unknown:
        raise TypeError(f"ACN's forward got unexpected keyword arguments {unknown}")


def _word_mask(attention_mask: torch.Tensor | None, reference: torch.Tensor) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones(reference.shape[:2], dtype=torch.bool, device=reference.device)
    return attention_mask.bool()


def _check_labels(labels: torch.Tensor, word_mask: torch.Tensor, num_labels: int) -> torch.Tensor:
    if labels.shape != word_mask.shape:
        raise ValueError(f"labels must have the shape of input_ids {tuple(word_mask.shape)}, got {tuple(labels.shape)}")
    real = labels[word_mask]
    bad = ((real < 0) | (real >= num_labels)) & (real != IGNORE_INDEX)
    if bad.any():
        raise ValueError(
            f"labels of real words must be in [0, {num_labels}) or {IGNORE_INDEX} (ignored by the loss), "
            f"got {sorted(set(real[bad].tolist()))}"
        )
    return labels


AcnModel.register_for_auto_class("AutoModel")
AcnForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")

__all__ = [
    "AcnCrf",
    "AcnForTokenClassification",
    "AcnModel",
    "AcnModelOutput",
    "AcnPreTrainedModel",
    "AcnTokenClassifierOutput",
    "bio_transition_table",
    "viterbi_decode",
]

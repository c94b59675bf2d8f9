"""What `torch.export` traces in place of ACN's eager code (`modeling_acn.py` switches to it while exporting, and only
then): input checks as assertions of the graph, and the BiLSTM over left-aligned tweets as one operator
(`acn::bilstm`) that any length traces and the ONNX export writes as ONNX's `LSTM`. Eager behaviour never goes
through this file."""

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


def is_exporting() -> bool:
    """Whether `torch.export` is tracing the model (`torch.compiler.is_exporting`, torch 2.7 and later; older torch
    cannot export ACN, and always runs the eager code)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return is_exporting is not None and is_exporting()


def check_in_graph(condition: torch.Tensor, message: str) -> None:
    """An input check on tensor values under `torch.export`, where a Python branch on them cannot be traced: an
    assertion node of the exported graph, which raises `RuntimeError(message)` when `condition` (a bool tensor of
    shape `()`) is False. (`torch._check` on `condition.item()` would assert too, but under a generated message.)
    Eager code raises `ValueError` instead, with the values in the message. ONNX has no assertions: the exporter
    drops them, and `AcnOnnxModel` checks its inputs before running the graph."""
    torch._assert_async(condition, message)


def bilstm_for_export(lstm: nn.LSTM, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The one-layer BiLSTM over left-aligned tweets as `pack_padded_sequence` runs it, as one operator that
    `torch.export` traces at any length: `torch.ops.acn.bilstm` (a packed sequence needs its lengths on the CPU as
    Python ints, and `nn.LSTM` on a padded tensor fixes the length in the graph). The ONNX export writes it as ONNX's
    `LSTM` operator (bidirectional, `sequence_lens` = the lengths), whose backward direction starts at each tweet's
    last word as packing does. Padding positions are 0, as `pad_packed_sequence` leaves them."""
    assert lstm.num_layers == 1 and lstm.bidirectional and lstm.bias and lstm.batch_first, "AcnTextEncoder's BiLSTM"
    weights = [getattr(lstm, f"{name}_l0{suffix}") for suffix in ("", "_reverse") for name in LSTM_WEIGHTS]
    return BILSTM(words, lengths, *weights)  # (batch, seq_len, 2 * hidden)


LSTM_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # per direction, gates i, f, g, o as nn.LSTM


def _bilstm(
    words: torch.Tensor,  # (batch, seq_len, input)
    lengths: torch.Tensor,  # (batch,)
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    weight_ih_reverse: torch.Tensor,
    weight_hh_reverse: torch.Tensor,
    bias_ih_reverse: torch.Tensor,
    bias_hh_reverse: torch.Tensor,
) -> torch.Tensor:
    """`torch.ops.acn.bilstm` in eager torch: `nn.LSTM`'s own kernel on the packed tweets."""
    packed = pack_padded_sequence(words, lengths.cpu(), batch_first=True, enforce_sorted=False)
    hidden = weight_hh.shape[1]
    initial = packed.data.new_zeros(2, words.shape[0], hidden)  # (directions, batch, hidden)
    flat = [
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        weight_ih_reverse,
        weight_hh_reverse,
        bias_ih_reverse,
        bias_hh_reverse,
    ]
    data, _, _ = torch.lstm(
        packed.data, packed.batch_sizes, (initial, initial), flat, True, 1, 0.0, False, True
    )  # (words in the batch, 2 * hidden)
    encoded = PackedSequence(data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
    padded, _ = pad_packed_sequence(encoded, batch_first=True, total_length=words.shape[1])
    return padded  # (batch, seq_len, 2 * hidden)


def _bilstm_shape(words: torch.Tensor, lengths: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
    return words.new_empty(words.shape[0], words.shape[1], 2 * weights[1].shape[1])  # (batch, seq_len, 2 * hidden)


def _define_bilstm() -> Any:
    """`acn::bilstm`, defined once per process (a model folder's copy of this file may be imported beside the
    package's)."""
    if hasattr(torch.ops.acn, "bilstm"):
        return torch.ops.acn.bilstm.default
    operator = torch.library.custom_op("acn::bilstm", _bilstm, mutates_args=())
    operator.register_fake(_bilstm_shape)
    return torch.ops.acn.bilstm.default


BILSTM = _define_bilstm()


__all__ = ["BILSTM", "LSTM_WEIGHTS", "bilstm_for_export", "check_in_graph", "is_exporting"]

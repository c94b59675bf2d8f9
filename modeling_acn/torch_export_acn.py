"""What `torch.export` traces in place of ACN's eager code (`modeling_acn.py` switches to it while exporting, and only
then): input checks as assertions of the graph, and the BiLSTM over left-aligned tweets as a `scan` that any length
traces. Eager behaviour never goes through this file."""

import torch
from torch import nn


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
    """The one-layer BiLSTM over left-aligned tweets as `pack_padded_sequence` runs it, in operations that
    `torch.export` traces at any length: a packed sequence needs its lengths on the CPU as Python ints, and `nn.LSTM`
    on a padded tensor fixes the length in the graph. Each direction is a `scan` over the steps; the backward one reads
    every tweet reversed within its own length, so it starts at its last word (not at the padding) as packing does.
    Padding positions are 0, as `pad_packed_sequence` leaves them."""
    from torch._higher_order_ops.scan import scan  # import on use: only export needs it

    assert lstm.num_layers == 1 and lstm.bidirectional and lstm.bias and lstm.batch_first, "AcnTextEncoder's BiLSTM"
    batch, seq_len, _ = words.shape
    steps = torch.arange(seq_len, device=words.device)  # (seq_len,)
    real = steps[None, :] < lengths[:, None]  # (batch, seq_len)
    # position t of a tweet of length n reads position n - 1 - t; padding stays where it is (a permutation)
    reversed_index = torch.where(real, lengths[:, None] - 1 - steps[None, :], steps[None, :])  # (batch, seq_len)

    def reverse(padded: torch.Tensor) -> torch.Tensor:  # (batch, seq_len, width), its own inverse
        return padded.gather(1, reversed_index[..., None].expand_as(padded))

    def direction(inputs: torch.Tensor, suffix: str) -> torch.Tensor:
        weight_hh = getattr(lstm, f"weight_hh_l0{suffix}")  # (4 * hidden, hidden): gates i, f, g, o
        bias = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}")  # (4 * hidden,)
        input_gates = nn.functional.linear(inputs.transpose(0, 1), getattr(lstm, f"weight_ih_l0{suffix}"), bias)
        # two tensors: an exported scan whose initial carries alias one another computes wrong values (torch 2.14)
        initial = (
            inputs.new_zeros(batch, lstm.hidden_size),
            inputs.new_zeros(batch, lstm.hidden_size),
        )  # (batch, hidden) x 2

        def step(
            carry: tuple[torch.Tensor, torch.Tensor],
            step_gates: torch.Tensor,  # (batch, 4 * hidden)
        ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
            hidden, cell = carry
            in_gate, forget_gate, cell_gate, out_gate = (step_gates + hidden @ weight_hh.T).chunk(4, dim=-1)
            cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(in_gate) * torch.tanh(cell_gate)  # (batch, hidden)
            hidden = torch.sigmoid(out_gate) * torch.tanh(cell)  # (batch, hidden)
            return (hidden, cell), hidden.clone()

        _, outputs = scan(step, initial, input_gates, dim=0)  # (seq_len, batch, hidden)
        return outputs.transpose(0, 1)  # (batch, seq_len, hidden)

    both = torch.cat([direction(words, ""), reverse(direction(reverse(words), "_reverse"))], dim=-1)
    return both * real[..., None]  # (batch, seq_len, 2 * hidden)


__all__ = ["bilstm_for_export", "check_in_graph", "is_exporting"]

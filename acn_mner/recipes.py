"""Training options of `train_acn.py`'s recipe study: re-initialised top encoder layers, adversarial word embeddings
(FGM) and R-Drop (mention replacement, a collator option, is `modeling_acn.AcnMentionReplacement`).

FGM (Miyato, Dai and Goodfellow, ICLR 2017, in the form NER fine-tuning uses): after the clean backward pass, the
word embedding matrix moves by ``epsilon * g / ||g||`` (g: its gradient), a second forward and backward pass on the
same batch adds the gradient of that adversarial loss, and the matrix moves back. R-Drop (Liang et al., NeurIPS
2021): the batch runs twice, with two dropout masks, and the loss is the mean of the two losses plus ``alpha`` times
the symmetric KL divergence between the two runs' per-word tag distributions (the softmax of the CRF emissions).
"""

import logging
import re

import torch
import torch.nn.functional as F

from modeling_acn.configuration_acn import IGNORE_INDEX

logger = logging.getLogger(__name__)

LAYER_MODULE = re.compile(r"(?:\w+\.)*?layers?\.(\d+)")  # the module of one encoder layer: BERT's encoder.layer.3


def reinitialise_top_layers(encoder: torch.nn.Module, count: int) -> None:
    """--reinit_top_layers: the top `count` layers of a pretrained encoder get BERT's initialisation again (linear
    weights normal(0, initializer_range), biases 0, LayerNorms 1 and 0). An encoder whose layers are not one flat
    numbered list, or hold parameters of other kinds, is refused, naming what was found."""
    if not count:
        return
    found = [
        (int(match.group(1)), name, module)
        for name, module in encoder.named_modules()
        if (match := LAYER_MODULE.fullmatch(name))
    ]
    layers = {index: module for index, _, module in found}
    if len(layers) != len(found) or sorted(layers) != list(range(len(layers))):
        raise ValueError(
            f"--reinit_top_layers needs one numbered list of encoder layers, found {[name for _, name, _ in found][:8]}"
        )
    if count > len(layers):
        raise ValueError(f"--reinit_top_layers {count}: the text encoder has {len(layers)} layers")
    std = getattr(encoder.config, "initializer_range", 0.02)
    for index in range(len(layers) - count, len(layers)):
        for module in layers[index].modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, torch.nn.LayerNorm):
                if module.weight is not None:
                    torch.nn.init.ones_(module.weight)
            elif next(module.parameters(recurse=False), None) is not None:
                raise ValueError(
                    f"--reinit_top_layers knows Linear and LayerNorm weights, not {type(module).__name__}'s (layer "
                    f"{index})"
                )
            if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)) and module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    logger.info(f"text encoder: top {count} of {len(layers)} layers re-initialised")


class FgmPerturbation:
    """Moves an embedding matrix along the gradient of the current batch, and back exactly.

    Call `start` before the batch's clean backward pass: the step follows what that pass adds to the gradient, not
    what earlier micro-batches of an accumulated step left there. Under DDP the clean pass of a syncing step has
    already averaged the processes' gradients, so the step follows their mean.

    Args:
        embedding (`torch.nn.Embedding`): the word (or subword) embeddings, `model.get_input_embeddings()`.
        epsilon (`float`): the size of the move, as an L2 norm over the whole matrix.
    """

    def __init__(self, embedding: torch.nn.Embedding, epsilon: float) -> None:
        if epsilon <= 0:
            raise ValueError(f"FGM epsilon must be positive, got {epsilon!r}")
        self.weight, self.epsilon = embedding.weight, epsilon
        self._saved: torch.Tensor | None = None
        self._before: torch.Tensor | None = None

    @torch.no_grad()
    def start(self) -> None:
        """Remember the gradient before the batch's clean backward pass (None: nothing accumulated)."""
        self._before = None if self.weight.grad is None else self.weight.grad.detach().clone()

    @torch.no_grad()
    def perturb(self) -> bool:
        """Add ``epsilon * g / ||g||``, g the gradient the clean pass added since `start`; False (and no change) where
        there is none, or a zero or non-finite one."""
        grad = self.weight.grad
        if grad is None:
            return False
        if self._before is not None:
            grad = grad - self._before  # (vocab, dim): this batch's own gradient
        norm = torch.linalg.vector_norm(grad.float())
        if not torch.isfinite(norm) or norm == 0:
            return False
        self._saved = self.weight.detach().clone()
        self.weight.add_((self.epsilon / norm) * grad)  # (vocab, dim)
        return True

    @torch.no_grad()
    def restore(self) -> None:
        """Put the weights back bit for bit."""
        if self._saved is not None:
            self.weight.copy_(self._saved)
            self._saved = None


def symmetric_kl(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``(KL(p || q) + KL(q || p)) / 2`` for the softmaxes p, q of two `(rows, labels)` logits."""
    first_log, second_log = (
        F.log_softmax(first.float(), dim=-1),
        F.log_softmax(second.float(), dim=-1),
    )  # (rows, labels)
    forward = F.kl_div(second_log, first_log, log_target=True, reduction="none").sum(-1)  # KL(p || q), (rows,)
    backward = F.kl_div(first_log, second_log, log_target=True, reduction="none").sum(-1)  # KL(q || p), (rows,)
    return ((forward + backward) / 2).mean()


def rdrop_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], alpha: float) -> torch.Tensor:
    """The R-Drop training loss of `batch`: two forward passes (two dropout masks), their mean loss (the CRF's
    negative log-likelihood per tweet) plus `alpha` times the symmetric KL divergence of their tag distributions,
    averaged over the words (labels other than -100). The paper sums the two losses: its alpha is twice this one."""
    first, second = model(**batch), model(**batch)
    words = batch["labels"] != IGNORE_INDEX  # (batch, seq_len)
    return (first.loss + second.loss) / 2 + alpha * symmetric_kl(first.logits[words], second.logits[words])

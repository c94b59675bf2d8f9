"""ACN in ONNX Runtime: `AcnOnnxModel` stands in for `AcnForTokenClassification` in `AcnPipeline`, and `AcnNumpyCrf`
decodes and scores its emissions in numpy.

A folder written by `acn-export` (`acn_mner.onnx_export`) holds `model.onnx` (float32) and, with `--int8`,
`model_int8.onnx` (ONNX Runtime's dynamic int8 quantisation of the weight matrices); for a model with images also
`vision.onnx` (the image trunk, pixels to region features, float32); `onnx_config.json` with the CRF's scores; and the
model folder's config, tokenizer and processor files. Load it with
`AcnPipeline.from_pretrained(folder, backend="onnxruntime")` (`onnx_file="model_int8.onnx"` for the int8 graph).

The graphs compute the emissions (`logits`) from the same inputs as the model's `forward`, with dynamic batch and
lengths. ONNX has no assertions, so `AcnOnnxModel` runs the eager model's own input checks before the graph, and they
refuse the same inputs with the same messages. Decoding (Viterbi) and the marginals (forward-backward) run in numpy.
Loading checks the folder's parts against config.json: the graphs' inputs and output sizes, the CRF's scores (finite,
one per label), and the trunk that `vision.onnx` records against `onnx_config.json`'s; a malformed part is a
`ValueError` of one line naming its file.
onnxruntime is an optional dependency (`pip install onnxruntime`).
"""

import json
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from .configuration_acn import AcnConfig
from .modeling_acn import (
    FORBIDDEN_SCORE,
    AcnModel,
    AcnTokenClassifierOutput,
    _short_id,
    _viterbi_numpy,
    bio_transition_table,
    viterbi_decode,
)
from .vision_acn import BACKBONE_INPUT_SIZE, check_pixel_values

if TYPE_CHECKING:
    import onnxruntime

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
VISION_ONNX_FILE = "vision.onnx"
VISION_ONNX_INT8_FILE = (
    "vision_int8.onnx"  # static int8 (QDQ), calibrated on images: `acn-export --int8 --calibration_images`
)
ONNX_CONFIG_FILE = "onnx_config.json"  # the CRF's scores and how the graphs were made
LOGITS = "logits"  # the graphs' one output
PIXEL_VALUES = "pixel_values"  # vision.onnx's input; its output is IMAGE_FEATURES
IMAGE_FEATURES = "image_features"
# The vision graphs' metadata_props entry naming the trunk they hold, its `vision_trunk_id()` (`acn-export` writes it;
# folders exported before it have none, and are checked by their shapes only).
TRUNK_ID_KEY = "acn.vision_trunk_id"
# ONNX Runtime's fusion of the residual Add and LayerNormalization into its SkipLayerNormalization kernel made the
# whole MiniLM-L6 graph 20% slower on the CPU (int8, batch 32; float32: 8%): that kernel took a fifth of the time
# (`benchmarks/serve.py --profile`). The two operators stay apart.
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]
# The widest range of CRF scores (within one table) for which `AcnNumpyCrf.marginals` runs in probability space.
SCALED_SPREAD_LIMIT = 500.0
ONNX_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
    "tensor(float)": np.float32,
}  # the graphs' input types
CRF_SCORES = (
    "start_transitions",
    "end_transitions",
    "transitions",
)  # onnx_config.json's "crf": (tags,), (tags,), (tags, tags)


def onnx_min_char_width(config: AcnConfig) -> int:
    """The narrowest character axis the graph takes: the widest kernel plus one. (Exported at any width, the
    character CNN pads narrower words in a branch on the width; export then fixes the width in the graph.) Padding
    characters do not change a word's vector, so narrower inputs are padded to it."""
    return max(config.char_kernel_sizes) + 1


def import_onnxruntime() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("the ONNX Runtime backend needs onnxruntime: pip install onnxruntime") from error
    return onnxruntime


class AcnNumpyCrf:
    """`AcnCrf`'s decoding and marginals in numpy, from its three score tables.

    Index convention as in `AcnCrf`: `transitions[from_tag, to_tag]`. Masks are `(batch, seq_len)` booleans,
    left-aligned: real words first, then padding.
    """

    def __init__(self, start_transitions: ArrayLike, end_transitions: ArrayLike, transitions: ArrayLike) -> None:
        self.start_transitions = np.asarray(start_transitions, dtype=np.float32)  # (tags,)
        self.end_transitions = np.asarray(end_transitions, dtype=np.float32)  # (tags,)
        self.transitions = np.asarray(transitions, dtype=np.float32)  # (from, to)
        num_tags = self.start_transitions.shape[0]
        if self.end_transitions.shape != (num_tags,) or self.transitions.shape != (num_tags, num_tags):
            raise ValueError(
                f"CRF scores must be (tags,), (tags,) and (tags, tags), got shapes {self.start_transitions.shape}, "
                f"{self.end_transitions.shape} and {self.transitions.shape}"
            )
        # Per-model tables, made once rather than per call: float64 scores for forward-backward, their exponentials
        # (each table less its peak, so that none overflows) for the scaled forward-backward of `marginals`, and
        # Viterbi's (to, from) table per BIO constraint (`_viterbi_tables`).
        self._transitions64 = self.transitions.astype(np.float64)  # (from, to)
        self._exp_transitions = np.exp(self._transitions64 - self._transitions64.max())  # (from, to)
        self._exp_start = np.exp(self.start_transitions.astype(np.float64) - self.start_transitions.max())  # (tags,)
        self._exp_end = np.exp(self.end_transitions.astype(np.float64) - self.end_transitions.max())  # (tags,)
        # Past this range of scores, exp(score - peak) could underflow to 0 in float64 (exp(-745)): then the
        # log-space forward-backward, slower, computes the marginals.
        spread = max(float(np.ptp(table)) for table in (self.transitions, self.start_transitions, self.end_transitions))
        self._scaled_marginals = spread < SCALED_SPREAD_LIMIT
        self._viterbi_cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def log_partition(self, emissions: ArrayLike, mask: ArrayLike) -> np.ndarray:
        """log Z per sequence, `(batch,)`: the forward algorithm, as `AcnCrf.log_partition`."""
        alphas, _ = self._forward_backward(
            np.asarray(emissions, dtype=np.float64), np.asarray(mask, dtype=bool), backward=False
        )
        return _logsumexp(alphas[:, -1] + self.end_transitions, axis=-1).astype(np.float32)  # (batch,)

    def marginals(self, emissions: ArrayLike, mask: ArrayLike) -> np.ndarray:
        """`p(y_t = k | x)`, `(batch, seq_len, tags)`, 0 at padding: forward-backward, `alpha_t + beta_t - log Z`.

        Equal to the gradient of `AcnCrf.log_partition` with respect to the emissions, which `tag_marginals` takes
        for the torch model. Computed in float64, returned as float32.
        """
        mask = np.asarray(mask, dtype=bool)
        emissions = np.asarray(emissions, dtype=np.float64)  # (batch, seq_len, tags)
        if self._scaled_marginals and emissions.shape[1] > 0:
            marginals = self._scaled_forward_backward(emissions, mask)  # (batch, seq_len, tags)
            if np.isfinite(marginals).all():  # else an underflow (0/0): the log-space recursion below
                return marginals.astype(np.float32)
        alphas, betas = self._forward_backward(emissions, mask, backward=True)
        assert betas is not None  # backward=True computes them
        log_z = _logsumexp(alphas[:, -1] + self.end_transitions, axis=-1)  # (batch,)
        marginals = np.exp(alphas + betas - log_z[:, None, None])  # (batch, seq_len, tags)
        return (marginals * mask[..., None]).astype(np.float32)

    def _scaled_forward_backward(self, emissions: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The marginals by forward-backward in probability space, each step's vector rescaled to sum 1: a
        vector-matrix product per step instead of a log-sum-exp. With alpha_t and beta_t known up to a factor
        per step, `alpha_t(k) beta_t(k) / sum_j alpha_t(j) beta_t(j)` is still `p(y_t = k | x)` (the sum is Z at
        every t). `(batch, seq_len, tags)` float64, 0 at padding; NaN where a step's vector underflowed."""
        batch, seq_len, _ = emissions.shape
        lengths = mask.sum(-1)  # (batch,)
        ragged = bool((lengths != seq_len).any())
        # exp of each step's emissions less the step's peak: at most 1, and 1 at the best tag
        scaled = np.exp(emissions - emissions.max(-1, keepdims=True))  # (batch, seq_len, tags)
        alphas = np.empty_like(emissions)  # (batch, seq_len, tags)
        alpha = self._exp_start * scaled[:, 0]  # (batch, tags)
        alphas[:, 0] = alpha = alpha / alpha.sum(-1, keepdims=True)
        for step in range(1, seq_len):
            summed = (alpha @ self._exp_transitions) * scaled[:, step]  # (batch, to)
            summed /= summed.sum(-1, keepdims=True)
            alphas[:, step] = alpha = np.where(mask[:, step, None], summed, alpha) if ragged else summed
        betas = np.empty_like(emissions)  # (batch, seq_len, tags)
        betas[:, -1] = beta = np.broadcast_to(self._exp_end, (batch, self._exp_end.shape[0]))
        for step in range(seq_len - 2, -1, -1):
            summed = (beta * scaled[:, step + 1]) @ self._exp_transitions.T  # (batch, from)
            summed /= summed.sum(-1, keepdims=True)
            # at and after each sequence's last word: the end scores
            betas[:, step] = beta = (
                np.where((lengths <= step + 1)[:, None], self._exp_end, summed) if ragged else summed
            )
        marginals = alphas * betas  # (batch, seq_len, tags)
        marginals /= marginals.sum(-1, keepdims=True)
        return marginals * mask[..., None] if ragged else marginals

    def decode(
        self,
        emissions: ArrayLike | torch.Tensor,
        mask: ArrayLike | torch.Tensor,
        allowed: torch.Tensor | None = None,
        allowed_start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Best tag path per sequence (Viterbi), `(batch, seq_len)` long with `-100` at padding; see `AcnCrf.decode`."""
        if (allowed is None) != (allowed_start is None):
            raise ValueError("allowed and allowed_start constrain decoding together: give both or neither")
        return torch.from_numpy(self.decode_numpy(_float32(emissions), _bool(mask), allowed, allowed_start))

    def decode_numpy(
        self,
        emissions: np.ndarray,
        mask: np.ndarray,
        allowed: ArrayLike | torch.Tensor | None = None,
        allowed_start: ArrayLike | torch.Tensor | None = None,
    ) -> np.ndarray:
        """`decode` on numpy arrays, float32 emissions `(batch, seq_len, tags)` and a bool mask: `(batch, seq_len)`
        int64 paths. The constrained tables are made once per constraint (`AcnOnnxModel` has one: BIO)."""
        incoming, start = self._viterbi_tables(allowed, allowed_start)
        return _viterbi_numpy(emissions, mask, incoming, start, self.end_transitions, transposed=True)

    def _viterbi_tables(
        self, allowed: ArrayLike | torch.Tensor | None, allowed_start: ArrayLike | torch.Tensor | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Viterbi's `(to, from)` transition table and start scores, forbidden moves at `FORBIDDEN_SCORE` (as
        `viterbi_decode`'s masked_fill), cached per constraint."""
        if allowed is None or allowed_start is None:
            allowed_array = np.ones(self.transitions.shape, dtype=bool)
            allowed_start_array = np.ones(self.start_transitions.shape, dtype=bool)
        else:
            allowed_array, allowed_start_array = _bool(allowed), _bool(allowed_start)
        key = allowed_array.tobytes() + b"|" + allowed_start_array.tobytes()
        tables = self._viterbi_cache.get(key)
        if tables is None:
            forbidden = np.float32(FORBIDDEN_SCORE)
            transitions = np.where(allowed_array, self.transitions, forbidden)  # (from, to)
            start = np.where(allowed_start_array, self.start_transitions, forbidden)  # (tags,)
            tables = self._viterbi_cache[key] = (np.ascontiguousarray(transitions.T), start)
        return tables

    def _forward_backward(
        self, emissions: np.ndarray, mask: np.ndarray, backward: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """alpha `(batch, seq_len, tags)`: log-sum of the scores of the paths from the start to tag k at step t
        (padding steps carry the last word's alpha forward, so `alphas[:, -1]` is every sequence's last);
        beta: of the paths from tag k at t to the end, `end_transitions` at each sequence's last word."""
        seq_len = emissions.shape[1]
        transitions = self._transitions64
        alphas = np.empty_like(emissions)  # (batch, seq_len, tags)
        alphas[:, 0] = self.start_transitions + emissions[:, 0]
        for step in range(1, seq_len):
            # logsumexp over `from` of alpha[from] + transitions[from, to]
            summed = _logsumexp(alphas[:, step - 1, :, None] + transitions, axis=1) + emissions[:, step]  # (batch, to)
            alphas[:, step] = np.where(mask[:, step, None], summed, alphas[:, step - 1])
        if not backward:
            return alphas, None
        lengths = mask.sum(-1)  # (batch,)
        betas = np.zeros_like(emissions)  # (batch, seq_len, tags)
        betas[:, -1] = self.end_transitions
        for step in range(seq_len - 2, -1, -1):
            # logsumexp over `to` of transitions[from, to] + emission[t + 1, to] + beta[t + 1, to]
            following = emissions[:, step + 1] + betas[:, step + 1]  # (batch, to)
            summed = _logsumexp(transitions + following[:, None, :], axis=2)  # (batch, from)
            last = (lengths == step + 1)[:, None]  # (batch, 1): this step is the sequence's last word
            betas[:, step] = np.where(last, self.end_transitions, np.where(mask[:, step + 1, None], summed, 0.0))
        return alphas, betas


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = values.max(axis=axis, keepdims=True)
    return (peak + np.log(np.exp(values - peak).sum(axis=axis, keepdims=True))).squeeze(axis)


def _float32(values: ArrayLike | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().float().numpy()
    return np.asarray(values, dtype=np.float32)


def _bool(values: ArrayLike | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=bool)


class AcnOnnxModel:
    """An exported ACN folder run by ONNX Runtime on the CPU, with what `AcnPipeline` reads of the torch model:
    `config`, `forward(**inputs)` (`logits`), `decode`, `crf` and `get_image_features`.

    Args:
        folder: a folder written by `acn_mner.onnx_export.export_onnx` (`acn-export`).
        onnx_file: the graph to run, `"model.onnx"` (float32) or `"model_int8.onnx"`.
        session_options: `onnxruntime.SessionOptions` for the sessions (threads, graph optimisation).
    """

    main_input_name = "input_ids"

    def __init__(
        self,
        folder: str | os.PathLike,
        onnx_file: str = ONNX_FILE,
        session_options: "onnxruntime.SessionOptions | None" = None,
        vision_onnx_file: str = VISION_ONNX_FILE,
    ) -> None:
        runtime = import_onnxruntime()
        folder = Path(folder)
        if not (folder / onnx_file).is_file():
            raise ValueError(f"{folder} has no {onnx_file}: export the model with acn-export first")
        self.config = AcnConfig.from_pretrained(folder)
        self.crf, self._vision_trunk_id = read_onnx_config(folder / ONNX_CONFIG_FILE, self.config)
        self.session = _session(runtime, folder / onnx_file, session_options, disabled_optimizers=DISABLED_OPTIMIZERS)
        self.input_types = check_logits_graph(folder / onnx_file, self.session, self.config)
        self.vision_session: onnxruntime.InferenceSession | None = None
        if vision_onnx_file != VISION_ONNX_FILE and not (folder / vision_onnx_file).is_file():
            raise ValueError(
                f"{folder} has no {vision_onnx_file}: export the model with acn-export --int8 --calibration_images"
            )
        if self.config.use_image and (folder / vision_onnx_file).is_file():
            self.vision_session = _session(runtime, folder / vision_onnx_file, session_options)
            assert self._vision_trunk_id is not None  # read_onnx_config requires one for a model with images
            check_vision_graph(folder / vision_onnx_file, self.vision_session, self.config, self._vision_trunk_id)
        self.vision_onnx_file = vision_onnx_file
        self.bio_allowed, self.bio_allowed_start = bio_transition_table(self.config.id2label)  # (tags, tags), (tags,)
        self.onnx_file = onnx_file

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        onnx_file: str = ONNX_FILE,
        session_options: "onnxruntime.SessionOptions | None" = None,
        vision_onnx_file: str = VISION_ONNX_FILE,
    ) -> "AcnOnnxModel":
        return cls(folder, onnx_file, session_options, vision_onnx_file)

    # --- what transformers' Pipeline reads of a model ---------------------------------------------------------
    device = torch.device("cpu")
    dtype = torch.float32

    def to(self, device: str | torch.device) -> "AcnOnnxModel":
        if torch.device(device).type != "cpu":
            raise ValueError(f"the ONNX Runtime backend runs on the CPU, got device {device!r}")
        return self

    def eval(self) -> "AcnOnnxModel":
        return self

    def can_generate(self) -> bool:
        return False

    # --- the model ---------------------------------------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> AcnTokenClassifierOutput | tuple:
        return self.forward(*args, **kwargs)

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
    ) -> AcnTokenClassifierOutput | tuple:
        """As `AcnForTokenClassification.forward`, for inference: `logits` only (no loss, no attention maps)."""
        if labels is not None:
            raise ValueError("the ONNX Runtime backend computes no loss: call it without labels")
        if output_attentions:
            raise ValueError("the ONNX graph outputs the logits only: output_attentions needs the torch backend")
        # The eager model's own checks (they read only `config`): ONNX drops the exported graph's assertions.
        word_mask = AcnModel._check_text_inputs(self, input_ids, char_ids, attention_mask)  # (batch, seq_len)
        subwords = AcnModel._check_subword_inputs(self, subword_ids, subword_attention_mask, subword_to_word, input_ids)
        feed = {"input_ids": input_ids, "attention_mask": word_mask.long()}
        if self.config.use_char_cnn:
            assert char_ids is not None  # _check_text_inputs requires them with the character CNN
            width = onnx_min_char_width(self.config)
            shortfall = max(width - char_ids.shape[-1], 0)
            feed["char_ids"] = torch.nn.functional.pad(char_ids, (0, shortfall), value=self.config.char_pad_id)
        if subwords is not None:
            assert self.config.text_encoder_window is not None  # AcnConfig sets it with a pretrained encoder
            if subwords[0].shape[1] > self.config.text_encoder_window:
                raise ValueError(
                    f"the ONNX graph encodes at most text_encoder_window={self.config.text_encoder_window} "
                    f"subwords per tweet, got {subwords[0].shape[1]}: tag longer tweets with the torch backend"
                )
            feed.update(zip(("subword_ids", "subword_attention_mask", "subword_to_word"), subwords, strict=True))
        if self.config.use_image:
            if image_features is not None and image_features_trunk is not None:
                AcnModel._check_features_trunk(self, image_features_trunk)
            image_mask = AcnModel._image_mask(self, image_mask, pixel_values, image_features, input_ids)  # (batch,)
            AcnModel._check_image_tweet_lengths(self, word_mask.sum(-1), image_mask)
            feed["image_features"] = self._image_features(pixel_values, image_features, image_mask)
            feed["image_mask"] = image_mask
        arrays: dict[str, np.ndarray] = {
            name: _as_numpy(feed[name]).astype(dtype, copy=False) for name, dtype in self.input_types.items()
        }
        (logits,) = self.session.run([LOGITS], arrays)
        outputs = AcnTokenClassifierOutput(logits=torch.from_numpy(logits))
        return outputs if return_dict is not False else outputs.to_tuple()

    def decode(
        self, logits: torch.Tensor, attention_mask: torch.Tensor | None = None, constrain_bio: bool = False
    ) -> list[list[int]]:
        """As `AcnForTokenClassification.decode`: best tag ids per tweet, `list[list[int]]`."""
        word_mask = torch.ones(logits.shape[:2], dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        allowed = (self.bio_allowed, self.bio_allowed_start) if constrain_bio else (None, None)
        if self.crf is not None:  # numpy throughout: the logits are ONNX Runtime's array, shared with the tensor
            mask = _bool(word_mask)  # (batch, seq_len)
            best = self.crf.decode_numpy(_float32(logits), mask, *allowed)  # (batch, seq_len)
            return [path[:length].tolist() for path, length in zip(best, mask.sum(-1).tolist(), strict=True)]
        if constrain_bio:  # best valid path under independent per-word probabilities
            no_boundary = torch.zeros(self.config.num_labels)
            no_transitions = torch.zeros(self.config.num_labels, self.config.num_labels)
            paths = viterbi_decode(
                logits.float().log_softmax(-1), word_mask, no_transitions, no_boundary, no_boundary, *allowed
            )
        else:
            paths = logits.argmax(-1)  # (batch, seq_len)
        return [path[:length].tolist() for path, length in zip(paths, word_mask.sum(-1).tolist(), strict=True)]

    def vision_trunk_id(self) -> str:
        """The exported model's `vision_trunk_id()`, as `onnx_config.json` records it."""
        if not self.config.use_image:
            raise ValueError("this model has no vision trunk (use_image=False)")
        assert self._vision_trunk_id is not None  # read_onnx_config requires one for a model with images
        return self._vision_trunk_id

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """As `AcnModel.get_image_features`, through `vision.onnx` (float32) or `vision_int8.onnx`:
        `(batch, regions, image_feature_dim)`."""
        if not self.config.use_image:
            raise ValueError("this model has no vision trunk (use_image=False)")
        if self.vision_session is None:
            raise ValueError(f"this folder has no {VISION_ONNX_FILE}: pass images as precomputed image features")
        check_pixel_values(pixel_values)
        (features,) = self.vision_session.run([IMAGE_FEATURES], {PIXEL_VALUES: _as_numpy(pixel_values.float())})
        return torch.from_numpy(features)

    def _image_features(
        self, pixel_values: torch.Tensor | None, image_features: torch.Tensor | None, image_mask: torch.Tensor
    ) -> torch.Tensor:
        """The graph's `image_features` input, `(batch, regions, image_feature_dim)`: given ones, or the trunk's
        features of the tweets with an image (zeros for the others, which the graph does not read)."""
        shape = (image_mask.shape[0], self.config.num_image_regions, self.config.image_feature_dim)
        if image_features is not None:
            if tuple(image_features.shape) != shape:
                raise ValueError(f"image_features must have shape {shape}, got shape {tuple(image_features.shape)}")
            return image_features.float()
        features = torch.zeros(shape)
        if pixel_values is not None:
            check_pixel_values(pixel_values, batch=shape[0])
            if image_mask.any():
                features[image_mask] = self.get_image_features(pixel_values[image_mask])
        return features


# --- the folder's parts, checked against config.json as they load (each problem: one line naming the file) ---------


def read_onnx_config(path: Path, config: AcnConfig) -> tuple[AcnNumpyCrf | None, str | None]:
    """`onnx_config.json`'s CRF scores (finite, shaped for config.json's labels; None for a softmax decoder) and the
    exported trunk's id (None without images)."""
    try:
        exported = json.loads(path.read_bytes())
    except ValueError as error:  # invalid JSON or text that is not UTF-8
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(exported, dict) or not {"crf", "vision_trunk_id"} <= exported.keys():
        raise ValueError(
            f"{path} must be a JSON object with 'crf' and 'vision_trunk_id': export the model again with acn-export"
        )
    crf = exported["crf"]
    if (crf is None) != (config.decoder != "crf"):
        scores = "no CRF scores" if crf is None else "CRF scores"
        raise ValueError(
            f"{path} has {scores}, and config.json's decoder is {config.decoder!r}: "
            "export the model again with acn-export"
        )
    trunk_id = exported["vision_trunk_id"]
    if not config.use_image and trunk_id is not None:
        raise ValueError(
            f"{path} records the vision trunk {_abridged(trunk_id)}, "
            "and config.json's model has no images (use_image=False)"
        )
    if config.use_image and not (isinstance(trunk_id, str) and trunk_id.startswith(f"{config.vision_backbone}:")):
        raise ValueError(
            f"{path}: vision_trunk_id must be config.json's vision_backbone and a digest "
            f"('{config.vision_backbone}:...'), got {_abridged(trunk_id)}"
        )
    return (None if crf is None else _crf_scores(path, crf, config.num_labels)), trunk_id


def _crf_scores(path: Path, crf: object, num_labels: int) -> AcnNumpyCrf:
    """The three score tables as float32, each a finite number per label (pair)."""
    if not isinstance(crf, dict) or set(crf) != set(CRF_SCORES):
        raise ValueError(f"{path}: crf must hold {', '.join(CRF_SCORES)}, got {_abridged(crf)}")
    tables: dict[str, np.ndarray] = {}
    for name, shape in zip(CRF_SCORES, ((num_labels,), (num_labels,), (num_labels, num_labels)), strict=True):
        table: np.ndarray | None
        try:
            table = np.asarray(crf[name])
        except ValueError:  # ragged lists
            table = None
        if table is None or table.dtype.kind not in "iuf":
            raise ValueError(f"{path}: crf {name} must be numbers, got {_abridged(crf[name])}")
        if table.shape != shape:
            raise ValueError(
                f"{path}: crf {name} has shape {table.shape}, and config.json's {num_labels} labels need {shape}"
            )
        with np.errstate(over="ignore"):  # a number beyond float32's range becomes inf, refused below
            tables[name] = table.astype(np.float32)
        bad = int((~np.isfinite(tables[name])).sum())
        if bad:
            raise ValueError(f"{path}: crf {name} holds {bad} NaN or infinite scores (or beyond float32's range)")
    return AcnNumpyCrf(**tables)


def _session(
    runtime: ModuleType, path: Path, session_options: "onnxruntime.SessionOptions | None", **options: Any
) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime session on `path`; a file that is not a loadable graph (truncated, corrupt) is a ValueError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as errors

    unloadable = (
        errors.Fail,
        errors.InvalidArgument,
        errors.InvalidGraph,
        errors.InvalidProtobuf,
        errors.NotImplemented,
    )
    try:
        return runtime.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"], **options)
    except unloadable as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"{path} is not a loadable ONNX graph (truncated or corrupt?): {reason}") from None


def expected_inputs(config: AcnConfig) -> dict[str, str]:
    """The inputs of the logits graph that `acn-export` writes for `config`, with their ONNX types."""
    names = ["input_ids", "attention_mask"]
    names += ["char_ids"] if config.use_char_cnn else []
    names += ["subword_ids", "subword_attention_mask", "subword_to_word"] if config.uses_pretrained_text_encoder else []
    types = {name: "tensor(int64)" for name in names}
    if config.use_image:
        types.update(image_features="tensor(float)", image_mask="tensor(bool)")
    return types


def check_logits_graph(path: Path, session: "onnxruntime.InferenceSession", config: AcnConfig) -> dict[str, type]:
    """Refuse a logits graph whose inputs are not config.json's model's (a text-only graph in an image model's folder,
    or the reverse) or whose logits do not score config.json's labels; returns the numpy type of each input."""
    got = {graph_input.name: graph_input.type for graph_input in session.get_inputs()}
    expected = expected_inputs(config)
    if got != expected:
        retyped = [
            f"{name} ({got[name]})" for name in sorted(got.keys() & expected.keys()) if got[name] != expected[name]
        ]
        missing, unexpected = sorted(expected.keys() - got.keys()), sorted(got.keys() - expected.keys())
        differences = (("missing", missing), ("unexpected", unexpected), ("of another type", retyped))
        raise ValueError(
            f"{path} was exported from another model: its inputs do not match config.json's "
            f"(use_image={config.use_image}, use_char_cnn={config.use_char_cnn}, "
            f"text_encoder={config.text_encoder!r}): "
            + "; ".join(f"{what} {', '.join(names)}" for what, names in differences if names)
        )
    if config.use_image:
        image_shape = next(
            graph_input.shape for graph_input in session.get_inputs() if graph_input.name == IMAGE_FEATURES
        )
        _check_shape(path, IMAGE_FEATURES, image_shape, (None, config.num_image_regions, config.image_feature_dim))
    _check_shape(
        path, LOGITS, _output_shape(path, session, LOGITS), (None, None, config.num_labels), " (a score per label)"
    )
    return {name: ONNX_TYPES[onnx_type] for name, onnx_type in expected.items()}


def check_vision_graph(path: Path, session: "onnxruntime.InferenceSession", config: AcnConfig, trunk_id: str) -> None:
    """Refuse a vision graph that does not map 224 x 224 pixels to config.json's regions, or that records another
    trunk than `onnx_config.json` (graphs exported before the record: the shapes only)."""
    inputs = {graph_input.name: graph_input for graph_input in session.get_inputs()}
    if set(inputs) != {PIXEL_VALUES}:
        raise ValueError(f"{path} takes the inputs {sorted(inputs)}, and an image trunk takes {PIXEL_VALUES} alone")
    _check_shape(path, PIXEL_VALUES, inputs[PIXEL_VALUES].shape, (None, 3, BACKBONE_INPUT_SIZE, BACKBONE_INPUT_SIZE))
    _check_shape(
        path,
        IMAGE_FEATURES,
        _output_shape(path, session, IMAGE_FEATURES),
        (None, config.num_image_regions, config.image_feature_dim),
    )
    recorded = session.get_modelmeta().custom_metadata_map.get(TRUNK_ID_KEY)
    if recorded is not None and recorded != trunk_id:
        raise ValueError(
            f"{path} holds the vision trunk {_short_id(recorded)}, "
            f"and {ONNX_CONFIG_FILE} records {_short_id(trunk_id)}: "
            "the graph comes from another model; export the model again with acn-export"
        )


def _output_shape(path: Path, session: "onnxruntime.InferenceSession", name: str) -> list:
    shapes = {graph_output.name: graph_output.shape for graph_output in session.get_outputs()}
    if name not in shapes:
        raise ValueError(f"{path} has no output {name!r} (its outputs: {sorted(shapes)})")
    return shapes[name]


def _check_shape(path: Path, name: str, shape: list, expected: tuple, why: str = "") -> None:
    """`shape` as ONNX Runtime gives it (ints, or names for dynamic axes) against `expected` (None: any size)."""
    if len(shape) != len(expected) or any(
        want is not None and size != want for size, want in zip(shape, expected, strict=True)
    ):
        wanted = ["any" if want is None else want for want in expected]
        raise ValueError(f"{path}: {name} has shape {shape}, and config.json's model needs {wanted}{why}")


def _abridged(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())


__all__ = [
    "AcnNumpyCrf",
    "AcnOnnxModel",
    "check_logits_graph",
    "check_vision_graph",
    "expected_inputs",
    "import_onnxruntime",
    "onnx_min_char_width",
    "read_onnx_config",
]

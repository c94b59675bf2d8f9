"""Configuration of the Adaptive Co-attention Network (Zhang, Fu, Liu, Huang, AAAI 2018)."""

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, PretrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100  # label of padding positions, skipped by the loss and the metrics; Viterbi's padding too

TWITTER2015_LABELS = (
    "O",
    "B-LOC",
    "I-LOC",
    "B-ORG",
    "I-ORG",
    "B-OTHER",
    "I-OTHER",
    "B-PER",
    "I-PER",
)

# Saved folders name both model heads, whichever of them was saved, so either Auto class loads the folder.
AUTO_MAP = {
    "AutoConfig": "configuration_acn.AcnConfig",
    "AutoModel": "modeling_acn.AcnModel",
    "AutoModelForTokenClassification": "modeling_acn.AcnForTokenClassification",
}
# The paper's Table 2 models as switch settings (names follow our training script's --variant).
PAPER_VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},  # ACN
    "no-crf": {"decoder": "softmax"},  # CBCFuFi
    "no-fusion-gate": {"fusion": "concat"},  # CBCFiC
    "no-filtration-gate": {"use_filtration_gate": False},  # CBCFuC
    "text-only": {"use_image": False},  # CNN-BiLSTM-CRF
    "bilstm-crf": {"use_image": False, "use_char_cnn": False},  # BiLSTM-CRF
}
DECODERS = ("crf", "softmax")
FUSIONS = ("gate", "concat")
# "auto": the fastest path measured accurate on the device at hand (see `AcnModel.effective_vision_precision`).
VISION_PRECISIONS = ("auto", "bf16", "int8", "fp32")
# Image backbones: (channels of a region, regions of a 224 x 224 image).
VISION_BACKBONES = {
    "vgg16": (512, 49),  # the paper's pool5: 7 x 7 x 512
    "resnet152": (2048, 49),  # layer4 of ResNet-152: 7 x 7 x 2048, as UMT and its successors
    "clip-vit-b32": (768, 49),  # CLIP ViT-B/32 patch tokens without CLS: 7 x 7 x 768, as MKGformer / IFAformer
}
CHAR_ACTIVATIONS = ("tanh", "none")
PAPER_TEXT_ENCODER = "cnn-bilstm"  # word embeddings + character CNN + BiLSTM
WORD_POOLINGS = ("first", "mean", "lstm")
# What a folder saved before a setting existed did, so that it loads with its old behaviour.
LEGACY_SETTINGS = {"char_activation": "none"}  # the character CNN had no tanh before it followed the paper
REMOVED_SETTINGS = ("max_word_length",)  # the tokenizer's setting, never read by the model


# The most labels (tags) a model may have. NER tag sets have tens (Twitter-2015: 9, OntoNotes' BIO: 37); the CRF's
# transitions and the BIO table are labels x labels, and a config.json with 20,000 labels took 3.5 GB before any
# check (the BIO table as nested lists; the transitions add 1.6 GB).
MAX_LABELS = 1000

# The arrays of an int8 calibration (`quantization_acn.AcnInt8Calibration`, saved with the weights): per quantisation
# point [min, max]; VGG-16's equalisation scales and bias corrections, per conv, per output channel. Keys of a feature
# cache's trunk file, and of config.json before the arrays moved into the weights: a config that holds them loads, the
# model moving them into its weights.
INT8_CALIBRATION_FIELDS = ("vision_int8_ranges", "vision_int8_channel_scales", "vision_int8_bias_corrections")


class AcnConfig(PretrainedConfig):
    r"""Hyperparameters of ACN. Defaults are the paper's; each ablation of its Table 2 is a switch.

    Args:
        vocab_size (`int`): word vocabulary size, `[PAD]` at `pad_token_id` and `[UNK]` included.
        char_vocab_size (`int`): character vocabulary size, the character padding id is `char_pad_id`.
        word_embedding_dim (`int`): word embedding size.
        char_embedding_dim (`int`): character embedding size.
        char_num_filters (`int`): filters per character CNN window width.
        char_kernel_sizes (`tuple[int]`): character CNN window widths.
        char_activation (`str`): `"tanh"` applies the paper's `tanh(C * chars + b)` to the character CNN's feature
            maps before max-over-time pooling; `"none"` pools the raw convolution.
        text_encoder (`str`): `"cnn-bilstm"` (the paper's word embeddings, character CNN and BiLSTM), or the name
            or path of a transformers checkpoint (BERT, RoBERTa, XLM-R, MiniLM, ...) whose subword states, pooled per
            word, replace the word embeddings. Its configuration is kept in `text_config`; its weights come with
            the model's own (`from_pretrained`) or from `AcnForTokenClassification.load_text_encoder_weights`.
        text_config (`dict` or `PretrainedConfig`): the pretrained encoder's configuration; read from
            `text_encoder` when not given.
        word_pooling (`str`): how a word's subword states become one vector: `"first"` subword, `"mean"`, or
            `"lstm"`: a BiLSTM over the word's own subwords (its two directions' final states joined; the encoder's
            hidden size must be even).
        use_lstm (`bool`): run a BiLSTM over the word features; always on for `"cnn-bilstm"`, off by default for a
            pretrained encoder.
        text_encoder_window (`int`): most subwords per encoder call (the tokenizer's `subword_window`); longer
            tweets arrive as whole-word pieces, one per window. Defaults to the encoder's position limit.
        hidden_size (`int`): size of `h_t` and of the co-attention, `d`: the BiLSTM's output (both directions),
            200 by default (the paper's); without a BiLSTM, the width of the word features (encoder and characters).
        attention_size (`int`): size `k` of the attention layers' hidden projection; defaults to `hidden_size`
            (the paper sets every dimension to the hidden size, its Table 4).
        vision_backbone (`str`): the image backbone: `"vgg16"` (the paper's pool5, 7 x 7 x 512), `"resnet152"`
            (torchvision's ResNet-152 up to layer4, 7 x 7 x 2048) or `"clip-vit-b32"` (CLIP ViT-B/32 vision tower
            through transformers, its 7 x 7 patch tokens of 768, without CLS).
        image_feature_dim (`int`): channels of a region; follows `vision_backbone` when not given.
        num_image_regions (`int`): regions of a 224 x 224 image; follows `vision_backbone` when not given.
        dropout (`float`): dropout on the word representation and on the BiLSTM output.
        use_image (`bool`): False gives the text-only CNN-BiLSTM-CRF (no co-attention, no VGG trunk).
        use_char_cnn (`bool`): False drops the character CNN (with `use_image=False`: the paper's BiLSTM-CRF).
        decoder (`str`): `"crf"`, or `"softmax"` for independent per-word decisions (paper's CBCFuFi).
        fusion (`str`): `"gate"` (gated multimodal fusion) or `"concat"` (paper's CBCFiC: `m_t` is the attended
            visual and textual features `[v̂_t ; ĥ_t]` concatenated, without the fusion's transforms).
        use_filtration_gate (`bool`): False feeds the fused feature itself to the decoder, `u_t = m_t` (paper's
            CBCFuC: no gate and no `tanh(W_m m_t + b_m)`).
        freeze_vision (`bool`): keep the image backbone's pretrained weights fixed during training.
        vision_precision (`str`): how the frozen backbone runs. `"auto"` picks the fastest accurate path for the
            device at hand: int8 on x86 CPUs, once calibrated (`AcnModel.calibrate_vision`), else a bfloat16
            copy with channels-last where the hardware has bf16 (GPUs), else float32. `"bf16"` and `"int8"` force one
            (each falls back to float32 where the device cannot run it), `"fp32"` always runs in float32.
            Training scripts save the effective precision here, so a reloaded model sees images as in training.
        vision_int8_points (`int`): the quantisation points of the int8 backbone, set by
            `AcnModel.calibrate_vision`: the weights hold an activation range `[min, max]` for each (and, for VGG-16,
            the equalisation scales and bias corrections), `acn.vision_int8.*` in model.safetensors, from which and
            the backbone's weights the int8 backbone is rebuilt. None: not calibrated. A 0.1.0 config.json, which holds
            the calibration's arrays (`vision_int8_ranges`, `vision_int8_channel_scales`,
            `vision_int8_bias_corrections`), loads: the model moves them into its weights.
        vision_int8_calibration_images (`int`): how many images the int8 calibration was computed on, as a record
            (None where unknown: a calibration read from a feature cache's trunk file or from a 0.1.0 config.json).
        max_image_words (`int`): the most words a tweet with an image may have. The image-guided textual attention
            compares every word with every other (`words x words x attention_size` energies: 52 MB at 256 words,
            20 GB at 50,000), so a longer tweet with an image is refused, naming its length; without an image, any
            length takes the text path, whose memory grows linearly.
    """

    model_type = "acn"
    # Left out of Trainer's predictions, so that `EvalPrediction.predictions` holds the logits alone.
    keys_to_ignore_at_inference = [
        "last_hidden_state",
        "visual_attentions",
        "textual_attentions",
        "fusion_gates",
        "filtration_gates",
    ]
    if TYPE_CHECKING:  # what __init__ guarantees, narrower than PretrainedConfig's types (no effect at run time)
        id2label: dict[int, str]
        label2id: dict[str, int]
        num_labels: int

    @classmethod
    def from_variant(cls, variant: str, **kwargs: Any) -> "AcnConfig":
        """A configuration of one of the paper's models, e.g. `AcnConfig.from_variant("text-only", vocab_size=...)`."""
        if variant not in PAPER_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(PAPER_VARIANTS)}, got {variant!r}")
        return cls(**{**kwargs, **PAPER_VARIANTS[variant]})

    def __init__(
        self,
        vocab_size: int = 2,
        char_vocab_size: int = 2,
        pad_token_id: int = 0,
        char_pad_id: int = 0,
        word_embedding_dim: int = 200,  # paper: 200-d embeddings pretrained on 30M tweets
        char_embedding_dim: int = 30,
        char_num_filters: int = 32,  # paper: three groups of 32 filters
        char_kernel_sizes: Sequence[int] = (2, 3, 4),
        char_activation: str = "tanh",
        text_encoder: str | os.PathLike = PAPER_TEXT_ENCODER,
        text_config: PretrainedConfig | dict[str, Any] | None = None,
        word_pooling: str = "first",
        use_lstm: bool | None = None,
        text_encoder_window: int | None = None,
        hidden_size: int | None = None,  # paper: BiLSTM output 200, i.e. 100 per direction
        attention_size: int | None = None,
        vision_backbone: str = "vgg16",
        image_feature_dim: int | None = None,
        num_image_regions: int | None = None,
        dropout: float = 0.5,  # paper gives no rate; 0.5 is Ma & Hovy's, whose CNN-BiLSTM-CRF ACN builds on
        use_image: bool = True,
        use_char_cnn: bool = True,
        decoder: str = "crf",
        fusion: str = "gate",
        use_filtration_gate: bool = True,
        freeze_vision: bool = True,
        vision_precision: str = "auto",  # the fastest accurate path measured for the device (benchmarks/speed.py)
        vision_int8_points: int | None = None,  # the calibration's arrays are in the weights (`AcnModel.vision_int8`)
        vision_int8_calibration_images: int | None = None,
        max_image_words: int = 256,  # co-attention's memory grows with words squared; Twitter-2015's longest: 41
        id2label: dict[int, str] | dict[str, str] | None = None,  # str ids: as config.json gives them
        label2id: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        _check_types(locals())
        _check_label_count(id2label=id2label, label2id=label2id, num_labels=kwargs.get("num_labels"))
        if id2label is None and label2id is None and "num_labels" not in kwargs:
            id2label = dict(enumerate(TWITTER2015_LABELS))
        if label2id is None and id2label is not None:
            label2id = {label: int(index) for index, label in id2label.items()}
        char_kernel_sizes = tuple(char_kernel_sizes)
        text_encoder = os.fspath(text_encoder)  # a pathlib.Path is a path like any other
        text_config = _text_encoder_config(text_encoder, text_config)
        use_lstm = text_config is None if use_lstm is None else use_lstm
        if text_config is None and not use_lstm:
            raise ValueError("text_encoder='cnn-bilstm' includes its BiLSTM: use_lstm must be True")
        char_size = char_num_filters * len(char_kernel_sizes) if use_char_cnn else 0
        hidden_size = _hidden_size(hidden_size, text_config, use_lstm, char_size)
        attention_size = hidden_size if attention_size is None else attention_size
        image_feature_dim, num_image_regions = _backbone_sizes(vision_backbone, image_feature_dim, num_image_regions)
        # a 0.1.0 config.json holds the calibration's arrays (since 0.2.0 they are in the weights)
        arrays = check_int8_calibration(
            vision_backbone, {name: kwargs.pop(name) for name in INT8_CALIBRATION_FIELDS if name in kwargs}
        )
        vision_int8_points = _int8_points(vision_backbone, vision_int8_points, arrays["vision_int8_ranges"])
        if word_pooling not in WORD_POOLINGS:
            raise ValueError(f"word_pooling must be 'first', 'mean' or 'lstm', got {word_pooling!r}")
        if text_config is not None:
            if word_pooling == "lstm" and text_config.hidden_size % 2:
                raise ValueError(
                    "word_pooling='lstm' splits the encoder's hidden size over two directions: it must be even, "
                    f"got {text_config.hidden_size}"
                )
            text_encoder_window = text_encoder_window or text_config.max_position_embeddings
            _check_positive(text_encoder_window=text_encoder_window)
        _check_positive(
            vocab_size=vocab_size,
            char_vocab_size=char_vocab_size,
            word_embedding_dim=word_embedding_dim,
            char_embedding_dim=char_embedding_dim,
            char_num_filters=char_num_filters,
            attention_size=attention_size,
            max_image_words=max_image_words,
        )
        if vision_int8_calibration_images is not None:
            _check_positive(vision_int8_calibration_images=vision_int8_calibration_images)
        if use_lstm and (hidden_size <= 0 or hidden_size % 2):
            raise ValueError(f"hidden_size must be a positive even number (two LSTM directions), got {hidden_size!r}")
        if not char_kernel_sizes or any(width <= 0 for width in char_kernel_sizes):
            raise ValueError(f"char_kernel_sizes must be positive widths, got {char_kernel_sizes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be 'crf' or 'softmax', got {decoder!r}")
        if vision_precision not in VISION_PRECISIONS:
            raise ValueError(
                f"vision_precision must be one of {', '.join(VISION_PRECISIONS)}, got {vision_precision!r}"
            )
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be 'gate' or 'concat', got {fusion!r}")
        if char_activation not in CHAR_ACTIVATIONS:
            raise ValueError(f"char_activation must be 'tanh' or 'none', got {char_activation!r}")
        if not use_image and (fusion != "gate" or not use_filtration_gate):
            logger.warning(
                f"use_image=False has no co-attention, so fusion={fusion!r} and "
                f"use_filtration_gate={use_filtration_gate!r} are ignored"
            )
        if not 0 <= pad_token_id < vocab_size:
            raise ValueError(f"pad_token_id must be a word id below vocab_size={vocab_size}, got {pad_token_id!r}")
        if not 0 <= char_pad_id < char_vocab_size:
            raise ValueError(
                f"char_pad_id must be a char id below char_vocab_size={char_vocab_size}, got {char_pad_id!r}"
            )

        self.vocab_size = vocab_size
        self.char_vocab_size = char_vocab_size
        self.char_pad_id = char_pad_id
        self.word_embedding_dim = word_embedding_dim
        self.char_embedding_dim = char_embedding_dim
        self.char_num_filters = char_num_filters
        self.char_kernel_sizes = char_kernel_sizes
        self.char_activation = char_activation
        self.text_encoder = text_encoder
        self.text_config = text_config
        self.word_pooling = word_pooling
        self.use_lstm = use_lstm
        self.text_encoder_window = text_encoder_window
        self.hidden_size = hidden_size
        self.attention_size = attention_size
        self.vision_backbone = vision_backbone
        self.image_feature_dim = image_feature_dim
        self.num_image_regions = num_image_regions
        self.dropout = dropout
        self.use_image = use_image
        self.use_char_cnn = use_char_cnn
        self.decoder = decoder
        self.fusion = fusion
        self.use_filtration_gate = use_filtration_gate
        self.freeze_vision = freeze_vision
        self.vision_precision = vision_precision
        self.vision_int8_points = vision_int8_points
        self.vision_int8_calibration_images = vision_int8_calibration_images
        self.max_image_words = max_image_words
        kwargs.setdefault("auto_map", dict(AUTO_MAP))
        kwargs["pad_token_id"] = pad_token_id  # PretrainedConfig keeps it, though no typed field of its names it
        super().__init__(id2label=id2label, label2id=label2id, **kwargs)
        _check_label_maps(self.id2label, self.label2id)
        # The arrays of a 0.1.0 config.json, until the model moves them into its weights; never saved (`to_dict`).
        self.int8_calibration_arrays = arrays if arrays["vision_int8_ranges"] is not None else None

    @property
    def uses_pretrained_text_encoder(self) -> bool:
        return self.text_config is not None

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PretrainedConfig:
        """The pretrained text encoder's configuration, else this one (`decoder` and `text_encoder` are settings
        here, not the sub-configurations transformers would otherwise look for under those names)."""
        return self.text_config if self.text_config is not None else self

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "AcnConfig":
        """As `PretrainedConfig.from_dict`; a saved configuration that predates a setting keeps its old behaviour."""
        if "id2label" not in config_dict and "num_labels" not in config_dict:
            raise ValueError(
                "the configuration has no id2label: a saved ACN model names its labels (without them it would be "
                "read with another corpus's labels)"
            )
        config_dict = {**LEGACY_SETTINGS, **config_dict}
        for key in REMOVED_SETTINGS:
            config_dict.pop(key, None)
        return super().from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """As `PretrainedConfig.to_dict`, without the int8 calibration's arrays read from a 0.1.0 config.json: the
        model keeps them with its weights."""
        output = super().to_dict()
        output.pop("int8_calibration_arrays", None)
        return output


# The type of every setting that a config.json could give wrongly ("100" for 100 reads as a string, "false" as True).
INTEGER_SETTINGS = (
    "vocab_size",
    "char_vocab_size",
    "pad_token_id",
    "char_pad_id",
    "word_embedding_dim",
    "char_embedding_dim",
    "char_num_filters",
    "max_image_words",
)
OPTIONAL_INTEGER_SETTINGS = (
    "text_encoder_window",
    "hidden_size",
    "attention_size",
    "image_feature_dim",
    "num_image_regions",
    "vision_int8_points",
    "vision_int8_calibration_images",
)
BOOLEAN_SETTINGS = ("use_image", "use_char_cnn", "use_filtration_gate", "freeze_vision")
OPTIONAL_BOOLEAN_SETTINGS = ("use_lstm",)
STRING_SETTINGS = ("char_activation", "word_pooling", "vision_backbone", "decoder", "fusion", "vision_precision")


def _check_types(settings: dict[str, Any]) -> None:
    """Refuse a setting of the wrong type, naming the key (bool is not accepted as an int, nor an int as a bool)."""

    def is_integer(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    checks = [
        (INTEGER_SETTINGS, is_integer, "an integer"),
        (BOOLEAN_SETTINGS, lambda value: isinstance(value, bool), "true or false"),
        (STRING_SETTINGS, lambda value: isinstance(value, str), "a string"),
    ]
    checks += [
        (OPTIONAL_INTEGER_SETTINGS, lambda value: value is None or is_integer(value), "an integer or null"),
        (OPTIONAL_BOOLEAN_SETTINGS, lambda value: value is None or isinstance(value, bool), "true, false or null"),
    ]
    for keys, valid, expected in checks:
        for key in keys:
            if not valid(settings[key]):
                raise ValueError(f"{key} must be {expected}, got {settings[key]!r}")
    dropout = settings["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise ValueError(f"dropout must be a number, got {dropout!r}")
    if not isinstance(settings["char_kernel_sizes"], (list, tuple)) or not all(
        map(is_integer, settings["char_kernel_sizes"])
    ):
        raise ValueError(f"char_kernel_sizes must be a list of integers, got {settings['char_kernel_sizes']!r}")


def _check_label_count(**given: Any) -> None:
    """At most MAX_LABELS labels, checked before anything is allocated per label (pairs of labels cost the square)."""
    for name, value in given.items():
        if value is None:
            continue
        if name == "num_labels" and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"num_labels must be an integer, got {_abridged(value)}")
        if name != "num_labels" and not isinstance(value, dict):
            raise ValueError(f"{name} must map label ids to names (a JSON object), got {_abridged(value)}")
        count = value if name == "num_labels" else len(value)
        if count > MAX_LABELS:
            raise ValueError(f"{name} gives {count} labels; a model has at most MAX_LABELS={MAX_LABELS}")


def _check_label_maps(id2label: dict[int, str], label2id: dict[str, int]) -> None:
    """id2label numbers its labels 0..n-1 without gaps, with distinct names, and label2id is its inverse."""
    if sorted(id2label) != list(range(len(id2label))):
        missing = sorted(set(range(max(id2label, default=-1) + 1)) - set(id2label))
        raise ValueError(
            f"id2label must number its labels 0..{len(id2label) - 1} without gaps, got ids {sorted(id2label)} "
            f"(missing {missing})"
        )
    names = list(id2label.values())
    if not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names):
        raise ValueError(f"id2label must give distinct non-empty label names, got {names}")
    inverse = {name: index for index, name in id2label.items()}
    if {name: int(index) for name, index in label2id.items()} != inverse:
        wrong = sorted(set(label2id.items()) ^ set(inverse.items()), key=str)
        raise ValueError(f"label2id must be the inverse of id2label; they differ on {wrong[:6]}")


def _text_encoder_config(
    text_encoder: str, text_config: PretrainedConfig | dict[str, Any] | None
) -> PretrainedConfig | None:
    """The pretrained encoder's configuration: None for the paper's encoder, else a `PretrainedConfig`."""
    if text_encoder == PAPER_TEXT_ENCODER:
        if text_config is not None:
            raise ValueError("text_config goes with a pretrained text_encoder, not with 'cnn-bilstm'")
        return None
    if not isinstance(text_encoder, str) or not text_encoder:
        raise ValueError(f"text_encoder must be 'cnn-bilstm' or a checkpoint name or path, got {text_encoder!r}")
    if text_config is None:  # read once; a saved configuration carries it, so loading never reads it again
        return AutoConfig.from_pretrained(text_encoder, trust_remote_code=False)
    if isinstance(text_config, dict):
        return AutoConfig.for_model(**text_config)
    return text_config


def _hidden_size(hidden_size: int | None, text_config: PretrainedConfig | None, use_lstm: bool, char_size: int) -> int:
    """Size of h_t: given, or the paper's 200; without a BiLSTM, the word features' own width."""
    if use_lstm:
        return 200 if hidden_size is None else hidden_size
    assert text_config is not None  # __init__ refuses the paper's encoder without its BiLSTM
    width = text_config.hidden_size + char_size  # pooled subword states ⊕ character features
    if hidden_size not in (None, width):
        raise ValueError(
            f"without a BiLSTM h_t is the word features ({text_config.hidden_size} encoder + {char_size} character), "
            f"so hidden_size must be {width}, got {hidden_size!r}"
        )
    return width


def _backbone_sizes(
    vision_backbone: str, image_feature_dim: int | None, num_image_regions: int | None
) -> tuple[int, int]:
    """(channels, regions) of the backbone's features; given sizes must be the backbone's."""
    if vision_backbone not in VISION_BACKBONES:
        raise ValueError(f"vision_backbone must be one of {', '.join(VISION_BACKBONES)}, got {vision_backbone!r}")
    channels, regions = VISION_BACKBONES[vision_backbone]
    for name, given, expected in (
        ("image_feature_dim", image_feature_dim, channels),
        ("num_image_regions", num_image_regions, regions),
    ):
        if given not in (None, expected):
            raise ValueError(f"vision_backbone={vision_backbone!r} gives {name}={expected}, got {given!r}")
    return channels, regions


def check_int8_calibration(vision_backbone: str, arrays: Mapping[str, Any]) -> dict[str, list | None]:
    """The int8 calibration's arrays (`INT8_CALIBRATION_FIELDS`; a missing one is None) as lists of floats, checked:
    finite `[min, max]` ranges with min <= max; VGG-16's lists (one per conv) of finite positive scales and of finite
    bias corrections. No arrays for CLIP ViT-B/32, which int8 quantises per batch."""
    unknown = sorted(set(arrays) - set(INT8_CALIBRATION_FIELDS))
    if unknown:
        raise ValueError(f"an int8 calibration has the arrays {', '.join(INT8_CALIBRATION_FIELDS)}, got {unknown}")
    checked = {
        "vision_int8_ranges": _int8_ranges(arrays.get("vision_int8_ranges")),
        "vision_int8_channel_scales": _per_channel(
            "vision_int8_channel_scales", arrays.get("vision_int8_channel_scales"), positive=True
        ),
        "vision_int8_bias_corrections": _per_channel(
            "vision_int8_bias_corrections", arrays.get("vision_int8_bias_corrections"), positive=False
        ),
    }
    _check_vgg16_calibration(
        vision_backbone, checked["vision_int8_channel_scales"], checked["vision_int8_bias_corrections"]
    )
    if vision_backbone == "clip-vit-b32" and checked["vision_int8_ranges"] is not None:
        raise ValueError("vision_backbone='clip-vit-b32' is quantised per batch: it has no vision_int8_ranges")
    return checked


def _int8_points(vision_backbone: str, points: int | None, ranges: list | None) -> int | None:
    """The quantisation points of a calibrated backbone: given, or those of an older config's ranges."""
    if points is not None:
        _check_positive(vision_int8_points=points)
        if vision_backbone == "clip-vit-b32":
            raise ValueError("vision_backbone='clip-vit-b32' is quantised per batch: it has no vision_int8_points")
    if ranges is not None and points not in (None, len(ranges)):
        raise ValueError(f"vision_int8_points is {points}, but vision_int8_ranges gives {len(ranges)} ranges")
    return len(ranges) if ranges is not None else points


def _int8_ranges(ranges: Any) -> list[list[float]] | None:  # unchecked JSON
    """None, or a list of finite `[min, max]` pairs with min <= max."""
    if ranges is None:
        return None
    pairs = [[float(low), float(high)] for low, high in ranges]
    if not pairs or any(not (math.isfinite(low) and math.isfinite(high) and low <= high) for low, high in pairs):
        raise ValueError(f"vision_int8_ranges must be finite [min, max] pairs with min <= max, got {ranges!r}")
    return pairs


def _per_channel(name: str, values: Any, positive: bool) -> list[list[float]] | None:  # values: unchecked JSON
    """None, or a non-empty list (one per conv) of non-empty lists of finite (and, if asked, positive) numbers."""
    if values is None:
        return None

    def allowed(value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return math.isfinite(value) and (value > 0 or not positive)

    layers_ok = isinstance(values, (list, tuple)) and values
    if not layers_ok or any(
        not isinstance(layer, (list, tuple)) or not layer or not all(map(allowed, layer)) for layer in values
    ):
        kind = "finite positive numbers" if positive else "finite numbers"
        raise ValueError(f"{name} must be lists of {kind}, one list per conv, got {_abridged(values)}")
    return [[float(value) for value in layer] for layer in values]


def _check_vgg16_calibration(vision_backbone: str, channel_scales: list | None, bias_corrections: list | None) -> None:
    for name, value in (
        ("vision_int8_channel_scales", channel_scales),
        ("vision_int8_bias_corrections", bias_corrections),
    ):
        if value is not None and vision_backbone != "vgg16":
            raise ValueError(
                f"{name} belongs to the VGG-16 int8 calibration; vision_backbone={vision_backbone!r} has none"
            )


def _abridged(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_positive(**values: object) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


AcnConfig.register_for_auto_class()

__all__ = [
    "AcnConfig",
    "IGNORE_INDEX",
    "INT8_CALIBRATION_FIELDS",
    "MAX_LABELS",
    "PAPER_TEXT_ENCODER",
    "PAPER_VARIANTS",
    "VISION_BACKBONES",
    "VISION_PRECISIONS",
    "check_int8_calibration",
]

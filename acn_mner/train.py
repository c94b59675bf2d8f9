"""Train ACN (or one of the paper's variants) on a multimodal tweet NER corpus with Accelerate.

    acn-train --dataset_name DATA --output_dir OUT [--variant full] ...
    accelerate launch -m acn_mner.train --dataset_name DATA --output_dir OUT ...
    accelerate launch examples/train_acn.py --train_file train.json --validation_file dev.json --test_file test.json ...
    acn-train --model_name_or_path TRAINED --dataset_name NEW_DATA --output_dir OUT   # continue a trained ACN

The flags follow transformers' run_ner_no_trainer.py where it has one (--dataset_name, --per_device_train_batch_size,
--num_train_epochs, --max_train_steps, --lr_scheduler_type, --num_warmup_steps, --checkpointing_steps, --report_to,
...); the older names (--dataset, --batch_size, --num_epochs, ...) still work until the next release, with a warning.
Selects the epoch with the best dev (validation) entity F1, with early stopping, then scores the test split.
Writes to --output_dir: the model and processor with their remote code, all_results.json, results.md (the paper's
Table 2 layout), {validation,test}_predictions.txt (`token gold pred`), model_card.md/README.md, and checkpoints/
(the training states, and the best weights a resumed run may end on) unless --checkpointing_steps none; as in
run_ner, a non-empty --output_dir is refused unless --overwrite_output_dir, or the run resumes a checkpoint there.
With --push_to_hub --hub_model_id ID, the repository is created, and checked writable, before the first training
step; the model, its code, card and results (not checkpoints/) go there at the end.
"""

import argparse
import logging
import math
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import datasets
import evaluate
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.data_loader import DataLoaderShard
from accelerate.logging import get_logger
from accelerate.scheduler import AcceleratedScheduler
from accelerate.tracking import get_available_trackers
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    LoggerType,
    broadcast_object_list,
    set_seed,
)
from huggingface_hub import HfApi
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, PretrainedConfig, get_scheduler

from modeling_acn import (
    PAPER_TEXT_ENCODER,
    PAPER_VARIANTS,
    VISION_BACKBONES,
    VISION_PRECISIONS,
    AcnConfig,
    AcnDataCollator,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnMentionReplacement,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)

from .atomic import (
    atomic_files_into,
    atomic_folder,
    check_output_target,
    is_leftover,
    remove_leftovers,
    temporary_file,
    write_text,
)
from .averaging import average_state_dicts, epoch_folder, kept_epochs
from .checkpoint import (
    CheckpointError,
    checkpoint_folder,
    resume,
    rng_states,
    run_identity,
    save_checkpoint,
    set_rng_states,
)
from .command_line import (
    ArgumentParser,
    adopt_deprecated_flags,
    existing_file,
    existing_folder,
    folder_or_hub_id,
    one_line_errors,
)
from .data import (
    CORPUS_FILE_SUFFIXES,
    LABEL_COLUMN,
    SPLITS,
    TEXT_COLUMN,
    TWITTER_SUFFIX,
    image_source,
    label_names,
    load_corpus,
    load_corpus_files,
    model_rows,
    standard_corpus,
)
from .evaluation import (
    gold_tags,
    load_metric,
    predict_split,
    score,
    table2,
    write_json,
    write_predictions,
)
from .feature_cache import (
    VISION_WEIGHTS_FILE,
    calibrate_if_needed,
    read_vision_settings,
)
from .model_card import base_model, hub_dataset_id, write_model_card
from .output_check import refuse_overwriting_inputs
from .recipes import FgmPerturbation, rdrop_loss, reinitialise_top_layers

logger = get_logger(__name__)

ENCODER_LAYER = re.compile(
    r"\.subword_encoder\.(?:\w+\.)*?layers?\.(\d+)\."
)  # BERT's encoder.layer.3, others' layers.3
OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}
# transformers' schedules that need nothing but warm-up and length (run_ner's choices), and the paper's per-epoch decay
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse",
)
CHECKPOINT_DIR = "checkpoints"
# What final_evaluation writes beside the model; with the model's own files, what --push_to_hub uploads.
RESULT_FILES = (
    "README.md",
    "model_card.md",
    "all_results.json",
    "results.md",
    "validation_predictions.txt",
    "test_predictions.txt",
)
BEST_MODEL_DIR = "best_model"  # in the run's checkpoint folder (`working_checkpoint_dir`)
PERFECT_F1 = 1.0
FILE_FLAGS = {"train": "train_file", "validation": "validation_file", "test": "test_file"}
# A new model's settings when their flags are not given; with --model_name_or_path the loaded config gives them.
NEW_MODEL_DEFAULTS = {
    "variant": "full",
    "text_encoder": PAPER_TEXT_ENCODER,
    "word_pooling": "first",
    "use_lstm": True,
    "word_embedding_dim": 200,
    "char_activation": "tanh",
    "dropout": 0.5,
    "hashtags_as_words": True,
    "min_word_freq": 1,
}
# Flags that shape the weights: with --model_name_or_path, given ones must agree with the loaded config.
ARCHITECTURE_FLAGS = (
    "text_encoder",
    "word_pooling",
    "use_lstm",
    "word_embedding_dim",
    "hidden_size",
    "attention_size",
    "char_activation",
    "vision_backbone",
)
# Flags that build a new vocabulary: a loaded model keeps the processor saved with it.
VOCABULARY_FLAGS = ("embeddings", "min_word_freq", "hashtags_as_words", "subword_word_forms")
# Old flag -> (the run_ner-style flag that replaces it, the attribute both set). The old names work, with a warning,
# until the next release.
DEPRECATED_FLAGS = {
    "dataset": ("dataset_name", "dataset"),
    "batch_size": ("per_device_train_batch_size", "per_device_train_batch_size"),
    "eval_batch_size": ("per_device_eval_batch_size", "per_device_eval_batch_size"),
    "num_epochs": ("num_train_epochs", "num_train_epochs"),
    "checkpointing": ("checkpointing_steps", "checkpointing_steps"),
    "lr_schedule": ("lr_scheduler_type", "lr_scheduler_type"),
    "warmup_ratio": ("num_warmup_steps", "warmup_ratio"),  # a share of the steps; becomes steps once they are known
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as given, for the model card
    adopt_deprecated_flags(parser, args, DEPRECATED_FLAGS)
    check_corpus_args(parser, args)
    if args.model_name_or_path:
        adopt_trained_model_settings(parser, args)
    else:
        for name, default in NEW_MODEL_DEFAULTS.items():
            if getattr(args, name) is None and not (name == "word_embedding_dim" and args.embeddings):
                setattr(args, name, default)  # with --embeddings, the word vectors' size is the file's
    check_hub_args(parser, args)
    settle_training_args(parser, args)
    resolve_vision_arguments(args)
    return args


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group(
        "data (a corpus: --dataset_name, or --train_file with --validation_file and --test_file)"
    )
    data.add_argument(
        "--dataset_name",
        dest="dataset",
        metavar="DATASET_NAME",
        type=folder_or_hub_id,
        default=None,
        help=(
            "Raw corpus folder (train/valid/test.txt), a save_to_disk folder (e.g. with cached image features), an "
            "exported Parquet folder or a Hub dataset id; the last two go through datasets.load_dataset."
        ),
    )
    data.add_argument(
        "--dataset_config_name",
        default=None,
        help=(
            "Configuration of the --dataset_name Hub dataset or Parquet folder (datasets.load_dataset's second "
            "argument)."
        ),
    )
    data.add_argument(
        "--train_file",
        default=None,
        help=(
            "Training split as one file: Twitter format (.txt: IMGID lines, token<TAB>tag lines) or "
            f"{', '.join(suffix for suffix in CORPUS_FILE_SUFFIXES if suffix != TWITTER_SUFFIX)} with a column of "
            "words and one of tags per tweet (tags as strings such as B-PER, or label ids that a "
            "--model_name_or_path names; CSV cells hold lists)."
        ),
    )
    data.add_argument(
        "--validation_file", default=None, help="Dev split, in the format of --train_file: selects the epoch kept."
    )
    data.add_argument("--test_file", default=None, help="Test split, in the format of --train_file: scored at the end.")
    data.add_argument(
        "--text_column_name",
        default=TEXT_COLUMN,
        help="Column of a table corpus (files or --dataset_name) holding each tweet's words.",
    )
    data.add_argument(
        "--label_column_name", default=LABEL_COLUMN, help="Column of a table corpus holding each tweet's tags."
    )
    data.add_argument(
        "--image_dir",
        type=existing_folder,
        default=None,
        help="Images <id>.jpg of a raw corpus folder or Twitter-format files; omit to train without images.",
    )
    data.add_argument("--output_dir", required=True, help="Where the model, results and checkpoints go.")
    data.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help=(
            "Train into a non-empty --output_dir, replacing the files of an earlier run there (its checkpoints/ too, "
            "so that --resume_from_checkpoint latest finds this run's); without it such a folder is refused, unless "
            "the run resumes from a checkpoint in it."
        ),
    )
    model = parser.add_argument_group(
        "model (with --model_name_or_path the loaded model fixes these: a flag that contradicts it is refused)"
    )
    model.add_argument(
        "--model_name_or_path",
        type=folder_or_hub_id,
        default=None,
        help=(
            "An ACN folder written by this script, or its Hub id, to train further (e.g. Twitter-2015 weights on "
            "another corpus) instead of a new model: its weights, config and processor (vocabulary) are loaded; flags "
            "that would change its architecture or vocabulary are refused, naming them, while --dropout and "
            "--vision_precision may change. Labels of the new corpus that the model knows keep their classifier rows "
            "and CRF transition scores; new ones start fresh, and labels the corpus lacks are dropped (both logged). "
            "For a pretrained text encoder such as bert-base-cased, use --text_encoder."
        ),
    )
    model.add_argument(
        "--variant",
        default=None,
        choices=sorted(PAPER_VARIANTS),
        help="Which model of the paper's Table 2 to train (default full).",
    )
    model.add_argument(
        "--text_encoder",
        type=folder_or_hub_id,
        default=None,
        help=(
            "'cnn-bilstm' (default: the paper's word embeddings, character CNN and BiLSTM) or a transformers "
            "checkpoint (name or path) whose subword states, pooled per word, replace the word embeddings."
        ),
    )
    model.add_argument(
        "--word_pooling",
        default=None,
        choices=["first", "mean", "lstm"],
        help=(
            "Pretrained encoder: a word's vector is its first subword's state (default), the mean of its subwords', "
            "or a small BiLSTM's over them."
        ),
    )
    model.add_argument(
        "--use_lstm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "Run a BiLSTM (--hidden_size) over the word features (default): the paper's encoder always has it; for a "
            "pretrained encoder it was chosen on Twitter-2015 dev with MiniLM-L6 (72.09 against 71.27 without), and "
            "--no-use_lstm feeds the pooled subword states and characters straight to the co-attention."
        ),
    )
    model.add_argument(
        "--subword_word_forms",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "Pretrained encoder: read URLs as 'url' and hashtags without '#' (41%% fewer subwords on Twitter-2015; "
            "off by default: 0.34 lower dev F1 with MiniLM-L6)."
        ),
    )
    model.add_argument(
        "--embeddings",
        type=existing_file,
        default=None,
        help="GloVe/word2vec text file of pretrained word vectors; their words extend the vocabulary.",
    )
    model.add_argument(
        "--vision_weights",
        default=None,
        help=(
            "Image backbone weights: 'imagenet' (the published ones: torchvision's, or CLIP's through transformers), "
            "a local .pth/.safetensors file, or 'random' (seeded; offline demos); defaults to the backbone saved "
            "beside cached features (a --model_name_or_path keeps its own otherwise)."
        ),
    )
    model.add_argument(
        "--vision_backbone",
        default=None,
        choices=sorted(VISION_BACKBONES),
        help=(
            "Image backbone: vgg16 (the paper's), resnet152 or clip-vit-b32; defaults to the one that computed cached "
            "features, else vgg16."
        ),
    )
    model.add_argument(
        "--vision_precision",
        default=None,
        choices=VISION_PRECISIONS,
        help=(
            "Precision of the image backbone (AcnConfig.vision_precision); defaults to the one cached features were "
            "computed in, else that of --model_name_or_path, else auto. The saved config records the effective one."
        ),
    )
    model.add_argument(
        "--calibration_images",
        type=int,
        default=16,
        help="Training images that calibrate an int8 backbone reading pixels (the first ones with a picture).",
    )
    model.add_argument(
        "--word_embedding_dim",
        type=int,
        default=None,
        help="Word vector size (default 200; with --embeddings, the file's).",
    )
    model.add_argument(
        "--hidden_size",
        type=int,
        default=None,
        help=(
            "BiLSTM output size, both directions together, and the co-attention size d (default 200; without a "
            "BiLSTM, the word features' width)."
        ),
    )
    model.add_argument(
        "--attention_size",
        type=int,
        default=None,
        help="Size k of the attention energies; defaults to --hidden_size, as in the paper.",
    )
    model.add_argument(
        "--char_activation",
        default=None,
        choices=["tanh", "none"],
        help="tanh on the character CNN's feature maps (default: the paper's), or none.",
    )
    model.add_argument(
        "--dropout",
        type=float,
        default=None,
        help=(
            "Dropout on word representations and BiLSTM outputs (default 0.5; a --model_name_or_path's own otherwise)."
        ),
    )
    model.add_argument(
        "--word_dropout",
        type=float,
        default=None,
        help=(
            "Probability of replacing a training word by [UNK] (characters stay); default 0.4 for cnn-bilstm (chosen "
            "on Twitter-2015 dev), 0 for a pretrained encoder, which does not read word ids."
        ),
    )
    model.add_argument(
        "--hashtags_as_words",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=(
            "Look '#word' up under 'word' (default; chosen on Twitter-2015 dev); --no-hashtags_as_words keeps the '#' "
            "in the vocabulary."
        ),
    )
    model.add_argument(
        "--min_word_freq",
        type=int,
        default=None,
        help="Training-split count a word needs to enter the vocabulary (default 1).",
    )
    training = parser.add_argument_group("training")
    training.add_argument(
        "--optimizer", default="adam", choices=sorted(OPTIMIZERS), help="Optimiser (the paper used RMSprop)."
    )
    training.add_argument(
        "--learning_rate",
        type=float,
        default=1e-3,
        help="Initial learning rate (of the head, with a pretrained encoder).",
    )
    training.add_argument(
        "--encoder_learning_rate", type=float, default=5e-5, help="Initial learning rate of a pretrained text encoder."
    )
    training.add_argument(
        "--layerwise_lr_decay",
        type=float,
        default=None,
        help=(
            "Pretrained encoder: each layer's learning rate is this times the one above it (the top layer has "
            "--encoder_learning_rate, the embeddings the lowest); default 0.9 (docs/benchmarks.md), 1: one rate."
        ),
    )
    training.add_argument(
        "--lr_scheduler_type",
        default=None,
        choices=LR_SCHEDULERS,
        help=(
            "Learning-rate schedule per optimiser step after the warm-up: transformers' get_scheduler ones over "
            "--max_train_steps (linear: the default for a pretrained encoder), or 'inverse': lr / (1 + lr_decay * "
            "epoch) (the default for cnn-bilstm)."
        ),
    )
    training.add_argument(
        "--lr_decay",
        type=float,
        default=0.0,
        help="Per-epoch decay of the 'inverse' schedule: lr / (1 + decay * epoch).",
    )
    training.add_argument(
        "--num_warmup_steps",
        type=int,
        default=None,
        help=(
            "Optimiser steps over which the learning rates rise linearly from 0 (default: none for cnn-bilstm, 10%% "
            "of the steps for a pretrained encoder)."
        ),
    )
    training.add_argument(
        "--reinit_top_layers",
        type=int,
        default=0,
        help=(
            "Pretrained encoder: start its top N layers afresh (BERT's initialisation: normal(0, initializer_range) "
            "weights, zero biases, unit LayerNorms) instead of from the checkpoint; default 0."
        ),
    )
    training.add_argument(
        "--mention_replacement",
        type=float,
        default=None,
        help=(
            "Augmentation: replace each training mention, with this probability per batch, by a mention of the same "
            "type drawn from the training split (Dai and Adel 2020); default 0.3 for a pretrained encoder "
            "(docs/benchmarks.md), 0 (off) for cnn-bilstm."
        ),
    )
    training.add_argument(
        "--fgm_epsilon",
        type=float,
        default=None,
        help=(
            "Adversarial training (FGM, Miyato et al. 2017): after each backward pass, move the word embeddings by "
            "this L2 norm along the batch's gradient, add the gradient of a second pass there, and move them back "
            "(the logged loss is the clean pass's); default 1.0 for a pretrained encoder (docs/benchmarks.md), 0 "
            "(off) for cnn-bilstm."
        ),
    )
    training.add_argument(
        "--rdrop_alpha",
        type=float,
        default=0.0,
        help=(
            "R-Drop: run each batch twice (two dropout masks) and add this times the symmetric KL divergence between "
            "the two runs' tag distributions (mean per word) to their mean loss, which is the loss logged; 0 "
            "(default): off."
        ),
    )
    training.add_argument("--weight_decay", type=float, default=0.0, help="L2 weight decay, on every parameter.")
    training.add_argument("--max_grad_norm", type=float, default=5.0, help="Gradient norm clipping; 0 disables it.")
    training.add_argument(
        "--per_device_train_batch_size",
        type=int,
        default=None,
        help="Tweets per training batch and process (default 16).",
    )
    training.add_argument(
        "--per_device_eval_batch_size",
        type=int,
        default=None,
        help="Tweets per evaluation batch and process (default 64).",
    )
    training.add_argument(
        "--num_train_epochs",
        type=int,
        default=None,
        help=(
            "Most epochs to train: 30 for cnn-bilstm; 8 for a pretrained encoder, whose linear schedule ends there "
            "(chosen on Twitter-2015 dev with MiniLM-L6: 71.27 against 69.98 with 4)."
        ),
    )
    training.add_argument(
        "--max_train_steps",
        type=int,
        default=None,
        help=(
            "Most optimiser steps to train; overrides --num_train_epochs (the last epoch may stop part-way, and is "
            "scored on dev like any other), and the schedule ends there."
        ),
    )
    training.add_argument(
        "--patience",
        type=int,
        default=5,
        help=(
            "Stop after this many epochs without a better dev F1, counted once dev F1 is above 0: epochs before the "
            "model finds its first entity never stop a run (on a small corpus that can take many)."
        ),
    )
    training.add_argument(
        "--average_last_epochs",
        type=int,
        default=1,
        help=(
            "Keep the weights of the last N epochs and, at the end, also score the averages of the last 2 ... N on "
            "dev; the model kept is whichever (an average or the best single epoch) scores best on dev. 1 (default): "
            "no averaging."
        ),
    )
    training.add_argument(
        "--stop_at_perfect_dev",
        action="store_true",
        help=(
            "Stop once dev F1 reaches 100: no later epoch can replace the kept model (it must score strictly higher), "
            "so only time is saved."
        ),
    )
    training.add_argument(
        "--max_train_length",
        type=int,
        default=None,
        help=(
            "Truncate training tweets to this many words. The paper truncated every tweet to 35 words; by default "
            "nothing is cut, and evaluation always scores every word."
        ),
    )
    training.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Batches per optimiser step.")
    training.add_argument(
        "--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="Accelerate mixed precision (GPUs)."
    )
    training.add_argument("--seed", type=int, default=42, help="Seed for weights, shuffling and dropout.")
    training.add_argument(
        "--checkpointing_steps",
        type=checkpointing_steps,
        default=None,
        help=(
            "When to save the training state (needed to resume): 'epoch' (default: after each epoch's dev scoring, as "
            "checkpoints/epoch_N), a number N (every N optimiser steps, as checkpoints/step_N), or 'none' (no "
            "checkpoints/ folder: the best weights are kept aside until the final model is written)."
        ),
    )
    training.add_argument(
        "--resume_from_checkpoint",
        type=checkpoint_argument,
        default=None,
        help=(
            "'latest' (the newest checkpoint that verifies; damaged ones are skipped with a warning) or a checkpoint "
            "folder (epoch_N or step_N) to continue from, exactly."
        ),
    )
    training.add_argument(
        "--with_tracking",
        action="store_true",
        help=(
            "Log the training loss and dev F1 of each epoch to the --report_to trackers (TensorBoard in "
            "output_dir/runs by default)."
        ),
    )
    training.add_argument(
        "--report_to",
        default=None,
        help=(
            f"With --with_tracking: the trackers, separated by commas (of {', '.join(sorted(LoggerType.list()))}; "
            "'all': every installed one); default tensorboard."
        ),
    )
    hub = parser.add_argument_group("hub")
    hub.add_argument(
        "--push_to_hub",
        action="store_true",
        help=(
            "Upload the final model folder (weights, config, processor, code, card, results; never checkpoints/ or "
            "runs/) to --hub_model_id."
        ),
    )
    hub.add_argument(
        "--hub_model_id",
        default=None,
        help=(
            "Hub model repository (user/name) that --push_to_hub creates or updates; the card's usage snippet names it."
        ),
    )
    hub.add_argument(
        "--hub_private_repo",
        action="store_true",
        help="Create the repository private (an existing one keeps its visibility).",
    )
    hub.add_argument(
        "--hub_dataset_id",
        default=None,
        help=(
            "Hub id of the training corpus, for the card's datasets and model-index; defaults to --dataset_name when "
            "that is a Hub id. Needed with --push_to_hub for a local corpus."
        ),
    )
    hub.add_argument(
        "--hub_base_model",
        default=None,
        help=(
            "Hub id of a local --text_encoder folder, for the card's base_model. Needed with --push_to_hub for a "
            "local encoder."
        ),
    )
    deprecated = parser.add_argument_group(
        "deprecated (removed in the next release; each logs a warning naming its replacement)"
    )
    deprecated.add_argument(
        "--dataset",
        dest="deprecated_dataset",
        metavar="DATASET",
        type=folder_or_hub_id,
        default=None,
        help="Use --dataset_name (same meaning).",
    )
    deprecated.add_argument(
        "--batch_size",
        dest="deprecated_batch_size",
        metavar="BATCH_SIZE",
        type=int,
        default=None,
        help="Use --per_device_train_batch_size (same meaning).",
    )
    deprecated.add_argument(
        "--eval_batch_size",
        dest="deprecated_eval_batch_size",
        metavar="EVAL_BATCH_SIZE",
        type=int,
        default=None,
        help="Use --per_device_eval_batch_size (same meaning).",
    )
    deprecated.add_argument(
        "--num_epochs",
        dest="deprecated_num_epochs",
        metavar="NUM_EPOCHS",
        type=int,
        default=None,
        help="Use --num_train_epochs (same meaning).",
    )
    deprecated.add_argument(
        "--checkpointing",
        dest="deprecated_checkpointing",
        default=None,
        choices=["epoch", "none"],
        help="Use --checkpointing_steps (same values, and N steps).",
    )
    deprecated.add_argument(
        "--lr_schedule",
        dest="deprecated_lr_schedule",
        default=None,
        choices=["inverse", "linear"],
        help="Use --lr_scheduler_type (same values, and transformers' other schedules).",
    )
    deprecated.add_argument(
        "--warmup_ratio",
        dest="deprecated_warmup_ratio",
        metavar="WARMUP_RATIO",
        type=float,
        default=None,
        help="Use --num_warmup_steps: this share of the optimiser steps, rounded up.",
    )
    return parser


def checkpointing_steps(value: str) -> str | int:
    """--checkpointing_steps: 'epoch', 'none' or a positive number of optimiser steps."""
    if value in ("epoch", "none"):
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected 'epoch', 'none' or a positive number of optimiser steps, got {value!r}")


def checkpoint_argument(value: str) -> str:
    """--resume_from_checkpoint: 'latest' or a checkpoint folder that exists."""
    if value != "latest":
        existing_folder(value)
    return value


def check_corpus_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One corpus: --dataset_name, or the three split files in one format that exist. For files, `args.dataset`
    becomes the training file's folder: it names the corpus in the model card and may hold cached features' trunk."""
    files = {split: getattr(args, flag) for split, flag in FILE_FLAGS.items()}
    given = [f"--{FILE_FLAGS[split]}" for split, path in files.items() if path is not None]
    if args.dataset is not None and given:
        parser.error(f"--dataset_name and {given[0]} both name a corpus: give one of them")
    if args.dataset_config_name is not None and args.dataset is None:
        parser.error("--dataset_config_name selects a configuration of --dataset_name, which is not given")
    if args.dataset is not None:
        return
    if not given:
        parser.error(
            "no corpus: give --dataset_name (a folder or Hub id), or --train_file, --validation_file and --test_file"
        )
    missing = [f"--{FILE_FLAGS[split]}" for split, path in files.items() if path is None]
    if missing:
        parser.error(
            f"{given[0]} needs {' and '.join(missing)} too: "
            "training selects on the validation split and scores the test split"
        )
    for split, path in files.items():
        suffix = Path(path).suffix.lower()
        if suffix not in CORPUS_FILE_SUFFIXES:
            parser.error(f"--{FILE_FLAGS[split]} {path}: expected a file ending in {', '.join(CORPUS_FILE_SUFFIXES)}")
        if suffix != Path(args.train_file).suffix.lower():
            parser.error(
                f"--{FILE_FLAGS[split]} {path} and --train_file {args.train_file} differ in format: "
                "give the splits in one"
            )
        if not Path(path).is_file():
            parser.error(f"--{FILE_FLAGS[split]} {path} does not exist")
    if args.image_dir is not None and Path(args.train_file).suffix.lower() != TWITTER_SUFFIX:
        parser.error(
            f"--image_dir reads <id>.jpg for Twitter-format (.txt) files, not for --train_file {args.train_file}"
        )
    args.dataset = str(Path(args.train_file).parent)


def adopt_trained_model_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--model_name_or_path: refuse flags that contradict the loaded model (architecture) or would rebuild its
    vocabulary, naming them; take the model's architecture settings, so that defaults, the card and the results
    describe it."""
    config = trained_config(parser, args.model_name_or_path)
    variant = paper_variant(config)
    loaded = {name: getattr(config, name) for name in ARCHITECTURE_FLAGS} | {"variant": variant}
    contradicting = [
        f"{shown_flag(name, getattr(args, name))} (the model has {shown_flag(name, value)})"
        for name, value in loaded.items()
        if getattr(args, name) is not None and getattr(args, name) != value
    ]
    if contradicting:
        parser.error(
            f"--model_name_or_path {args.model_name_or_path} fixes the architecture, and these flags contradict it: "
            f"{'; '.join(contradicting)}"
        )
    rebuilding = [f"--{name}" for name in VOCABULARY_FLAGS if getattr(args, name) is not None]
    if rebuilding:
        parser.error(
            f"--model_name_or_path {args.model_name_or_path} keeps the vocabulary saved with it; "
            f"{', '.join(rebuilding)} would build a new one: drop them"
        )
    if args.vision_weights == "random" and config.use_image:
        parser.error(
            "--vision_weights random initialises a new model's image backbone; --model_name_or_path "
            f"{args.model_name_or_path} has its own"
        )
    cached = read_vision_settings(Path(args.dataset) / VISION_WEIGHTS_FILE)
    if config.use_image and cached.get("vision_backbone", config.vision_backbone) != config.vision_backbone:
        parser.error(
            f"--model_name_or_path {args.model_name_or_path} sees images through {config.vision_backbone}, and the "
            f"cached features of {args.dataset} were computed by {cached['vision_backbone']}: train on features of "
            "its backbone, or on pixels"
        )
    for name, value in loaded.items():
        setattr(args, name, value)
    args.dropout = config.dropout if args.dropout is None else args.dropout
    if args.vision_precision is None:
        args.vision_precision = cached.get("vision_precision", config.vision_precision)


def trained_config(parser: argparse.ArgumentParser, name_or_path: str) -> AcnConfig:
    """The config of an ACN folder or Hub id; refuses anything else (a plain BERT belongs in --text_encoder)."""
    try:
        model_type = PretrainedConfig.get_config_dict(name_or_path)[0].get("model_type")
    except OSError as error:
        parser.error(f"--model_name_or_path {name_or_path}: {error}")
    if model_type != AcnConfig.model_type:
        parser.error(
            f"--model_name_or_path {name_or_path} is not an ACN model (model_type {model_type!r}); a pretrained text "
            "encoder goes in --text_encoder"
        )
    return AcnConfig.from_pretrained(name_or_path)


def paper_variant(config: AcnConfig) -> str | None:
    """The model of the paper's Table 2 that `config` is, by its switches; None for another combination."""
    defaults = AcnConfig()
    switches = {key for variant in PAPER_VARIANTS.values() for key in variant}
    for name, variant in PAPER_VARIANTS.items():
        if all(getattr(config, key) == variant.get(key, getattr(defaults, key)) for key in switches):
            return name
    return None


def shown_flag(name: str, value: object) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {value}"


def settle_training_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Defaults that follow the text encoder, and limits on the training flags."""
    pretrained = args.text_encoder != PAPER_TEXT_ENCODER
    args.num_train_epochs = (8 if pretrained else 30) if args.num_train_epochs is None else args.num_train_epochs
    args.per_device_train_batch_size = (
        16 if args.per_device_train_batch_size is None else args.per_device_train_batch_size
    )
    args.per_device_eval_batch_size = 64 if args.per_device_eval_batch_size is None else args.per_device_eval_batch_size
    for name in (
        "num_train_epochs",
        "patience",
        "average_last_epochs",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "max_train_steps",
    ):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if pretrained and args.embeddings:
        parser.error("--embeddings initialise the paper's word embeddings; a pretrained --text_encoder has none")
    args.word_dropout = (0.0 if pretrained else 0.4) if args.word_dropout is None else args.word_dropout
    args.lr_scheduler_type = args.lr_scheduler_type or ("linear" if pretrained else "inverse")
    args.checkpointing_steps = args.checkpointing_steps or "epoch"
    args.layerwise_lr_decay = (
        (0.9 if pretrained else 1.0) if args.layerwise_lr_decay is None else args.layerwise_lr_decay
    )
    if not 0.0 < args.layerwise_lr_decay <= 1.0:
        parser.error(f"--layerwise_lr_decay must be in (0, 1], got {args.layerwise_lr_decay}")
    args.fgm_epsilon = (1.0 if pretrained else 0.0) if args.fgm_epsilon is None else args.fgm_epsilon
    for name in ("fgm_epsilon", "rdrop_alpha"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be 0 or more, got {getattr(args, name)}")
    args.mention_replacement = (
        (0.3 if pretrained else 0.0) if args.mention_replacement is None else args.mention_replacement
    )
    if not 0.0 <= args.mention_replacement <= 1.0:
        parser.error(f"--mention_replacement must be in [0, 1], got {args.mention_replacement}")
    if args.reinit_top_layers < 0:
        parser.error(f"--reinit_top_layers must be 0 or more, got {args.reinit_top_layers}")
    if args.reinit_top_layers and not pretrained:
        parser.error("--reinit_top_layers re-initialises a pretrained --text_encoder's layers; cnn-bilstm has none")
    if args.reinit_top_layers and args.model_name_or_path:
        parser.error(
            "--reinit_top_layers starts a new model's encoder layers afresh; "
            "--model_name_or_path trains a trained one further"
        )
    if args.num_warmup_steps is not None and args.num_warmup_steps < 0:
        parser.error(f"--num_warmup_steps must be 0 or more, got {args.num_warmup_steps}")
    if args.num_warmup_steps is None:  # a share of the steps, which are known once the data loader is
        args.warmup_ratio = getattr(args, "warmup_ratio", None)
        args.warmup_ratio = (0.1 if pretrained else 0.0) if args.warmup_ratio is None else args.warmup_ratio
        if not 0.0 <= args.warmup_ratio < 1.0:
            parser.error(f"--warmup_ratio must be in [0, 1), got {args.warmup_ratio}")
    check_trackers(parser, args)


def check_trackers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--report_to names trackers that Accelerate knows and that are installed, and needs --with_tracking."""
    if not args.with_tracking:
        if args.report_to is not None:
            parser.error(f"--report_to {args.report_to} logs only with --with_tracking")
        return
    names = [name.strip() for name in (args.report_to or LoggerType.TENSORBOARD.value).split(",")]
    known, installed = LoggerType.list(), [str(tracker) for tracker in get_available_trackers()]
    for name in names:
        if name not in known:
            parser.error(f"--report_to {name!r} is not a tracker Accelerate knows ({', '.join(sorted(known))})")
        if name != LoggerType.ALL.value and name not in installed:
            parser.error(f"--report_to {name}: its package is not installed")
    args.report_to = ",".join(names)


def check_hub_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before training, a push whose card could not name the Hub dataset or base model."""
    if not args.push_to_hub:
        return
    if not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (user/name)")
    if hub_dataset_id(args) is None:
        corpus = (
            f"--train_file {args.train_file} is a local file"
            if args.train_file
            else f"--dataset_name {args.dataset} is a local folder"
        )
        parser.error(f"{corpus}: give its Hub id with --hub_dataset_id for the model card")
    if args.text_encoder != PAPER_TEXT_ENCODER and base_model(args) is None:
        parser.error(
            f"--text_encoder {args.text_encoder} is a local folder: "
            "give its Hub id with --hub_base_model for the model card"
        )


@dataclass
class TrainingState:
    """What `save_state` must carry beside weights and optimiser to continue a run exactly."""

    epoch: int = 0
    best_f1: float = -1.0
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    epoch_batches: int = 0  # batches of epoch `epoch` trained: a step checkpoint falls inside an epoch
    averaged_epochs: int = 1  # the kept model is the mean of this many last epochs' weights (1: the best epoch's)
    # dev F1 per number of last epochs averaged ("1": best epoch)
    average_dev_f1: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def record(self, dev_f1: float) -> bool:
        """Record the dev F1 of epoch `epoch`; True when it is the best so far. Patience counts only once the model
        has found an entity (best dev F1 above 0): a model that tags everything O has not started learning, and a
        small corpus can keep it there for many epochs before the first entity."""
        improved = dev_f1 > self.best_f1
        if improved:
            self.best_f1, self.best_epoch, self.epochs_without_improvement = dev_f1, self.epoch, 0
        elif self.best_f1 > 0:
            self.epochs_without_improvement += 1
        self.epoch, self.epoch_batches = self.epoch + 1, 0
        return improved


def load_training_corpus(args: argparse.Namespace) -> datasets.DatasetDict:
    """The corpus of --dataset_name or of the three split files, as `standard_corpus` shapes it; label ids without
    names take those of --model_name_or_path."""
    if args.train_file:
        files = {split: getattr(args, flag) for split, flag in FILE_FLAGS.items()}
        corpus = load_corpus_files(files, args.image_dir, (args.text_column_name, args.label_column_name))
        origins = {split: f"--{FILE_FLAGS[split]} {path}" for split, path in files.items()}
    else:
        corpus = load_corpus(args.dataset, args.image_dir, args.dataset_config_name)
        origins = {split: f"the {split} split of {args.dataset}" for split in SPLITS}
    known = None
    if args.model_name_or_path:
        config = AcnConfig.from_pretrained(args.model_name_or_path)
        known = [config.id2label[index] for index in range(config.num_labels)]
    return standard_corpus(corpus, origins, args.text_column_name, args.label_column_name, known)


def build_processor(train_split: datasets.Dataset, args: argparse.Namespace) -> AcnProcessor:
    """Vocabularies from the training split only, extended by the embedding file's words when given; with a
    pretrained encoder, its tokenizer too, with a window that its position embeddings allow. A --model_name_or_path
    brings its own processor: words it never saw are [UNK] to the word embeddings, their characters still count."""
    if args.model_name_or_path:
        return AcnProcessor.from_pretrained(args.model_name_or_path)
    extra_words = AcnTokenizer.embedding_file_words(args.embeddings) if args.embeddings else None
    subword: dict[str, Any] = {}
    if args.text_encoder != PAPER_TEXT_ENCODER:
        subword_tokenizer = AcnTokenizer.load_subword_tokenizer(args.text_encoder)
        positions = AutoConfig.from_pretrained(args.text_encoder, trust_remote_code=False).max_position_embeddings
        subword = {
            "subword_tokenizer": subword_tokenizer,
            "subword_window": min(subword_tokenizer.model_max_length, positions),
        }
        if args.subword_word_forms is not None:
            subword["subword_word_forms"] = args.subword_word_forms
    tokenizer = AcnTokenizer.from_corpus(
        train_split["tokens"],
        min_freq=args.min_word_freq,
        extra_words=extra_words,
        hashtags_as_words=args.hashtags_as_words,
        **subword,
    )
    return AcnProcessor(image_processor=AcnImageProcessor.for_backbone(args.vision_backbone), tokenizer=tokenizer)


def build_model(
    args: argparse.Namespace, processor: AcnProcessor, names: list[str], train_split: datasets.Dataset
) -> AcnForTokenClassification:
    if args.model_name_or_path:
        return load_trained_model(args, names)
    if args.embeddings:
        matrix, coverage = processor.tokenizer.load_embeddings(args.embeddings, seed=args.seed)
        if args.word_embedding_dim is None:  # the file's size, as --help says
            args.word_embedding_dim = matrix.shape[1]
    config = AcnConfig.from_variant(
        args.variant,
        vocab_size=len(processor.tokenizer),
        char_vocab_size=processor.tokenizer.char_vocab_size,
        word_embedding_dim=args.word_embedding_dim,
        text_encoder=args.text_encoder,
        word_pooling=args.word_pooling,
        use_lstm=args.use_lstm,
        text_encoder_window=processor.tokenizer.subword_window,
        hidden_size=args.hidden_size,
        attention_size=args.attention_size,
        char_activation=args.char_activation,
        dropout=args.dropout,
        vision_backbone=args.vision_backbone,
        vision_precision=args.vision_precision,
        id2label=dict(enumerate(names)),
    )
    model = AcnForTokenClassification(config)
    if config.uses_pretrained_text_encoder:
        logger.info(f"text encoder: {args.text_encoder}", main_process_only=True)
        model.load_text_encoder_weights()
        encoder = model.acn.text_encoder.subword_encoder
        assert encoder is not None  # a pretrained text encoder's model has one
        reinitialise_top_layers(encoder, args.reinit_top_layers)
    if args.embeddings:
        if matrix.shape[1] != config.word_embedding_dim:
            raise ValueError(
                f"--embeddings vectors have {matrix.shape[1]} dimensions, --word_embedding_dim is "
                f"{config.word_embedding_dim}"
            )
        embeddings = model.get_input_embeddings()
        assert isinstance(embeddings, torch.nn.Embedding)  # the paper's word embeddings (parse_args checked)
        embeddings.weight.data.copy_(matrix)
        logger.info(
            f"embeddings: {coverage.found}/{coverage.total} vocabulary words found ({coverage.ratio:.1%})",
            main_process_only=True,
        )
    vision_weights = args.vision_weights or cached_features_trunk(args.dataset)
    if config.use_image and image_source(train_split, True) == "pixels" and vision_weights is None:
        raise ValueError(
            "images are read as pixels but no VGG-16 weights were given: "
            "pass --vision_weights imagenet, a file, or random"
        )
    if vision_weights == "random":
        vision_weights = None  # the seeded initialisation; for offline demos and tests
    if vision_weights and config.use_image:
        logger.info(f"image backbone {config.vision_backbone}: {vision_weights}", main_process_only=True)
        model.load_vision_weights(None if vision_weights == "imagenet" else vision_weights)
    return model


def load_trained_model(args: argparse.Namespace, names: list[str]) -> AcnForTokenClassification:
    """--model_name_or_path with this run's --dropout and image precision, relabelled to the corpus's `names`, seeing
    images through the trunk of cached features (or --vision_weights) when there is one, else through its own."""
    config = AcnConfig.from_pretrained(args.model_name_or_path)
    config.dropout, config.vision_precision = args.dropout, args.vision_precision
    model = relabel(
        AcnForTokenClassification.from_pretrained(args.model_name_or_path, config=config),
        names,
        args.model_name_or_path,
    )
    trunk = args.vision_weights or cached_features_trunk(args.dataset)
    if trunk and model.config.use_image:
        logger.info(f"image backbone {model.config.vision_backbone}: {trunk}", main_process_only=True)
        model.load_vision_weights(None if trunk == "imagenet" else trunk)
    return model


def relabel(model: AcnForTokenClassification, names: list[str], source: str) -> AcnForTokenClassification:
    """`model` with the labels `names`. A label it knows keeps, by name, its classifier row and its CRF start, end
    and transition scores (to and from the other known labels); a new label starts as in a new model, and a label
    not in `names` is dropped. The body (encoder, co-attention, trunk) is the model's."""
    old = [model.config.id2label[index] for index in range(model.config.num_labels)]
    if old == names:
        return model
    relabelled = AcnForTokenClassification(
        AcnConfig.from_dict(
            {
                **model.config.to_dict(),
                "id2label": dict(enumerate(names)),
                "label2id": {name: index for index, name in enumerate(names)},
            }
        )
    )
    head = ("classifier.", "crf.")
    missing, unexpected = relabelled.load_state_dict(
        {key: value for key, value in model.state_dict().items() if not key.startswith(head)}, strict=False
    )
    assert not unexpected and all(key.startswith(head) for key in missing), (missing, unexpected)
    shared = [name for name in names if name in old]
    new_rows = torch.tensor([names.index(name) for name in shared], dtype=torch.long)  # (shared,)
    old_rows = torch.tensor([old.index(name) for name in shared], dtype=torch.long)  # (shared,)
    with torch.no_grad():
        relabelled.classifier.weight[new_rows] = model.classifier.weight[old_rows]  # (shared, decoder_input)
        relabelled.classifier.bias[new_rows] = model.classifier.bias[old_rows]
        if relabelled.crf is not None and model.crf is not None:  # one config's decoder: both have a CRF or neither
            for name in ("start_transitions", "end_transitions"):
                getattr(relabelled.crf, name)[new_rows] = getattr(model.crf, name)[old_rows]
            # transitions[from, to]: the block between shared labels
            relabelled.crf.transitions[new_rows[:, None], new_rows[None, :]] = model.crf.transitions[
                old_rows[:, None], old_rows[None, :]
            ]
    added, dropped = [name for name in names if name not in old], [name for name in old if name not in names]
    logger.warning(
        f"labels: {len(shared)} of {source} kept with their weights; new, initialised: {', '.join(added) or 'none'}; "
        f"dropped: {', '.join(dropped) or 'none'}",
        main_process_only=True,
    )
    return relabelled


def settle_vision_precision(
    model: AcnForTokenClassification,
    processor: AcnProcessor,
    train_split: datasets.Dataset,
    device: torch.device,
    args: argparse.Namespace,
) -> None:
    """Calibrate an int8 backbone that reads pixels, then record the precision the backbone really runs in, so the
    saved config makes a reloaded model see images as in training (cached features keep the precision they were
    computed in)."""
    if not model.config.use_image:
        return
    if image_source(train_split, True) == "pixels":
        calibrate_if_needed(model, processor.image_processor, train_split, args.calibration_images, device)
        model.config.vision_precision = model.effective_vision_precision(device)
    logger.info(
        f"image backbone: {model.config.vision_backbone} in {model.config.vision_precision}", main_process_only=True
    )


def resolve_vision_arguments(args: argparse.Namespace) -> None:
    """Backbone and precision default to those of the cached features; a contradicting flag is an error."""
    cached = read_vision_settings(Path(args.dataset) / VISION_WEIGHTS_FILE)
    for name, default in (("vision_backbone", "vgg16"), ("vision_precision", "auto")):
        given, recorded = getattr(args, name), cached.get(name)
        if given is not None and recorded is not None and given != recorded:
            raise ValueError(f"--{name} {given} contradicts the cached features, computed with {recorded!r}")
        setattr(args, name, given or recorded or default)


def cached_features_trunk(dataset: str) -> str | None:
    """The trunk that computed a folder's cached features, so the saved model sees new images the same way."""
    trunk = Path(dataset) / VISION_WEIGHTS_FILE
    return str(trunk) if trunk.is_file() else None


def build_dataloaders(
    corpus: datasets.DatasetDict,
    processor: AcnProcessor,
    config: AcnConfig,
    args: argparse.Namespace,
    process_index: int = 0,
) -> tuple[DataLoader, dict[str, DataLoader]]:
    source = image_source(corpus["train"], config.use_image)
    logger.info(f"images: {source}", main_process_only=True)
    replacement = None
    if args.mention_replacement:
        train_split = corpus["train"]
        replacement = AcnMentionReplacement(
            train_split["tokens"], train_split["ner_tags"], config.id2label, args.mention_replacement
        )
    collator = AcnDataCollator(processor, source, args.max_train_length, args.word_dropout, replacement)
    train = DataLoader(
        model_rows(corpus["train"], source),
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=BatchSeededCollator(collator, args.seed, process_index),
    )
    evaluation = {
        split: DataLoader(
            model_rows(corpus[split], source),
            batch_size=args.per_device_eval_batch_size,
            collate_fn=AcnDataCollator(processor, source),
        )
        for split in ("validation", "test")
    }
    return train, evaluation


class BatchSeededCollator:
    """The training collator with its randomness (word dropout) drawn from a generator seeded by run seed, process,
    epoch and batch, and the global generators left alone. A data loader collates a batch ahead of the one being
    trained, so masks drawn from the global generator would depend on where a run was resumed; these do not."""

    def __init__(self, collator: AcnDataCollator, seed: int, process_index: int) -> None:
        self.collator, self.seed, self.process_index = collator, seed, process_index
        self.epoch, self.batch = 0, 0

    def start(self, epoch: int, batch: int) -> None:
        """The next call collates batch `batch` (0-based) of epoch `epoch`."""
        self.epoch, self.batch = epoch, batch

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(
                int(
                    np.random.SeedSequence([self.seed, self.process_index, self.epoch, self.batch]).generate_state(1)[0]
                )
            )
            batch = self.collator(rows)
        self.batch += 1
        return batch


def build_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """One parameter group for everything but a pretrained text encoder; the encoder's at --encoder_learning_rate,
    one group per depth under --layerwise_lr_decay (the top layer at the full rate, the embeddings at the lowest)."""
    head: list[torch.nn.Parameter] = []
    encoder: dict[int, list[torch.nn.Parameter]] = {}
    depths = encoder_depths(model)
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if ".subword_encoder." in name:
            encoder.setdefault(depths(name), []).append(parameter)
        else:
            head.append(parameter)
    groups = [{"params": head, "lr": args.learning_rate}]
    top = max(encoder, default=0)
    for depth in sorted(encoder):
        groups.append(
            {"params": encoder[depth], "lr": args.encoder_learning_rate * args.layerwise_lr_decay ** (top - depth)}
        )
    return OPTIMIZERS[args.optimizer](groups, lr=args.learning_rate, weight_decay=args.weight_decay)


def encoder_depths(model: torch.nn.Module) -> Callable[[str], int]:
    """name -> depth of a pretrained encoder's parameter: 0 for the embeddings, i + 1 for layer i, the number of
    layers + 1 for anything above them. Without --layerwise_lr_decay every depth gets the same rate."""
    layers = getattr(getattr(model.config, "text_config", None), "num_hidden_layers", 0) or 0

    def depth(name: str) -> int:
        found = ENCODER_LAYER.search(name)
        if found:
            return int(found.group(1)) + 1
        return 0 if ".subword_encoder.embeddings." in name else layers + 1

    return depth


def steps_per_epoch(loader: DataLoader, args: argparse.Namespace) -> int:
    """Optimiser steps in an epoch of the (prepared, per-process) training loader."""
    return math.ceil(len(loader) / args.gradient_accumulation_steps)


def completed_steps(state: TrainingState, loader: DataLoader, args: argparse.Namespace) -> int:
    """Optimiser steps done: whole epochs, then the batches of the current one (its last step may be short)."""
    return state.epoch * steps_per_epoch(loader, args) + math.ceil(
        state.epoch_batches / args.gradient_accumulation_steps
    )


def settle_training_length(args: argparse.Namespace, steps: int) -> None:
    """run_ner's arithmetic once the steps per epoch are known: --max_train_steps overrides --num_train_epochs, and
    a warm-up given as a share of the steps (--warmup_ratio, or the encoder's default) becomes steps."""
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps
    else:
        args.num_train_epochs = math.ceil(args.max_train_steps / steps)
    if args.num_warmup_steps is None:
        args.num_warmup_steps = math.ceil(vars(args).pop("warmup_ratio") * args.max_train_steps)


def build_scheduler(
    optimizer: torch.optim.Optimizer, steps: int, args: argparse.Namespace
) -> torch.optim.lr_scheduler.LRScheduler:
    """Learning-rate factor per optimiser step: transformers' schedule of that name over --max_train_steps, or
    'inverse': linear warm-up, then lr / (1 + lr_decay * epoch)."""
    if args.lr_scheduler_type != "inverse":
        return get_scheduler(
            args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=args.num_warmup_steps,
            num_training_steps=args.max_train_steps,
        )
    warmup = args.num_warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 1.0 / (1.0 + args.lr_decay * (step // steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epoch(
    accelerator: Accelerator,
    model: torch.nn.Module,
    loader: DataLoaderShard,
    optimizer: torch.optim.Optimizer,
    scheduler: AcceleratedScheduler,
    args: argparse.Namespace,
    state: TrainingState,
    checkpoint_dir: Path,
) -> float:
    """Train epoch `state.epoch`, or its rest after a step checkpoint; save a step checkpoint every
    --checkpointing_steps optimiser steps; stop at --max_train_steps. Returns the mean loss of the batches run."""
    model.train()
    loader.set_epoch(state.epoch)
    # build_dataloaders' training collator, or anything with its start(epoch, batch): a cast, not a check
    collator = cast(BatchSeededCollator, loader.collate_fn)
    collator.start(state.epoch, state.epoch_batches)
    batches = remaining_batches(accelerator, loader, state.epoch_batches)
    progress = tqdm(
        batches,
        desc=f"epoch {state.epoch + 1}",
        initial=state.epoch_batches,
        total=len(loader),
        disable=None if accelerator.is_local_main_process else True,  # None: off when stderr is not a terminal
        leave=False,
    )
    total, count = 0.0, 0
    fgm = (
        FgmPerturbation(accelerator.unwrap_model(model).get_input_embeddings(), args.fgm_epsilon)
        if args.fgm_epsilon
        else None
    )
    for batch in progress:
        with accelerator.accumulate(model):
            if fgm is not None:
                fgm.start()
            loss = rdrop_loss(model, batch, args.rdrop_alpha) if args.rdrop_alpha else model(**batch).loss
            accelerator.backward(loss)
            if fgm is not None and fgm.perturb():  # the adversarial pass adds its gradient, then the embeddings go back
                accelerator.backward(model(**batch).loss)
                fgm.restore()
            stepped = accelerator.sync_gradients
            if args.max_grad_norm and stepped:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            if stepped:
                scheduler.step()
            optimizer.zero_grad()
        state.epoch_batches += 1
        total, count = total + loss.item(), count + 1
        progress.set_postfix(loss=f"{total / count:.3f}")
        if stepped:
            steps = completed_steps(state, loader, args)
            if isinstance(args.checkpointing_steps, int) and steps % args.checkpointing_steps == 0:
                save_checkpoint(
                    accelerator,
                    checkpoint_folder(checkpoint_dir, steps, "step"),
                    model,
                    optimizer,
                    scheduler,
                    state,
                    args.run_identity,
                )
            if steps >= args.max_train_steps:
                break
    return total / max(count, 1)


def remaining_batches(accelerator: Accelerator, loader: DataLoader, done: int) -> Iterable[dict[str, Any]]:
    """The epoch's batches after the first `done`, which a step checkpoint already trained: the same batches in the
    same order (the sampler is seeded per epoch), with the global generators as the checkpoint left them."""
    if not done:
        return loader
    if done >= len(loader):
        return iter(())
    return batches_from_checkpoint_state(accelerator.skip_first_batches(loader, done))


def batches_from_checkpoint_state(loader: DataLoader) -> Iterator[dict[str, Any]]:
    """`loader`'s batches, drawn as if the epoch had never stopped: starting an iteration draws a seed from the global
    generator, which the checkpointed run drew at the epoch's start, before its saved state; so it is undone."""
    states = rng_states()
    batches = iter(loader)
    first = next(batches, None)  # a data loader starts (and collates a batch ahead) at the first request
    set_rng_states(states)
    if first is not None:
        yield first
        yield from batches


def evaluate_split(
    accelerator: Accelerator,
    model: torch.nn.Module,
    loader: DataLoader,
    split: datasets.Dataset,
    metric: evaluate.EvaluationModule,
) -> tuple[dict[str, Any], list[list[str]]]:
    predictions = predict_split(accelerator, model, loader)
    return score(metric, predictions, gold_tags(split)), predictions


def run_training(
    accelerator: Accelerator,
    model: torch.nn.Module,
    train_loader: DataLoaderShard,
    dev_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: AcceleratedScheduler,
    state: TrainingState,
    metric: evaluate.EvaluationModule,
    args: argparse.Namespace,
    checkpoint_dir: Path,
) -> None:
    """Epochs with dev selection; the best weights are saved as checkpoint_dir/best_model, the checkpoints that
    --checkpointing_steps asks for beside them."""
    while (
        state.epoch < args.num_train_epochs
        and completed_steps(state, train_loader, args) < args.max_train_steps
        and state.epochs_without_improvement < args.patience
        and not perfect_dev(state, args)
    ):
        started = time.perf_counter()
        loss = train_epoch(accelerator, model, train_loader, optimizer, scheduler, args, state, checkpoint_dir)
        dev_scores, _ = evaluate_split(accelerator, model, dev_loader, dev_loader.dataset, metric)
        epoch = state.epoch
        if state.record(dev_scores["overall_f1"]):
            save_model(accelerator, model, None, checkpoint_dir / BEST_MODEL_DIR)
        if args.average_last_epochs > 1:
            keep_epoch_weights(accelerator, model, checkpoint_dir, state.epoch, args.average_last_epochs)
        logger.info(
            f"epoch {epoch + 1}: loss {loss:.4f}, dev F1 {100 * dev_scores['overall_f1']:.2f} "
            f"(best {100 * state.best_f1:.2f} at epoch {state.best_epoch + 1}), {time.perf_counter() - started:.1f} s",
            main_process_only=True,
        )
        if args.with_tracking:
            accelerator.log({"train_loss": loss, "dev_f1": dev_scores["overall_f1"]}, step=epoch)
        if args.checkpointing_steps == "epoch":
            save_checkpoint(
                accelerator,
                checkpoint_folder(checkpoint_dir, epoch + 1),
                model,
                optimizer,
                scheduler,
                state,
                args.run_identity,
            )


def keep_epoch_weights(
    accelerator: Accelerator, model: torch.nn.Module, checkpoint_dir: Path, epoch: int, keep: int
) -> None:
    """Save the weights after `epoch` (from 1) for averaging; drop the kept epochs older than the last `keep`."""
    save_model(accelerator, model, None, epoch_folder(checkpoint_dir, epoch))
    if accelerator.is_main_process:
        for old in kept_epochs(checkpoint_dir):
            if old <= epoch - keep:
                shutil.rmtree(epoch_folder(checkpoint_dir, old))


def select_average(
    accelerator: Accelerator,
    model: torch.nn.Module,
    dev_loader: DataLoader,
    metric: evaluate.EvaluationModule,
    checkpoint_dir: Path,
    state: TrainingState,
    args: argparse.Namespace,
) -> None:
    """Score on dev the averages of the last 2 ... --average_last_epochs kept epochs (consecutive, ending at the
    last epoch trained); the best of them replaces the best single epoch's weights when it scores higher on dev.
    Records dev F1 per number of epochs averaged (1: the best single epoch) in `state`."""
    epochs = [epoch for epoch in kept_epochs(checkpoint_dir) if epoch <= state.epoch]
    epochs = [epoch for epoch in epochs if epoch > state.epoch - args.average_last_epochs]
    dev_f1 = {1: state.best_f1}
    states = [
        AcnForTokenClassification.from_pretrained(epoch_folder(checkpoint_dir, epoch)).state_dict() for epoch in epochs
    ]
    unwrapped = accelerator.unwrap_model(model)
    for count in range(2, len(states) + 1):
        unwrapped.load_state_dict(average_state_dicts(states[-count:]))
        scores, _ = evaluate_split(accelerator, model, dev_loader, dev_loader.dataset, metric)
        dev_f1[count] = scores["overall_f1"]
        logger.info(
            f"mean of the last {count} epochs' weights: dev F1 {100 * dev_f1[count]:.2f}", main_process_only=True
        )
        if dev_f1[count] > max(value for key, value in dev_f1.items() if key != count):
            save_model(accelerator, model, None, checkpoint_dir / BEST_MODEL_DIR)
            state.averaged_epochs = count
    state.average_dev_f1 = {str(count): value for count, value in dev_f1.items()}


def carry_best_model(accelerator: Accelerator, resumed: Path, checkpoint_dir: Path, state: TrainingState) -> None:
    """A run resumed from a checkpoint whose best weights are not in its own `checkpoint_dir` (another output_dir's
    checkpoint, or any under --checkpointing_steps none) takes them too: the final evaluation reloads them when no
    later epoch improves on them."""
    target = checkpoint_dir / BEST_MODEL_DIR
    if state.best_epoch < 0 or target.is_dir():
        return
    source = resumed.parent / BEST_MODEL_DIR
    if not source.is_dir():
        raise CheckpointError(
            f"{resumed} records a best epoch ({state.best_epoch + 1}) whose weights are not beside it "
            f"({source} is missing)"
        )
    if accelerator.is_main_process:
        with atomic_folder(target) as temporary:
            for path in source.iterdir():
                if path.is_file() and not path.is_symlink():
                    shutil.copy2(path, temporary / path.name)
    accelerator.wait_for_everyone()


@contextmanager
def working_checkpoint_dir(accelerator: Accelerator, output_dir: Path, checkpointing: str | int) -> Iterator[Path]:
    """The folder of the run's checkpoints, best weights and --average_last_epochs' kept epochs. With checkpoints it
    is output_dir/checkpoints, and stays: a resumed run may end on the best weights kept there. With
    --checkpointing_steps none it is a temporary folder beside it, one for all processes, removed when the run ends:
    a finished run then holds its weights once, in model.safetensors."""
    checkpoint_dir = output_dir / CHECKPOINT_DIR
    if checkpointing != "none":
        yield checkpoint_dir
        return
    check_output_target(output_dir, "folder")
    with ExitStack() as stack:
        name = None
        if accelerator.is_main_process:
            output_dir.mkdir(parents=True, exist_ok=True)
            name = str(stack.enter_context(temporary_file(checkpoint_dir, folder=True)))
        yield Path(broadcast_object_list([name])[0])
        accelerator.wait_for_everyone()  # every process is done with it before it goes
    if accelerator.is_main_process:
        remove_leftovers(checkpoint_dir)  # those of runs killed before their end


def perfect_dev(state: TrainingState, args: argparse.Namespace) -> bool:
    return args.stop_at_perfect_dev and state.best_f1 >= PERFECT_F1


def save_model(
    accelerator: Accelerator, model: torch.nn.Module, processor: AcnProcessor | None, folder: Path
) -> list[str]:
    """Save the weights (with the processor and the pipeline's code when given); returns the files written, as
    paths relative to `folder` (none on the other processes)."""
    accelerator.wait_for_everyone()
    written = []
    if accelerator.is_main_process:  # written aside and renamed into place: a kill leaves no half-written file
        unwrapped = accelerator.unwrap_model(model)
        if processor is None:
            with atomic_folder(folder) as temporary:
                unwrapped.save_pretrained(temporary)
                written = relative_files(temporary)
        else:  # model, processor and the pipeline's code: transformers.pipeline(..., trust_remote_code=True) loads it
            with atomic_files_into(folder) as temporary:
                AcnPipeline(model=unwrapped, processor=processor, device=unwrapped.device).save_pretrained(temporary)
                written = relative_files(temporary)
    accelerator.wait_for_everyone()
    return written


def relative_files(folder: Path) -> list[str]:
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())


def final_evaluation(
    accelerator: Accelerator,
    model: torch.nn.Module,
    loaders: dict[str, DataLoader],
    corpus: datasets.DatasetDict,
    metric: evaluate.EvaluationModule,
    output_dir: Path,
    checkpoint_dir: Path,
    args: argparse.Namespace,
    processor: AcnProcessor,
    state: TrainingState,
    elapsed: float,
) -> dict[str, dict[str, Any]]:
    """Reload the best weights from `checkpoint_dir`, score dev and test, write every result file to `output_dir`."""
    best = AcnForTokenClassification.from_pretrained(checkpoint_dir / BEST_MODEL_DIR)
    accelerator.unwrap_model(model).load_state_dict(best.state_dict())
    results, predictions = {}, {}
    for split in ("validation", "test"):
        results[split], predictions[split] = evaluate_split(accelerator, model, loaders[split], corpus[split], metric)
    model_files = save_model(accelerator, model, processor, output_dir)
    if not accelerator.is_main_process:
        return results
    for split in ("validation", "test"):
        write_predictions(
            output_dir / f"{split}_predictions.txt",
            corpus[split]["tokens"],
            gold_tags(corpus[split]),
            predictions[split],
        )
    summary = {
        "variant": args.variant,
        "text_encoder": args.text_encoder,
        "seed": args.seed,
        "num_processes": accelerator.num_processes,
        "best_epoch": state.best_epoch + 1,
        "averaged_epochs": state.averaged_epochs,
        **({"average_dev_f1": state.average_dev_f1} if state.average_dev_f1 else {}),
        "epochs_trained": state.epoch,
        "train_seconds": round(elapsed, 1),
        **{f"{split}_{key}": value for split in results for key, value in results[split].items()},
    }
    write_json(output_dir / "all_results.json", summary)
    table = table2({f"{args.variant} (test)": results["test"], f"{args.variant} (dev)": results["validation"]})
    write_text(output_dir / "results.md", table + "\n")
    print(table)
    print(
        f"test: {results['test']['num_gold_entities']} gold entities (lenient), "
        f"{results['test']['strict_num_gold_entities']} (strict)"
    )
    kept = (
        f"epoch {state.best_epoch + 1} of {state.epoch}"
        if state.averaged_epochs == 1
        else f"the mean of the last {state.averaged_epochs} epochs' weights"
    )
    write_model_card(output_dir, args, results, kept)
    if args.push_to_hub:
        push_model_folder(output_dir, model_files + list(RESULT_FILES), args)
    return results


def push_model_folder(output_dir: Path, files: list[str], args: argparse.Namespace) -> None:
    """Upload exactly `files` of output_dir (the final model and the run's results), in one commit, to the repository
    that `create_hub_repository` created."""
    repo_id = args.hub_repo_id  # created, and checked writable, before training (create_hub_repository)
    HfApi().upload_folder(
        repo_id=repo_id,
        folder_path=output_dir,
        allow_patterns=[glob_escape(name) for name in files],
        commit_message=f"ACN ({args.variant}), seed {args.seed}: test F1 as in results.md",
    )
    logger.info(f"pushed {len(files)} files to https://huggingface.co/{repo_id}", main_process_only=True)


def glob_escape(name: str) -> str:
    """`name` as an fnmatch pattern that matches only itself."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in name)


def training_inputs(args: argparse.Namespace) -> dict[str, str | None]:
    """What a run reads, for the output check (a checkpoint it resumes from is its own: it may be in output_dir; an
    image, <id>.jpg in --image_dir, has no name the run writes)."""
    if args.train_file is None:
        corpus = {"--dataset_name folder": args.dataset}
    else:  # args.dataset is then the training file's folder, which output_dir may share
        corpus = {f"--{flag} file": getattr(args, flag) for flag in FILE_FLAGS.values()}
    return corpus | {
        "--embeddings file": args.embeddings,
        "model folder": args.model_name_or_path,
        "--text_encoder folder": args.text_encoder,
        "--vision_weights file": args.vision_weights,
    }


def check_output_dir(output_dir: Path, args: argparse.Namespace) -> None:
    """run_ner's rule, so that a second run cannot silently replace a first one's model and results: a non-empty
    --output_dir is refused unless --overwrite_output_dir is given or the run resumes from a checkpoint in it. What
    killed runs left (`is_leftover`) does not count; a run writing there now does."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} is a file, not a folder")
    if args.overwrite_output_dir or resumes_within(output_dir, args.resume_from_checkpoint):
        return
    if output_dir.is_dir() and not all(is_leftover(entry) for entry in output_dir.iterdir()):
        raise ValueError(
            f"--output_dir {output_dir} is not empty: give --overwrite_output_dir to train into it anyway, "
            "--resume_from_checkpoint latest to continue its run, or another folder"
        )


def resumes_within(output_dir: Path, checkpoint: str | None) -> bool:
    """Whether --resume_from_checkpoint continues a run of `output_dir` ('latest' looks in its checkpoints/)."""
    if checkpoint is None:
        return False
    return checkpoint == "latest" or Path(checkpoint).resolve().is_relative_to(output_dir.resolve())


def remove_earlier_checkpoints(accelerator: Accelerator, output_dir: Path, args: argparse.Namespace) -> None:
    """--overwrite_output_dir without resuming: the checkpoints of the run that was there go, so that a later
    --resume_from_checkpoint latest cannot continue that run instead of this one."""
    earlier = output_dir / CHECKPOINT_DIR
    if args.overwrite_output_dir and args.resume_from_checkpoint is None and accelerator.is_main_process:
        if earlier.is_dir() and not earlier.is_symlink():
            logger.warning(f"--overwrite_output_dir: removing the earlier run's {earlier}", main_process_only=True)
            shutil.rmtree(earlier)
    accelerator.wait_for_everyone()


def create_hub_repository(accelerator: Accelerator, args: argparse.Namespace) -> None:
    """--push_to_hub: create the repository and check that this login may write to it before the first training
    step, as transformers' scripts do, instead of failing after hours of training. Sets `args.hub_repo_id`."""
    found: list[str | None] = [None, None]  # the repository id, or why it cannot be written
    if accelerator.is_main_process:
        try:
            api = HfApi()
            repo_id = api.create_repo(args.hub_model_id, private=args.hub_private_repo or None, exist_ok=True).repo_id
            api.auth_check(repo_id, write=True)
            found[0] = repo_id
        except Exception as error:  # whatever the Hub client raises: HTTP, network and login errors differ by version
            found = [None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"]
    found = broadcast_object_list(found)
    if found[1] is not None:
        raise ValueError(
            f"--push_to_hub: cannot create or write the Hub repository --hub_model_id {args.hub_model_id} ({found[1]});"
            " log in with `hf auth login` (a token with write access), or train without --push_to_hub"
        )
    args.hub_repo_id = found[0]
    logger.info(f"--push_to_hub: https://huggingface.co/{args.hub_repo_id} is writable", main_process_only=True)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    refuse_overwriting_inputs(output_dir, training_inputs(args).items(), flag="--output_dir", folder=True)
    check_output_dir(output_dir, args)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.report_to.split(",") if args.with_tracking else None,
        project_dir=str(output_dir / "runs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # a batch whose tweets all lack an image leaves the co-attention without gradients, which DDP must allow
        kwargs_handlers=[
            DistributedDataParallelKwargs(
                find_unused_parameters=PAPER_VARIANTS.get(args.variant, {}).get("use_image", True)
            )
        ],
    )
    if args.push_to_hub:
        create_hub_repository(accelerator, args)
    remove_earlier_checkpoints(accelerator, output_dir, args)
    set_seed(args.seed)
    corpus = load_training_corpus(args)
    processor = build_processor(corpus["train"], args)
    model = build_model(args, processor, label_names(corpus), corpus["train"])
    args.run_identity = run_identity(model.config, processor.tokenizer)  # what a resumed checkpoint must share
    settle_vision_precision(model, processor, corpus["train"], accelerator.device, args)
    train_loader, eval_loaders = build_dataloaders(corpus, processor, model.config, args, accelerator.process_index)
    optimizer = build_optimizer(model, args)
    model, optimizer, train_loader, dev_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, eval_loaders["validation"], eval_loaders["test"]
    )
    settle_training_length(args, steps_per_epoch(train_loader, args))
    scheduler = build_scheduler(optimizer, steps_per_epoch(train_loader, args), args)
    state = TrainingState()
    if args.with_tracking:
        accelerator.init_trackers("acn", config={key: str(value) for key, value in vars(args).items()})
    with working_checkpoint_dir(accelerator, output_dir, args.checkpointing_steps) as checkpoint_dir:
        if args.resume_from_checkpoint is not None:
            # checkpoints carry the schedule, which stays outside prepare() (that would step it once per process)
            resumed = resume(
                accelerator,
                args.resume_from_checkpoint,
                output_dir / CHECKPOINT_DIR,
                model,
                optimizer,
                scheduler,
                state,
                args.run_identity,
            )
            carry_best_model(accelerator, resumed, checkpoint_dir, state)
        metric = load_metric()
        started = time.perf_counter()
        run_training(
            accelerator, model, train_loader, dev_loader, optimizer, scheduler, state, metric, args, checkpoint_dir
        )
        if args.average_last_epochs > 1:
            select_average(accelerator, model, dev_loader, metric, checkpoint_dir, state, args)
        final_evaluation(
            accelerator,
            model,
            {"validation": dev_loader, "test": test_loader},
            corpus,
            metric,
            output_dir,
            checkpoint_dir,
            args,
            processor,
            state,
            time.perf_counter() - started,
        )
    accelerator.end_training()


cli = one_line_errors(main)  # the console command

if __name__ == "__main__":
    cli()

"""Train ACN (or one of the paper's variants) on a multimodal tweet NER corpus with Accelerate.

    accelerate launch examples/train_acn.py --dataset DATA --output_dir OUT [--variant full] ...
    python examples/train_acn.py --dataset DATA --output_dir OUT ...
    accelerate launch -m acn_mner.train --dataset DATA --output_dir OUT ...

Selects the epoch with the best dev (validation) entity F1, with early stopping, then scores the test split.
Writes to --output_dir: the model and processor with their remote code, all_results.json, results.md (the paper's
Table 2 layout), {validation,test}_predictions.txt (`token gold pred`), model_card.md/README.md, checkpoints/.
With --push_to_hub --hub_model_id ID, the model, its code, card and results (not checkpoints/) go to the Hub.
"""

import argparse
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    set_seed,
)
from huggingface_hub import HfApi
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig

from modeling_acn import (
    PAPER_TEXT_ENCODER,
    PAPER_VARIANTS,
    VISION_BACKBONES,
    VISION_PRECISIONS,
    AcnConfig,
    AcnDataCollator,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)

from .atomic import atomic_files_into, atomic_folder, write_text
from .checkpoint import checkpoint_folder, resume, save_checkpoint
from .data import image_source, label_names, load_corpus, model_rows
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

logger = get_logger(__name__)

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}
CHECKPOINT_DIR = "checkpoints"
# What final_evaluation writes beside the model; with the model's own files, what --push_to_hub uploads.
RESULT_FILES = ("README.md", "model_card.md", "all_results.json", "results.md", "validation_predictions.txt", "test_predictions.txt")
BEST_MODEL_DIR = f"{CHECKPOINT_DIR}/best_model"  # kept after training: a resumed run may end on these weights
PERFECT_F1 = 1.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="Raw corpus folder (train/valid/test.txt), a save_to_disk folder (e.g. with cached image features), a Parquet folder or a Hub dataset id.")
    data.add_argument("--image_dir", default=None, help="Images <id>.jpg of a raw corpus folder; omit to train without images.")
    data.add_argument("--output_dir", required=True, help="Where the model, results and checkpoints go.")
    model = parser.add_argument_group("model")
    model.add_argument("--variant", default="full", choices=sorted(PAPER_VARIANTS), help="Which model of the paper's Table 2 to train.")
    model.add_argument("--text_encoder", default=PAPER_TEXT_ENCODER, help="'cnn-bilstm' (the paper's word embeddings, character CNN and BiLSTM) or a transformers checkpoint (name or path) whose subword states, pooled per word, replace the word embeddings.")
    model.add_argument("--word_pooling", default="first", choices=["first", "mean"], help="Pretrained encoder: a word's vector is its first subword's state, or the mean of its subwords'.")
    model.add_argument("--use_lstm", action=argparse.BooleanOptionalAction, default=True, help="Run a BiLSTM (--hidden_size) over the word features: the paper's encoder always has it; for a pretrained encoder it was chosen on Twitter-2015 dev with MiniLM-L6 (72.09 against 71.27 without), and --no-use_lstm feeds the pooled subword states and characters straight to the co-attention.")
    model.add_argument("--subword_word_forms", action=argparse.BooleanOptionalAction, default=None, help="Pretrained encoder: read URLs as 'url' and hashtags without '#' (41%% fewer subwords on Twitter-2015; off by default: 0.34 lower dev F1 with MiniLM-L6).")
    model.add_argument("--embeddings", default=None, help="GloVe/word2vec text file of pretrained word vectors; their words extend the vocabulary.")
    model.add_argument("--vision_weights", default=None, help="Image backbone weights: 'imagenet' (the published ones: torchvision's, or CLIP's through transformers), a local .pth/.safetensors file, or 'random' (seeded; offline demos); defaults to the backbone saved beside cached features.")
    model.add_argument("--vision_backbone", default=None, choices=sorted(VISION_BACKBONES), help="Image backbone: vgg16 (the paper's), resnet152 or clip-vit-b32; defaults to the one that computed cached features, else vgg16.")
    model.add_argument("--vision_precision", default=None, choices=VISION_PRECISIONS, help="Precision of the image backbone (AcnConfig.vision_precision); defaults to the one cached features were computed in, else auto. The saved config records the effective one.")
    model.add_argument("--calibration_images", type=int, default=16, help="Training images that calibrate an int8 backbone reading pixels (the first ones with a picture).")
    model.add_argument("--word_embedding_dim", type=int, default=200, help="Word vector size (the embedding file's, when given).")
    model.add_argument("--hidden_size", type=int, default=None, help="BiLSTM output size, both directions together, and the co-attention size d (default 200; without a BiLSTM, the word features' width).")
    model.add_argument("--attention_size", type=int, default=None, help="Size k of the attention energies; defaults to --hidden_size, as in the paper.")
    model.add_argument("--char_activation", default="tanh", choices=["tanh", "none"], help="tanh on the character CNN's feature maps (the paper's), or none.")
    model.add_argument("--dropout", type=float, default=0.5, help="Dropout on word representations and BiLSTM outputs.")
    model.add_argument("--word_dropout", type=float, default=None, help="Probability of replacing a training word by [UNK] (characters stay); default 0.4 for cnn-bilstm (chosen on Twitter-2015 dev), 0 for a pretrained encoder, which does not read word ids.")
    model.add_argument("--hashtags_as_words", action=argparse.BooleanOptionalAction, default=True, help="Look '#word' up under 'word' (chosen on Twitter-2015 dev); --no-hashtags_as_words keeps the '#' in the vocabulary.")
    model.add_argument("--min_word_freq", type=int, default=1, help="Training-split count a word needs to enter the vocabulary.")
    training = parser.add_argument_group("training")
    training.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS), help="Optimiser (the paper used RMSprop).")
    training.add_argument("--learning_rate", type=float, default=1e-3, help="Initial learning rate (of the head, with a pretrained encoder).")
    training.add_argument("--encoder_learning_rate", type=float, default=5e-5, help="Initial learning rate of a pretrained text encoder.")
    training.add_argument("--lr_schedule", default=None, choices=["inverse", "linear"], help="'inverse': lr / (1 + lr_decay * epoch) (default for cnn-bilstm); 'linear': decay to 0 at the last step of --num_epochs (default for a pretrained encoder).")
    training.add_argument("--lr_decay", type=float, default=0.0, help="Per-epoch decay of the 'inverse' schedule: lr / (1 + decay * epoch).")
    training.add_argument("--warmup_ratio", type=float, default=None, help="Share of the --num_epochs steps over which the learning rates rise linearly from 0 (default 0 for cnn-bilstm, 0.1 for a pretrained encoder).")
    training.add_argument("--weight_decay", type=float, default=0.0, help="L2 weight decay.")
    training.add_argument("--max_grad_norm", type=float, default=5.0, help="Gradient norm clipping; 0 disables it.")
    training.add_argument("--batch_size", type=int, default=16, help="Tweets per batch and process.")
    training.add_argument("--eval_batch_size", type=int, default=64, help="Tweets per evaluation batch and process.")
    training.add_argument("--num_epochs", type=int, default=None, help="Most epochs to train: 30 for cnn-bilstm; 8 for a pretrained encoder, whose linear schedule ends there (chosen on Twitter-2015 dev with MiniLM-L6: 71.27 against 69.98 with 4).")
    training.add_argument("--patience", type=int, default=5, help="Stop after this many epochs without a better dev F1.")
    training.add_argument("--stop_at_perfect_dev", action="store_true", help="Stop once dev F1 reaches 100: no later epoch can replace the kept model (it must score strictly higher), so only time is saved.")
    training.add_argument("--max_train_length", type=int, default=None, help="Truncate training tweets to this many words. The paper truncated every tweet to 35 words; by default nothing is cut, and evaluation always scores every word.")
    training.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Batches per optimiser step.")
    training.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="Accelerate mixed precision (GPUs).")
    training.add_argument("--seed", type=int, default=42, help="Seed for weights, shuffling and dropout.")
    training.add_argument("--checkpointing", default="epoch", choices=["epoch", "none"], help="Save the training state after every epoch (needed to resume), or never.")
    training.add_argument("--resume_from_checkpoint", default=None, help="'latest' (the newest checkpoint that verifies; damaged ones are skipped with a warning) or a checkpoint folder to continue from.")
    training.add_argument("--with_tracking", action="store_true", help="Log metrics to TensorBoard in output_dir/runs.")
    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Upload the final model folder (weights, config, processor, code, card, results; never checkpoints/ or runs/) to --hub_model_id.")
    hub.add_argument("--hub_model_id", default=None, help="Hub model repository (user/name) that --push_to_hub creates or updates; the card's usage snippet names it.")
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the repository private (an existing one keeps its visibility).")
    hub.add_argument("--hub_dataset_id", default=None, help="Hub id of the training corpus, for the card's datasets and model-index; defaults to --dataset when that is a Hub id. Needed with --push_to_hub for a local corpus.")
    hub.add_argument("--hub_base_model", default=None, help="Hub id of a local --text_encoder folder, for the card's base_model. Needed with --push_to_hub for a local encoder.")
    args = parser.parse_args(argv)
    check_hub_args(parser, args)
    pretrained = args.text_encoder != PAPER_TEXT_ENCODER
    args.num_epochs = (8 if pretrained else 30) if args.num_epochs is None else args.num_epochs
    if args.num_epochs < 1 or args.patience < 1 or args.batch_size < 1:
        parser.error("num_epochs, patience and batch_size must be positive")
    if pretrained and args.embeddings:
        parser.error("--embeddings initialise the paper's word embeddings; a pretrained --text_encoder has none")
    args.word_dropout = (0.0 if pretrained else 0.4) if args.word_dropout is None else args.word_dropout
    args.lr_schedule = args.lr_schedule or ("linear" if pretrained else "inverse")
    args.warmup_ratio = (0.1 if pretrained else 0.0) if args.warmup_ratio is None else args.warmup_ratio
    if not 0.0 <= args.warmup_ratio < 1.0:
        parser.error(f"--warmup_ratio must be in [0, 1), got {args.warmup_ratio}")
    resolve_vision_arguments(args)
    return args


def check_hub_args(parser, args):
    """Refuse, before training, a push whose card could not name the Hub dataset or base model."""
    if not args.push_to_hub:
        return
    if not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id (user/name)")
    if hub_dataset_id(args) is None:
        parser.error(f"--dataset {args.dataset} is a local folder: give its Hub id with --hub_dataset_id for the model card")
    if args.text_encoder != PAPER_TEXT_ENCODER and base_model(args) is None:
        parser.error(f"--text_encoder {args.text_encoder} is a local folder: give its Hub id with --hub_base_model for the model card")


@dataclass
class TrainingState:
    """What `save_state` must carry beside weights and optimiser to continue a run exactly."""

    epoch: int = 0
    best_f1: float = -1.0
    best_epoch: int = -1
    epochs_without_improvement: int = 0

    def state_dict(self):
        return asdict(self)

    def load_state_dict(self, state):
        for key, value in state.items():
            setattr(self, key, value)

    def record(self, dev_f1: float) -> bool:
        improved = dev_f1 > self.best_f1
        if improved:
            self.best_f1, self.best_epoch, self.epochs_without_improvement = dev_f1, self.epoch, 0
        else:
            self.epochs_without_improvement += 1
        self.epoch += 1
        return improved


def build_processor(train_split, args) -> AcnProcessor:
    """Vocabularies from the training split only, extended by the embedding file's words when given; with a
    pretrained encoder, its tokenizer too, with a window that its position embeddings allow."""
    extra_words = AcnTokenizer.embedding_file_words(args.embeddings) if args.embeddings else None
    subword = {}
    if args.text_encoder != PAPER_TEXT_ENCODER:
        subword_tokenizer = AcnTokenizer.load_subword_tokenizer(args.text_encoder)
        positions = AutoConfig.from_pretrained(args.text_encoder).max_position_embeddings
        subword = {"subword_tokenizer": subword_tokenizer, "subword_window": min(subword_tokenizer.model_max_length, positions)}
        if args.subword_word_forms is not None:
            subword["subword_word_forms"] = args.subword_word_forms
    tokenizer = AcnTokenizer.from_corpus(
        train_split["tokens"], min_freq=args.min_word_freq, extra_words=extra_words, hashtags_as_words=args.hashtags_as_words, **subword
    )
    return AcnProcessor(image_processor=AcnImageProcessor.for_backbone(args.vision_backbone), tokenizer=tokenizer)


def build_model(args, processor, names, train_split) -> AcnForTokenClassification:
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
    if args.embeddings:
        matrix, coverage = processor.tokenizer.load_embeddings(args.embeddings, seed=args.seed)
        if matrix.shape[1] != config.word_embedding_dim:
            raise ValueError(f"--embeddings vectors have {matrix.shape[1]} dimensions, --word_embedding_dim is {config.word_embedding_dim}")
        model.get_input_embeddings().weight.data.copy_(matrix)
        logger.info(f"embeddings: {coverage.found}/{coverage.total} vocabulary words found ({coverage.ratio:.1%})", main_process_only=True)
    vision_weights = args.vision_weights or cached_features_trunk(args.dataset)
    if config.use_image and image_source(train_split, True) == "pixels" and vision_weights is None:
        raise ValueError("images are read as pixels but no VGG-16 weights were given: pass --vision_weights imagenet, a file, or random")
    if vision_weights == "random":
        vision_weights = None  # the seeded initialisation; for offline demos and tests
    if vision_weights and config.use_image:
        logger.info(f"image backbone {config.vision_backbone}: {vision_weights}", main_process_only=True)
        model.load_vision_weights(None if vision_weights == "imagenet" else vision_weights)
    return model


def settle_vision_precision(model, processor, train_split, device, args) -> None:
    """Calibrate an int8 backbone that reads pixels, then record the precision the backbone really runs in, so the
    saved config makes a reloaded model see images as in training (cached features keep the precision they were
    computed in)."""
    if not model.config.use_image:
        return
    if image_source(train_split, True) == "pixels":
        calibrate_if_needed(model, processor.image_processor, train_split, args.calibration_images, device)
        model.config.vision_precision = model.effective_vision_precision(device)
    logger.info(f"image backbone: {model.config.vision_backbone} in {model.config.vision_precision}", main_process_only=True)


def resolve_vision_arguments(args) -> None:
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


def build_dataloaders(corpus, processor, config, args):
    source = image_source(corpus["train"], config.use_image)
    logger.info(f"images: {source}", main_process_only=True)
    train = DataLoader(
        model_rows(corpus["train"], source),
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=AcnDataCollator(processor, source, args.max_train_length, args.word_dropout),
    )
    evaluation = {
        split: DataLoader(model_rows(corpus[split], source), batch_size=args.eval_batch_size, collate_fn=AcnDataCollator(processor, source))
        for split in ("validation", "test")
    }
    return train, evaluation


def build_optimizer(model, args):
    """One parameter group for a pretrained text encoder (its own learning rate), one for everything else."""
    encoder, head = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (encoder if ".subword_encoder." in name else head).append(parameter)
    groups = [{"params": head, "lr": args.learning_rate}]
    if encoder:
        groups.append({"params": encoder, "lr": args.encoder_learning_rate})
    return OPTIMIZERS[args.optimizer](groups, lr=args.learning_rate, weight_decay=args.weight_decay)


def build_scheduler(optimizer, steps_per_epoch: int, args):
    """Learning-rate factor per optimiser step: linear warm-up, then the 'inverse' per-epoch decay or a linear
    decay to 0 at the end of --num_epochs."""
    total = steps_per_epoch * args.num_epochs
    warmup = math.ceil(args.warmup_ratio * total)

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        if args.lr_schedule == "linear":
            return max(0.0, (total - step) / max(total - warmup, 1))
        return 1.0 / (1.0 + args.lr_decay * (step // steps_per_epoch))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epoch(accelerator, model, loader, optimizer, scheduler, args, epoch) -> float:
    model.train()
    loader.set_epoch(epoch)
    progress = tqdm(loader, desc=f"epoch {epoch + 1}", disable=not accelerator.is_local_main_process, leave=False)
    total, batches = 0.0, 0
    for batch in progress:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if args.max_grad_norm and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            if accelerator.sync_gradients:
                scheduler.step()
            optimizer.zero_grad()
        total, batches = total + loss.item(), batches + 1
        progress.set_postfix(loss=f"{total / batches:.3f}")
    return total / max(batches, 1)


def evaluate_split(accelerator, model, loader, split, metric):
    predictions = predict_split(accelerator, model, loader)
    return score(metric, predictions, gold_tags(split)), predictions


def run_training(accelerator, model, train_loader, dev_loader, optimizer, scheduler, state, metric, args, output_dir):
    """Epochs with dev selection; the best weights are saved under output_dir/best_model."""
    while state.epoch < args.num_epochs and state.epochs_without_improvement < args.patience and not perfect_dev(state, args):
        started = time.perf_counter()
        loss = train_epoch(accelerator, model, train_loader, optimizer, scheduler, args, state.epoch)
        dev_scores, _ = evaluate_split(accelerator, model, dev_loader, dev_loader.dataset, metric)
        epoch = state.epoch
        if state.record(dev_scores["overall_f1"]):
            save_model(accelerator, model, None, output_dir / BEST_MODEL_DIR)
        logger.info(
            f"epoch {epoch + 1}: loss {loss:.4f}, dev F1 {100 * dev_scores['overall_f1']:.2f} "
            f"(best {100 * state.best_f1:.2f} at epoch {state.best_epoch + 1}), {time.perf_counter() - started:.1f} s",
            main_process_only=True,
        )
        if args.with_tracking:
            accelerator.log({"train_loss": loss, "dev_f1": dev_scores["overall_f1"]}, step=epoch)
        if args.checkpointing == "epoch":
            save_checkpoint(accelerator, checkpoint_folder(output_dir / CHECKPOINT_DIR, epoch + 1), model, optimizer, scheduler, state)


def perfect_dev(state: TrainingState, args) -> bool:
    return args.stop_at_perfect_dev and state.best_f1 >= PERFECT_F1


def save_model(accelerator, model, processor, folder: Path) -> list[str]:
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


def final_evaluation(accelerator, model, loaders, corpus, metric, output_dir, args, processor, state, elapsed):
    """Reload the best weights, score dev and test, write every result file."""
    best = AcnForTokenClassification.from_pretrained(output_dir / BEST_MODEL_DIR)
    accelerator.unwrap_model(model).load_state_dict(best.state_dict())
    results, predictions = {}, {}
    for split in ("validation", "test"):
        results[split], predictions[split] = evaluate_split(accelerator, model, loaders[split], corpus[split], metric)
    model_files = save_model(accelerator, model, processor, output_dir)
    if not accelerator.is_main_process:
        return results
    for split in ("validation", "test"):
        write_predictions(output_dir / f"{split}_predictions.txt", corpus[split]["tokens"], gold_tags(corpus[split]), predictions[split])
    summary = {
        "variant": args.variant,
        "text_encoder": args.text_encoder,
        "seed": args.seed,
        "num_processes": accelerator.num_processes,
        "best_epoch": state.best_epoch + 1,
        "epochs_trained": state.epoch,
        "train_seconds": round(elapsed, 1),
        **{f"{split}_{key}": value for split in results for key, value in results[split].items()},
    }
    write_json(output_dir / "all_results.json", summary)
    table = table2({f"{args.variant} (test)": results["test"], f"{args.variant} (dev)": results["validation"]})
    write_text(output_dir / "results.md", table + "\n")
    print(table)
    print(f"test: {results['test']['num_gold_entities']} gold entities (lenient), {results['test']['strict_num_gold_entities']} (strict)")
    write_model_card(output_dir, args, results)
    if args.push_to_hub:
        push_model_folder(output_dir, model_files + list(RESULT_FILES), args)
    return results


def push_model_folder(output_dir: Path, files: list[str], args):
    """Upload exactly `files` of output_dir (the final model and the run's results), in one commit."""
    api = HfApi()
    repo_id = api.create_repo(args.hub_model_id, private=args.hub_private_repo or None, exist_ok=True).repo_id
    api.upload_folder(
        repo_id=repo_id,
        folder_path=output_dir,
        allow_patterns=[glob_escape(name) for name in files],
        commit_message=f"ACN ({args.variant}), seed {args.seed}: test F1 as in results.md",
    )
    logger.info(f"pushed {len(files)} files to https://huggingface.co/{repo_id}", main_process_only=True)


def glob_escape(name: str) -> str:
    """`name` as an fnmatch pattern that matches only itself."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in name)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with="tensorboard" if args.with_tracking else None,
        project_dir=str(output_dir / "runs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # a batch whose tweets all lack an image leaves the co-attention without gradients, which DDP must allow
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=PAPER_VARIANTS[args.variant].get("use_image", True))],
    )
    set_seed(args.seed)
    corpus = load_corpus(args.dataset, args.image_dir)
    processor = build_processor(corpus["train"], args)
    model = build_model(args, processor, label_names(corpus), corpus["train"])
    settle_vision_precision(model, processor, corpus["train"], accelerator.device, args)
    train_loader, eval_loaders = build_dataloaders(corpus, processor, model.config, args)
    optimizer = build_optimizer(model, args)
    model, optimizer, train_loader, dev_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, eval_loaders["validation"], eval_loaders["test"]
    )
    scheduler = build_scheduler(optimizer, math.ceil(len(train_loader) / args.gradient_accumulation_steps), args)
    state = TrainingState()
    if args.with_tracking:
        accelerator.init_trackers("acn", config={key: str(value) for key, value in vars(args).items()})
    if args.resume_from_checkpoint is not None:
        # checkpoints carry the schedule, which stays outside prepare() (that would step it once per process)
        resume(accelerator, args.resume_from_checkpoint, output_dir / CHECKPOINT_DIR, model, optimizer, scheduler, state)
    metric = load_metric()
    started = time.perf_counter()
    run_training(accelerator, model, train_loader, dev_loader, optimizer, scheduler, state, metric, args, output_dir)
    final_evaluation(
        accelerator, model, {"validation": dev_loader, "test": test_loader}, corpus, metric, output_dir, args, processor, state,
        time.perf_counter() - started,
    )
    accelerator.end_training()


if __name__ == "__main__":
    main()

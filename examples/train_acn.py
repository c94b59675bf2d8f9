"""Train ACN (or one of the paper's variants) on a multimodal tweet NER corpus with Accelerate.

    accelerate launch examples/train_acn.py --dataset DATA --output_dir OUT [--variant full] ...
    python examples/train_acn.py --dataset DATA --output_dir OUT ...

Selects the epoch with the best dev (validation) entity F1, with early stopping, then scores the test split.
Writes to --output_dir: the model and processor with their remote code, all_results.json, results.md (the paper's
Table 2 layout), {validation,test}_predictions.txt (`token gold pred`), model_card.md/README.md, checkpoints/.
"""

import argparse
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from dataset_script.twitter_mner import VISION_WEIGHTS_FILE
from acn_checkpoint import checkpoint_folder, resume, save_checkpoint
from acn_commands.atomic import atomic_files_into, atomic_folder, write_text
from acn_data import AcnCollator, image_source, label_names, load_corpus, model_rows
from model_card import write_model_card
from ner_report import gold_tags, load_metric, predict_split, score, table2, write_json, write_predictions
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from modeling_acn import (
    PAPER_VARIANTS,
    AcnConfig,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)

logger = get_logger(__name__)

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}
CHECKPOINT_DIR = "checkpoints"
BEST_MODEL_DIR = f"{CHECKPOINT_DIR}/best_model"  # kept after training: a resumed run may end on these weights


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="Raw corpus folder (train/valid/test.txt), a save_to_disk folder (e.g. with cached image features), a Parquet folder or a Hub dataset id.")
    data.add_argument("--image_dir", default=None, help="Images <id>.jpg of a raw corpus folder; omit to train without images.")
    data.add_argument("--output_dir", required=True, help="Where the model, results and checkpoints go.")
    model = parser.add_argument_group("model")
    model.add_argument("--variant", default="full", choices=sorted(PAPER_VARIANTS), help="Which model of the paper's Table 2 to train.")
    model.add_argument("--embeddings", default=None, help="GloVe/word2vec text file of pretrained word vectors; their words extend the vocabulary.")
    model.add_argument("--vision_weights", default=None, help="VGG-16 trunk weights: 'imagenet' (torchvision), a local .pth/.safetensors file, or 'random' (seeded; offline demos); defaults to the trunk saved beside cached features.")
    model.add_argument("--word_embedding_dim", type=int, default=200, help="Word vector size (the embedding file's, when given).")
    model.add_argument("--hidden_size", type=int, default=200, help="BiLSTM output size, both directions together.")
    model.add_argument("--dropout", type=float, default=0.5, help="Dropout on word representations and BiLSTM outputs.")
    model.add_argument("--word_dropout", type=float, default=0.4, help="Probability of replacing a training word by [UNK] (characters stay); chosen on Twitter-2015 dev.")
    model.add_argument("--hashtags_as_words", action=argparse.BooleanOptionalAction, default=True, help="Look '#word' up under 'word' (chosen on Twitter-2015 dev); --no-hashtags_as_words keeps the '#' in the vocabulary.")
    model.add_argument("--min_word_freq", type=int, default=1, help="Training-split count a word needs to enter the vocabulary.")
    training = parser.add_argument_group("training")
    training.add_argument("--optimizer", default="adam", choices=sorted(OPTIMIZERS), help="Optimiser (the paper used RMSprop).")
    training.add_argument("--learning_rate", type=float, default=1e-3, help="Initial learning rate.")
    training.add_argument("--lr_decay", type=float, default=0.0, help="Per-epoch decay: lr / (1 + decay * epoch).")
    training.add_argument("--weight_decay", type=float, default=0.0, help="L2 weight decay.")
    training.add_argument("--max_grad_norm", type=float, default=5.0, help="Gradient norm clipping; 0 disables it.")
    training.add_argument("--batch_size", type=int, default=16, help="Tweets per batch and process.")
    training.add_argument("--eval_batch_size", type=int, default=64, help="Tweets per evaluation batch and process.")
    training.add_argument("--num_epochs", type=int, default=30, help="Most epochs to train.")
    training.add_argument("--patience", type=int, default=5, help="Stop after this many epochs without a better dev F1.")
    training.add_argument("--max_train_length", type=int, default=None, help="Truncate training tweets to this many words (evaluation never truncates).")
    training.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Batches per optimiser step.")
    training.add_argument("--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="Accelerate mixed precision (GPUs).")
    training.add_argument("--seed", type=int, default=42, help="Seed for weights, shuffling and dropout.")
    training.add_argument("--checkpointing", default="epoch", choices=["epoch", "none"], help="Save the training state after every epoch (needed to resume), or never.")
    training.add_argument("--resume_from_checkpoint", default=None, help="'latest' (the newest checkpoint that verifies; damaged ones are skipped with a warning) or a checkpoint folder to continue from.")
    training.add_argument("--with_tracking", action="store_true", help="Log metrics to TensorBoard in output_dir/runs.")
    args = parser.parse_args(argv)
    if args.num_epochs < 1 or args.patience < 1 or args.batch_size < 1:
        parser.error("num_epochs, patience and batch_size must be positive")
    return args


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
    """Vocabularies from the training split only, extended by the embedding file's words when given."""
    extra_words = AcnTokenizer.embedding_file_words(args.embeddings) if args.embeddings else None
    tokenizer = AcnTokenizer.from_corpus(
        train_split["tokens"], min_freq=args.min_word_freq, extra_words=extra_words, hashtags_as_words=args.hashtags_as_words
    )
    return AcnProcessor(image_processor=AcnImageProcessor(), tokenizer=tokenizer)


def build_model(args, processor, names, train_split) -> AcnForTokenClassification:
    config = AcnConfig.from_variant(
        args.variant,
        vocab_size=len(processor.tokenizer),
        char_vocab_size=processor.tokenizer.char_vocab_size,
        word_embedding_dim=args.word_embedding_dim,
        hidden_size=args.hidden_size,
        dropout=args.dropout,
        id2label=dict(enumerate(names)),
    )
    model = AcnForTokenClassification(config)
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
        logger.info(f"VGG-16 trunk: {vision_weights}", main_process_only=True)
        model.load_vision_weights(None if vision_weights == "imagenet" else vision_weights)
    return model


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
        collate_fn=AcnCollator(processor, source, args.max_train_length, args.word_dropout),
    )
    evaluation = {
        split: DataLoader(model_rows(corpus[split], source), batch_size=args.eval_batch_size, collate_fn=AcnCollator(processor, source))
        for split in ("validation", "test")
    }
    return train, evaluation


def build_optimizer(model, args):
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = OPTIMIZERS[args.optimizer](parameters, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 / (1.0 + args.lr_decay * epoch))
    return optimizer, scheduler


def train_epoch(accelerator, model, loader, optimizer, args, epoch) -> float:
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
            optimizer.zero_grad()
        total, batches = total + loss.item(), batches + 1
        progress.set_postfix(loss=f"{total / batches:.3f}")
    return total / max(batches, 1)


def evaluate_split(accelerator, model, loader, split, metric):
    predictions = predict_split(accelerator, model, loader)
    return score(metric, predictions, gold_tags(split)), predictions


def run_training(accelerator, model, train_loader, dev_loader, optimizer, scheduler, state, metric, args, output_dir):
    """Epochs with dev selection; the best weights are saved under output_dir/best_model."""
    while state.epoch < args.num_epochs and state.epochs_without_improvement < args.patience:
        started = time.perf_counter()
        loss = train_epoch(accelerator, model, train_loader, optimizer, args, state.epoch)
        scheduler.step()
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


def save_model(accelerator, model, processor, folder: Path):
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # written aside and renamed into place: a kill leaves no half-written file
        unwrapped = accelerator.unwrap_model(model)
        if processor is None:
            with atomic_folder(folder) as temporary:
                unwrapped.save_pretrained(temporary)
        else:  # model, processor and the pipeline's code: transformers.pipeline(..., trust_remote_code=True) loads it
            with atomic_files_into(folder) as temporary:
                AcnPipeline(model=unwrapped, processor=processor, device=unwrapped.device).save_pretrained(temporary)
    accelerator.wait_for_everyone()


def final_evaluation(accelerator, model, loaders, corpus, metric, output_dir, args, processor, state, elapsed):
    """Reload the best weights, score dev and test, write every result file."""
    best = AcnForTokenClassification.from_pretrained(output_dir / BEST_MODEL_DIR)
    accelerator.unwrap_model(model).load_state_dict(best.state_dict())
    results, predictions = {}, {}
    for split in ("validation", "test"):
        results[split], predictions[split] = evaluate_split(accelerator, model, loaders[split], corpus[split], metric)
    save_model(accelerator, model, processor, output_dir)
    if not accelerator.is_main_process:
        return results
    for split in ("validation", "test"):
        write_predictions(output_dir / f"{split}_predictions.txt", corpus[split]["tokens"], gold_tags(corpus[split]), predictions[split])
    summary = {
        "variant": args.variant,
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
    return results


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
    train_loader, eval_loaders = build_dataloaders(corpus, processor, model.config, args)
    optimizer, scheduler = build_optimizer(model, args)
    model, optimizer, train_loader, dev_loader, test_loader = accelerator.prepare(
        model, optimizer, train_loader, eval_loaders["validation"], eval_loaders["test"]
    )
    state = TrainingState()
    if args.with_tracking:
        accelerator.init_trackers("acn", config={key: str(value) for key, value in vars(args).items()})
    if args.resume_from_checkpoint is not None:
        # checkpoints carry the per-epoch schedule, which stays outside prepare() (that would step it once per process)
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

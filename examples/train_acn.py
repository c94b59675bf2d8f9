r"""Train ACN (or one of the paper's variants) on a multimodal tweet NER corpus with Accelerate.

    accelerate launch examples/train_acn.py --dataset_name DATA --output_dir OUT [--variant full] ...
    python examples/train_acn.py --train_file train.json --validation_file dev.json --test_file test.json \
        --output_dir OUT
    python examples/train_acn.py --model_name_or_path TRAINED --dataset_name NEW_DATA --output_dir OUT

The training loop is the library's (`acn_mner/train.py`: `build_dataloaders`, `train_epoch`, `evaluate_split`, ...),
so that an installed package trains too: the `acn-train` command and `accelerate launch -m acn_mner.train` run the
same `main`. The flags follow transformers' run_ner_no_trainer.py; `python examples/train_acn.py --help` lists them.
"""

from acn_mner.train import cli

if __name__ == "__main__":
    cli()

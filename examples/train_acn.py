"""Train ACN (or one of the paper's variants) on a multimodal tweet NER corpus with Accelerate.

    accelerate launch examples/train_acn.py --dataset DATA --output_dir OUT [--variant full] ...
    python examples/train_acn.py --dataset DATA --output_dir OUT ...

The training loop is the library's (`acn_mner/train.py`: `build_dataloaders`, `train_epoch`, `evaluate_split`, ...),
so that an installed package trains too; `python examples/train_acn.py --help` lists the flags.
"""

from acn_mner.train import main

if __name__ == "__main__":
    main()

"""Run examples/train_acn.py under `accelerate launch` and record, per process, which tweets it ran through the
model: ``<probe_dir>/rank_<rank>.json`` holds ``train`` (the tweets of each training batch, by epoch) and
``evaluation`` (the tweets of each evaluation pass). Tweets are identified by their word ids.

    accelerate launch ... tests/distributed_probe.py PROBE_DIR <train_acn.py arguments>
"""

import json
import os
import sys
from pathlib import Path

from acn_mner import train as train_acn
from modeling_acn import AcnForTokenClassification


def record(probe_dir: Path) -> dict:
    """Patch the model's forward pass and the split scorer to log every tweet into the returned record."""
    seen = {"train": [], "evaluation": []}
    forward, predict_split, train_epoch = (
        AcnForTokenClassification.forward,
        train_acn.predict_split,
        train_acn.train_epoch,
    )

    def recording_forward(self, input_ids, *args, attention_mask=None, **kwargs):
        tweets = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]
        (seen["train"][-1] if self.training else seen["evaluation"][-1]).append(tweets)
        return forward(self, input_ids, *args, attention_mask=attention_mask, **kwargs)

    def recording_train_epoch(*args, **kwargs):
        seen["train"].append([])
        return train_epoch(*args, **kwargs)

    def recording_predict_split(*args, **kwargs):
        seen["evaluation"].append([])
        return predict_split(*args, **kwargs)

    AcnForTokenClassification.forward = recording_forward
    train_acn.train_epoch = recording_train_epoch
    train_acn.predict_split = recording_predict_split
    return seen


if __name__ == "__main__":
    probe_dir = Path(sys.argv[1])
    seen = record(probe_dir)
    train_acn.main(sys.argv[2:])
    (probe_dir / f"rank_{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen), encoding="utf-8")

"""Run acn-predict under `accelerate launch` and record, per process, the rows it tagged:
``<probe_dir>/rank_<rank>.json`` holds the process id and the row indices of each batch it tagged.

    accelerate launch ... tests/predict_probe.py PROBE_DIR <acn-predict arguments>
"""

import json
import os
import sys
from pathlib import Path

from acn_mner import predict

if __name__ == "__main__":
    probe_dir, batches = Path(sys.argv[1]), []
    tag = predict.RowTagger.tag

    def recording_tag(self, batch):
        batches.append([row.index for row in batch.rows])
        return tag(self, batch)

    predict.RowTagger.tag = recording_tag
    predict.main(sys.argv[2:])
    record = {"pid": os.getpid(), "batches": batches}
    (probe_dir / f"rank_{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record), encoding="utf-8")

"""Progress bars only where someone watches them: off a terminal (a log file, a pipe, CI) they are turned off."""

import os
import sys
from typing import TextIO

import datasets
import transformers

# read by the processes started after the call (the demo's reload step); tqdm reads its variable when imported, so in
# this process the project's own bars pass `disable=None`, which tqdm reads as "off when not a terminal"
PROGRESS_VARIABLES = ("TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")


def quiet_progress_bars_off_terminal(stream: TextIO | None = None) -> bool:
    """Turn off the progress bars of tqdm, datasets, transformers and huggingface_hub, in this process and the
    processes it starts, when `stream` (default: stderr, where they draw) is not a terminal. Returns whether it did.

    A bar redrawn in a log writes one line per update: a demo run wrote about 1,600 of them.
    """
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        return False
    for variable in PROGRESS_VARIABLES:
        os.environ[variable] = "1"
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()  # also huggingface_hub's
    return True


__all__ = ["quiet_progress_bars_off_terminal"]

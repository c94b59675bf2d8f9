"""Run the README's 'Using a trained model' snippet against a tiny random model made with the installed package.

Run it outside the repository (so that the installed package is the one imported), in an empty folder:
    cd "$(mktemp -d)" && /path/to/venv/bin/python REPO/tests/readme_snippet_probe.py REPO/README.md
It writes outputs/demo/acn and photo.jpg there, runs the snippet, then the pipeline factory on the same folder.
"""
import re
import sys
from pathlib import Path

import torch
from PIL import Image

import modeling_acn
from modeling_acn import AcnConfig, AcnForTokenClassification, AcnImageProcessor, AcnProcessor, AcnTokenizer

print("package from", modeling_acn.__file__, "version", modeling_acn.__version__)
readme = Path(sys.argv[1]).read_text()
section = readme.split("## Using a trained model", 1)[1]
snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)

torch.manual_seed(0)
tokenizer = AcnTokenizer.from_corpus([["Obama", "visits", "Paris"]])
config = AcnConfig(vocab_size=len(tokenizer), char_vocab_size=tokenizer.char_vocab_size, word_embedding_dim=8,
                   hidden_size=16, attention_size=8)
model = AcnForTokenClassification(config).eval()
processor = AcnProcessor(AcnImageProcessor(), tokenizer)
model.save_pretrained("outputs/demo/acn")
processor.save_pretrained("outputs/demo/acn")
Image.new("RGB", (64, 48), (200, 30, 30)).save("photo.jpg")
namespace = {}
exec(snippet, namespace)
print("README snippet ran; tags:", namespace["tags"])

from transformers import pipeline

pipe = pipeline(model="outputs/demo/acn", trust_remote_code=True, device="cpu")
print("pipeline factory:", type(pipe).__name__, pipe("Obama visits Paris", image="photo.jpg"))

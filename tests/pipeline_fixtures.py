"""A tiny trained-looking ACN pipeline (tokenizer from a small corpus, tiny model) for the inference tests."""

import torch
from PIL import Image

from modeling_acn import (
    AcnConfig,
    AcnForTokenClassification,
    AcnImageProcessor,
    AcnPipeline,
    AcnProcessor,
    AcnTokenizer,
)
from tests.conftest import BIO_LABELS, TINY_SIZES

TRAIN = [["Obama", "visits", "Paris", "."], ["Merkel", "meets", "@user", "in", "Berlin", "http://t.co/x"]]
TWEET = "RT @Obama:  visits   Paris 🇫🇷🇫🇷 http://t.co/xyz  !!"  # mention, repeated spaces, flags, URL


def tiny_pipeline(seed: int = 0, **config) -> AcnPipeline:
    torch.manual_seed(seed)
    tokenizer = AcnTokenizer.from_corpus(TRAIN)
    sizes = {**TINY_SIZES, "vocab_size": len(tokenizer), "char_vocab_size": tokenizer.char_vocab_size}
    model = AcnForTokenClassification(AcnConfig(**sizes, **config, id2label=dict(enumerate(BIO_LABELS)))).eval()
    return AcnPipeline(model=model, processor=AcnProcessor(AcnImageProcessor(), tokenizer), device="cpu")


def striped_image(size=(48, 32)) -> Image.Image:
    image = Image.new("RGB", size, (20, 40, 200))
    image.paste((230, 200, 10), (0, 0, size[0] // 2, size[1]))
    return image

"""ACN on a pretrained text encoder: the processor and model over `tiny_bert` (conftest.py), a random 1-layer BERT
with MiniLM-L6's tokenizer."""

import torch

from modeling_acn import AcnConfig, AcnForTokenClassification, AcnImageProcessor, AcnProcessor, AcnTokenizer

from .pipeline_fixtures import TRAIN

WINDOW = 12  # subwords per encoder call: small, so that a long tweet needs several


def make_processor(tiny_bert, window=WINDOW):
    subword = AcnTokenizer.load_subword_tokenizer(tiny_bert)
    tokenizer = AcnTokenizer.from_corpus(TRAIN, subword_tokenizer=subword, subword_window=window)
    return AcnProcessor(AcnImageProcessor(), tokenizer)


def make_model(tiny_bert, processor, **overrides):
    torch.manual_seed(0)
    config = AcnConfig(
        text_encoder=str(tiny_bert),
        text_encoder_window=processor.tokenizer.subword_window,
        vocab_size=len(processor.tokenizer),
        char_vocab_size=processor.tokenizer.char_vocab_size,
        char_embedding_dim=6,
        char_num_filters=4,
        attention_size=8,
        dropout=0.0,
        id2label={0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"},
        **overrides,
    )
    model = AcnForTokenClassification(config)
    model.load_text_encoder_weights()
    return model.eval()

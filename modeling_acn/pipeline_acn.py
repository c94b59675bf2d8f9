"""Multimodal NER pipeline for ACN: a tweet and its image in, entities with character offsets out.

It follows transformers' token-classification pipeline (`aggregation_strategy`, `ignore_labels`, batching with
`batch_size`, `device`, its output schema), with words as the units instead of subwords. Load it with
`AcnPipeline.from_pretrained(folder_or_id)`, or, for a saved ACN folder, with
`transformers.pipeline("token-classification", model=folder_or_id, trust_remote_code=True)` (or its alias "ner";
transformers' defaults: one entry per word) or `transformers.pipeline("multimodal-ner", ...)` (one entry per entity).
The folder's `config.custom_pipelines` names this class for the three tasks; the process-wide registry only learns
"multimodal-ner", so other token-classification models keep transformers' own pipeline.
"""

import importlib
import itertools
import json
import math
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import regex
import torch
from transformers import AutoModelForTokenClassification, AutoProcessor, Pipeline, PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save, get_class_from_dynamic_module
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import pad_collate_fn
from transformers.pipelines.pt_utils import PipelineIterator
from transformers.processing_utils import ProcessorMixin
from transformers.utils import cached_file

from .configuration_acn import AcnConfig
from .processing_acn import AcnProcessor

TASK = "multimodal-ner"
STANDARD_TASK = "token-classification"  # transformers' task, whose default aggregation is "none"
# transformers' alias of the standard task (its TASK_ALIASES). The factory looks a folder's custom_pipelines up by the
# name as given, before it resolves aliases: without its own entry, "ner" would build transformers' own pipeline.
STANDARD_TASK_ALIAS = "ner"
AGGREGATION_STRATEGIES = ("none", "simple")
# What renders as nothing: format characters (Cf: zero-width space and joiners, direction marks, embeddings and
# isolates, U+FEFF, soft hyphen, tag characters), the other default-ignorable code points (variation selectors,
# Hangul fillers) and whitespace. A word of only these is never part of an entity.
INVISIBLE_WORD = regex.compile(r"[\p{Cf}\p{Default_Ignorable_Code_Point}\s]+")
# The emission of an entity tag at such a word: finite, so that a row of them cannot give NaN, and far below what a
# model emits, so that no path through it can win and its marginal is 0.
INVISIBLE_ENTITY_SCORE = -1e4
BACKENDS = ("torch", "onnxruntime")


class _Tagger(Protocol):
    """What the pipeline uses of its model: `AcnForTokenClassification`, or `AcnOnnxModel` in its place."""

    config: AcnConfig
    crf: Any  # AcnCrf, AcnOnnxModel's AcnNumpyCrf, or None for a softmax decoder
    dtype: torch.dtype

    def __call__(self, **inputs: Any) -> Any: ...

    def decode(
        self, logits: torch.Tensor, attention_mask: torch.Tensor | None = None, constrain_bio: bool = False
    ) -> list[list[int]]: ...

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor: ...


class _TorchCrf(Protocol):
    """What `tag_marginals` uses of `AcnCrf`."""

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class AcnPipeline(Pipeline):
    """Tags the words of tweets, with or without an image, and groups them into entities.

    Call it with a tweet and an image, `pipe("Obama visits Paris", image="paris.jpg")` (or `images=`, as
    transformers' multimodal pipelines name it; with a list of tweets, a list of their images), or a list of inputs,
    each a tweet string, a `(text, image)` pair or a `{"text": ..., "image": ...}` dict. With
    `is_split_into_words=True` a list of words is one tweet (offsets then point into the words joined by single
    spaces). An image is a file path, an http(s) URL, a PIL image, `None` (the model's text path for that tweet), or
    precomputed backbone features `(49, image_feature_dim)` (VGG-16 pool5: `(49, 512)`) as a float tensor or array
    (e.g. from the corpus feature cache). Text-only models ignore images.

    Tags come from constrained Viterbi decoding (no `I-X` without a preceding `B-X`/`I-X`). A word's `score` is
    the marginal probability of its tag, `p(y_t = tag | tweet, image)`, from the CRF's forward-backward
    (the unconstrained CRF; softmax-decoder models: the softmax of the emissions). An entity's score is the
    mean over its words, as in the token-classification pipeline. A word that renders as nothing (`INVISIBLE_WORD`:
    zero-width characters, direction marks, variation selectors, fillers, whitespace) is never part of an entity:
    its entity tags are ruled out before decoding and in the marginals, so it is tagged outside (score 1).

    Inputs may also come as any other iterable of them that is not a string, such as a torch `Dataset`
    (`KeyDataset(dataset, "text")`) or an iterator: the results then come as an iterator, as in transformers.

    Call parameters (also accepted at construction):
        aggregation_strategy (`str`, defaults to `"simple"` for the task "multimodal-ner" and to `"none"`, as in
            transformers, for "token-classification" and "ner"): `"simple"` gives one
            `{entity_group, score, word, start, end}` per entity; `"none"` one `{entity, score, index, word, start,
            end}` per word. `"first"`, `"average"` and `"max"` merge the subwords of a word, which ACN does not have,
            so they are refused.
        ignore_labels (`list[str]`, defaults to `["O"]`): tags or entity types left out of the output.
        return_tags (`bool`): return a dict per tweet, `{"entities", "words", "tags", "scores", "offsets"}`,
            with every word's tag and score.
        output_attentions (`bool`): the dict also holds `visual_attentions` `(words, 7, 7)` (word-guided
            attention over the image regions), `fusion_gates` `(words,)` (the fusion gate averaged over hidden
            units: the visual share of the fused feature; None with `fusion="concat"`) and `filtration_gates`
            `(words,)`, as numpy float32 arrays. Needs a model with images (`use_image=True`).
        is_split_into_words (`bool`): the text is a list of words.
        allow_private_urls (`bool`, defaults to `False`): image URLs may name loopback, private and link-local
            addresses (your own network). Off, only public addresses are fetched (the URL policy of
            `url_policy_acn`); leave it off wherever strangers choose the URLs.
    """

    _load_processor = True  # type: ignore[assignment]  # Pipeline's unannotated None default types it None
    _load_tokenizer = False  # type: ignore[assignment]  # likewise
    _load_image_processor = False  # type: ignore[assignment]  # likewise
    _load_feature_extractor = False  # type: ignore[assignment]  # likewise
    processor: AcnProcessor  # __init__ refuses a pipeline without one

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(
                "AcnPipeline needs processor=AcnProcessor(...) (it holds the tokenizer and image processor)"
            )

    @property
    def _tagger(self) -> _Tagger:
        # transformers types the model as a PreTrainedModel: here an AcnForTokenClassification or an AcnOnnxModel
        return cast(_Tagger, self.model)

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike,
        device: int | str | torch.device | None = None,
        trust_remote_code: bool = False,
        backend: str = "torch",
        onnx_file: str | None = None,
        vision_onnx_file: str | None = None,
        **kwargs: Any,
    ) -> "AcnPipeline":
        """Load the model and processor saved in a folder or Hub repository.

        Args:
            model_name_or_path: folder or Hub id holding the model and the processor.
            device: as in transformers' pipelines: -1 or `"cpu"`, a GPU index or a `torch.device`; by default
                the first GPU when there is one, else the CPU (the onnxruntime backend: the CPU only).
            trust_remote_code: run the folder's own code: the model and processor classes its `auto_map` names,
                even where this package is installed (the Auto classes would otherwise pick the installed ones).
            backend: `"torch"`, or `"onnxruntime"` for a local folder written by `acn-export` (`AcnOnnxModel`: the
                same inputs and results, from the exported graph; needs `pip install onnxruntime`).
            onnx_file: with `backend="onnxruntime"`, the graph to run: `"model.onnx"` (the default, float32) or
                `"model_int8.onnx"`.
            vision_onnx_file: with `backend="onnxruntime"`, the image trunk's graph: `"vision.onnx"` (the default,
                float32) or `"vision_int8.onnx"` (static int8, where the export was calibrated on images).
            **kwargs: call parameters to set for every call (see the class docstring), and `batch_size`.
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "torch":
            if onnx_file is not None or vision_onnx_file is not None:
                name = "onnx_file" if onnx_file is not None else "vision_onnx_file"
                raise ValueError(f"{name} goes with backend='onnxruntime', got backend={backend!r}")
            model, processor = load_model_and_processor(model_name_or_path, trust_remote_code)
            return cls(model=model, processor=processor, device=device, task=TASK, **kwargs)
        # Imported by name: a `from .onnx_runtime_acn import` line would make save_pretrained copy the file into
        # every folder.
        onnx_runtime_acn = importlib.import_module(f"{__package__}.onnx_runtime_acn")
        model = onnx_runtime_acn.AcnOnnxModel.from_pretrained(
            model_name_or_path,
            onnx_file or onnx_runtime_acn.ONNX_FILE,
            vision_onnx_file=vision_onnx_file or onnx_runtime_acn.VISION_ONNX_FILE,
        )
        if device not in (None, -1) and torch.device(device).type != "cpu":
            raise ValueError(f"backend='onnxruntime' runs on the CPU, got device={device!r}")
        processor = load_processor(model_name_or_path, trust_remote_code)
        return cls(model=model, processor=processor, device="cpu", task=TASK, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save model, processor and this pipeline's code, so that `transformers.pipeline` can load the folder."""
        super().save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory)

    def __call__(  # type: ignore[override]  # the image comes second, where Pipeline's takes *args
        self, inputs: Any, image: Any = None, images: Any = None, **kwargs: Any
    ) -> Any:
        """Tag one tweet (`inputs` a string, `image` its image), a list of inputs (a list of results), or any other
        iterable of inputs, e.g. a generator or a torch `Dataset` (an iterator of results).

        `images=`, the keyword of transformers' multimodal pipelines (and of the processor), is the image of one
        tweet, or a list of images, one per tweet of a list of tweets."""
        split = kwargs.get("is_split_into_words", self._preprocess_params.get("is_split_into_words", False))
        if images is not None:
            if image is not None:
                raise ValueError("give the image as image= or as images=, not both")
            if _is_single_input(inputs, split) or not isinstance(inputs, list):
                image = images
            elif not isinstance(images, list) or len(images) != len(inputs):
                count = len(images) if isinstance(images, list) else "not a list of"
                raise ValueError(f"got {count} images for {len(inputs)} tweets; give a list with None for no image")
            else:
                inputs = [_as_example(item, picture) for item, picture in zip(inputs, images, strict=True)]
        if _is_single_input(inputs, split):
            return super().__call__(_as_example(inputs, image), **kwargs)
        if image is not None and not _is_many_inputs(inputs):
            raise ValueError(
                f"image= goes with a tweet (a string, or a list of words with is_split_into_words=True), got {inputs!r}"
            )
        if image is not None:
            raise ValueError("image= goes with a single tweet; pass several tweets as (text, image) pairs")
        if isinstance(inputs, list) and inputs:
            return super().__call__([_as_example(item) for item in inputs], **kwargs)
        if _is_many_inputs(inputs) and not isinstance(inputs, list):
            # streamed, results as an iterator: transformers' behaviour for generators and Datasets
            return super().__call__((_as_example(item) for item in _iterate(inputs)), **kwargs)
        raise ValueError(
            "inputs must be a tweet, a (text, image) pair, a {'text', 'image'} dict, or a non-empty list or "
            f"other iterable (generator, Dataset) of those, got {inputs!r}"
        )

    def _sanitize_parameters(  # type: ignore[override]  # Pipeline types the hooks' parameters as **dict
        self,
        aggregation_strategy: str | None = None,
        ignore_labels: Iterable[str] | None = None,
        return_tags: bool | None = None,
        output_attentions: bool | None = None,
        is_split_into_words: bool | None = None,
        allow_private_urls: bool | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess: dict[str, Any] = {}
        forward: dict[str, Any] = {}
        postprocess: dict[str, Any] = {}
        if is_split_into_words is not None:
            preprocess["is_split_into_words"] = is_split_into_words
        if allow_private_urls is not None:
            if not isinstance(allow_private_urls, bool):
                raise ValueError(f"allow_private_urls must be True or False, got {allow_private_urls!r}")
            preprocess["allow_private_urls"] = allow_private_urls
        if output_attentions is not None:
            if output_attentions and not self.model.config.use_image:
                raise ValueError("output_attentions=True needs a model with images; this one has use_image=False")
            forward["output_attentions"] = output_attentions
        if aggregation_strategy is not None:
            postprocess["aggregation_strategy"] = _check_aggregation_strategy(aggregation_strategy)
        if ignore_labels is not None:
            postprocess["ignore_labels"] = list(ignore_labels)
        if return_tags is not None:
            postprocess["return_tags"] = return_tags
        return preprocess, forward, postprocess

    def preprocess(  # type: ignore[override]  # as _sanitize_parameters
        self, example: dict[str, Any], is_split_into_words: bool = False, allow_private_urls: bool = False
    ) -> dict[str, Any]:
        text = example["text"]
        encoding = self.processor(text, is_split_into_words=is_split_into_words, return_offsets_mapping=True)
        offsets = [tuple(pair) for pair in encoding.pop("offset_mapping")[0].tolist()]
        model_inputs = dict(encoding)
        model_inputs["char_ids"] = self._pad_char_axis(model_inputs["char_ids"])  # (1, seq_len, char_width)
        if self.model.config.use_image:
            limit = self.model.config.max_image_words
            if example["image"] is not None and len(offsets) > limit:  # before the image is read
                raise ValueError(
                    f"the tweet has {len(offsets)} words and an image; co-attention reads at most max_image_words="
                    f"{limit} words (its memory grows with their square): tag it without its image"
                )
            model_inputs.update(self._image_inputs(example["image"], allow_private_urls))
        model_inputs["text"] = " ".join(text) if is_split_into_words else text
        model_inputs["offsets"] = offsets
        return model_inputs

    def preprocess_batch(
        self, examples: list[dict[str, Any]], is_split_into_words: bool = False, allow_private_urls: bool = False
    ) -> dict[str, Any]:
        """The padded batch that `preprocess` per example and transformers' collation give: from one processor call
        when no example has an image (`batch_text_inputs`), else example by example. Batches the processor refuses
        take the per-example path too, whose messages name the example (the processor's would name its place in the
        batch)."""
        if not examples:
            raise ValueError("preprocess_batch needs at least one example, got an empty list")
        model_inputs = self.batch_text_inputs(examples, is_split_into_words)
        if model_inputs is not None:
            return model_inputs
        items = [self.preprocess(example, is_split_into_words, allow_private_urls) for example in examples]
        return self.collate(items)

    def batch_text_inputs(
        self, examples: list[dict[str, Any]], is_split_into_words: bool = False
    ) -> dict[str, Any] | None:
        """The batch's model inputs from one processor call, as `preprocess` per example and collation would give
        them (subword ids padded with the encoder's pad id, as training batches are, where collation pads with 0:
        the model masks those positions); None where an example has an image or the processor refuses an example.
        Tokenising tweet by tweet cost more than the int8 graph on short tweets (issue 38)."""
        if self.model.config.use_image and any(example["image"] is not None for example in examples):
            return None
        texts = [example["text"] for example in examples]
        # pre-split tweets must be lists of words: `preprocess` refuses a string, which the processor would read
        # (with the batch's other strings) as one tweet's words
        if is_split_into_words and not all(isinstance(text, (list, tuple)) for text in texts):
            return None
        try:
            encoding = self.processor(texts, is_split_into_words=is_split_into_words, return_offsets_mapping=True)
        except ValueError:
            return None
        if encoding["input_ids"].shape[0] != len(examples):  # the processor read the batch as other examples
            return None
        word_counts = encoding["attention_mask"].sum(-1).tolist()  # (batch,)
        spans = encoding.pop("offset_mapping").tolist()  # (batch, seq_len, 2)
        model_inputs = dict(encoding)
        model_inputs["char_ids"] = self._pad_char_axis(model_inputs["char_ids"])  # (batch, seq_len, char_width)
        if self.model.config.use_image:
            model_inputs.update(self._no_image_inputs(len(examples)))
        model_inputs["text"] = [" ".join(text) if is_split_into_words else text for text in texts]
        model_inputs["offsets"] = [
            [tuple(pair) for pair in row[:count]] for row, count in zip(spans, word_counts, strict=True)
        ]
        return model_inputs

    def _no_image_inputs(self, batch_size: int) -> dict[str, torch.Tensor]:
        """`_image_inputs` of `batch_size` tweets without an image, batched: what the image processor gives for
        `None` (zero pixels, `image_mask` False), made directly; the pixels are one zero expanded (never read: no
        tweet has an image), not 0.6 MB of zeros written per tweet."""
        config = self.model.config
        size = self.processor.image_processor.size
        inputs = {
            "pixel_values": torch.zeros(1, 1, 1, 1).expand(
                batch_size, 3, size["height"], size["width"]
            ),  # (batch, 3, height, width)
            "image_mask": torch.zeros(batch_size, dtype=torch.bool),  # (batch,)
        }
        inputs["image_features"] = torch.zeros(
            batch_size, config.num_image_regions, config.image_feature_dim
        )  # (batch, regions, 512)
        inputs["has_features"] = torch.zeros(batch_size, dtype=torch.bool)  # (batch,)
        return inputs

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """transformers' collation of per-example inputs (padding each tensor to the longest)."""
        feature_extractor = self.feature_extractor if self.feature_extractor is not None else self.image_processor
        return pad_collate_fn(self.tokenizer, feature_extractor)(items)

    def get_iterator(
        self,
        inputs: Any,
        num_workers: int,
        batch_size: int,
        preprocess_params: dict[str, Any],
        forward_params: dict[str, Any],
        postprocess_params: dict[str, Any],
    ) -> Iterator[Any]:
        """transformers' iterator over preprocess, forward and postprocess, with each batch preprocessed in one
        call (`preprocess_batch`) rather than example by example and then collated. Batch size 1: transformers'."""
        if batch_size <= 1:
            return super().get_iterator(
                inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
            )
        if "TOKENIZERS_PARALLELISM" not in os.environ:  # as transformers: the loader's workers run in parallel
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        dataset: torch.utils.data.Dataset
        if isinstance(inputs, Sequence):  # __call__ gives a list of examples, or a stream
            dataset = _PreprocessedBatches(inputs, batch_size, self.preprocess_batch, preprocess_params)
        else:
            num_workers = min(num_workers, 1)  # a stream read by several workers would repeat its items
            dataset = _PreprocessedStream(inputs, batch_size, self.preprocess_batch, preprocess_params)
        loader = torch.utils.data.DataLoader(dataset, num_workers=num_workers, batch_size=None, collate_fn=_as_is)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _pad_char_axis(self, char_ids: torch.Tensor) -> torch.Tensor:
        """Pad the character axis to the tokenizer's widest word, so that tweets batch together.

        The character CNN ignores padding characters, so the width does not change the model's output.
        """
        tokenizer = self.processor.tokenizer
        width = max(tokenizer.max_word_length, tokenizer.min_char_width)
        return torch.nn.functional.pad(char_ids, (0, width - char_ids.shape[-1]), value=self.model.config.char_pad_id)

    def _image_inputs(self, image: Any, allow_private_urls: bool = False) -> dict[str, torch.Tensor]:
        """Pixels and features for one image, both always present so that any mix of inputs batches together."""
        if image is None:
            return self._no_image_inputs(1)
        config = self.model.config
        features = torch.zeros(1, config.num_image_regions, config.image_feature_dim)  # (1, regions, 512)
        given_features = as_image_features(image, features.shape[1:])
        if given_features is None:
            inputs = dict(
                self.processor.image_processor([image], return_tensors="pt", allow_private_urls=allow_private_urls)
            )
        else:
            inputs = dict(self.processor.image_processor([None], return_tensors="pt"))
            features[0] = given_features
            inputs["image_mask"] = torch.ones(1, dtype=torch.bool)  # (1,)
        inputs["image_features"] = features
        inputs["has_features"] = torch.tensor([given_features is not None])  # (1,)
        return inputs

    def forward(self, model_inputs: dict[str, Any], **forward_params: Any) -> dict[str, Any]:
        """transformers' `Pipeline.forward`, less its walk moving every input and output to the device for a model
        that is not a torch module (`AcnOnnxModel`: the CPU only, where the processor's tensors already are). The walk
        visits each word's offsets, about 60 calls per tweet and direction: a tenth of a millisecond per one-tweet
        call (issue 38)."""
        if isinstance(self.model, torch.nn.Module):
            return super().forward(model_inputs, **forward_params)
        with self.get_inference_context()():
            return self._forward(model_inputs, **forward_params)

    def _forward(  # type: ignore[override]  # as _sanitize_parameters
        self, model_inputs: dict[str, Any], output_attentions: bool = False
    ) -> dict[str, Any]:
        text, offsets = model_inputs.pop("text"), model_inputs.pop("offsets")
        if self.model.config.use_image:
            model_inputs["image_features"] = self._image_features(
                model_inputs.pop("pixel_values"),
                model_inputs.pop("image_features"),
                model_inputs.pop("has_features"),
                model_inputs["image_mask"],
            )  # (batch, regions, 512)
        if output_attentions:
            outputs = self.model(**model_inputs, output_attentions=True)
        else:
            outputs = self._logits_by_length(model_inputs)
        word_mask = model_inputs["attention_mask"].bool()  # (batch, seq_len)
        logits = self._invisible_words_outside(outputs.logits, text, offsets)  # (batch, seq_len, num_labels)
        paths = self._tagger.decode(logits, word_mask, constrain_bio=True)
        tags = torch.zeros_like(model_inputs["input_ids"])  # (batch, seq_len), 0 at padding
        for row, path in enumerate(paths):
            tags[row, : len(path)] = torch.tensor(path)
        marginals = tag_marginals(self._tagger, logits, word_mask)  # (batch, seq_len, num_labels)
        result: dict[str, Any] = {
            "tags": tags,
            "scores": marginals.gather(-1, tags[..., None]).squeeze(-1),  # (batch, seq_len)
            "text": text,
            "offsets": offsets,
        }
        if output_attentions:
            result["visual_attentions"] = outputs.visual_attentions  # (batch, seq_len, regions)
            gates = outputs.fusion_gates
            result["fusion_gates"] = None if gates is None else gates.mean(-1)  # (batch, seq_len)
            result["filtration_gates"] = outputs.filtration_gates  # (batch, seq_len)
        return result

    def _invisible_words_outside(
        self,
        logits: torch.Tensor,
        text: str | list[str],
        offsets: list,  # of (start, end) pairs; for a batch, a list of those
    ) -> torch.Tensor:
        """`logits` `(batch, seq_len, num_labels)` with every entity tag forbidden at the words that render as nothing
        (`INVISIBLE_WORD`), so that decoding gives them a tag outside entities (the best path under that constraint)
        and their score is 1. `text` and `offsets` are a tweet's, or lists of them for a batch."""
        texts, word_offsets = ([text], [offsets]) if isinstance(text, str) else (text, offsets)
        rows = [
            [INVISIBLE_WORD.fullmatch(tweet[start:end]) is not None for start, end in spans]
            for tweet, spans in zip(texts, word_offsets, strict=True)
        ]
        if not any(map(any, rows)):
            return logits
        invisible = torch.zeros(logits.shape[:2], dtype=torch.bool)  # (batch, seq_len)
        for row, words in enumerate(rows):
            invisible[row, : len(words)] = torch.tensor(words)
        id2label = self._tagger.config.id2label
        entity_tags = torch.tensor(
            [bool(entity_spans([id2label[index]])) for index in range(len(id2label))]
        )  # (num_labels,)
        forbidden = invisible[..., None] & entity_tags  # (batch, seq_len, num_labels)
        return logits.masked_fill(forbidden.to(logits.device), INVISIBLE_ENTITY_SCORE)

    def _logits_by_length(self, model_inputs: dict[str, Any]) -> TokenClassifierOutput:
        """The batch's logits `(batch, seq_len, num_labels)`, computed group by group over tweets of similar lengths.

        A padded batch costs its longest tweet's length for every tweet; tweets of 20 and 70 subwords in one batch
        of 32 pay about 40% of the encoder's work for padding (Twitter-2015 test, MiniLM-L6). The tweets are sorted
        by length (subwords for a pretrained encoder, else words) and split where a separate call is cheaper than
        the padding it saves (`length_groups`); each group is trimmed to its own longest tweet (its last real
        position: a tweet longer than the encoder's window has padding between its pieces) and its longest word's
        characters (not below the tokenizer's `min_char_width`). Padding does not
        change a tweet's logits, so the result is the whole batch's, up to float rounding.
        """
        word_mask = model_inputs["attention_mask"].bool()  # (batch, seq_len)
        if word_mask.shape[0] == 1:  # one tweet: one group, as length_groups would make
            return TokenClassifierOutput(logits=self.model(**model_inputs).logits)
        subword_mask = model_inputs.get("subword_attention_mask")  # (batch, subwords) or None
        char_ids = model_inputs["char_ids"]  # (batch, seq_len, char_width)
        char_extents = _extents(
            (char_ids != self.model.config.char_pad_id).any(1)
        )  # (batch,): longest word's characters
        word_extents = _extents(word_mask)  # (batch,)
        subword_extents = None if subword_mask is None else _extents(subword_mask)  # (batch,)
        groups = length_groups((word_extents if subword_extents is None else subword_extents).tolist(), GROUP_COST)
        if len(groups) == 1:
            return TokenClassifierOutput(logits=self.model(**model_inputs).logits)
        logits: torch.Tensor | None = None
        for group in groups:
            rows = torch.tensor(group)  # (group,)
            words = int(word_extents[rows].max())
            subwords = None if subword_extents is None else int(subword_extents[rows].max())
            chars = max(int(char_extents[rows].max()), self.processor.tokenizer.min_char_width)
            group_inputs = {
                name: _group_rows(name, value, rows, words, subwords) for name, value in model_inputs.items()
            }
            group_inputs["char_ids"] = group_inputs["char_ids"][..., :chars]  # (group, words, chars)
            group_logits = self.model(**group_inputs).logits  # (group, words, num_labels)
            if logits is None:
                logits = group_logits.new_zeros(
                    *word_mask.shape, group_logits.shape[-1]
                )  # (batch, seq_len, num_labels)
            logits[rows, :words] = group_logits
        return TokenClassifierOutput(logits=logits)

    def _image_features(
        self,
        pixel_values: torch.Tensor,
        image_features: torch.Tensor,
        has_features: torch.Tensor,
        image_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Given features where the input had them, VGG-16 pool5 of the pixels for the other images."""
        features = image_features.to(self.model.dtype)  # (batch, regions, 512)
        needs_vision = image_mask.bool() & ~has_features  # (batch,)
        if needs_vision.any():
            pixels = pixel_values[needs_vision].to(self.model.dtype)  # (images, 3, 224, 224)
            regions = self._tagger.get_image_features(pixels)  # (images, regions, 512)
            features[needs_vision] = regions.to(features.dtype)
        return features

    def postprocess(  # type: ignore[override]  # as _sanitize_parameters
        self,
        model_outputs: dict[str, Any],
        aggregation_strategy: str | None = None,
        ignore_labels: Iterable[str] | None = None,
        return_tags: bool = False,
    ) -> list[dict[str, Any]] | dict[str, Any]:
        if aggregation_strategy is None:
            aggregation_strategy = "none" if self.task in (STANDARD_TASK, STANDARD_TASK_ALIAS) else "simple"
        text, offsets = model_outputs["text"], model_outputs["offsets"]
        num_words = len(offsets)
        id2label = self._tagger.config.id2label
        tags = [id2label[index] for index in model_outputs["tags"][0, :num_words].tolist()]
        scores = model_outputs["scores"][0, :num_words].tolist()
        words = [text[start:end] for start, end in offsets]
        ignore = {"O"} if ignore_labels is None else set(ignore_labels)
        if aggregation_strategy == "none":
            entities = word_entities(words, tags, scores, offsets, ignore)
        else:
            entities = grouped_entities(text, tags, scores, offsets, ignore)
        if not return_tags and "visual_attentions" not in model_outputs:
            return entities
        result: dict[str, Any] = {
            "entities": entities,
            "words": words,
            "tags": tags,
            "scores": scores,
            "offsets": offsets,
        }
        if "visual_attentions" in model_outputs:
            result.update(self._explanations(model_outputs, num_words))
        return result

    def _explanations(self, model_outputs: dict[str, Any], num_words: int) -> dict[str, np.ndarray | None]:
        side = math.isqrt(self.model.config.num_image_regions)  # regions are a row-major side x side grid
        attentions = model_outputs["visual_attentions"][0, :num_words].float()  # (words, regions)
        fusion = model_outputs["fusion_gates"]
        return {
            "visual_attentions": attentions.reshape(num_words, side, side).numpy(),  # (words, side, side)
            "fusion_gates": None if fusion is None else fusion[0, :num_words].float().numpy(),  # (words,)
            "filtration_gates": model_outputs["filtration_gates"][0, :num_words].float().numpy(),  # (words,)
        }


# A separate model call costs about as much as this many padded positions (subwords, or words without a pretrained
# encoder) in a batch: MiniLM-L6's ACN, ONNX Runtime int8 and eager torch, batch 32 (benchmarks/serve.py).
GROUP_COST = 32
WORD_AXIS_INPUTS = ("input_ids", "attention_mask", "char_ids")  # (batch, seq_len, ...)
SUBWORD_AXIS_INPUTS = ("subword_ids", "subword_attention_mask", "subword_to_word")  # (batch, subwords)


def length_groups(lengths: list[int], group_cost: float) -> list[list[int]]:
    """Rows of a padded batch in groups of similar lengths: the split of the rows sorted by length that minimises
    `sum(group size * longest length in the group) + group_cost * number of groups` (dynamic programming over the
    split points, `O(batch^2)`). Each group lists its rows by increasing length."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best, split = [0.0] + [math.inf] * len(order), [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = lengths[order[end - 1]]  # the group order[start:end] pads to its last (longest) row
        for start in range(end):
            cost = best[start] + (end - start) * longest + group_cost
            if cost < best[end]:
                best[end], split[end] = cost, start
    groups, end = [], len(order)
    while end > 0:
        groups.append(order[split[end] : end])
        end = split[end]
    return groups[::-1]


def _extents(mask: torch.Tensor) -> torch.Tensor:
    """Per row, one past the last real position, `(batch,)`: a tweet longer than the encoder's window has padding
    between its window pieces, so the count of real positions can fall short of the last one."""
    positions = torch.arange(1, mask.shape[-1] + 1, device=mask.device)  # (length,)
    return (mask.bool() * positions).amax(-1)  # (batch,)


def _group_rows(name: str, value: Any, rows: torch.Tensor, words: int, subwords: int | None) -> Any:
    """One model input for a group of rows, its word or subword axis trimmed to the group's longest tweet."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value
    value = value[rows]
    if name in WORD_AXIS_INPUTS:
        return value[:, :words]
    if name in SUBWORD_AXIS_INPUTS:
        return value[:, :subwords]
    return value


def tag_marginals(model: _Tagger, logits: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
    """Per-word tag probabilities `p(y_t = k | x)`, shape `(batch, seq_len, num_labels)`; 0 at padding.

    For a CRF these are the forward-backward marginals, obtained as the gradient of the log-partition with
    respect to the emissions: d log Z / d e_{t,k} is the total probability of the paths through tag k at t.
    """
    if model.crf is None:
        return logits.float().softmax(-1) * word_mask[..., None]
    if not isinstance(model.crf, torch.nn.Module):  # AcnOnnxModel's numpy CRF: forward-backward itself
        return torch.from_numpy(model.crf.marginals(logits.float().cpu().numpy(), word_mask.cpu().numpy()))
    crf = cast(_TorchCrf, model.crf)  # an AcnCrf, whose methods nn.Module's attribute types would hide
    with torch.enable_grad():
        emissions = logits.detach().float().requires_grad_()  # (batch, seq_len, num_labels)
        log_partition = crf.log_partition(emissions, word_mask).sum()
        (marginals,) = torch.autograd.grad(log_partition, emissions)
    return marginals  # (batch, seq_len, num_labels)


def word_entities(
    words: list[str],
    tags: list[str],
    scores: list[float],
    offsets: list[tuple[int, int]],
    ignore_labels: Collection[str],
) -> list[dict[str, Any]]:
    """One entry per word whose tag is not ignored (aggregation "none")."""
    return [
        {"entity": tag, "score": score, "index": index, "word": word, "start": start, "end": end}
        for index, (word, tag, score, (start, end)) in enumerate(zip(words, tags, scores, offsets, strict=True))
        if tag not in ignore_labels
    ]


def grouped_entities(
    text: str, tags: list[str], scores: list[float], offsets: list[tuple[int, int]], ignore_labels: Collection[str]
) -> list[dict[str, Any]]:
    """One entry per entity span (aggregation "simple"); `word` is the original text of the span."""
    entities = []
    for entity_type, first, last in entity_spans(tags):
        if entity_type in ignore_labels:
            continue
        start, end = offsets[first][0], offsets[last][1]
        score = sum(scores[first : last + 1]) / (last + 1 - first)
        entities.append(
            {"entity_group": entity_type, "score": score, "word": text[start:end], "start": start, "end": end}
        )
    return entities


def entity_spans(tags: Iterable[str]) -> list[tuple[str, int, int]]:
    """`(type, first_word, last_word)` of each BIO entity; an `I-X` not continuing an `X` entity starts one."""
    spans: list[tuple[str, int, int]] = []
    for index, tag in enumerate(tags):
        prefix, _, entity_type = tag.partition("-")
        if prefix not in ("B", "I") or not entity_type:
            continue
        continues = prefix == "I" and spans and spans[-1][0] == entity_type and spans[-1][2] == index - 1
        if continues:
            spans[-1] = (entity_type, spans[-1][1], index)
        else:
            spans.append((entity_type, index, index))
    return spans


def _check_aggregation_strategy(strategy: object) -> str:
    value = getattr(strategy, "value", strategy)  # transformers' AggregationStrategy enum or its string
    if value not in AGGREGATION_STRATEGIES:
        raise ValueError(
            "aggregation_strategy must be 'none' or 'simple' (ACN tags whole words, so 'first', 'average' and "
            f"'max' have no subwords to merge), got {strategy!r}"
        )
    return value


class _PreprocessedBatches(torch.utils.data.Dataset):
    """A sized input's examples, `batch_size` at a time, each batch preprocessed in one call."""

    def __init__(
        self, inputs: Sequence[Any], batch_size: int, preprocess: Callable[..., dict[str, Any]], params: dict[str, Any]
    ) -> None:
        self.inputs, self.batch_size, self.preprocess, self.params = inputs, batch_size, preprocess, params

    def __len__(self) -> int:
        return math.ceil(len(self.inputs) / self.batch_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start = index * self.batch_size
        examples = [self.inputs[position] for position in range(start, min(start + self.batch_size, len(self.inputs)))]
        return self.preprocess(examples, **self.params)


class _PreprocessedStream(torch.utils.data.IterableDataset):
    """A stream's examples (a generator, an iterable dataset), `batch_size` at a time, each batch preprocessed in
    one call."""

    def __init__(
        self, inputs: Iterable[Any], batch_size: int, preprocess: Callable[..., dict[str, Any]], params: dict[str, Any]
    ) -> None:
        self.inputs, self.batch_size, self.preprocess, self.params = inputs, batch_size, preprocess, params

    def __iter__(self) -> Iterator[dict[str, Any]]:
        examples = iter(self.inputs)
        while batch := list(itertools.islice(examples, self.batch_size)):
            yield self.preprocess(batch, **self.params)


def _as_is(batch: Any) -> Any:
    """The loader's collation: none (each item is a batch already)."""
    return batch


def _is_single_input(inputs: object, is_split_into_words: bool) -> bool:
    if isinstance(inputs, (str, dict, tuple)):
        return True
    return is_split_into_words and isinstance(inputs, list) and bool(inputs) and all(isinstance(w, str) for w in inputs)


def _is_many_inputs(inputs: object) -> bool:
    """Several inputs: an iterable (list, generator, torch `Dataset`, ...) that is not itself one input."""
    if isinstance(inputs, (str, bytes, dict, tuple)):
        return False
    return isinstance(inputs, (Iterable, torch.utils.data.Dataset))


def _iterate(inputs: Any) -> Iterator[Any]:
    """Items of an iterable, or of a map-style torch `Dataset` (which may define only `__getitem__` and `__len__`)."""
    if isinstance(inputs, Iterable):
        return iter(inputs)
    return (inputs[index] for index in range(len(inputs)))


def _as_example(item: object, image: object = None) -> dict[str, Any]:
    """`{"text", "image"}` from a tweet, a list of words, a `(text, image)` pair or a dict."""
    if isinstance(item, (str, list)):
        return {"text": item, "image": image}
    if image is not None and isinstance(item, (tuple, dict)):
        raise ValueError("give the image either inside the pair or dict or as image=, not both")
    if isinstance(item, tuple) and len(item) == 2:
        return {"text": item[0], "image": item[1]}
    if isinstance(item, dict) and "text" in item:
        return {"text": item["text"], "image": item.get("image")}
    raise ValueError(f"expected a tweet, a (text, image) pair or a dict with 'text', got {item!r}")


def as_image_features(image: object, shape: Sequence[int] | None = None) -> torch.Tensor | None:
    """The image as a float tensor when it is precomputed pool5 features (of `shape`, when given), else None.

    Raises `ValueError` for features of the wrong shape or dtype, and for NaN or infinite values, which would
    otherwise tag every word `O` with NaN scores.
    """
    if isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        return None
    if not image.is_floating_point() or (shape is not None and tuple(image.shape) != tuple(shape)):
        expected = "" if shape is None else f" of shape {tuple(shape)}"
        raise ValueError(f"image features must be a float tensor{expected}, got {image.dtype} {tuple(image.shape)}")
    if not torch.isfinite(image).all():
        raise ValueError(f"image features hold {int((~torch.isfinite(image)).sum())} NaN or infinite values")
    return image.float()


def load_model_and_processor(
    name: str | os.PathLike, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The model and processor of a folder or Hub id: by the installed classes, so that nothing of the folder runs;
    with `trust_remote_code`, by the classes the folder's own code defines (its `auto_map`), which then runs.
    Loading is strict (see `AcnPreTrainedModel.from_pretrained`)."""
    if not trust_remote_code:
        _check_installed_classes(name)
        model = AutoModelForTokenClassification.from_pretrained(name, trust_remote_code=False)
        return model, AutoProcessor.from_pretrained(name, trust_remote_code=False)
    model_class = _folder_class(name, "AutoModelForTokenClassification", "config.json")
    return model_class.from_pretrained(name), load_processor(name, trust_remote_code)


def load_processor(name: str | os.PathLike, trust_remote_code: bool = False) -> ProcessorMixin:
    """The processor of a folder or Hub id, by the installed class or (`trust_remote_code`) the folder's own."""
    if not trust_remote_code:
        _check_installed_classes(name)
        return AutoProcessor.from_pretrained(name, trust_remote_code=False)
    return _folder_class(name, "AutoProcessor", "processor_config.json").from_pretrained(name, trust_remote_code=True)


def _check_installed_classes(name: str | os.PathLike) -> None:
    """Refuse, in one line, a folder or Hub id whose model or processor is not ACN's: the installed classes cannot
    load it, and its own classes (its `auto_map`) would be its code running. `trust_remote_code=False` goes to every
    Auto class as well, so that transformers never asks on stdin whether to run a folder's code."""
    model_type = _folder_json(name, "config.json").get("model_type")
    if model_type != AcnConfig.model_type:
        raise ValueError(
            f"{name} is not an ACN model (model_type {model_type!r}); a folder's own code runs only with "
            "trust_remote_code=True"
        )
    processor_file = cached_file(name, "processor_config.json", _raise_exceptions_for_missing_entries=False)
    processor_class = (
        None
        if processor_file is None
        else json.loads(Path(processor_file).read_text(encoding="utf-8")).get("processor_class")
    )
    if processor_class not in (None, AcnProcessor.__name__):
        raise ValueError(
            f"{name}/processor_config.json names processor_class {processor_class!r}, not {AcnProcessor.__name__}; "
            "a folder's own code runs only with trust_remote_code=True"
        )


def _folder_class(name: str | os.PathLike, auto_class: str, config_file: str) -> type[Any]:
    """The class a folder's code registers for `auto_class`, imported from that code (which runs)."""
    auto_map = _folder_json(name, config_file).get("auto_map", {})
    if auto_class not in auto_map:
        raise ValueError(f"trust_remote_code: {name}/{config_file} names no code for {auto_class}")
    return get_class_from_dynamic_module(auto_map[auto_class], name)


def _folder_json(name: str | os.PathLike, file: str) -> dict[str, Any]:
    path = cached_file(name, file)
    assert path is not None  # cached_file raises for a missing file unless told not to
    return json.loads(Path(path).read_text(encoding="utf-8"))


def custom_pipelines_entry() -> dict[str, dict[str, Any]]:
    """`config.custom_pipelines`: this pipeline for "multimodal-ner", "token-classification" and its alias "ner".

    With `trust_remote_code=True`, `transformers.pipeline(task, model=folder)` builds the class the folder's config
    names for that task, from the folder's copy of this file. Several tasks mean that the factory needs one named.
    """
    entry = {
        "impl": f"{__name__.split('.')[-1]}.{AcnPipeline.__name__}",  # "pipeline_acn.AcnPipeline", the folder's copy
        "pt": (AutoModelForTokenClassification.__name__,),
        "type": "multimodal",
    }
    return {TASK: entry, STANDARD_TASK: dict(entry), STANDARD_TASK_ALIAS: dict(entry)}


def save_pipeline_code(save_directory: str | os.PathLike) -> None:
    """Copy this file into a model folder, where `custom_pipelines_entry` points the pipeline factory."""
    custom_object_save(AcnPipeline, save_directory)


# Registered once per process: the folder's copy of this file, loaded as remote code, would register again, and
# transformers warns on every re-registration. Never for "token-classification": that task belongs to every NER model.
if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=AcnPipeline, pt_model=AutoModelForTokenClassification, type="multimodal"
    )

__all__ = [
    "AcnPipeline",
    "as_image_features",
    "custom_pipelines_entry",
    "entity_spans",
    "load_model_and_processor",
    "load_processor",
    "save_pipeline_code",
    "tag_marginals",
]

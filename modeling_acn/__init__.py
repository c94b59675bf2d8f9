"""ACN (Adaptive Co-attention Network) for multimodal named-entity recognition in tweets."""

__version__ = "0.2.0"

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForTokenClassification,
    AutoProcessor,
    AutoTokenizer,
)

from .configuration_acn import (
    IGNORE_INDEX,
    PAPER_TEXT_ENCODER,
    PAPER_VARIANTS,
    VISION_BACKBONES,
    VISION_PRECISIONS,
    AcnConfig,
)
from .image_processing_acn import AcnImageProcessor
from .modeling_acn import AcnCrf, AcnForTokenClassification, AcnModel, AcnPreTrainedModel
from .pipeline_acn import AcnPipeline
from .processing_acn import AcnProcessor
from .tokenization_acn import AcnEmbeddingCoverage, AcnTokenizer
from .training_acn import AcnDataCollator, AcnEntityMetrics, AcnMentionReplacement, AcnViterbiTags

# Installed locally, the Auto classes know ACN without trust_remote_code; saved folders also carry the code.
AutoConfig.register(AcnConfig.model_type, AcnConfig, exist_ok=True)
AutoModel.register(AcnConfig, AcnModel, exist_ok=True)
AutoModelForTokenClassification.register(AcnConfig, AcnForTokenClassification, exist_ok=True)
AutoTokenizer.register(AcnConfig, slow_tokenizer_class=AcnTokenizer, exist_ok=True)
AutoImageProcessor.register(
    AcnConfig, image_processor_classes={"pil": AcnImageProcessor, "torchvision": AcnImageProcessor}, exist_ok=True
)
AutoProcessor.register(AcnConfig, AcnProcessor, exist_ok=True)

__all__ = [
    "IGNORE_INDEX",
    "PAPER_TEXT_ENCODER",
    "PAPER_VARIANTS",
    "VISION_BACKBONES",
    "VISION_PRECISIONS",
    "AcnConfig",
    "AcnCrf",
    "AcnDataCollator",
    "AcnEmbeddingCoverage",
    "AcnEntityMetrics",
    "AcnForTokenClassification",
    "AcnImageProcessor",
    "AcnMentionReplacement",
    "AcnModel",
    "AcnPipeline",
    "AcnPreTrainedModel",
    "AcnProcessor",
    "AcnTokenizer",
    "AcnViterbiTags",
]

"""ACN (Adaptive Co-attention Network) for multimodal named-entity recognition in tweets."""

from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification

from .configuration_acn import AcnConfig
from .modeling_acn import AcnCrf, AcnForTokenClassification, AcnModel, AcnPreTrainedModel

# Installed locally, the Auto classes know ACN without trust_remote_code; saved folders also carry the code.
AutoConfig.register(AcnConfig.model_type, AcnConfig, exist_ok=True)
AutoModel.register(AcnConfig, AcnModel, exist_ok=True)
AutoModelForTokenClassification.register(AcnConfig, AcnForTokenClassification, exist_ok=True)

__all__ = ["AcnConfig", "AcnCrf", "AcnForTokenClassification", "AcnModel", "AcnPreTrainedModel"]

"""Model registry and codec models."""
from .codec import MSE_SCALE, SarCodec, bits_from_likelihoods
from .registry import create_model, list_models, model_defaults

__all__ = ["MSE_SCALE", "SarCodec", "bits_from_likelihoods", "create_model", "list_models", "model_defaults"]

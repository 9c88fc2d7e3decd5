"""Plain-PyTorch transfer-learning engine: no Django here, usable from the CLI and from the worker."""
from .config import TrainConfig
from .data import Sample, folder_samples, stratified_split
from .features import TrainingCancelled, embed, precompute
from .fitting import fit
from .predict import Predictor, load_predictor
from .zoo import WeightsUnavailable, create_backbone, fetch_weights, get_base, list_bases

__all__ = ["TrainConfig", "Sample", "folder_samples", "stratified_split", "TrainingCancelled", "embed",
           "precompute", "Predictor", "load_predictor", "fit", "WeightsUnavailable", "create_backbone",
           "fetch_weights", "get_base", "list_bases"]

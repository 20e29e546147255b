"""torch.nn-compatible layers whose forward runs on the tier each call resolves to."""
from .activations import ReLU, Sigmoid, Tanh
from .linear import Linear

__all__ = ["Linear", "ReLU", "Sigmoid", "Tanh"]

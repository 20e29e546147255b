"""torch.nn-compatible layers whose forward runs on the tier each call resolves to."""
from .activations import ReLU, Sigmoid, Tanh
from .conv import Conv2d
from .linear import Linear

__all__ = ["Conv2d", "Linear", "ReLU", "Sigmoid", "Tanh"]

"""torch.nn-compatible layers whose forward runs on the tier each call resolves to."""
from .activations import ReLU, Sigmoid, Tanh
from .conv import Conv2d
from .linear import Linear
from .rnn import GRU, LSTM

__all__ = ["Conv2d", "GRU", "LSTM", "Linear", "ReLU", "Sigmoid", "Tanh"]

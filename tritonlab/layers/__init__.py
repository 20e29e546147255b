"""torch.nn-compatible layers whose forward runs on the tier each call resolves to."""
from .activations import ReLU, Sigmoid, Tanh
from .attention import MultiheadAttention, scaled_dot_product_attention
from .conv import Conv2d
from .flatten import Flatten
from .linear import Linear, LinearActivation
from .rnn import GRU, LSTM
from .softmax import Dropout, Softmax, SoftmaxDropout

__all__ = ["Conv2d", "Dropout", "Flatten", "GRU", "LSTM", "Linear", "LinearActivation", "MultiheadAttention", "ReLU", "Sigmoid", "Softmax", "SoftmaxDropout", "Tanh", "scaled_dot_product_attention"]

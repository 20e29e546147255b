"""What every tritonlab layer adds to its torch.nn class: a `backend=` argument."""
from __future__ import annotations

from ..backend import check_backend


class LabLayer:
    """Mixin placed before the torch.nn class: `class ReLU(LabLayer, nn.ReLU)`.

    `backend=None` follows the global `tritonlab.use_backend` choice; a name pins the
    layer to that tier. The attribute is plain Python state, so `state_dict` keys stay
    exactly torch.nn's.
    """

    backend: str | None

    def _set_backend(self, backend: str | None) -> None:
        self.backend = None if backend is None else check_backend(backend)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        if self.backend is None:
            return base
        return f"{base}, backend={self.backend!r}" if base else f"backend={self.backend!r}"

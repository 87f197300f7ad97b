"""``cnnir.utils``: the torch.utils mirror (``cnnir.utils.checkpoint``)."""

from cnnir.utils import checkpoint  # noqa: F401

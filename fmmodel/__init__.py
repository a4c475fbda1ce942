"""fmmodel: the FmFormer model family, a lazy torch dataset over FMF stores, training and evaluation."""
from fmmodel.errors import FmModelError

__version__ = "0.1.0"

__all__ = ["FmModelError", "__version__"]

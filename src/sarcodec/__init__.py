"""sarcodec: learned compression for Sentinel-1 SAR imagery.

>>> import sarcodec
>>> model = sarcodec.load_model("default")                  # bundled, trained
>>> data = sarcodec.encode(intensity, model)                 # bytes of a .sarc container
>>> restored = sarcodec.decode(data)                         # model found from the header
"""
from . import _reproducible  # noqa: F401,E402  first: MKL reads its mode at its first call
from .api import decode, encode
from .checkpoint import list_pretrained, load_checkpoint, load_model, save_checkpoint
from .errors import (
    FormatError,
    InputError,
    ModelError,
    OutputError,
    ResourceError,
    SarcodecError,
)
from .models import create_model, list_models
from .radiometry import Radiometry

__version__ = "1.0.0"

__all__ = [
    "Radiometry", "create_model", "decode", "encode", "list_models", "list_pretrained", "load_checkpoint",
    "load_model", "save_checkpoint", "SarcodecError", "InputError", "ModelError", "FormatError",
    "ResourceError", "OutputError", "__version__",
]

from .files import compress_file, decompress_file, read_window  # noqa: E402

__all__ += ["compress_file", "decompress_file", "read_window"]

from .batch import compress_files, decompress_files  # noqa: E402

__all__ += ["compress_files", "decompress_files"]

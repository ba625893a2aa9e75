"""``python -m sarcodec`` (and ``torchrun -m sarcodec train ...``) runs the command line."""
from .cli import main

main()

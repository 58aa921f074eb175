"""python -m engine.data.hep: the same as `crema data hep`."""
import sys

from .cli import main

sys.exit(main(prog="python -m engine.data.hep"))

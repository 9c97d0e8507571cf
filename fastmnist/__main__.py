"""``python -m fastmnist``: the same command line as the ``fastmnist`` script."""
import sys

from .cli import main

sys.exit(main())

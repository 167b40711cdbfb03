"""`python -m kdsam ...`, the form torchrun launches: `torchrun --nproc_per_node N -m kdsam distill ...`."""

import sys

from kdsam.cli import main

sys.exit(main())

"""`python -m electra` (what `torchrun -m electra` runs)."""

import sys

from electra.cli import main

sys.exit(main())

"""`python -m convnet` is the `convnet` command."""

import sys

from convnet.cli import main

sys.exit(main())

"""`python -m vggt_blender ...`: see vggt_blender/cli.py."""

import sys

from .cli import main

sys.exit(main())

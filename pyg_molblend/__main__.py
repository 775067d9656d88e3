import sys

from pyg_molblend.cli import main

sys.exit(main())

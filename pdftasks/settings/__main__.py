"""``python -m pdftasks.settings --markdown | --write FILE | --check FILE``."""

import sys

from pdftasks.settings.table import main

sys.exit(main())

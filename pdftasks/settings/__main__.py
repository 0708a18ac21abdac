"""``python -m pdftasks.settings --markdown | --write README | --check README``."""

import sys

from pdftasks.settings.table import main

sys.exit(main())

"""``python -m performance_engine.schemas DIR``: write the schema files."""

import sys

from performance_engine.schemas import main

sys.exit(main(sys.argv[1:]))

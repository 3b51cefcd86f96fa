"""``python -m sparkml_scale``: the job CLI (see :mod:`sparkml_scale.cli`)."""
import sys

from sparkml_scale.cli import main

if __name__ == "__main__":
    sys.exit(main())

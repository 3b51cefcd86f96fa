"""``python -m benchmarks``: every benchmark at one size, one report (see :mod:`benchmarks.report`)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.report import main  # noqa: E402

sys.exit(main())

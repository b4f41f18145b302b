"""Makes ``batchutil`` (helpers shared by the batch-runner tests) importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

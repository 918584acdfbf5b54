"""Import the kserve SDK without letting it read our command line.

``kserve.model_server`` parses ``sys.argv`` when it is imported (with argparse's
prefix matching, so ``--model`` would be taken for ``--model_name``). The runtime
passes every setting explicitly, so kserve is imported with an empty argv.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any


def import_kserve() -> ModuleType:
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        import kserve.model_server

        import kserve
    finally:
        sys.argv = saved
    return kserve


def kserve_model_base() -> Any:
    """``kserve.Model``, imported safely (the base class of our model)."""
    return import_kserve().Model

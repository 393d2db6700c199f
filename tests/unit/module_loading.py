"""Loading a module from its file, under the name it has where it runs.

The host tools import their shared library as the top-level ``choiros_host`` (they sit beside
it in /usr/local/lib/choiros on the host), so tests load them the same way, once per session.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_module(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

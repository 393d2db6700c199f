"""Loading a module from its file, under the name it has where it runs.

The host tools' libraries import each other as top-level siblings (``from choiros_tool import
...``; on the host they sit side by side in /usr/local/lib/choiros), so ``host_tool`` imports
them the same way, from provisioning/host_tools on ``sys.path``, once per session.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HOST_TOOLS = Path(__file__).resolve().parents[2] / "provisioning" / "host_tools"


def load_module(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def host_tool(name: str) -> ModuleType:
    """A host tool's library (``choiros_tool``, ``choiros_deploy``, ...) as the host imports it."""
    if str(HOST_TOOLS) not in sys.path:
        sys.path.append(str(HOST_TOOLS))
    return importlib.import_module(name)

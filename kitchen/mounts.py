"""Find and remove mounts below a directory before deleting it.

mmdebstrap mounts /proc, /sys and /dev into the image it builds; an interrupted build can
leave them. Deleting a tree with live mounts in it would delete through them (``/dev``!), so
every removal of a rootfs goes through :func:`remove_tree`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kitchen.errors import KitchenError
from kitchen.processes import run


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts_below(path: Path) -> list[Path]:
    """Mount points at or below ``path`` in our mount namespace, deepest first."""
    base = path.resolve() if path.exists() else path
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(_unescape(line.split()[4]))
        if point == base or base in point.parents:
            found.append(point)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_below(path: Path) -> None:
    for point in mounts_below(path):
        # Lazy: a mount that is busy (a stray process) is detached now and freed when idle.
        run(["umount", "--lazy", str(point)], check=False, timeout=30)
    left = mounts_below(path)
    if left:
        raise KitchenError(
            f"could not unmount {', '.join(map(str, left))}",
            f"umount -l {left[0]} by hand, then retry",
        )


def remove_tree(path: Path) -> None:
    """Unmount everything below ``path``, then delete it; missing is fine."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_below(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()

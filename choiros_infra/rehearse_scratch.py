"""The second kitchen host a rehearsal may use, for the procedures that boot a host of their
own or need two: ``<scratch>`` (local development boots it, "already exists" destroys and
boots it again) and ``<production>`` (the same host, playing production in a promote between
two kitchen hosts).

Its stack is a throwaway copy of the example (``<scratch_stack_file>``), so it never shares a
backup prefix with the rehearsed host or with an operator's own ``default`` host (``kitchen
up`` refuses a second live host replicating into one prefix). A step naming ``<production>``
needs the host running: the rehearsal boots it first when no earlier step did (a runbook
rehearsed alone). When the rehearsal ends, passed or not, the host and its stack's cloud
objects are removed, if any step named it; a rehearsal whose steps never name it boots and
removes nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from choiros_infra.kitchen_stack import remove_stack_objects, throwaway_stack
from choiros_infra.rehearse import Step
from choiros_infra.verify import PROJECT_ROOT
from infra.config import load_stack_file
from kitchen import lifecycle
from kitchen.errors import KitchenError

# The placeholders naming the scratch host or its stack file.
NAMES = ("scratch", "production", "scratch_stack_file")
# A step naming one of these needs the host running before it starts.
RUNNING = frozenset({"production"})
SUFFIX = "-own"
BOOT_TIMEOUT = 600.0


def scratch_name(host: str) -> str:
    """The scratch host's name for a rehearsal on ``host``: a kitchen name (at most 32
    characters), one per rehearsed host, so two rehearsals on two hosts never share it."""
    return host[:32 - len(SUFFIX)] + SUFFIX


@dataclass
class ScratchHost:
    """One rehearsal's scratch host: its name and stack file, and whether a step named it."""

    name: str
    stack_file: Path
    running: Callable[[str], bool]
    boot: Callable[[str, Path], None]
    say: Callable[[str], None]
    used: bool = False

    @property
    def values(self) -> Mapping[str, str]:
        return {"scratch": self.name, "production": self.name,
                "scratch_stack_file": str(self.stack_file)}

    def before(self, step: Step) -> None:
        """Called before each step: note a step naming the host, and boot it for a step that
        needs it running."""
        named = step.names() & set(NAMES)
        if not named:
            return
        self.used = True
        if named & RUNNING and not self.running(self.name):
            self.say(f"rehearse: booting kitchen host {self.name} (<production>) for "
                     f"{step.file}:{step.line}")
            # A boot that fails shows in the step, which then names a host that is not up.
            self.boot(self.name, self.stack_file)


def _running(name: str) -> bool:
    try:
        lifecycle.running_guest(name)
    except KitchenError:
        return False
    return True


def _boot(name: str, stack_file: Path) -> None:
    """``kitchen up`` as an operator types it, with this environment's ``choiros-infra``; its
    progress goes to standard error, with the rehearsal's own."""
    cli = str(Path(sys.executable).parent / "choiros-infra")
    subprocess.run([cli, "kitchen", "up", "--name", name, "--stack-file", str(stack_file)],
                   stdout=sys.stderr, stderr=sys.stderr, check=False, timeout=BOOT_TIMEOUT)


@contextmanager
def scratch_host(host: str, say: Callable[[str], None]) -> Iterator[ScratchHost]:
    """The scratch host for a rehearsal on kitchen host ``host``; removed at the end if used."""
    workdir = Path(tempfile.mkdtemp(prefix="choiros-rehearse-scratch-"))
    scratch: ScratchHost | None = None
    try:
        scratch = ScratchHost(scratch_name(host),
                              throwaway_stack(PROJECT_ROOT / "Pulumi.example.yaml", workdir,
                                              prefix="own"), _running, _boot, say)
        yield scratch
    finally:
        if scratch is not None and scratch.used:
            say(f"rehearse: removing kitchen host {scratch.name} and its stack's cloud objects")
            try:
                lifecycle.destroy(scratch.name)
                remove_stack_objects(load_stack_file(scratch.stack_file))
            except KitchenError as exc:
                say(f"rehearse: could not remove {scratch.name}: {exc.message}; "
                    f"try: {lifecycle.CLI} destroy --name {scratch.name}")
        shutil.rmtree(workdir, ignore_errors=True)

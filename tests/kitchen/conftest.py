"""Fixtures for the kitchen tests: real hosts, no mocks.

The session fixture starts the kitchen cloud and builds (or reuses) the base image once, so
each test only pays for copying, booting and converging. Hosts made here are named
``kt-<what>-<random>`` so they never collide with a developer's own kitchens, and are
destroyed at teardown whatever happened.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from guest_kit import MakeHost, host_name, user_data

from choiros_infra.kitchen_stack import remove_stack_objects, throwaway_stack
from choiros_infra.verify import PROJECT_ROOT
from infra.config import load_stack_file
from kitchen import cloud, lifecycle, preflight
from kitchen.errors import PrerequisiteError
from kitchen.image import ensure_image
from kitchen.state import HostState


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``last`` run after every other test of the session, in their own order
    (``destroy --all`` stops the kitchen cloud the others need); the rest keep theirs."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


@pytest.fixture(scope="session")
def kitchen_cloud() -> cloud.CloudInfo:
    try:
        preflight.check()
    except PrerequisiteError as exc:
        pytest.fail(f"kitchen tests need their prerequisites: {exc}", pytrace=False)
    info = cloud.ensure_cloud()
    ensure_image(info.apt_proxy_url)  # cached under /var/lib/choiros-kitchen/images
    return info




@pytest.fixture
def make_host(kitchen_cloud: cloud.CloudInfo) -> Iterator[MakeHost]:
    """Factory: ``make_host("what", user_data_bytes, **up_kwargs)``; destroys at teardown."""
    made: list[str] = []

    def make(what: str, data: bytes, **kwargs: object) -> HostState:
        name = host_name(what)
        made.append(name)
        return lifecycle.up(name, data, **kwargs)  # type: ignore[arg-type]

    yield make
    for name in made:
        lifecycle.destroy(name)


@pytest.fixture(scope="module")
def main_host(kitchen_cloud: cloud.CloudInfo) -> Iterator[HostState]:
    """One converged host for the module, booted from gzip-compressed user-data as EC2
    would receive it."""
    name = host_name("main")
    try:
        yield lifecycle.up(name, gzip.compress(user_data(kitchen_cloud)))
    finally:
        lifecycle.destroy(name)


@pytest.fixture(scope="module")
def stack_file(kitchen_cloud: cloud.CloudInfo,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A throwaway copy of the example stack (own name, buckets and backup prefix), so a test
    host never shares backups with another host; its objects leave the kitchen cloud after."""
    path = throwaway_stack(PROJECT_ROOT / "Pulumi.example.yaml",
                           tmp_path_factory.mktemp("stack"), prefix="kt")
    try:
        yield path
    finally:
        remove_stack_objects(load_stack_file(path))

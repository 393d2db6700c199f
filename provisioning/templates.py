"""Jinja2 templates, one per file on the host, rendered strictly: an unknown name is an error."""

from __future__ import annotations

from importlib import resources
from typing import Any

import jinja2

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("provisioning", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 - config files and shell, never HTML
)


def render_template(name: str, **values: Any) -> str:
    return _ENV.get_template(name).render(**values)


def host_tool_source(name: str) -> str:
    """The source of a host tool shipped in ``provisioning/host_tools``."""
    return resources.files("provisioning").joinpath("host_tools", name).read_text("utf-8")

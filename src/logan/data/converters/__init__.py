"""Converters from the seed's datasets, in their published layouts, to LOGAN's JSON lists.

Each converter module holds NAME, OUTPUTS (label -> list file), HELP and
`read(cfg: PrepareConfig, report) -> (expected count, records)`; `logan prepare` writes the lists.
"""

from __future__ import annotations

from types import ModuleType

from logan.data.converters import llava_instruct, sharegpt4o, vlmia
from logan.errors import LoganError, unknown

CONVERTERS: dict[str, ModuleType] = {module.NAME: module for module in (vlmia, llava_instruct, sharegpt4o)}


def get_converter(name: str | None) -> ModuleType:
    """The converter registered as `name`; an unknown name is one error with a suggestion."""
    if not name:
        raise LoganError(
            "name the dataset to prepare: logan prepare <name> source=PATH path.output_dir=OUT "
            f"(names: {', '.join(CONVERTERS)})."
        )
    if name not in CONVERTERS:
        raise unknown("dataset", name, CONVERTERS)
    return CONVERTERS[name]

"""``mumu config docs|show``: the settings table (for the README) and the effective values."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from mumu.settings import Settings


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _rows(annotation, f"{env}__")
            continue
        rows.append((env, _default(field), (field.description or "").replace("|", "\\|")))
    return rows


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is None:
        return "—"
    if isinstance(value, SecretStr):
        return "(secret)"
    return f"`{json.dumps(value) if isinstance(value, list | bool) else value}`"


def settings_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [
        f"| `{env}` | {default} | {desc} |" for env, default, desc in _rows(Settings, "MUMU_")
    ]
    return "\n".join(lines) + "\n"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="print the settings table or the effective settings")
    verbs = p.add_subparsers(dest="verb", required=True)
    verbs.add_parser("docs", help="Markdown table of every setting").set_defaults(func=run_docs)
    verbs.add_parser("show", help="effective settings (secrets hidden)").set_defaults(func=run_show)


def run_docs(args: argparse.Namespace, settings: Settings) -> int:
    print(settings_table(), end="")
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    print(settings.model_dump_json(indent=2))
    return 0

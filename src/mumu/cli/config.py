"""``mumu config docs|show``: the settings table (for the README) and the effective values."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from mumu.logs import redacted
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


README_MARKERS = ("<!-- settings -->\n", "<!-- /settings -->")


def with_settings_table(readme: str) -> str:
    """``readme`` with the text between the settings markers replaced by the table."""
    start, end = README_MARKERS
    head, _, rest = readme.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}{settings_table()}{end}{tail}"


def settings_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [
        f"| `{env}` | {default} | {desc} |" for env, default, desc in _rows(Settings, "MUMU_")
    ]
    return "\n".join(lines) + "\n"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="print the settings table or the effective settings")
    verbs = p.add_subparsers(dest="verb", required=True)
    docs = verbs.add_parser("docs", help="Markdown table of every setting")
    docs.add_argument("--readme", type=Path, help="rewrite the table inside this README")
    docs.set_defaults(func=run_docs)
    verbs.add_parser("show", help="effective settings (secrets hidden)").set_defaults(func=run_show)


def run_docs(args: argparse.Namespace, settings: Settings) -> int:
    if args.readme:
        args.readme.write_text(with_settings_table(args.readme.read_text()))
    else:
        print(settings_table(), end="")
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(shown(settings.model_dump(mode="json")), indent=2))
    return 0


def shown(value: Any) -> Any:
    """Dumped settings as printed: ``SecretStr`` is already masked by pydantic; a password
    inside a plain URL (``nats://user:pw@host``, an OTLP or OpenAI URL) is masked here."""
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return ",".join(redacted(url) for url in value.split(","))  # a NATS server list
    return value

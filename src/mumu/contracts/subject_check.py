"""Every subject constant is stored by exactly one stream, and every stream subject is ours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mumu.contracts.consumers import REPLAY_PATTERNS
from mumu.contracts.subjects import ALL_PATTERNS, SubjectPattern

DECLARED_PATTERNS = (*ALL_PATTERNS, *REPLAY_PATTERNS)
"""The event subjects and the stages' replay subjects: what ``streams/`` stores."""


def covers(filter_subject: str, subject: str) -> bool:
    f, s = filter_subject.split("."), subject.split(".")
    for i, token in enumerate(f):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(f) == len(s)


SAMPLE_WORKSPACE = "x"
"""The workspace per-workspace stream templates are rendered for when they are checked."""


def subject_problems(
    configs: list[dict[str, Any]], patterns: tuple[SubjectPattern, ...] = DECLARED_PATTERNS,
    workspace_configs: Sequence[dict[str, Any]] = (),
) -> list[str]:
    """Problems of ``configs`` (shared streams, wildcard subjects) together with
    ``workspace_configs`` (per-workspace templates rendered for ``SAMPLE_WORKSPACE``,
    whose subjects name that workspace)."""
    problems = []
    every = [*configs, *workspace_configs]
    for pattern in patterns:
        sample = pattern.token(SAMPLE_WORKSPACE)
        owners = [c["name"] for c in every for f in c.get("subjects", []) if covers(f, sample)]
        if len(owners) != 1:
            problems.append(
                f"{pattern.prefix}: stored by {owners or 'no stream'} (want exactly one)"
            )
    known = {p.wildcard for p in patterns}
    for config in configs:
        for f in config.get("subjects", []):
            if f not in known:
                problems.append(f"{config['name']}: subject {f} matches no constant")
    per_workspace = {p.token(SAMPLE_WORKSPACE) for p in patterns}
    for config in workspace_configs:
        for f in config.get("subjects", []):
            if f not in per_workspace:
                problems.append(
                    f"{config['name']}: subject {f} is not a constant of workspace "
                    f"{SAMPLE_WORKSPACE}"
                )
    return problems

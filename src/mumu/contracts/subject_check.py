"""Every subject constant is stored by exactly one stream, and every stream subject is ours."""

from __future__ import annotations

from typing import Any

from mumu.contracts.subjects import ALL_PATTERNS, SubjectPattern


def covers(filter_subject: str, subject: str) -> bool:
    f, s = filter_subject.split("."), subject.split(".")
    for i, token in enumerate(f):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(f) == len(s)


def subject_problems(
    configs: list[dict[str, Any]], patterns: tuple[SubjectPattern, ...] = ALL_PATTERNS
) -> list[str]:
    problems = []
    for pattern in patterns:
        sample = pattern.token("x")
        owners = [c["name"] for c in configs for f in c.get("subjects", []) if covers(f, sample)]
        if len(owners) != 1:
            problems.append(
                f"{pattern.prefix}: stored by {owners or 'no stream'} (want exactly one)"
            )
    known = {p.wildcard for p in patterns}
    for config in configs:
        for f in config.get("subjects", []):
            if f not in known:
                problems.append(f"{config['name']}: subject {f} matches no constant")
    return problems

"""Where a run's secrets and its users' words turn up where they do not belong.

Give it what a run left behind that no client was meant to read (every process's captured
logs, ``/metrics`` bodies, error bodies), the run's secrets (API keys, session tokens,
nkey seeds, master keys, database passwords...) and the words clients asked and were
answered with; it returns each place one appears. A finding names the file, the line and
the secret's *label*, never the secret itself, so the report can be printed.

From any test (the chaos run too)::

    from tests.secrets_scan import Secret, distinctive, scan, save_metrics, secrets_of_up
    bodies = await save_metrics(http, [gateway + "/metrics", ...], folder / "metrics")
    secrets = [*secrets_of_up(data_dir), Secret("api key", key), Secret("token", t), ...]
    findings = scan([*log_files, *bodies, *error_files], secrets, distinctive(words))
    assert [str(f) for f in findings] == []

``secrets_of_up`` reads what a ``mumu up`` data directory keeps (every nkey seed, the
session secret, the JetStream store key, the development keyring, the embedded database's
passwords); the secrets only the caller knows (API keys it was shown, tokens it was given,
``MUMU_MASTER_KEYS`` or database URLs it set) it adds itself.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp

SRC = Path(__file__).parents[1] / "src" / "mumu"
MIN_SECRET = 8
"""Shorter values are not secrets worth the name (and would match by chance)."""
MIN_WORD = 7


@dataclass(frozen=True)
class Secret:
    label: str
    """What it is ("api key of A"): what a finding says instead of the value."""
    value: str


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    what: str
    """The secret's label, or ``word 'x'``."""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def password_of(url: str) -> list[Secret]:
    """The password of a database (or any) URL, if it has one."""
    password = urlsplit(url).password
    return [Secret(f"password of {urlsplit(url).username}", password)] if password else []


def secrets_of_up(data_dir: Path) -> list[Secret]:
    """The secrets a ``mumu up`` data directory holds (see the module's docstring)."""
    found = [Secret(f"nkey seed {p.stem}", p.read_text().strip())
             for folder in (data_dir / "nats" / "auth" / "creds", data_dir / "credentials")
             for p in sorted(folder.glob("*.nk"))]
    for name, label in (("session-secret", "session secret"), ("nats-js-key", "store key")):
        if (data_dir / name).exists():
            found.append(Secret(label, (data_dir / name).read_text().strip()))
    if (data_dir / "master-keys").exists():
        keys = (data_dir / "master-keys").read_text().strip()
        found += [Secret("master key", k.partition(":")[2]) for k in keys.split(",")]
    if (data_dir / "database.json").exists():
        state = json.loads((data_dir / "database.json").read_text())
        found += [s for url in state.values() if isinstance(url, str) for s in password_of(url)]
    return found


def _forms(secret: Secret) -> Iterator[tuple[str, str]]:
    """The secret as it could be written: as is, URL-quoted, base64 (a header, a URL)."""
    yield secret.label, secret.value
    quoted = quote(secret.value, safe="")
    if quoted != secret.value:
        yield f"{secret.label} (url-quoted)", quoted
    encoded = base64.b64encode(secret.value.encode()).decode().rstrip("=")
    yield f"{secret.label} (base64)", encoded[: max(MIN_SECRET, len(encoded) - 4)]


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path


def scan(paths: Iterable[Path], secrets: Iterable[Secret], words: Iterable[str] = ()
         ) -> list[Finding]:
    """Every line of ``paths`` (files, or folders read recursively) holding a secret or
    one of ``words`` (whole words, any case)."""
    forms = [(label, value) for s in secrets if len(s.value) >= MIN_SECRET
             for label, value in _forms(s)]
    wanted = sorted({w.lower() for w in words})
    pattern = (re.compile(r"\b(" + "|".join(map(re.escape, wanted)) + r")\b", re.IGNORECASE)
               if wanted else None)
    found: list[Finding] = []
    for path in _files(paths):
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            found.extend(Finding(path, number, label) for label, value in forms
                         if value in line)
            if pattern is not None:
                found.extend(Finding(path, number, f"word {m.lower()!r}")
                             for m in {m.group(1).lower() for m in pattern.finditer(line)})
    return found


def words_of(*texts: str) -> set[str]:
    """The words (letters only, lower case) of what clients said or were told."""
    return {w.lower() for text in texts for w in re.findall(r"[^\W\d_]+", text)}


def _vocabulary() -> set[str]:
    """Every word of mumu's own source: its log lines and metric names are made of these."""
    return words_of(*(p.read_text() for p in SRC.rglob("*.py")))


def distinctive(words: Iterable[str], *, also_common: Sequence[str] = ()) -> set[str]:
    """The words worth searching for: long enough, and none that mumu's own messages use
    (``also_common``: more words to leave out, e.g. a server's vocabulary)."""
    common = _vocabulary() | {w.lower() for w in also_common}
    return {w for w in (x.lower() for x in words) if len(w) >= MIN_WORD and w not in common}


async def save_metrics(http: aiohttp.ClientSession, urls: Iterable[str], folder: Path
                       ) -> list[Path]:
    """Each ``/metrics`` body, saved into ``folder`` (one file per URL) for ``scan``."""
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for n, url in enumerate(urls):
        async with http.get(url) as resp:
            body = await resp.text()
        path = folder / f"metrics-{n:02d}.txt"
        path.write_text(f"# {url} {resp.status}\n{body}")
        saved.append(path)
    return saved

"""HTTP tokens: the file that lists them (``PERF_ENGINE_WEB_TOKENS_FILE``) and the one place
that creates, finds and revokes them.

One line per token: ``<name> <scope>[,<scope>...] sha256:<hex>``; ``#`` starts a comment.
The file holds each token's SHA-256, never the token: a token is 32 random bytes
(``pe_`` + URL-safe base64), so a fast hash is as strong as a slow one against guessing,
and the file does not let its reader in. A token is shown once, when
``perf-engine token add`` makes it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from performance_engine.errors import ConfigurationError

__all__ = [
    "SCOPES",
    "Token",
    "add_token",
    "digest",
    "find_token",
    "read_tokens",
    "revoke_token",
]

#: What a token may be allowed: reading stats and predictions (``/stats``, ``/predict``),
#: the dashboard, Prometheus metrics, erasing a learner, sending xAPI statements.
SCOPES = ("stats:read", "dashboard", "metrics", "learner:erase", "xapi:write")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_LINE_RE = re.compile(r"^(\S+)\s+(\S+)\s+sha256:([0-9a-f]{64})$")
#: Longer presented tokens are refused before hashing (a made token has 46 characters).
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Token:
    """A token's name, what it may do, and its SHA-256 (hex)."""

    name: str
    scopes: frozenset[str]
    sha256: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def read_tokens(path: Path) -> list[Token]:
    """The tokens of a file; ConfigurationError naming the line that is wrong."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"PERF_ENGINE_WEB_TOKENS_FILE={path}: {exc.strerror}") from None
    tokens: list[Token] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE_RE.fullmatch(line)
        where = f"PERF_ENGINE_WEB_TOKENS_FILE={path}, line {number}"
        if match is None:
            raise ConfigurationError(f"{where}: expected '<name> <scope,...> sha256:<hex>'")
        name, scopes, sha = match.groups()
        problem = _problem(name, scopes.split(","))
        if problem:
            raise ConfigurationError(f"{where}: {problem}")
        if any(t.name == name for t in tokens):
            raise ConfigurationError(f"{where}: the name {name!r} is taken")
        tokens.append(Token(name, frozenset(scopes.split(",")), sha))
    return tokens


def _problem(name: str, scopes: list[str]) -> str:
    """What is wrong with a token's name and scopes ("" if nothing)."""
    if not _NAME_RE.fullmatch(name):
        return f"token name {name!r}: use 1 to 64 of letters, digits and _.@-"
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        return f"scopes {unknown or scopes}: choose from {', '.join(SCOPES)}"
    return ""


def find_token(tokens: list[Token], presented: str) -> Token | None:
    """The token whose hash is the presented one's (every stored hash is compared, each
    in constant time)."""
    if not presented or len(presented) > MAX_TOKEN_LENGTH or not presented.isascii():
        return None
    wanted = digest(presented)
    found = None
    for token in tokens:
        if hmac.compare_digest(token.sha256, wanted):
            found = token
    return found


def add_token(path: Path, name: str, scopes: list[str]) -> str:
    """Append a new token's line to the file (made with mode 600 if missing); the token,
    to be shown once."""
    problem = _problem(name, scopes)
    if problem:
        raise ConfigurationError(problem)
    existing = read_tokens(path) if path.exists() else []
    if any(t.name == name for t in existing):
        raise ConfigurationError(f"a token named {name!r} exists: revoke it first")
    token = "pe_" + secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a") as file:
        file.write(f"{name} {','.join(sorted(set(scopes)))} sha256:{digest(token)}\n")
    return token


def revoke_token(path: Path, name: str) -> bool:
    """Remove a token's line; False if there is none of that name."""
    read_tokens(path)  # refuse to rewrite a file that does not parse
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.split("#", 1)[0].split()[:1] != [name]]
    if len(kept) == len(lines):
        return False
    temporary = path.with_name(path.name + ".new")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.writelines(kept)
    temporary.replace(path)  # atomic: a worker re-reading it sees one file or the other
    return True

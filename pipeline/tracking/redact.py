"""Passwords out of what is recorded: ``scheme://user:PASSWORD@host`` becomes ``scheme://user:***@host``.

A tracking URI may carry a password (``http://user:secret@host:5000``,
``postgresql+psycopg://user:secret@dbhost/mlflow``, or ``?password=secret``). The URI is needed to
reach the store but its password must never be written into it: run names, tags, params, the
logged ``config.yaml`` / ``overrides.yaml`` and the sweep parent's ``overrides`` tag pass through
:func:`redact` (one string) or :func:`redact_tree` (a config as plain containers) first. Pure
functions, no imports beyond the standard library.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://  then the authority up to the first / ? # quote or whitespace; its userinfo is what precedes
# the authority's last @ (a password may hold an unescaped @), and its password what follows the first :
# Hydra's sweepers hand each job its overrides with : escaped (tracking.uri=http\://user\:pw@host\:5000).
_AUTHORITY = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*\\?://)(?P<authority>[^/?#\s'\"]*)")
_USER_END = re.compile(r"\\?:")
# ?password=... or &password=... (libpq and SQLAlchemy read it from the query string too)
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&](?:password|passwd|pwd)\\?=)(?P<value>[^&#\s'\"]*)", re.IGNORECASE)


def _mask_authority(match: re.Match[str]) -> str:
    authority = match["authority"]
    userinfo, at, host = authority.rpartition("@")
    colon = _USER_END.search(userinfo)
    if not at or colon is None:
        return match[0]
    return f"{match['scheme']}{userinfo[: colon.end()]}{MASK}@{host}"


def redact(text: str) -> str:
    """``text`` with the password of every URI in it masked (user names and hosts are kept)."""
    text = _AUTHORITY.sub(_mask_authority, text)
    return _QUERY_PASSWORD.sub(lambda m: m["key"] + (MASK if m["value"] else ""), text)


def redact_tree(value: object) -> object:
    """A copy of a config as plain containers (dicts, lists, scalars) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(item) for item in value]
    return value

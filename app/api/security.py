"""Who is calling: bearer tokens mapped to owners (`STRATA_API_TOKENS=alice=tok1,bob=tok2`).

Tokens are kept only as SHA-256 digests and compared in constant time. Without configured
tokens every caller is the single local owner, which the app allows only on a loopback address.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from app.domain.owners import LOCAL_OWNER, landing_scope, valid_owner


@dataclass(frozen=True)
class Principal:
    owner: str
    admin: bool = False

    @property
    def landing_scope(self) -> str | None:
        return landing_scope(self.owner)

    @property
    def scope(self) -> str | None:
        """The owner filter of every query: None means all jobs (admins)."""
        return None if self.admin else self.owner


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    def __init__(self, pairs: dict[str, str], admins: frozenset[str] = frozenset()) -> None:
        self._by_digest = {_digest(token): owner for owner, token in pairs.items()}
        self._admins = admins

    @classmethod
    def parse(cls, spec: str | None, admins: str | None = None) -> TokenTable | None:
        """Parse `owner=token,…`; None when auth is off. Raises ValueError on a bad spec."""
        if not spec or not spec.strip():
            return None
        pairs: dict[str, str] = {}
        for item in spec.split(","):
            owner, sep, token = item.strip().partition("=")
            if not sep or not owner.strip() or len(token.strip()) < 8:
                raise ValueError("STRATA_API_TOKENS must be owner=token pairs, tokens of 8+ chars")
            if not valid_owner(owner.strip()):
                raise ValueError(f"STRATA_API_TOKENS: {owner.strip()!r} is not a valid owner name "
                                 f"(letters, digits, _ . -; not {LOCAL_OWNER!r})")
            pairs[owner.strip()] = token.strip()
        admin_set = frozenset(a.strip() for a in (admins or "").split(",") if a.strip())
        return cls(pairs, admin_set)

    def authenticate(self, token: str) -> Principal | None:
        digest = _digest(token)
        found = None
        for known, owner in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                found = owner
        if found is None:
            return None
        return Principal(found, admin=found in self._admins)

"""Customer matching: is the account of a closed-won deal a customer the ERP already has?

The rules, in order (master data management practice: deterministic keys before
probabilistic ones):

1. **Tax id, exact.** The same tax id (compared in its compact form, prefix and separators
   ignored) is the same legal entity: a single such customer is the match; several are an
   ambiguity (the ERP holds duplicates a person must merge).
2. **Name and address, similar.** Otherwise each candidate gets a score from 0 to 100: the
   legal name compared with :func:`rapidfuzz.fuzz.token_sort_ratio` after removing legal-form
   words (GmbH, Ltd, Inc, ...), weighted 70 %, and the address (postal code exact, city and
   street by ratio) weighted 30 %; a candidate in another country scores 0. The best candidate
   at or above ``threshold`` is the match, unless another is within ``margin`` points of it
   (ambiguous: a person decides).
3. Otherwise there is **no match**: the customer is created.

Pure functions over plain values; no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from rapidfuzz import fuzz

#: Words of legal form and filler that say nothing about which company it is.
LEGAL_FORMS = frozenset(
    {
        "ag",
        "sa",
        "sas",
        "sarl",
        "gmbh",
        "mbh",
        "kg",
        "co",
        "company",
        "corp",
        "corporation",
        "inc",
        "incorporated",
        "llc",
        "llp",
        "lp",
        "ltd",
        "limited",
        "plc",
        "bv",
        "nv",
        "oy",
        "ab",
        "as",
        "asa",
        "aps",
        "spa",
        "srl",
        "pty",
        "pte",
        "kk",
        "the",
        "and",
        "und",
        "et",
    }
)
NAME_WEIGHT = 0.7


@dataclass(frozen=True, slots=True)
class Party:
    """What matching compares: an id in the ERP (or the new account's source id), the legal
    name, country, tax ids in compact form, and the address."""

    id: str
    name: str
    country: str
    tax_ids: tuple[str, ...] = ()
    street: str = ""
    city: str = ""
    postal_code: str = ""


@dataclass(frozen=True, slots=True)
class MatchResult:
    """``kind``: ``"tax_id"`` or ``"similar"`` (``match`` set), ``"ambiguous"``
    (``candidates`` lists the tied parties with their scores), or ``"none"``."""

    kind: str
    match: Party | None = None
    score: float = 0.0
    candidates: tuple[tuple[Party, float], ...] = field(default_factory=tuple)

    def explain(self) -> str:
        """A sentence for the audit trail or a business exception."""
        if self.kind == "tax_id" and self.match:
            return f"matched ERP customer {self.match.id} ({self.match.name}) by tax id"
        if self.kind == "similar" and self.match:
            return (
                f"matched ERP customer {self.match.id} ({self.match.name}) by name and address "
                f"(score {self.score:.0f})"
            )
        if self.kind == "ambiguous":
            listed = "; ".join(f"{p.id} {p.name} ({s:.0f})" for p, s in self.candidates)
            return f"several ERP customers could be this account: {listed}"
        return "no ERP customer matches: a new customer is created"


def compact_tax_id(value: str) -> str:
    """A tax id without separators, spaces and case (``DE 136.695.976`` -> ``DE136695976``)."""
    return re.sub(r"[^0-9A-Za-z]", "", value).upper()


def normalize_name(name: str) -> str:
    """Lower case, accents and punctuation removed, legal-form words dropped."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    words = re.findall(r"[a-z0-9]+", text.replace(".", ""))  # "S.A." is one word, "sa"
    kept = [w for w in words if w not in LEGAL_FORMS]
    return " ".join(kept or words)


def similarity(account: Party, candidate: Party) -> float:
    """Score 0-100 of ``candidate`` being ``account`` by name and address (see the module
    docstring); 0 when their countries differ."""
    if account.country and candidate.country and account.country != candidate.country:
        return 0.0
    name = fuzz.token_sort_ratio(normalize_name(account.name), normalize_name(candidate.name))
    parts = []
    if account.postal_code and candidate.postal_code:
        same = compact_tax_id(account.postal_code) == compact_tax_id(candidate.postal_code)
        parts.append(100.0 if same else 0.0)
    for mine, theirs in ((account.city, candidate.city), (account.street, candidate.street)):
        if mine and theirs:
            parts.append(fuzz.ratio(normalize_name(mine), normalize_name(theirs)))
    if not parts:  # no address to compare: the name decides alone
        return float(name)
    address = sum(parts) / len(parts)
    return NAME_WEIGHT * name + (1 - NAME_WEIGHT) * address


def match_customer(
    account: Party, candidates: Sequence[Party], threshold: float = 85.0, margin: float = 5.0
) -> MatchResult:
    """Apply the rules of the module docstring. ``threshold`` and ``margin`` are scores
    (0-100). Raises ``ValueError`` for a threshold outside 0-100."""
    if not 0 <= threshold <= 100:
        raise ValueError("threshold is a score from 0 to 100")
    mine = {compact_tax_id(t) for t in account.tax_ids if t}
    if mine:
        same = [c for c in candidates if mine & {compact_tax_id(t) for t in c.tax_ids}]
        if len(same) == 1:
            return MatchResult("tax_id", same[0], 100.0)
        if len(same) > 1:
            return MatchResult("ambiguous", candidates=tuple((c, 100.0) for c in same))
    scored = sorted(((c, similarity(account, c)) for c in candidates), key=lambda pair: -pair[1])
    above = [(c, s) for c, s in scored if s >= threshold]
    if not above:
        return MatchResult("none")
    best, score = above[0]
    tied = [(c, s) for c, s in above if score - s <= margin]
    if len(tied) > 1:
        return MatchResult("ambiguous", candidates=tuple(tied))
    return MatchResult("similar", best, score)

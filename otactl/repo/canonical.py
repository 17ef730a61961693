"""OLPC canonical JSON (what TUF signs), byte for byte as securesystemslib writes it, faster.

securesystemslib's ``encode_canonical`` walks the document in Python; signing a million device
records in hash bins spends most of its time there. ``json``'s C encoder with sorted keys and no
whitespace writes the same bytes whenever no string holds a backslash, a quote or a control
character (the only characters the two escape differently) and no number is a float (canonical
JSON has none). Documents outside that fast case take securesystemslib's own path, errors included.
"""

from __future__ import annotations

import json
import re
from typing import Any

from securesystemslib.formats import encode_canonical
from tuf.api.metadata import Signed
from tuf.api.serialization import SerializationError, SignedSerializer

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                            check_circular=False)


_STRING = re.compile(r'"[^"]*"')
_FLOAT = re.compile(r"\d[.eE]")  # what a float's repr has and an int, true, false or null has not


def canonical_json(obj: Any) -> bytes:
    """``encode_canonical(obj).encode()``, computed with the C JSON encoder when that is the same."""
    try:
        text = _ENCODER.encode(obj)
    except (TypeError, ValueError):
        text = "\\"  # let securesystemslib decide (and word the error)
    # no backslash: no string held a quote, backslash or control character, so strings are "[^"]*";
    # outside them, no float
    if "\\" not in text and not _FLOAT.search(_STRING.sub("", text)):
        return text.encode("utf-8")
    out = encode_canonical(obj)
    assert out is not None
    return out.encode("utf-8")


class CanonicalSerializer(SignedSerializer):
    """python-tuf's ``CanonicalJSONSerializer``, same bytes, through :func:`canonical_json`."""

    def serialize(self, signed_obj: Signed) -> bytes:
        try:
            return canonical_json(signed_obj.to_dict())
        except Exception as exc:  # the same contract as CanonicalJSONSerializer
            raise SerializationError from exc


CANONICAL = CanonicalSerializer()

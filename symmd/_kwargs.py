"""Unknown keyword arguments are errors, named with the closest valid one."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from typing import Any


def valid_keywords(function: Callable[..., Any]) -> list[str]:
    """Names ``function`` accepts as keywords (``self`` and ``**kwargs`` excluded)."""
    return [
        name
        for name, p in inspect.signature(function).parameters.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def check_keywords(
    given: dict[str, Any],
    function: Callable[..., Any],
    owner: str,
    also: Iterable[str] = (),
) -> None:
    """Raise TypeError for any key of ``given`` not among ``also``, naming the
    closest keyword of ``function`` (e.g. ``symmetrise`` -> ``symmetrize``)."""
    allowed = set(also)
    unknown = [key for key in given if key not in allowed]
    if not unknown:
        return
    valid = valid_keywords(function) + sorted(allowed)
    key = unknown[0]
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keywords: {', '.join(valid)}"
    raise TypeError(f"{owner} got an unexpected keyword argument {key!r}{hint}")

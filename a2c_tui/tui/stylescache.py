"""Textual's StylesCache without its memory leak.

`StylesCache.get_inner_outer` is an instance method under `functools.lru_cache(1024)`, so
every key holds the StylesCache it was called on: the caches of up to 1024 widgets that
have since been removed stay alive with every line they last rendered (Strips, each with
seven caches of its own). In the app soak this was the steady RSS rise left after the
Footer fix: Python's object arenas grew 116 -> 132 MB in 11 minutes while malloc's heap
stayed flat (Textualize/textual#6665, open in textual 8.2). The method reads only its two
colours, so `install` caches it on those alone.
"""

from __future__ import annotations

from functools import lru_cache

from textual._styles_cache import StylesCache


def install() -> bool:
    """Re-key the cache on the colours; returns False (and changes nothing) when this
    textual's method is not the leaking one."""
    method = StylesCache.__dict__.get("get_inner_outer")
    original = getattr(method, "__wrapped__", None)
    if original is None or not hasattr(method, "cache_info"):
        return False

    @lru_cache(1024)
    def inner_outer(base_background, background):
        return original(None, base_background, background)

    def get_inner_outer(self, base_background, background):
        return inner_outer(base_background, background)

    get_inner_outer.__wrapped__ = original
    StylesCache.get_inner_outer = get_inner_outer
    return True

"""Textual's Footer without its memory leak.

The Footer rebuilds its keys whenever the bindings change (every focus or pane switch) and
binds each new key to its own `compact` reactive. Textual stores that binding as a watcher
on the Footer and only drops the removed keys' watchers when `compact` changes, which it
never does here, so every key ever shown stayed alive with its styles and message queue:
~20 widgets per pane switch, the larger part of the soak's RSS rise (Textualize/textual#6666,
open in textual 8.2). After each rebuild this Footer drops the watchers of closed keys.
"""

from __future__ import annotations

from textual.widgets import Footer as TextualFooter


class Footer(TextualFooter):
    async def recompose(self) -> None:
        await super().recompose()  # the old keys are removed (closed) when this returns
        prune_closed_watchers(self)


def prune_closed_watchers(node: object) -> int:
    """Drop watchers registered on `node` by widgets that have since closed; returns how many."""
    watchers: dict[str, list] = getattr(node, "__watchers", {})  # Textual's own name for the table
    dropped = 0
    for entries in watchers.values():
        alive = [(owner, callback) for owner, callback in entries
                 if not (getattr(owner, "_closing", False) or getattr(owner, "_closed", False))]
        dropped += len(entries) - len(alive)
        entries[:] = alive
    return dropped

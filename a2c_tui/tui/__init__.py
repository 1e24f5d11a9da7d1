"""The Textual app: a status bar, one module per pane, and `app.py` tying them to a trainer handle.

Nothing here imports torch: the panes see only immutable snapshots and events, and reach
the trainer through the handle's methods (see `messages.TrainerHandle`).
"""

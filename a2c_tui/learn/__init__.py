"""The algorithm: envs, the network, rollout storage and targets, the A2C loss and update,
and data-parallel ranks.

Nothing here knows about sockets, the run's files or the app; `frames` (a frame mailbox,
no torch) is the one piece the app may import.
"""

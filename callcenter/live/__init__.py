"""The live results channel between the parts that produce results (the
media consumers and the recognition task) and those that show them (the
agents' feed): message shapes and channel-layer groups, in ``messages``.
Neutral ground: it imports nothing from ``streaming``, ``dashboard`` or
``tasks``."""

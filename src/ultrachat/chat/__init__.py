"""``ultrachat chat``: a streaming multi-turn terminal chat (see :mod:`.session`)."""

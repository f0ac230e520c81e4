"""The routes channels declare: push webhooks (``push.py``), response, socket and page routes (``live.py``).

``routes.py`` turns each :class:`~botloom.core.channels.ChannelRoute` a channel
plugin declares into a Litestar handler; the server names no channel itself.
"""

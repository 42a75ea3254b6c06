"""Websocket consumers of the media endpoints, one per protocol (the agents'
feed is ``dashboard.consumers``): ``base`` holds what both share
(``MediaConsumer``), ``twilio`` and ``pcm`` one protocol each. Frames are
parsed by ``protocols`` (pure functions); audio goes to a ``CallSession``.
"""

from callcenter.streaming.consumers.base import MediaConsumer
from callcenter.streaming.consumers.pcm import PcmMediaConsumer
from callcenter.streaming.consumers.twilio import TwilioMediaConsumer

__all__ = ["MediaConsumer", "PcmMediaConsumer", "TwilioMediaConsumer"]

"""The error a user can fix: a missing file, an unreadable shard, a bad config, no detector.

Library code raises :class:`UserInputError` with a one-line message naming the file
or record; the command line turns it into a clean error instead of a traceback.
"""
from __future__ import annotations


class UserInputError(ValueError):
    """Bad input or configuration, described in one line that names what is wrong."""

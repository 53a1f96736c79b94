"""The one exception type the media layer lets out."""

from ..errors import IntercomError


class MediaError(IntercomError, RuntimeError):
    """A media operation failed; the caller should end the call.

    Every public coroutine of :class:`~intercom.media.engine.MediaEngine` raises only this type, so the orchestrator
    can turn any media failure into a hangup without knowing aiortc's, PyAV's or ALSA's exceptions. The message
    says what failed (which call, which step) and chains the original exception as ``__cause__``.
    """

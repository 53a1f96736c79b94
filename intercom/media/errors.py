"""The one exception type the media layer lets out."""

from ..errors import IntercomError


class MediaError(IntercomError, RuntimeError):
    """A media operation failed; the caller should end the call.

    Every public coroutine of :class:`~intercom.media.engine.MediaEngine` raises only this type, so the orchestrator
    can turn any media failure into a hangup without knowing aiortc's, PyAV's or ALSA's exceptions. The message
    says what failed (which call, which step) and chains the original exception as ``__cause__``.
    ``hangup_reason``, when set, is the Matrix hangup reason that describes the failure best (e.g. ``ice_timeout``
    when media was lost mid-call).
    """

    def __init__(self, message: str = "", *, hangup_reason: str | None = None) -> None:
        super().__init__(message)
        self.hangup_reason = hangup_reason

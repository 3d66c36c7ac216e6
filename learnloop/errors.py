"""One exception root for learnloop; each failure mode is a one-line subclass."""


class LearnloopError(Exception):
    """Root of every error learnloop raises on purpose."""


class ConfigError(LearnloopError):
    """Settings are invalid or inconsistent."""


class ServiceUnreachable(LearnloopError):
    """A configured Kafka broker or Redis server does not answer."""


class EmbeddedStackError(LearnloopError):
    """The embedded broker or redis-server could not be started."""


class TopicMismatch(LearnloopError):
    """An existing topic has a different partition count than configured."""


class PartitionFenced(LearnloopError):
    """Another consumer applied this partition past our position (rebalance)."""


class UnknownModel(LearnloopError):
    """A model name is not in the registry."""


class AccessDenied(LearnloopError):
    """A server refused learnloop's credentials or permissions."""


class InvalidEvent(LearnloopError):
    """An event failed validation (``reason`` as in dead letters); nothing was sent."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail

"""Scratch topics the harness's own loops write to."""

from __future__ import annotations

from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from learnloop.connect import admin_client
from learnloop.settings import Settings


def ensure_topic(settings: Settings, name: str) -> None:
    """Create topic ``name`` with the settings' partition count, unless it exists."""
    admin = admin_client(settings)
    try:
        admin.create_topics([NewTopic(name, settings.partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()

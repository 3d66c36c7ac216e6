"""Topics as the harness's own loops use them: scratch topics to write to, and whole
topics read from their start."""

from __future__ import annotations

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from learnloop.connect import admin_client, kafka_security
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


def read_from_start(settings: Settings, topic: str,
                    **options) -> tuple[KafkaConsumer, list[TopicPartition]]:
    """A consumer assigned every partition of ``topic`` (no group, no commits), at the
    beginning of each, and those partitions. ``options`` go to ``KafkaConsumer``."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                             **options, **kafka_security(settings))
    parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    return consumer, parts

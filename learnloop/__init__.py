"""learnloop: streaming feedback and online learning on Kafka, Redis and River."""

__version__ = "0.1.0"

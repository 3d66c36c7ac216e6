"""learnloop's Kafka consumers: one module per consumer, each runnable on its own."""

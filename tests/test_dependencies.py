"""What the core install brings that the consumers' speed depends on."""

from __future__ import annotations

import logging

from kafka.record import util

from learnloop import service
from learnloop.connect import kafka_crcs_in_c


def test_the_core_install_gives_kafka_python_its_crc32c_in_c():
    """kafka-python checks every fetched record batch's CRC and writes one on every
    produced batch; without the ``crc32c`` extension it does so in pure Python (~90 ns a
    byte). The tests' environment has it only through the core dependencies."""
    assert kafka_crcs_in_c()
    assert util.crc32c_c is not None
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283  # CRC-32C check value


def test_a_consumer_process_warns_when_crcs_would_run_in_pure_python(monkeypatch, caplog):
    monkeypatch.setattr(service, "kafka_crcs_in_c", lambda: False)
    with caplog.at_level(logging.WARNING, logger="learnloop"):
        service.warn_if_crcs_in_python()
    assert "pure Python" in caplog.text
    caplog.clear()
    monkeypatch.setattr(service, "kafka_crcs_in_c", lambda: True)
    with caplog.at_level(logging.WARNING, logger="learnloop"):
        service.warn_if_crcs_in_python()
    assert caplog.text == ""

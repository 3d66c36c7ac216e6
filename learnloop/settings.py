"""Settings: one frozen object, read from ``LEARNLOOP_*`` environment variables."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from learnloop.drift import DETECTORS
from learnloop.errors import ConfigError
from learnloop.featurize import ALL_CONTEXT_KEYS, DEFAULT_CLIP
from learnloop.objective import DEFAULT_OBJECTIVES, Objective, check_objectives

Names = Annotated[tuple[str, ...], NoDecode]
KafkaProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Seconds = Annotated[tuple[int, ...], NoDecode]

DEFAULT_EVENT_TYPES = ("impression", "click", "add_to_cart", "purchase", "rating", "dismiss")


class Settings(BaseSettings):
    """Everything learnloop can be configured with.

    Unset ``kafka_bootstrap`` / ``redis_url`` mean "start the embedded stack".
    ``redis_url`` is a secret because it may carry a password.
    """

    model_config = SettingsConfigDict(env_prefix="LEARNLOOP_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = None
    redis_url: SecretStr | None = None
    redis_retry_s: float = Field(60.0, ge=0)
    # TLS to Redis (a rediss:// URL; AUTH / ACL user and password ride in the URL)
    redis_ssl_ca_certs: FilePath | None = None
    redis_ssl_certfile: FilePath | None = None
    redis_ssl_keyfile: FilePath | None = None
    # Kafka authentication and TLS, given to every kafka-python client (connect.kafka_security)
    kafka_security_protocol: KafkaProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: FilePath | None = None
    kafka_ssl_certfile: FilePath | None = None
    kafka_ssl_keyfile: FilePath | None = None

    topic_interactions: str = "interactions"
    topic_scores: str = "scores"
    topic_dead_letters: str = "dead-letters"
    topic_examples: str = "examples"
    topic_drift_alerts: str = "drift-alerts"
    partitions: int = Field(4, ge=1, le=1024)
    consumer_group: str = "learnloop-interactions"
    max_poll_records: int = Field(1000, ge=1)
    poll_timeout_ms: int = Field(100, ge=1)
    fetch_max_wait_ms: int = Field(100, ge=0)
    max_poll_interval_ms: int = Field(30_000, ge=1000)
    session_timeout_ms: int = Field(10_000, ge=1000)

    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9464, ge=0, le=65535)

    champion: str = "item_ctr"
    baseline: str = "item_ctr"
    models: Names = ("item_ctr", "logreg")

    event_types: Names = DEFAULT_EVENT_TYPES
    objectives: dict[str, Objective] = Field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))
    model_objectives: dict[str, str] = Field(default_factory=dict)
    half_lives_s: Seconds = (3600, 86_400, 604_800)
    feature_ttl_s: int = Field(30 * 86_400, ge=60)
    snapshot_ttl_s: int = Field(8 * 86_400, ge=60)
    dedup_ttl_s: int = Field(86_400, ge=60)
    score_ttl_s: int = Field(30 * 86_400, ge=60)
    top_k: int = Field(50, ge=1, le=10_000)

    max_event_bytes: int = Field(16_384, ge=256)
    max_context_keys: int = Field(32, ge=0)
    max_clock_skew_s: int = Field(300, ge=0)

    # guardrails on learning: input ranges and names (learnloop.featurize), per-user cap
    # on the examples that reach the models (learnloop.usercap; None = no cap)
    feature_clip: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(DEFAULT_CLIP))
    context_keys: Names = ALL_CONTEXT_KEYS
    max_examples_per_user: int | None = Field(None, ge=1)
    user_cap_window_s: int = Field(3600, ge=1)

    learner_group: str = "learnloop-learner"
    checkpoint_key: SecretStr | None = None
    checkpoint_every_examples: int = Field(5000, ge=1)
    checkpoint_every_s: float = Field(5.0, gt=0)
    checkpoints_kept: int = Field(5, ge=1)
    model_reload_s: float = Field(2.0, gt=0)
    recent_window: int = Field(1000, ge=10)

    drift_detector: str = "ADWIN"
    drift_params: dict[str, float] = Field(default_factory=dict)
    drift_cooldown_s: float = Field(3600.0, ge=0)
    drift_hold_s: float = Field(900.0, ge=0)
    drift_max_features: int = Field(16, ge=0, le=256)
    drift_stream_max: int = Field(10_000, ge=10)
    drift_responses: dict[str, Literal["alert", "challenger", "reset"]] = Field(
        default_factory=dict)
    challenger_margin: float = Field(0.02, ge=0, lt=1)
    challenger_min_examples: int = Field(1000, ge=1)

    @field_validator("models", "event_types", "half_lives_s", "context_keys", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        """Accept ``a,b,c`` from the environment as well as JSON lists."""
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("feature_clip")
    @classmethod
    def _ranges(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        """Every clip range is ``[lo, hi]`` with ``lo <= hi`` (NaN is no bound)."""
        bad = [p for p, (lo, hi) in value.items() if not lo <= hi]
        if bad:
            raise ValueError(f"feature_clip ranges need lo <= hi: {bad}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        check_objectives(self.objectives, self.event_types, self.model_objectives, self.models)
        unknown = set(self.drift_responses) - set(self.models)
        if unknown:
            raise ValueError(f"drift_responses names unknown models {sorted(unknown)}")
        if self.drift_detector not in DETECTORS:
            raise ValueError(f"drift_detector must be one of {DETECTORS}")
        if self.baseline not in self.models:
            raise ValueError(f"baseline {self.baseline!r} is not one of models {list(self.models)}")
        if self.champion not in self.models:
            raise ValueError(f"champion {self.champion!r} is not one of models {list(self.models)}")
        if not self.half_lives_s or min(self.half_lives_s) <= 0:
            raise ValueError("half_lives_s needs at least one positive half-life")
        return self

    @model_validator(mode="after")
    def _secure_transport(self) -> Settings:
        problems = _kafka_security_problems(self) + _redis_tls_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def exposure_types(self) -> tuple[str, ...]:
        """Event types some objective treats as exposures: these are scored."""
        return tuple(dict.fromkeys(t for o in self.objectives.values() for t in o.exposures))

    def objective_of(self, model: str) -> str:
        """Name of the objective ``model`` learns (default: the first objective)."""
        return self.model_objectives.get(model, next(iter(self.objectives)))

    @property
    def embedded(self) -> bool:
        """True when neither Kafka nor Redis is configured: start them ourselves."""
        return self.kafka_bootstrap is None and self.redis_url is None

    def topic_names(self) -> tuple[str, ...]:
        """Every topic learnloop reads or writes."""
        return (
            self.topic_interactions,
            self.topic_scores,
            self.topic_dead_letters,
            self.topic_examples,
            self.topic_drift_alerts,
        )

    def env(self) -> dict[str, str]:
        """``LEARNLOOP_*`` variables that give another process these same settings."""
        dumped = self.model_dump(mode="json", exclude_defaults=True)
        env = {}
        for name, value in dumped.items():
            secret = getattr(self, name)
            if isinstance(secret, SecretStr):
                value = secret.get_secret_value()
            elif isinstance(value, list) and all(isinstance(v, str | int) for v in value):
                value = ",".join(str(v) for v in value)
            elif isinstance(value, dict | list):
                value = json.dumps(value)
            env[f"LEARNLOOP_{name.upper()}"] = str(value)
        return env


def _kafka_security_problems(s: Settings) -> list[str]:
    """SASL settings need a SASL protocol and all three values; TLS files a TLS protocol."""
    protocol = s.kafka_security_protocol
    sasl = ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
    tls = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    problems = []
    if protocol.startswith("SASL_"):
        missing = [name for name in sasl if getattr(s, name) is None]
        if missing:
            problems.append(f"kafka_security_protocol {protocol} needs {', '.join(missing)}")
    elif any(getattr(s, name) is not None for name in sasl):
        problems.append(f"{'/'.join(sasl)} need kafka_security_protocol SASL_PLAINTEXT or "
                        f"SASL_SSL (it is {protocol})")
    if not protocol.endswith("SSL") and any(getattr(s, name) for name in tls):
        problems.append(f"{'/'.join(tls)} need kafka_security_protocol SSL or SASL_SSL "
                        f"(it is {protocol})")
    if s.kafka_ssl_keyfile and not s.kafka_ssl_certfile:
        problems.append("kafka_ssl_keyfile needs kafka_ssl_certfile")
    return problems


def _redis_tls_problems(s: Settings) -> list[str]:
    """Redis TLS files need a ``rediss://`` URL (the embedded redis-server has no TLS)."""
    if not (s.redis_ssl_ca_certs or s.redis_ssl_certfile or s.redis_ssl_keyfile):
        return []
    problems = []
    if s.redis_url is None or not s.redis_url.get_secret_value().startswith("rediss://"):
        problems.append("redis_ssl_* files need a rediss:// redis_url")
    if s.redis_ssl_keyfile and not s.redis_ssl_certfile:
        problems.append("redis_ssl_keyfile needs redis_ssl_certfile")
    return problems


def _describe(exc: ValidationError) -> str:
    """One line per problem, ``field: message`` — never the input (it may be a secret)."""
    return "\n".join(
        f"  {'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False))


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise :class:`ConfigError` with every problem
    (named by field, without the values given: a value may be a secret)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid learnloop settings:\n{_describe(exc)}") from None
    except ValueError as exc:  # pydantic-settings: a variable that is not valid JSON
        raise ConfigError(f"invalid learnloop settings: {exc}") from None

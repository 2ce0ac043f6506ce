"""The one settings object of tastemaker.

Every knob is an environment variable with the prefix ``TASTEMAKER_`` (``TASTEMAKER_REDIS_URL``,
``TASTEMAKER_TOPIC_PARTITIONS``, ...) or a field of a ``.env`` file. A bad value fails at start with
a message naming the setting:

>>> try:
...     load_settings(topic_partitions=0)
... except SettingsError as e:
...     print(e)
invalid setting TASTEMAKER_TOPIC_PARTITIONS: Input should be greater than or equal to 1 (got 0)
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.feedback import FeedbackWeights

ENV_PREFIX = "TASTEMAKER_"

Port = Annotated[int, Field(ge=1, le=65535)]
Positive = Annotated[int, Field(ge=1)]
ReviewFeedback = Literal["sentiment", "stars", "none"]
LogFormat = Literal["text", "json"]


class SettingsError(ValueError):
    """A setting has a value tastemaker cannot run with."""


class Settings(BaseSettings):
    """Connection, topic, state and model settings. Frozen: read once at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    # --- services -------------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"

    # --- local stack (no Docker) ----------------------------------------------------------------
    kafka_version: str = "4.1.1"
    kafka_port: Port = 9092
    kafka_controller_port: Port = 9093
    redis_port: Port = 6379
    stack_dir: Path = Path(".tastemaker")
    cache_dir: Path = Path.home() / ".cache" / "tastemaker"
    stack_start_timeout_s: Annotated[float, Field(gt=0)] = 60.0

    # --- topics ---------------------------------------------------------------------------------
    topic_plays: str = "plays"
    topic_ratings: str = "ratings"
    topic_reviews: str = "reviews"
    topic_dlq: str = "events-dlq"
    topic_model_updates: str = "model-updates"
    topic_partitions: Positive = 6
    max_message_bytes: Positive = 1_000_000

    # --- worker ---------------------------------------------------------------------------------
    app_id: str = "tastemaker"
    key_prefix: str = ""
    batch_size: Positive = 500
    batch_within_s: Annotated[float, Field(gt=0)] = 0.05
    settle_after_s: Annotated[float, Field(gt=0)] = 2.0
    # a worker that died without leaving the group holds its partitions this long
    session_timeout_s: Annotated[float, Field(ge=6, le=300)] = 10.0
    snapshot_every_batches: Positive = 50
    web_port: Port = 6066

    # --- recommender ----------------------------------------------------------------------------
    top_n: Positive = 50
    history_cap: Positive = 500
    neighbour_cap: Positive = 300
    half_life_days: Annotated[float, Field(gt=0)] = 180.0
    decay_epoch: float = 1e9
    row_cap: Positive = 1000
    similarity_alpha: Annotated[float, Field(ge=0, le=1)] = 0.5
    recent_items: Positive = 500
    recency_half_life: Annotated[float, Field(gt=0)] = 200.0
    explain_items: Positive = 3
    similar_users: Annotated[int, Field(ge=0)] = 30  # 0: no similar-user candidates
    user_blend: Annotated[float, Field(ge=0)] = 1.0
    likers_cap: Positive = 100  # latest likers kept per item (similar-user index)
    user_items_cap: Positive = 50  # latest liked items kept per user (similar-user index)

    # --- feedback weights (models.feedback) ------------------------------------------------------
    feedback_play: float = 1.0
    feedback_skip_below: Annotated[float, Field(ge=0, le=1)] = 0.0
    feedback_rating: float = 0.0  # measured best on ML-100K: see README, Results
    feedback_rating_centre: Annotated[float, Field(ge=0.5, le=5)] = 3.0
    feedback_review: float = 1.0
    review_feedback: ReviewFeedback = "sentiment"  # what a review's feedback weight comes from

    # --- observability --------------------------------------------------------------------------
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: no Prometheus endpoint
    lag_interval_s: Annotated[float, Field(gt=0)] = 5.0  # how often workers measure consumer lag
    log_format: LogFormat = "text"  # json: one JSON object per line (streams.logs)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers_have_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    def feedback_weights(self) -> FeedbackWeights:
        return FeedbackWeights(play=self.feedback_play, skip_below=self.feedback_skip_below,
                               rating=self.feedback_rating,
                               rating_centre=self.feedback_rating_centre,
                               review=self.feedback_review)

    @property
    def event_topics(self) -> tuple[str, str, str]:
        return (self.topic_plays, self.topic_ratings, self.topic_reviews)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning a validation error into a `SettingsError`
    whose message names the environment variable at fault."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "?"
            problems.append(
                f"invalid setting {ENV_PREFIX}{field.upper()}: {err['msg']} "
                f"(got {err.get('input')!r})"
            )
        raise SettingsError("; ".join(problems)) from None


@functools.cache
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()

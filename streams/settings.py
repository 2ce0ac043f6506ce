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
import re
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.cooccurrence import DAY_S, MAX_DECAY_EXPONENT, decay_horizon
from models.feedback import FeedbackWeights
from streams.contract.events import MAX_EVENT_FUTURE_S

ENV_PREFIX = "TASTEMAKER_"
DECAY_MARGIN_YEARS = 20  # the decay must cover at least this many years from now

Port = Annotated[int, Field(ge=1, le=65535)]
Positive = Annotated[int, Field(ge=1)]
ReviewFeedback = Literal["sentiment", "stars", "none"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
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

    # --- service security (streams.connections builds every client from these) ------------------
    redis_username: str | None = None  # an ACL user (docs/operations.md, Security); None: the URL's
    redis_password: SecretStr | None = None
    redis_tls_ca_file: Path | None = None  # with a rediss:// URL: the CA that signed the server
    redis_tls_cert_file: Path | None = None  # client certificate, when the server asks for one
    redis_tls_key_file: Path | None = None
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    # the largest snapshot blob (item statistics, sentiment model) a worker will read
    max_snapshot_bytes: Positive = 1 << 30

    # --- local stack (no Docker) ----------------------------------------------------------------
    kafka_version: str = "4.1.1"
    kafka_port: Port = 9092
    kafka_controller_port: Port = 9093
    redis_port: Port = 6379
    kafka_sasl_port: Port | None = None  # also a SASL_PLAINTEXT (PLAIN) listener on this port
    # also an SSL listener that asks clients for a certificate signed by the stack's CA
    kafka_ssl_port: Port | None = None
    # also a SASL_SSL listener (SCRAM-SHA-512): the SASL user is created when storage is formatted
    kafka_sasl_ssl_port: Port | None = None
    # the one SASL user of the local stack (written into its JAAS config: plain characters only)
    stack_sasl_username: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")] = "tastemaker"
    stack_sasl_password: SecretStr = SecretStr("tastemaker-local")
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
    # an event whose ts is later than its Kafka record's timestamp plus this goes to the
    # dead-letter topic (ts_out_of_range): see streams.contract.events.latest_event_ts
    max_event_future_s: Annotated[float, Field(ge=0, le=365 * 86_400)] = MAX_EVENT_FUTURE_S
    # events whose Kafka key is not their user_id go to events-dlq (key_mismatch); false accepts
    # any key, and then two workers may update one user's history at once (the later wins)
    key_guard: bool = True

    # --- worker ---------------------------------------------------------------------------------
    app_id: str = "tastemaker"
    key_prefix: str = ""
    # the most events a batch takes; only a worker that is behind fills one (else a batch is
    # what came within batch_within_s). Full ML-100K replay, one worker (bench.speed --part
    # e2e --batch-sizes 500 1000 2000, one run): 1,777 / 2,265 / 2,551 events/s
    batch_size: Positive = 2000
    batch_within_s: Annotated[float, Field(gt=0)] = 0.05
    settle_after_s: Annotated[float, Field(gt=0)] = 2.0
    # the settle pass re-ranks the users with an event in this window (wall clock) and leaves
    # the others' lists as they were written; 0 would settle nobody (issue 19)
    settle_window_s: Annotated[float, Field(gt=0)] = 3600.0
    # recs:{user}, explain:{user} and recs_meta:{user} expire this long after they were last
    # written (0: never); at least settle_window_s, so that the settle pass writes to live keys
    recs_ttl_s: Annotated[float, Field(ge=0)] = 0.0
    # a worker that died without leaving the group holds its partitions this long
    session_timeout_s: Annotated[float, Field(ge=6, le=300)] = 10.0
    # the item statistics are snapshot at most this often, and once the deltas stream holds as
    # many pair updates since the last snapshot as the statistics hold entries (and at settle)
    snapshot_every_batches: Positive = 50
    web_port: Port = 6066

    # --- recommender ----------------------------------------------------------------------------
    top_n: Positive = 50
    history_cap: Positive = 500
    neighbour_cap: Positive = 300
    # ten years: similarity and trending decay on a scale where catalogues stay relevant for
    # years; 180 days lost 25% nDCG@10 offline once ML-100K's time was stretched x30
    # (python -m bench.generalise; docs/results.md)
    half_life_days: Annotated[float, Field(gt=0)] = 3650.0
    decay_epoch: float = 1e9
    row_cap: Positive = 1000
    # live items kept in the statistics at most (0: no cap); past it the coldest are evicted
    # (models.cooccurrence.ItemCooccurrence). A worker holds ~35 bytes per co-occurrence entry
    # (row + neighbour list), up to row_cap entries an item (docs/reliability.md, Memory)
    max_items: Annotated[int, Field(ge=0)] = 200_000
    similarity_alpha: Annotated[float, Field(ge=0, le=1)] = 0.5
    recent_items: Positive = 500
    recency_half_life: Annotated[float, Field(gt=0)] = 200.0
    explain_items: Positive = 3
    similar_users: Annotated[int, Field(ge=0)] = 30  # 0: no similar-user candidates
    user_blend: Annotated[float, Field(ge=0)] = 1.0
    likers_cap: Positive = 100  # latest likers kept per item (similar-user index)
    user_items_cap: Positive = 50  # latest liked items kept per user (similar-user index)
    # users in the similar-user index at most (0: no cap); past it those whose latest like is
    # oldest leave it (~3 KB a user in every worker; docs/reliability.md, Memory)
    max_indexed_users: Annotated[int, Field(ge=0)] = 500_000

    # --- popularity-bias and diversity controls (models.rerank), applied to the served list ---
    # relevance x (popularity / the top candidate's) ** -popularity_penalty; 0: off. Off by
    # default: 0.1 already costs 2.8% nDCG@10 offline for +16% coverage (python -m bench.controls)
    popularity_penalty: Annotated[float, Field(ge=0, le=4)] = 0.0
    # MMR weight of dissimilarity; 0: off. 0.2: +5% coverage, less popularity lift, accuracy level
    diversity: Annotated[float, Field(ge=0, le=1)] = 0.2
    rerank_pool: Positive = 100  # candidates the controls choose the top_n from

    # --- ranker (models.ranker) and its trainer -----------------------------------------------
    topic_ranker_examples: str = "ranker-examples"
    ranker_candidates: Positive = 100  # co-occurrence candidates the ranker re-orders
    ranker_example_rate: Annotated[float, Field(ge=0, le=1)] = 0.2  # positive events logged
    ranker_examples_retention_ms: Positive = 7 * 86_400_000  # the examples topic is bounded ...
    ranker_examples_retention_bytes: Positive = 256 * 1024 * 1024  # ... per partition
    ranker_max_artefact_bytes: Positive = 4 * 1024 * 1024  # larger artefacts are refused
    ranker_factors: Annotated[int, Field(ge=0, le=256)] = 32  # item factors fitted by the
    # trainer for the feature factor_score (0: none, the feature stays 0)
    ranker_factor_items: Positive = 20_000  # items with a factor, the most liked (artefact size)
    ranker_keep_versions: Positive = 5  # published versions kept (the current one always)
    ranker_poll_s: Annotated[float, Field(gt=0, le=60)] = 0.25  # workers check for a new version
    trainer_interval_s: Annotated[float, Field(gt=0)] = 300.0  # fine-tune at least this often ...
    trainer_min_new_examples: Positive = 2_000  # ... or once this many new examples arrived
    trainer_window: Positive = 50_000  # the most recent examples trained and evaluated on
    trainer_holdout: Annotated[float, Field(gt=0, lt=1)] = 0.2  # newest share held out
    trainer_epochs: Positive = 20
    trainer_factor_chunks: Annotated[int, Field(ge=2, le=64)] = 4  # time chunks: each one's
    # factor_score from factors of the older ones (the first is not trained on)
    trainer_lr: Annotated[float, Field(gt=0, le=1)] = 1e-3
    trainer_device: Literal["auto", "cpu", "cuda"] = "auto"
    trainer_threads: Annotated[int, Field(ge=0)] = 0  # torch CPU threads; 0: torch's default
    trainer_seed: int = 0

    # --- feedback weights (models.feedback) ------------------------------------------------------
    feedback_play: float = 1.0
    feedback_skip_below: Annotated[float, Field(ge=0, le=1)] = 0.0
    # 0: the best worst case over protocols and encodings (python -m bench.generalise); 0.5 gains
    # 3% nDCG@10 offline but loses 3% prequentially where plays' completion follows the stars
    feedback_rating: float = 0.0
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

    @field_validator("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file",
                     "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("stack_sasl_password")
    @classmethod
    def _jaas_safe(cls, value: SecretStr) -> SecretStr:
        if not re.fullmatch(r'[^\s"\\,\[\]=]+', value.get_secret_value()):
            raise ValueError("no spaces, quotes, backslashes, commas, brackets or '=' (it goes "
                             "into a JAAS config and a SCRAM credential spec)")
        return value

    @model_validator(mode="after")
    def _decay_covers_the_years_ahead(self) -> Settings:
        """Forward decay saturates ``MAX_DECAY_EXPONENT`` half-lives after the epoch
        (`models.cooccurrence.decay_factor`): events past that would all weigh the same. Refuse,
        at start, an epoch and half-life whose range ends within ``DECAY_MARGIN_YEARS``."""
        horizon = decay_horizon(half_life_s=self.half_life_days * DAY_S, epoch=self.decay_epoch)
        needed = time.time() + DECAY_MARGIN_YEARS * 365.25 * DAY_S
        if horizon < needed:
            p = ENV_PREFIX
            raise ValueError(
                f"{p}DECAY_EPOCH={self.decay_epoch:.0f} with {p}HALF_LIFE_DAYS="
                f"{self.half_life_days:g} weighs events only up to "
                f"{time.strftime('%Y-%m-%d', time.gmtime(horizon))} (the decay saturates "
                f"{MAX_DECAY_EXPONENT:.0f} half-lives after the epoch); set {p}DECAY_EPOCH "
                f"to a recent time or a longer {p}HALF_LIFE_DAYS")
        return self

    @model_validator(mode="after")
    def _factors_fit_in_an_artefact(self) -> Settings:
        """The item factors travel in the ranker artefact: their float32 vectors may take at
        most three quarters of ``ranker_max_artefact_bytes`` (the rest: the MLP and the ids)."""
        p = ENV_PREFIX
        size = self.ranker_factor_items * self.ranker_factors * 4
        if size > self.ranker_max_artefact_bytes * 3 // 4:
            raise ValueError(
                f"{p}RANKER_FACTOR_ITEMS={self.ranker_factor_items} x {p}RANKER_FACTORS="
                f"{self.ranker_factors} float32 vectors take {size} bytes, over three quarters "
                f"of {p}RANKER_MAX_ARTEFACT_BYTES={self.ranker_max_artefact_bytes}: lower one "
                f"or raise the limit")
        return self

    @model_validator(mode="after")
    def _recs_outlive_the_settle_window(self) -> Settings:
        p = ENV_PREFIX
        if 0 < self.recs_ttl_s < self.settle_window_s:
            raise ValueError(
                f"{p}RECS_TTL_S={self.recs_ttl_s:g} is shorter than {p}SETTLE_WINDOW_S="
                f"{self.settle_window_s:g}: the lists of users the settle pass still re-ranks "
                f"would expire; set {p}RECS_TTL_S to 0 (never) or at least the window")
        return self

    @model_validator(mode="after")
    def _security_is_complete(self) -> Settings:
        """Security settings that only make sense together: fail at start, naming them."""
        p = ENV_PREFIX
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            for name in ("kafka_username", "kafka_password"):
                if not getattr(self, name):
                    raise ValueError(f"{p}{name.upper()} is required when "
                                     f"{p}KAFKA_SECURITY_PROTOCOL is {protocol}")
        if "SSL" not in protocol:
            for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{p}{name.upper()} is set but {p}KAFKA_SECURITY_PROTOCOL "
                                     f"is {protocol} (SSL or SASL_SSL use it)")
        if not self.redis_url.startswith("rediss://"):
            for name in ("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{p}{name.upper()} is set but {p}REDIS_URL is not a "
                                     "rediss:// URL")
        for cert, key in (("redis_tls_cert_file", "redis_tls_key_file"),
                          ("kafka_ssl_certfile", "kafka_ssl_keyfile")):
            if (getattr(self, cert) is None) != (getattr(self, key) is None):
                raise ValueError(f"set both {p}{cert.upper()} and {p}{key.upper()}, or neither")
        if self.redis_password is not None and self.redis_username is None:
            raise ValueError(f"{p}REDIS_PASSWORD needs {p}REDIS_USERNAME (\"default\" for "
                             "requirepass)")
        return self

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
            field = ".".join(str(part) for part in err["loc"])
            if not field:  # a rule across settings: its message names them
                problems.append(f"invalid settings: {err['msg'].removeprefix('Value error, ')}")
                continue
            value = err.get("input")
            if "password" in field:  # never echo a secret
                value = "**********"
            problems.append(
                f"invalid setting {ENV_PREFIX}{field.upper()}: {err['msg']} (got {value!r})"
            )
        raise SettingsError("; ".join(problems)) from None


@functools.cache
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()

"""The interactions consumer: events in, features in Redis, scores out — exactly-once effects.

The path of one batch of one partition, top to bottom (:meth:`InteractionsConsumer.process_poll`
takes every partition of a poll through each step together: one Redis round trip and one
Kafka flush per step; while Redis applies a poll, the one before is scored and the one
before that finished, so Redis is not left waiting for the next poll — unless the poll
was not full: a consumer that has caught up scores it at once):

1. decode + validate every record; a bad one goes to the dead-letter topic (flushed
   before anything else, so it is never lost);
2. one Lua call applies the valid events to the Redis features together with the
   partition's watermark — a replayed offset changes nothing and returns its stored
   point-in-time snapshot; events older than the partition's event-time watermark
   allows come back as too late and become dead letters as well;
3. each exposure is scored by the champion from its snapshot; scores go to the scores
   topic (flushed), then to Redis with the scored watermark, in one Lua call;
4. labeled examples the join put in the partition's Redis outbox (same atomic step as
   the features) are published to the examples topic, many to a message
   (:mod:`learnloop.examples`), then trimmed from the outbox;
5. Kafka's committed offset is advanced as a lag hint only: on assignment the consumer
   seeks to the Redis watermark, so a crash at any point replays without double effects.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import redis
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from prometheus_client import CollectorRegistry
from redis.exceptions import NoScriptError

from learnloop import examples
from learnloop.checkpoints import CheckpointStore, checkpoint_store
from learnloop.connect import consumer_options, kafka_security
from learnloop.crashpoints import crash_point
from learnloop.deadletters import dead_letter
from learnloop.events import Event, EventDecoder, Rejection
from learnloop.features import BatchResult, FeatureStore, outbox_key
from learnloop.featurize import Featurizer
from learnloop.metrics import InteractionsMetrics, ServingMetrics
from learnloop.outbox import Outbox
from learnloop.partitioner import KeyHashPartitioner
from learnloop.scoring import Scorer, ScoreWriter, score_message, scored_watermark_key
from learnloop.serving import ChampionLoader
from learnloop.settings import Settings

log = logging.getLogger("learnloop.interactions")
NAME = "interactions"
#: How many batches past a seek back are dropped as fetched before it (see ``stale``).
STALE_TRIES = 3
#: Every step flushes what it sent, so batches never wait for linger_ms: a long linger
#: and large batches only spare kafka-python a new batch (and a sender wakeup) per few
#: messages.
LINGER_MS = 100
BATCH_BYTES = 1024 * 1024
#: Records per Lua call: Redis applies one chunk while Python scores the one before.
APPLY_CHUNK = 250


class InteractionsConsumer:
    """One member of the interactions consumer group."""

    def __init__(
        self, settings: Settings, client: redis.Redis, registry: CollectorRegistry
    ) -> None:
        self.settings = settings
        self.redis = client
        self.metrics = InteractionsMetrics(registry)
        self.decoder = EventDecoder.from_settings(settings)
        self.features = FeatureStore(client, settings)
        self.featurize = Featurizer.from_settings(settings, self.metrics.clipped)
        self._feature_ages = [  # (the snapshot's last|{type} fields, histogram) per entity
            (tuple(f"{prefix}.last|{kind}" for kind in settings.event_types),
             self.metrics.feature_age.labels(entity))
            for prefix, entity in (("u", "user"), ("i", "item"))]
        self.serving_metrics = ServingMetrics(registry)
        self.champion = ChampionLoader(client, settings, _checkpoints_or_none(settings, client,
                                                                          self.serving_metrics))
        self.scorer = self._scorer()
        self.score_writer = ScoreWriter(client, settings)
        self.outbox = Outbox(client)
        for script in (self.features.script, self.score_writer.script, self.outbox.script):
            client.script_load(script.script)  # pipelines call them by SHA
        self.next_reload = time.monotonic() + settings.model_reload_s
        self.applied: dict[TopicPartition, int] = {}
        self.sought: dict[TopicPartition, tuple[int, int]] = {}  # last seek: (offset, drops)
        self.newest_event_ts: dict[TopicPartition, float] = {}
        self.consumer = KafkaConsumer(**consumer_options(settings, settings.consumer_group, NAME))
        self._applier = ThreadPoolExecutor(1, thread_name_prefix="learnloop-apply")
        self._tailer = ThreadPoolExecutor(1, thread_name_prefix="learnloop-tail")
        self._submitted: _Poll | None = None  # sent to Redis, not scored yet
        self._unfinished: list[_Chunk] = []  # applied and scored; tail not started
        self._tail: _Tail | None = None  # a poll's tail on the tail thread
        self.producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=LINGER_MS,
            batch_size=BATCH_BYTES, partitioner=KeyHashPartitioner(),
            client_id=f"learnloop-{NAME}", **kafka_security(settings),
        )

    # -- the loop ---------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll and process until ``stop`` is set, then leave the group cleanly."""
        self.subscribe()
        try:
            while not stop.is_set():
                self.poll_once()
        finally:
            self.close()

    def subscribe(self) -> None:
        """Join the group; partitions resume from their Redis watermarks when assigned."""
        self.consumer.subscribe(
            [self.settings.topic_interactions], listener=_ResumeFromRedis(self)
        )

    def poll_once(self) -> int:
        """One poll, processed; returns the number of records it held. While a poll is
        in flight the next poll does not wait: an empty one finishes everything. A poll
        that was not full (the consumer has caught up) is scored at once, its tail
        started: holding it for the next poll would only add that poll's time to its
        latency."""
        busy = self._submitted or self._unfinished or self._tail
        batch = self.consumer.poll(timeout_ms=0 if busy else self.settings.poll_timeout_ms,
                                   max_records=self.settings.max_poll_records)
        held = sum(len(records) for records in batch.values())
        if batch:
            self.process_poll(batch)
            if held < self.settings.max_poll_records:
                self.hurry()
        else:
            self.drain()
        self._update_lag()
        self._reload_champion()
        return held

    def process_poll(self, batch: dict[TopicPartition, list]) -> None:
        """Send one poll to Redis, then score the poll sent before it; a poll's tail
        (:meth:`finish`) runs when the next one is scored, or at once if the next poll
        is empty (:meth:`drain`).

        The poll is cut into chunks of ``APPLY_CHUNK`` records, each one atomic Lua call
        that a worker thread sends in order while this thread scores the chunks already
        applied and the tail thread finishes the poll before — so Redis and Python work
        at the same time, and Redis has this poll's chunks queued while the previous
        poll's last chunk is scored and the next poll fetched. Every step keeps its order
        per partition: dead letters flushed before the apply, scores flushed before the
        scored watermark moves, examples sent before the outbox is trimmed; a poll's
        apply may start before the previous polls are scored and finished, which moves
        nothing they rely on (a replayed offset returns its stored snapshot, the outbox
        is trimmed by source)."""
        with self.metrics.batch_seconds.time():
            submitted, self._submitted = self._submitted, self._send(batch)
            if submitted is not None:
                self._score_poll(submitted)

    def hurry(self) -> None:
        """Score the poll sent to Redis now and start its tail on the tail thread."""
        self._score_submitted()
        self._start_tail()

    def drain(self) -> None:
        """Finish everything in flight: the poll sent to Redis scored, then :meth:`finish`."""
        self._score_submitted()
        self.finish()

    def _score_submitted(self) -> None:
        """Score the poll sent to Redis and not scored yet, if there is one."""
        submitted, self._submitted = self._submitted, None
        if submitted is not None:
            self._score_poll(submitted)

    def _send(self, batch: dict[TopicPartition, list]) -> _Poll | None:
        """Decode a poll and send it to Redis (None if nothing in it is to be applied)."""
        chunks = [chunk for tp, records in batch.items() for chunk in self._decode(tp, records)]
        if not chunks:
            return None
        # 1. Dead letters first, flushed: a crash after this re-sends, never loses.
        if self._send_rejections(chunks):
            self.producer.flush()
        # 2. Features and watermarks, one atomic Lua call per chunk, on the worker.
        return _Poll(chunks, self._submit(chunks))

    def _score_poll(self, submitted: _Poll) -> None:
        """3. Score a poll sent to Redis, chunk by chunk as applied, while the tail thread
        finishes the poll scored before it. On an error the poll sent after it is dropped
        too: finishing that one would move the scored watermark past this one's scores."""
        try:
            self._start_tail()
            self._unfinished = self._collect_and_score(submitted.chunks, submitted.futures)
        except BaseException:
            self._submitted = None
            raise
        crash_point("interactions.applied")

    def finish(self, commit: bool = True) -> None:
        """Finish every poll scored, here and now: the tail in flight, then the last
        poll's (see :meth:`_finish_tail`); offsets committed unless ``commit`` is False
        (a rebalance callback: kafka-python runs those on its IO thread while ``poll``
        or ``close`` blocks the main thread, and a commit there cannot block on that IO
        thread; the Redis watermarks decide where a partition resumes anyway). A poll
        sent to Redis and not scored stays in flight (see :meth:`drain`, :meth:`resume`)."""
        offsets = self._end_tail()
        chunks, self._unfinished = self._unfinished, []
        if chunks:
            self._finish_tail(chunks)
            offsets |= _offsets(chunks)
        if commit and offsets:
            self._commit(offsets)

    def _start_tail(self) -> None:
        """Hand the last poll's tail to the tail thread, once the one before is done and
        committed: at most one tail is in flight, so tails keep their order."""
        offsets = self._end_tail()
        if offsets:
            self._commit(offsets)
        chunks, self._unfinished = self._unfinished, []
        if chunks:
            self._tail = _Tail(self._tailer.submit(self._finish_tail, chunks), _offsets(chunks))

    def _end_tail(self) -> dict[TopicPartition, OffsetAndMetadata]:
        """Wait for the tail in flight; its offsets to commit. Its error is raised here,
        and the poll scored after it is dropped unfinished: finishing it would move the
        scored watermark past the failed tail's scores (a restart replays both; the poll
        sent after that is dropped by :meth:`_score_poll`, where the error surfaces)."""
        tail, self._tail = self._tail, None
        if tail is None:
            return {}
        try:
            tail.future.result()
        except BaseException:
            self._unfinished = []
            raise
        return tail.offsets

    def _finish_tail(self, chunks: list[_Chunk]) -> None:
        """A poll's tail: its scores flushed to the topic then written to Redis (once the
        scored watermark moves they are never re-sent), 4. the examples its join made
        published. Runs on the tail thread, or on the main thread from :meth:`finish`."""
        self.producer.flush()
        partitions = list(dict.fromkeys(chunk.tp for chunk in chunks))

        def write_scores_read_outboxes(pipe) -> None:
            for chunk in chunks:
                self.score_writer.queue(pipe, chunk.tp.topic, chunk.tp.partition, chunk.scores,
                                        chunk.records[-1].offset)
            for tp in partitions:
                pipe.lrange(outbox_key(tp.topic, tp.partition), 0, -1)

        outboxes = self._run(write_scores_read_outboxes)[len(chunks):]
        crash_point("interactions.scored")
        self._publish_examples(list(zip(partitions, outboxes, strict=True)))
        crash_point("interactions.before_commit")

    def _commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """Advance Kafka's committed offsets: a lag hint, so a failure is only counted."""
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed (Redis watermark is authoritative): %s", exc)

    def _run(self, build) -> list:
        """A pipeline that ``build`` fills, executed (one round trip). Scripts are called
        by SHA: if Redis forgot them (restarted), they are loaded and the pipeline runs
        again — every step in it is idempotent."""
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            build(pipe)
            replies = pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in replies):
                for script in (self.score_writer.script, self.outbox.script):
                    self.redis.script_load(script.script)
                continue
            failed = next((r for r in replies if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
            return replies
        raise AssertionError("unreachable")

    def _decode(self, tp: TopicPartition, records: list) -> list[_Chunk]:
        """One partition's records, decoded, in chunks (none: fetched before a seek)."""
        if self.stale(tp, records):
            return []
        now = time.time()
        known_applied = self.applied.get(tp)
        if known_applied is None:  # not assigned through resume(): ask Redis
            stored = self.features.applied_offset(tp.topic, tp.partition)
            known_applied = self.applied[tp] = -1 if stored is None else stored
        decode = self.decoder.decode
        decoded = [(record, decode(record.value, now)) for record in records]
        return [_Chunk(tp, records[n:n + APPLY_CHUNK], known_applied,
                       decoded[n:n + APPLY_CHUNK])
                for n in range(0, len(records), APPLY_CHUNK)]

    def _send_rejections(self, chunks: list[_Chunk]) -> bool:
        """Queue the dead letters of records not applied before; True if any was invalid."""
        any_rejected = False
        for chunk in chunks:
            chunk.rejected = [(r, d) for r, d in chunk.decoded if isinstance(d, Rejection)]
            for record, rejection in chunk.rejected:
                any_rejected = True
                if record.offset > chunk.known_applied:
                    self.send_dead_letter(record, rejection)
        return any_rejected

    def _submit(self, chunks: list[_Chunk]) -> list[Future]:
        """Queue each chunk's Lua call (and a read of its scored watermark) on the worker
        thread, which only sends them in order and waits for the replies."""
        futures = []
        for chunk in chunks:
            pipe = self.redis.pipeline(transaction=False)
            self.features.queue(pipe, chunk.tp.topic, chunk.tp.partition, chunk.items(),
                                chunk.known_applied)
            pipe.get(scored_watermark_key(chunk.tp.topic, chunk.tp.partition))
            futures.append(self._applier.submit(pipe.execute, raise_on_error=False))
        return futures

    def _collect_and_score(self, chunks: list[_Chunk], futures: list[Future]) -> list[_Chunk]:
        """Score each chunk as soon as it is applied. A partition Redis is behind (GAP)
        seeks back and drops out."""
        behind: set[TopicPartition] = set()
        try:
            for chunk, future in zip(chunks, futures, strict=True):
                reply, scored = future.result()  # errors as they came ("GAP n")
                failed = next((r for r in (reply, scored) if isinstance(r, Exception)), None)
                if isinstance(failed, NoScriptError):  # Redis restarted: it may lag too
                    self.redis.script_load(self.features.script.script)
                    failed = redis.ResponseError("GAP (Redis forgot the scripts)")
                if failed is not None:
                    if not str(failed).startswith("GAP"):
                        raise failed
                    if chunk.tp not in behind:
                        log.warning("partition %s: Redis is behind this batch (%s); seeking "
                                    "back", chunk.tp.partition, failed)
                        self.metrics.redis_regressions.inc()
                        behind.add(chunk.tp)
                    continue
                if chunk.tp not in behind:
                    chunk.result = self.features.parse(reply, chunk.items())
                    chunk.scored = int(scored or -1)
                    self._score(chunk)
                    self._done(chunk)
        finally:
            wait(futures)
        if behind:
            self.resume(sorted(behind, key=lambda tp: tp.partition), rewind=True)
        return [chunk for chunk in chunks if chunk.tp not in behind]

    def _score(self, part: _Chunk) -> None:
        """Count the partition's outcomes; queue its late dead letters and its scores.

        Records at or below the scored watermark had their scores and late dead letters
        sent already (a redelivery, or a member that lost the partition): not again."""
        result, scored, metrics = part.result, part.scored, self.metrics
        previous = result.previous_watermark
        for record, rejection in part.rejected:
            if record.offset > previous:
                metrics.rejected.labels(rejection.reason).inc()
        fresh = sum(1 for r, d in part.decoded if isinstance(d, Event) and r.offset > previous)
        duplicates = sum(1 for o in result.outcomes if o.status == "dup")
        metrics.duplicates.inc(duplicates)
        metrics.replayed.inc(sum(1 for r, _ in part.decoded if r.offset <= previous))
        by_offset = {record.offset: (record, d) for record, d in part.decoded}
        # Too late to apply: dead letters too, flushed with the scores (before the scored
        # watermark moves), so a replay reports them again and never loses one.
        late = [o for o in result.outcomes if o.rejection is not None]
        for outcome in late:
            if outcome.offset > scored:
                self.send_dead_letter(by_offset[outcome.offset][0], outcome.rejection)
            if outcome.offset > previous:
                metrics.rejected.labels(outcome.rejection.reason).inc()
        metrics.events.inc(fresh - duplicates - sum(1 for o in late if o.offset > previous))
        source = f"{part.tp.topic}/{part.tp.partition}/"
        send, topic = self.producer.send, self.settings.topic_scores
        for outcome in result.outcomes:
            if outcome.status.startswith("unattributed:"):
                _, objective, reason = outcome.status.split(":")
                metrics.unattributed.labels(objective, reason).inc()
            if outcome.snapshot is None or outcome.offset <= scored:
                continue
            record, event = by_offset[outcome.offset]
            x = self.featurize(outcome.snapshot, event.ts, event.context)
            self._observe_feature_age(outcome.snapshot, event.ts)
            score = self.scorer.score(event, x, f"{source}{record.offset}")
            if not math.isfinite(score.score):
                metrics.nonfinite.labels(score.model).inc()
                continue
            part.scores.append((record.offset, score))
            send(topic, key=event.user_id.encode(), value=score_message(score))
        if part.scores:
            metrics.scores.labels(self.scorer.model.name).inc(len(part.scores))

    def _done(self, part: _Chunk) -> None:
        """The chunk is applied and scored: remember how far its partition got."""
        tp = part.tp
        self.applied[tp] = max(part.result.previous_watermark, part.records[-1].offset)
        newest = max((d.ts for _, d in part.decoded if isinstance(d, Event)), default=None)
        if newest is not None:
            self.newest_event_ts[tp] = max(newest, self.newest_event_ts.get(tp, newest))

    def send_dead_letter(self, record, rejection: Rejection) -> None:
        """Queue one dead letter: the record's bytes, origin and why it was rejected."""
        self.producer.send(self.settings.topic_dead_letters, key=record.key,
                           value=dead_letter(record, rejection, NAME))

    def publish_examples(self, partitions: list[TopicPartition]) -> None:
        """Move the partitions' outboxes to the examples topic (same partition number)."""
        def read_outboxes(pipe) -> None:
            for tp in partitions:
                pipe.lrange(outbox_key(tp.topic, tp.partition), 0, -1)

        self._publish_examples(list(zip(partitions, self._run(read_outboxes), strict=True)))

    def _publish_examples(self, outboxes: list[tuple[TopicPartition, list[bytes]]]) -> None:
        """Send the examples read from the outboxes, then trim what was sent.

        A crash between the send and the trim re-sends; the learner drops examples
        whose source (partition, offset, seq) it has already learned.
        """
        pending = [(tp, entries) for tp, entries in outboxes if entries]
        if not pending:
            return
        send, topic = self.producer.send, self.settings.topic_examples
        positives = total = 0
        for tp, entries in pending:
            for message in examples.pack(entries):
                send(topic, partition=tp.partition, value=message)
            positives += sum(map(examples.is_positive, entries))
            total += len(entries)
        self.metrics.examples.labels("positive").inc(positives)
        self.metrics.examples.labels("negative").inc(total - positives)
        self.producer.flush()
        crash_point("interactions.examples_sent")

        def trim(pipe) -> None:
            for tp, entries in pending:
                self.outbox.queue_trim(pipe, tp.topic, tp.partition, entries[-1])

        self._run(trim)

    # -- bookkeeping ------------------------------------------------------------------

    def _scorer(self) -> Scorer:
        served = self.champion.served
        return Scorer(served.model, str(served.version))

    def _reload_champion(self) -> None:
        """Hot swap: every ``model_reload_s``, serve a promoted model or a newer version."""
        now = time.monotonic()
        if now >= self.next_reload:
            self.next_reload = now + self.settings.model_reload_s
            previous = self.champion.served.name
            if self.champion.refresh():
                self.scorer = self._scorer()
                if self.champion.served.name != previous:
                    self.serving_metrics.forget(previous)
        served = self.champion.served
        self.serving_metrics.version.labels(served.name).set(served.version)
        if served.published_at is not None:
            self.serving_metrics.age.labels(served.name).set(time.time() - served.published_at)

    def resume(self, partitions: list[TopicPartition], rewind: bool = False) -> None:
        """Seek each partition to just after its Redis scored watermark (when newly
        assigned, or — ``rewind`` — when Redis turned out to be behind a batch, while
        scoring: the poll sent after it stays in flight, its chunks of these partitions
        refused or replayed like any redelivery)."""
        if not rewind:  # assigned (a rebalance callback): see forget
            self._submitted = None
        self.finish(commit=False)  # the last poll's tail first: it moves the watermarks
        for tp in partitions:
            scored = self.redis.get(scored_watermark_key(tp.topic, tp.partition))
            applied = self.features.applied_offset(tp.topic, tp.partition)
            self.applied[tp] = -1 if applied is None else applied
            if rewind and (scored is None or applied is None or applied < int(scored)):
                # Redis lost writes: from what both watermarks still cover (outside a
                # rebalance callback, so the broker can be asked where the log begins)
                self.seek(tp, self.consumer.beginning_offsets([tp])[tp] if applied is None
                          else applied + 1)
            elif scored is not None:
                self.seek(tp, int(scored) + 1)
            else:
                self.consumer.seek_to_beginning(tp)
            self.publish_examples([tp])
            log.info("partition %s resumes after offset %s", tp.partition, scored)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.consumer.seek(tp, offset)
        self.sought[tp] = (offset, 0)

    def stale(self, tp: TopicPartition, records: list) -> bool:
        """True for records fetched before a seek back: the first batches after a seek
        that start past it (kafka-python can still hand out a fetch buffered before the
        seek). A few tries only: a compacted topic legitimately has gaps."""
        sought = self.sought.get(tp)
        if sought is None:
            return False
        offset, tries = sought
        if records[0].offset <= offset or tries >= STALE_TRIES:
            del self.sought[tp]
            return False
        log.info("partition %s: dropping %d records fetched before a seek to %d",
                 tp.partition, len(records), offset)
        self.sought[tp] = (offset, tries + 1)
        self.consumer.seek(tp, offset)
        return True

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop state of partitions this member no longer owns (and their lag gauges),
        after finishing the polls scored while they are still ours. A poll sent to Redis
        and not scored is dropped, not scored here (a rebalance callback runs on
        kafka-python's IO thread, which scoring could need): its partitions resume after
        their scored watermarks, wherever they go, so it is replayed — its snapshots as
        stored — never lost."""
        self._submitted = None
        self.finish(commit=False)
        for tp in partitions:
            self.applied.pop(tp, None)
            self.sought.pop(tp, None)
            self.newest_event_ts.pop(tp, None)
            for gauge in (self.metrics.lag_offsets, self.metrics.lag_seconds):
                try:
                    gauge.remove(tp.topic, str(tp.partition))
                except KeyError:
                    pass

    def _observe_feature_age(self, snapshot: dict[str, float], ts: float) -> None:
        """How old the user's and the item's newest feature was when the exposure came."""
        get = snapshot.get
        for fields, histogram in self._feature_ages:
            newest = max(map(get, fields, itertools.repeat(-math.inf)))  # no Python loop
            if newest != -math.inf:
                histogram.observe(max(ts - newest, 0.0))

    def _update_lag(self) -> None:
        now = time.time()
        if self.newest_event_ts:
            self.metrics.topic_event_age.labels(self.settings.topic_interactions).set(
                now - max(self.newest_event_ts.values()))
        for tp in self.consumer.assignment():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                position = self.consumer.position(tp, timeout_ms=0) or 0
                self.metrics.lag_offsets.labels(tp.topic, str(tp.partition)).set(
                    max(highwater - position, 0)
                )
            newest = self.newest_event_ts.get(tp)
            if newest is not None:
                self.metrics.lag_seconds.labels(tp.topic, str(tp.partition)).set(now - newest)

    def close(self) -> None:
        """Finish what is in flight, flush what is pending and leave the consumer group."""
        try:
            self.drain()
            self.producer.flush(timeout=10)
        finally:
            self._applier.shutdown()
            self._tailer.shutdown()
            self.producer.close(timeout=5)
            self.consumer.close(autocommit=False)


def _checkpoints_or_none(settings: Settings, client: redis.Redis,
                         metrics: ServingMetrics) -> CheckpointStore | None:
    if settings.checkpoint_key is None:
        log.warning("no LEARNLOOP_CHECKPOINT_KEY: serving fresh models, no hot swap")
        return None
    return checkpoint_store(settings, client, lambda _v, _why: metrics.refused.inc())


class _ResumeFromRedis(ConsumerRebalanceListener):
    """Rebalance hook: Redis watermarks, not Kafka commits, decide where to resume."""

    def __init__(self, owner: InteractionsConsumer) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked):
        self.owner.forget(list(revoked))

    def on_partitions_assigned(self, assigned):
        self.owner.resume(list(assigned))


def _offsets(chunks: list[_Chunk]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets to commit once ``chunks`` are finished: each partition's next record."""
    return {chunk.tp: OffsetAndMetadata(chunk.records[-1].offset + 1, "", -1)
            for chunk in chunks}


@dataclass(slots=True)
class _Poll:
    """A poll's chunks sent to Redis (their Lua calls' futures) and not scored yet."""

    chunks: list[_Chunk]
    futures: list[Future]


@dataclass(slots=True)
class _Tail:
    """A poll's tail in flight on the tail thread, and the offsets it lets us commit."""

    future: Future
    offsets: dict[TopicPartition, OffsetAndMetadata]


@dataclass(slots=True)
class _Chunk:
    """Up to ``APPLY_CHUNK`` records of one partition in a poll, through the steps."""

    tp: TopicPartition
    records: list
    known_applied: int
    decoded: list[tuple[object, Event | Rejection]]
    rejected: list = field(default_factory=list)
    result: BatchResult | None = None
    scored: int = -1  # the partition's scored watermark before this poll
    scores: list = field(default_factory=list)

    def items(self) -> list[tuple[int, Event | Rejection]]:
        """(offset, event or rejection) pairs, as the feature store takes them."""
        return [(record.offset, d) for record, d in self.decoded]

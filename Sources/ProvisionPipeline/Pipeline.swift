import Foundation
import Logging
import ProvisionFailpoints
import ProvisionLog
import ProvisionModel
import Synchronization

/// What a running pipeline reports after each batch and when it catches up.
public struct PipelineProgress: Sendable, Equatable {
    public var checkpoint: Checkpoint
    /// Per partition, the log end offset when last looked at.
    public var endOffsets: [Int: Int64]
    /// True once every partition has reached the end offset captured when the pipeline
    /// started: the backfill is done and the product is live.
    public var caughtUp: Bool
    /// Records retention removed before this run read them, skipped because the product was
    /// told to accept the loss.
    public var recordsLost: Int64 = 0

    public var lag: Int64 {
        endOffsets.reduce(0) { $0 + max(0, $1.value - (checkpoint.offsets[$1.key] ?? 0)) }
    }
}

/// Told of each batch a pipeline wrote, for metrics.
public struct PipelineObserver: Sendable {
    /// How long the sink took to write a batch and commit its checkpoint.
    public var sinkWrote: @Sendable (Duration) -> Void

    public init(sinkWrote: @escaping @Sendable (Duration) -> Void) {
        self.sinkWrote = sinkWrote
    }

    public static let none = PipelineObserver { _ in }
}

/// Asks a pipeline to stop after the batch in flight: the batch is written and its
/// checkpoint committed, requests to the destination finish. Cancelling the task instead
/// abandons the batch (it is read again on restart), and aborts its requests.
public final class StopRequest: Sendable {
    private let requested = Atomic<Bool>(false)

    public init() {}

    public func request() { requested.store(true, ordering: .relaxed) }

    public var isRequested: Bool { requested.load(ordering: .relaxed) }
}

/// Retention removed records a product had not read: it stops rather than skip them
/// silently, until told to accept the loss (or rebuilt).
public struct RecordsLostToRetention: Error, Sendable, CustomStringConvertible {
    public var product: String
    public var partition: TopicPartition
    /// The product's position, and where the log now starts.
    public var position: Int64
    public var logStart: Int64

    public var count: Int64 { logStart - position }

    public var description: String {
        "retention removed \(count) records of \(partition.topic) partition \(partition.partition) (offsets \(position) to \(logStart - 1)) "
            + "before this product read them; 'provisionctl resume product \(product) --accept-loss' continues from offset \(logStart), or rebuild it"
    }
}

/// Reads a product's source from the backfill start and never stops: backfill and live are
/// one reader, so there is no hand-off, no gap and no duplicate window.
///
/// Each batch is read, processed and written with its checkpoint before the next is read;
/// cancellation is honoured between batches, so a shutdown drains the batch in flight.
public struct Pipeline: Sendable {
    public struct Limits: Sendable {
        public var batchRecordsMax: Int
        public var batchBytesMax: Int
        /// How long to wait for new records before reporting progress again.
        public var idleWait: Duration
        /// How many tasks process one large batch side by side.
        public var processingConcurrency: Int

        public init(batchRecordsMax: Int = 65_536, batchBytesMax: Int = 16 * 1024 * 1024, idleWait: Duration = .seconds(1),
                    processingConcurrency: Int = ProcessInfo.processInfo.activeProcessorCount)
        {
            self.batchRecordsMax = batchRecordsMax
            self.batchBytesMax = batchBytesMax
            self.idleWait = idleWait
            self.processingConcurrency = max(1, processingConcurrency)
        }
    }

    let processor: RecordProcessor
    let log: any EventLog
    let sink: any Sink
    let limits: Limits
    let logger: Logger
    let clock: @Sendable () -> TimestampMilliseconds
    let report: @Sendable (PipelineProgress) async -> Void
    /// Moves past records retention removed instead of stopping (once, by request).
    let acceptsLoss: Bool
    /// Checked between batches: set, the pipeline returns once the batch in flight is committed.
    public let stop: StopRequest
    let observer: PipelineObserver

    public init(processor: RecordProcessor, log: any EventLog, sink: any Sink, limits: Limits = .init(), logger: Logger,
                clock: @escaping @Sendable () -> TimestampMilliseconds, acceptsLoss: Bool = false, stop: StopRequest = StopRequest(),
                observer: PipelineObserver = .none, report: @escaping @Sendable (PipelineProgress) async -> Void)
    {
        self.acceptsLoss = acceptsLoss
        self.stop = stop
        self.observer = observer
        self.processor = processor
        self.log = log
        self.sink = sink
        self.limits = limits
        self.logger = logger
        self.clock = clock
        self.report = report
    }

    var product: String { processor.plan.product.name }
    var sourceTopic: String { processor.plan.dataset.spec.topic }

    /// A batch read and processed, waiting to be written.
    struct ProcessedBatch: Sendable {
        var outputs: [OutputRecord]
        var deadLetters: [LogRecord]
        /// Source partition → the next offset to read once these outputs are written: one
        /// partition for a plain batch, every partition for a windowed join's.
        var positions: [Int: Int64]
        /// How far the joined inputs were read for these outputs.
        var joinPosition: JoinPosition?
        /// The source record at a partition and offset, for the dead letter of one the sink refuses.
        var sourceRecord: @Sendable (_ partition: Int, _ offset: Int64) -> StoredRecord?
    }

    /// Runs until cancelled. Throws when the sink or the log fails; the caller retries with
    /// backoff, and the next run resumes from the committed checkpoint.
    ///
    /// For a sink that waits on a server, the next batch is read and processed while the sink
    /// writes the current one, so the server and the processing cores work side by side;
    /// writes and their checkpoints stay strictly in order.
    public func run() async throws {
        try await log.createTopic(for: processor.plan.dataset.spec)
        let partitionCount = try await log.partitionCount(of: sourceTopic) ?? 1
        var checkpoint = try await sink.open() ?? Checkpoint(offsets: [:])
        var lostAndSkipped: Int64 = 0
        let sources = (0..<partitionCount).map { TopicPartition(topic: sourceTopic, partition: $0) }
        // Every partition's offsets in one query each (on Kafka, one request per leader).
        let logStarts = try await log.startOffsets(of: sources)
        for (partition, source) in sources.enumerated() {
            guard let position = checkpoint.offsets[partition] else {
                checkpoint.offsets[partition] = try await startOffset(source, logStart: logStarts[source]!)
                continue
            }
            if let lost = try await recordsLost(in: source, at: position, logStart: logStarts[source]!) {
                guard acceptsLoss else { throw lost }
                logger.warning("records lost to retention accepted", metadata: ["product": "\(product)", "lost": "\(lost.count)"])
                checkpoint.offsets[partition] = lost.logStart
                lostAndSkipped += lost.count
            }
        }
        var liveBoundary: [Int: Int64] = [:]
        for (source, end) in try await log.endOffsets(of: sources) { liveBoundary[source.partition] = end }
        logger.info("pipeline started", metadata: ["product": "\(product)", "sink": "\(sink.location)",
                                                   "from": "\(checkpoint.offsets)", "liveBoundary": "\(liveBoundary)"])
        // A backfill reads its partitions in turn; on Kafka each one's records are fetched
        // from here on, side by side, instead of when its turn comes.
        var backlog: [TopicPartition: Int64] = [:]
        for (partition, offset) in checkpoint.offsets where offset < liveBoundary[partition]! {
            backlog[TopicPartition(topic: sourceTopic, partition: partition)] = offset
        }
        await log.prepareReads(from: backlog)
        let joins = processor.plan.joins.isEmpty ? nil
            : try await JoinInputs.open(plan: processor.plan, log: log, startTime: processor.startTime,
                                        position: checkpoint.joins, sourcePartitions: partitionCount, clock: clock)
        if let joins, joins.resendsOnChange {
            try await rememberJoinedEvents(joins, until: checkpoint, partitionCount: partitionCount)
        }
        var caughtUp = liveBoundary.allSatisfy { checkpoint.offsets[$0.key]! >= $0.value }
        if caughtUp { try await sink.promote() }
        await report(PipelineProgress(checkpoint: checkpoint, endOffsets: liveBoundary, caughtUp: caughtUp, recordsLost: lostAndSkipped))
        defer { logger.info("pipeline stopped", metadata: ["product": "\(product)"]) }

        if let joins, let windowed = processor.plan.joins.firstIndex(where: \.spec.isWindowed) {
            try await runWindowed(join: windowed, tables: joins, checkpoint: checkpoint, caughtUp: caughtUp,
                                  liveBoundary: liveBoundary)
            await sink.close()
            return
        }

        var readPositions = checkpoint.offsets
        var endOffsets = liveBoundary
        var endOffsetsAsked = ContinuousClock.now
        var nextPartition = 0
        var prefetch: Task<ProcessedBatch?, Error>?
        defer { prefetch?.cancel() }
        while !Task.isCancelled && !stop.isRequested {
            let processed: ProcessedBatch?
            if let pending = prefetch {
                prefetch = nil
                processed = try await pending.value
            } else {
                processed = try await readAndProcess(from: readPositions, partitionCount: partitionCount, startingAt: nextPartition,
                                                     joins: joins)
            }
            if let processed {
                readPositions.merge(processed.positions) { _, read in read }
                // A plain batch is one partition's: the next read starts at the one after it.
                nextPartition = (processed.positions.keys.max()! + 1) % partitionCount
                // A table join's single-threaded matching takes as long as a file write:
                // overlap them (2.3 s instead of 3.1 s for 1M orders).
                if sink.readsAhead || joins != nil {
                    let positions = readPositions, partition = nextPartition
                    prefetch = Task {
                        try await readAndProcess(from: positions, partitionCount: partitionCount, startingAt: partition, joins: joins)
                    }
                }
                try await commit(processed, checkpoint: &checkpoint)
            }
            // The ends are for the lag reported: asked at most once a second while batches
            // flow (on Kafka each is a request to a partition's leader), and on every idle turn.
            if processed == nil || ContinuousClock.now - endOffsetsAsked >= .seconds(1) {
                for (source, end) in try await log.endOffsets(of: sources) { endOffsets[source.partition] = end }
                endOffsetsAsked = .now
            }
            if !caughtUp {
                caughtUp = liveBoundary.allSatisfy { checkpoint.offsets[$0.key]! >= $0.value }
                if caughtUp { try await sink.promote() }
            }
            await report(PipelineProgress(checkpoint: checkpoint, endOffsets: endOffsets, caughtUp: caughtUp))
            if processed == nil {
                // Caught up with the log: wait for an append to any partition (no polling), or
                // report again after idleWait.
                var positions: [TopicPartition: Int64] = [:]
                for (partition, offset) in readPositions { positions[TopicPartition(topic: sourceTopic, partition: partition)] = offset }
                try await log.waitForRecords(in: positions, timeout: limits.idleWait)
                if sink.linger > .zero, try await anyRecords(after: positions) {
                    // Records trickle in one by one when live: wait a little so they go
                    // out together rather than a request each.
                    try await Task.sleep(for: sink.linger)
                }
            }
        }
        await sink.close()
    }

    private func anyRecords(after positions: [TopicPartition: Int64]) async throws -> Bool {
        let ends = try await log.endOffsets(of: Array(positions.keys))
        return positions.contains { partition, offset in ends[partition]! > offset }
    }

    /// Reads the next batch from the first partition, in rotation, that has records, and
    /// processes it; nil when every partition is at its end.
    private func readAndProcess(from positions: [Int: Int64], partitionCount: Int, startingAt first: Int,
                                joins: JoinInputs?) async throws -> ProcessedBatch?
    {
        for step in 0..<partitionCount {
            let partition = (first + step) % partitionCount
            let source = TopicPartition(topic: sourceTopic, partition: partition)
            let position = positions[partition]!
            let batch = try await log.readBatch(source, from: position, maxRecords: limits.batchRecordsMax, maxBytes: limits.batchBytesMax)
            guard let last = batch.entries.last else { continue }
            // A gap: compaction's (Kafka), or retention removed records not yet read.
            if let first = batch.entries.first, first.offset > position, let lost = try await recordsLost(in: source, at: position) {
                throw lost
            }
            var outputs: [OutputRecord] = []
            var deadLetters: [LogRecord] = []
            var resent: [OutputRecord] = []
            if let joins {
                let joined = try await joinAndProcess(batch, partition: partition, joins: joins)
                outputs = joined.outputs
                deadLetters = joined.rejections.map { DeadLetters.record(for: batch.record(at: $0.index), from: source, reason: $0.reason) }
                if joins.resendsOnChange { resent = try await resendChanged(joins) }
            } else {
                let outcomes = await processInParallel(batch, partition: partition, now: clock())
                outputs.reserveCapacity(batch.count)
                for (index, outcome) in outcomes.enumerated() {
                    switch outcome {
                    case .output(let output): outputs.append(output)
                    case .skipped: continue
                    case .deadLetter(let reason):
                        deadLetters.append(DeadLetters.record(for: batch.record(at: index), from: source, reason: reason))
                    }
                }
            }
            // After the batch's own outputs: some of them may have joined a row before it changed.
            outputs.append(contentsOf: resent)
            return ProcessedBatch(outputs: outputs, deadLetters: deadLetters, positions: [partition: last.offset + 1],
                                  joinPosition: await joins?.position) { refusedPartition, offset in
                guard refusedPartition == partition, let index = batch.index(ofOffset: offset) else { return nil }
                return batch.record(at: index)
            }
        }
        return nil
    }

    /// A joined batch in three steps: the events' times and join values (in parallel), the
    /// matches (in order, reading the joined inputs as far as the events need), then filter
    /// and projection of the joined rows (in parallel). Dead letters come back in event order.
    private func joinAndProcess(_ batch: RecordBatch, partition: Int, joins: JoinInputs) async throws
        -> (outputs: [OutputRecord], rejections: [RecordProcessor.Rejection])
    {
        let processor = self.processor
        let probed = await inParallelChunks(count: batch.count) { range in processor.probe(batch, range: range, partition: partition) }
        var probes: [JoinProbe?] = []
        probes.reserveCapacity(batch.count)
        var rejections: [RecordProcessor.Rejection] = []
        for chunk in probed {
            probes.append(contentsOf: chunk.probes)
            rejections.append(contentsOf: chunk.rejections)
        }
        let rows = try await joins.match(probes, partition: partition)
        let now = clock()
        let allProbes = probes
        var processed = await inParallelChunks(count: rows.count) { range in
            processor.process(batch, probes: allProbes, rows: rows, range: range, partition: partition, now: now)
        }
        // The first chunk's outputs become the batch's, moved rather than copied.
        var outputs = processed.isEmpty ? [] : processed[0].outputs
        if !processed.isEmpty { processed[0].outputs = [] }
        for chunk in processed.indices.dropFirst() { outputs.append(contentsOf: processed[chunk].outputs) }
        for chunk in processed { rejections.append(contentsOf: chunk.rejections) }
        // The probe's and the rows' dead letters, each in order: merged into event order.
        if rejections.count > 1 { rejections.sort { $0.index < $1.index } }
        return (outputs, rejections)
    }

    /// `latest` joins: the earlier events that joined rows that have changed since, joined
    /// again with the rows as they are now. An event that fails now is left out: it was
    /// dead-lettered, or output, when it first came.
    private func resendChanged(_ joins: JoinInputs) async throws -> [OutputRecord] {
        let changed = await joins.takeChangedEvents()
        guard !changed.isEmpty else { return [] }
        var outputs: [OutputRecord] = []
        for position in changed {
            let source = TopicPartition(topic: sourceTopic, partition: position.partition)
            let batch = try await log.readBatch(source, from: position.offset, maxRecords: 1, maxBytes: 1)
            guard batch.entries.first?.offset == position.offset else { continue }
            guard let probe = processor.probe(batch, range: 0..<1, partition: position.partition).probes[0],
                  await joins.isNewest(position, recordKey: probe.recordKey)
            else { continue }
            let rows = await joins.rematch([probe])
            outputs += processor.process(batch, probes: [probe], rows: rows, range: 0..<rows.count, partition: position.partition,
                                         now: clock()).outputs
        }
        return outputs
    }

    /// `latest` joins remember which events joined each row; after a restart they learn it
    /// again from the events before the checkpoint.
    private func rememberJoinedEvents(_ joins: JoinInputs, until checkpoint: Checkpoint, partitionCount: Int) async throws {
        for partition in 0..<partitionCount {
            let source = TopicPartition(topic: sourceTopic, partition: partition)
            var position = try await startOffset(source)
            let end = checkpoint.offsets[partition] ?? position
            while position < end {
                let batch = try await log.readBatch(source, from: position, maxRecords: limits.batchRecordsMax, maxBytes: limits.batchBytesMax)
                guard let last = batch.entries.last else { break }
                let count = batch.entries.firstIndex { $0.offset >= end } ?? batch.count
                let processor = self.processor
                let probed = await inParallelChunks(count: count) { range in processor.probe(batch, range: range, partition: partition) }
                for chunk in probed { await joins.remember(chunk.probes) }
                position = last.offset + 1
            }
        }
    }

    /// Runs a pure function over chunks of `0..<count` on the cores; the chunks' results in order.
    func inParallelChunks<Chunk: Sendable>(count: Int, _ body: @escaping @Sendable (Range<Int>) -> Chunk) async
        -> [Chunk]
    {
        // Reading ahead, one core stays free for the sink's write of the batch before: on a
        // pool with one thread per core, processing on all of them would hold that write up.
        let cores = sink.readsAhead ? max(1, limits.processingConcurrency - 1) : limits.processingConcurrency
        let chunkCount = count < 4096 ? 1 : min(cores, count / 2048)
        guard chunkCount > 1 else { return [body(0..<count)] }
        let chunkSize = (count + chunkCount - 1) / chunkCount
        return await withTaskGroup(of: (Int, Chunk).self) { group in
            for chunk in 0..<chunkCount {
                let range = (chunk * chunkSize)..<min((chunk + 1) * chunkSize, count)
                group.addTask { (chunk, body(range)) }
            }
            var parts = [Chunk?](repeating: nil, count: chunkCount)
            for await (chunk, result) in group { parts[chunk] = result }
            return parts.map { $0! }
        }
    }

    /// Processing is pure, so a large batch is split across the cores and put back in order.
    private func processInParallel(_ batch: RecordBatch, partition: Int, now: TimestampMilliseconds) async
        -> [RecordProcessor.Outcome]
    {
        let processor = self.processor
        let chunks = await inParallelChunks(count: batch.count) { range in
            processor.process(batch, range: range, partition: partition, now: now)
        }
        return chunks.count == 1 ? chunks[0] : chunks.flatMap { $0 }
    }

    /// The records before the log's start that a reader at `position` has not read, if any.
    /// - Parameter known: the log's start, when the caller has asked for it already.
    private func recordsLost(in source: TopicPartition, at position: Int64, logStart known: Int64? = nil) async throws
        -> RecordsLostToRetention?
    {
        let logStart = if let known { known } else { try await log.startOffset(of: source) }
        guard position < logStart else { return nil }
        return RecordsLostToRetention(product: product, partition: source, position: position, logStart: logStart)
    }

    /// Where a product without a checkpoint starts reading: at its backfill's start time, or
    /// at the log's start (`logStart`, when the caller has asked for it already).
    func startOffset(_ source: TopicPartition, logStart known: Int64? = nil) async throws -> Int64 {
        if let startTime = processor.startTime {
            return try await log.offset(forTimestamp: startTime, in: source)
        }
        return if let known { known } else { try await log.startOffset(of: source) }
    }

    /// Writes a processed batch and its checkpoint; dead letters are durable first.
    func commit(_ processed: ProcessedBatch, checkpoint: inout Checkpoint) async throws {
        if !processed.deadLetters.isEmpty {
            // Dead letters are durable before the checkpoint passes them: none is lost, and a
            // replay after a crash may repeat some (at least once).
            try await appendDeadLetters(processed.deadLetters)
        }
        var next = checkpoint
        // The checkpoint has every source partition's position from the start of the run.
        var read: Int64 = 0
        for (partition, offset) in processed.positions {
            read += max(0, offset - (checkpoint.offsets[partition] ?? offset))
            next.offsets[partition] = offset
        }
        next.recordsRead = (checkpoint.recordsRead ?? 0) + read
        next.recordsWritten += Int64(processed.outputs.count)
        if let newest = processed.outputs.lazy.map(\.eventTime).max() {
            next.newestEventTime = max(checkpoint.newestEventTime ?? newest, newest)
        }
        next.deadLettered += Int64(processed.deadLetters.count)
        next.joins = processed.joinPosition ?? next.joins
        let sourceRecord = processed.sourceRecord, topic = sourceTopic
        let sinkBatch = SinkBatch(records: processed.outputs, checkpoint: next) { [self] rejections in
            try await appendDeadLetters(rejections.compactMap { rejection in
                sourceRecord(rejection.partition, rejection.offset).map {
                    DeadLetters.record(for: $0, from: TopicPartition(topic: topic, partition: rejection.partition), reason: rejection.reason)
                }
            })
        }
        let started = ContinuousClock.now
        checkpoint = try await sink.write(sinkBatch)
        observer.sinkWrote(ContinuousClock.now - started)
        Failpoint.reached(.batchCommitted)
    }

    func appendDeadLetters(_ records: [LogRecord]) async throws {
        guard !records.isEmpty else { return }
        let topic = DeadLetters.topic(for: product)
        try await log.createTopic(topic, partitions: 1)
        try await log.append(records, to: TopicPartition(topic: topic, partition: 0))
    }
}

import Foundation
import Logging
import ProvisionLog
import ProvisionModel

/// What a running pipeline reports after each batch and when it catches up.
public struct PipelineProgress: Sendable, Equatable {
    public var checkpoint: Checkpoint
    /// Per partition, the log end offset when last looked at.
    public var endOffsets: [Int: Int64]
    /// True once every partition has reached the end offset captured when the pipeline
    /// started: the backfill is done and the product is live.
    public var caughtUp: Bool

    public var lag: Int64 {
        endOffsets.reduce(0) { $0 + max(0, $1.value - (checkpoint.offsets[$1.key] ?? 0)) }
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

    public init(processor: RecordProcessor, log: any EventLog, sink: any Sink, limits: Limits = .init(), logger: Logger,
                clock: @escaping @Sendable () -> TimestampMilliseconds,
                report: @escaping @Sendable (PipelineProgress) async -> Void)
    {
        self.processor = processor
        self.log = log
        self.sink = sink
        self.limits = limits
        self.logger = logger
        self.clock = clock
        self.report = report
    }

    private var product: String { processor.plan.product.name }
    private var sourceTopic: String { processor.plan.dataset.spec.topic }

    /// Runs until cancelled. Throws when the sink or the log fails; the caller retries with
    /// backoff, and the next run resumes from the committed checkpoint.
    public func run() async throws {
        try await log.createTopic(sourceTopic, partitions: 1)
        let partitionCount = try await log.partitionCount(of: sourceTopic) ?? 1
        var checkpoint = try await sink.open() ?? Checkpoint(offsets: [:])
        for partition in 0..<partitionCount where checkpoint.offsets[partition] == nil {
            let source = TopicPartition(topic: sourceTopic, partition: partition)
            checkpoint.offsets[partition] = try await startOffset(source)
        }
        var liveBoundary: [Int: Int64] = [:]
        for partition in 0..<partitionCount {
            liveBoundary[partition] = try await log.endOffset(of: TopicPartition(topic: sourceTopic, partition: partition))
        }
        logger.info("pipeline started", metadata: ["product": "\(product)", "sink": "\(sink.location)",
                                                   "from": "\(checkpoint.offsets)", "liveBoundary": "\(liveBoundary)"])
        var caughtUp = liveBoundary.allSatisfy { checkpoint.offsets[$0.key]! >= $0.value }
        await report(PipelineProgress(checkpoint: checkpoint, endOffsets: liveBoundary, caughtUp: caughtUp))
        defer { logger.info("pipeline stopped", metadata: ["product": "\(product)"]) }

        while !Task.isCancelled {
            var wroteSomething = false
            for partition in 0..<partitionCount {
                let source = TopicPartition(topic: sourceTopic, partition: partition)
                let batch = try await log.readBatch(source, from: checkpoint.offsets[partition]!,
                                                    maxRecords: limits.batchRecordsMax, maxBytes: limits.batchBytesMax)
                guard let last = batch.entries.last else { continue }
                try await process(batch, from: source, through: last.offset, checkpoint: &checkpoint)
                wroteSomething = true
            }
            var endOffsets: [Int: Int64] = [:]
            for partition in 0..<partitionCount {
                endOffsets[partition] = try await log.endOffset(of: TopicPartition(topic: sourceTopic, partition: partition))
            }
            if !caughtUp {
                caughtUp = liveBoundary.allSatisfy { checkpoint.offsets[$0.key]! >= $0.value }
            }
            await report(PipelineProgress(checkpoint: checkpoint, endOffsets: endOffsets, caughtUp: caughtUp))
            if !wroteSomething {
                // Caught up with the log: wait for an append (no polling), or report again after
                // idleWait. The embedded log has one partition per topic; waiting on several
                // comes with the Kafka-backed log.
                let source = TopicPartition(topic: sourceTopic, partition: 0)
                try await log.waitForRecords(in: source, at: checkpoint.offsets[0]!, timeout: limits.idleWait)
            }
        }
        await sink.close()
    }

    /// Processing is pure, so a large batch is split across the cores and put back in order.
    private func processInParallel(_ batch: RecordBatch, partition: Int, now: TimestampMilliseconds) async
        -> [RecordProcessor.Outcome]
    {
        let processor = self.processor
        let chunkCount = batch.count < 4096 ? 1 : min(limits.processingConcurrency, batch.count / 2048)
        guard chunkCount > 1 else {
            return processor.process(batch, range: 0..<batch.count, partition: partition, now: now)
        }
        let chunkSize = (batch.count + chunkCount - 1) / chunkCount
        return await withTaskGroup(of: (Int, [RecordProcessor.Outcome]).self) { group in
            for chunk in 0..<chunkCount {
                let range = (chunk * chunkSize)..<min((chunk + 1) * chunkSize, batch.count)
                group.addTask {
                    (chunk, processor.process(batch, range: range, partition: partition, now: now))
                }
            }
            var parts = [[RecordProcessor.Outcome]](repeating: [], count: chunkCount)
            for await (chunk, outcomes) in group { parts[chunk] = outcomes }
            return parts.flatMap { $0 }
        }
    }

    private func startOffset(_ source: TopicPartition) async throws -> Int64 {
        if let startTime = processor.startTime {
            return try await log.offset(forTimestamp: startTime, in: source)
        }
        return try await log.startOffset(of: source)
    }

    private func process(_ batch: RecordBatch, from source: TopicPartition, through lastOffset: Int64,
                         checkpoint: inout Checkpoint) async throws
    {
        let now = clock()
        let outcomes = await processInParallel(batch, partition: source.partition, now: now)
        var outputs: [OutputRecord] = []
        outputs.reserveCapacity(batch.count)
        var deadLetters: [LogRecord] = []
        for (index, outcome) in outcomes.enumerated() {
            switch outcome {
            case .output(let output): outputs.append(output)
            case .skipped: continue
            case .deadLetter(let reason):
                deadLetters.append(DeadLetters.record(for: batch.record(at: index), from: source, reason: reason))
            }
        }
        if !deadLetters.isEmpty {
            // Dead letters are durable before the checkpoint passes them: none is lost, and a
            // replay after a crash may repeat some (at least once).
            let topic = DeadLetters.topic(for: product)
            try await log.createTopic(topic, partitions: 1)
            try await log.append(deadLetters, to: TopicPartition(topic: topic, partition: 0))
        }
        checkpoint.offsets[source.partition] = lastOffset + 1
        checkpoint.recordsWritten += Int64(outputs.count)
        checkpoint.deadLettered += Int64(deadLetters.count)
        try await sink.write(outputs, checkpoint: checkpoint)
    }
}

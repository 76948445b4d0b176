import ProvisionModel

/// Why a log operation failed.
public struct EventLogError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case unknownTopic, invalidTopicName, invalidPartition, recordTooLarge, io
        /// The topic does not take the record: a compacted topic's records need a key
        /// (Kafka's `INVALID_RECORD`).
        case invalidRecord
        /// The store could not be reached (Kafka's brokers down or unanswering): the same
        /// call may work later.
        case unavailable
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// The central event store: topics of partitions of records, each addressed by an offset.
/// The embedded segmented log implements it today; a Kafka-backed log implements the same
/// protocol, so nothing above this line knows which store it runs on.
public protocol EventLog: Sendable {
    /// Creates the topic if it does not exist. An existing topic keeps its partition count
    /// and its settings. A `compacted` topic may keep only the latest record of each key, and
    /// drops a key whose latest record is a tombstone (Kafka's `cleanup.policy=compact`): for
    /// state kept by key. The embedded log keeps every record of every topic.
    func createTopic(_ topic: String, partitions: Int, compacted: Bool) async throws

    func describeTopics() async throws -> [TopicDescription]

    /// The number of partitions, or nil if the topic does not exist.
    func partitionCount(of topic: String) async throws -> Int?

    /// Appends records to one partition and returns the offset of the first. The records
    /// are durable when this returns, and all of them are appended or none.
    @discardableResult
    func append(_ records: [LogRecord], to partition: TopicPartition) async throws -> Int64

    /// Reads records from `offset` on, up to a count and a byte budget (at least one record
    /// is returned if any exists). An offset below the retained start reads from the start.
    func readBatch(_ partition: TopicPartition, from offset: Int64, maxRecords: Int, maxBytes: Int) async throws -> RecordBatch

    /// The first offset whose record timestamp is ≥ `timestamp`, or the end offset if none is.
    func offset(forTimestamp timestamp: TimestampMilliseconds, in partition: TopicPartition) async throws -> Int64

    func startOffset(of partition: TopicPartition) async throws -> Int64

    func endOffset(of partition: TopicPartition) async throws -> Int64

    /// `startOffset` of several partitions at once (on Kafka, a request per leader, not per
    /// partition).
    func startOffsets(of partitions: [TopicPartition]) async throws -> [TopicPartition: Int64]

    /// `endOffset` of several partitions at once.
    func endOffsets(of partitions: [TopicPartition]) async throws -> [TopicPartition: Int64]

    /// Returns when a record at `offset` exists (the end offset is past it), or after
    /// `timeout`, whichever comes first; it does not poll. Returns at once if it exists already.
    func waitForRecords(in partition: TopicPartition, at offset: Int64, timeout: Duration) async throws

    /// Removes a topic and its records.
    func deleteTopic(_ topic: String) async throws

    /// Says where a reader is about to read: a store that fetches ahead starts on every
    /// partition now, rather than on each when its turn comes. A hint; it changes no result.
    func prepareReads(from positions: [TopicPartition: Int64]) async
}

extension EventLog {
    /// Creates a dataset's topic as its spec says (partitions, compaction); an existing
    /// topic is left as it is.
    public func createTopic(for dataset: DatasetSpec) async throws {
        try await createTopic(dataset.topic, partitions: dataset.partitions ?? 1, compacted: dataset.isCompacted)
    }

    /// Reads from files need no warning.
    public func prepareReads(from positions: [TopicPartition: Int64]) async {}

    public func startOffsets(of partitions: [TopicPartition]) async throws -> [TopicPartition: Int64] {
        var offsets: [TopicPartition: Int64] = [:]
        for partition in partitions { offsets[partition] = try await startOffset(of: partition) }
        return offsets
    }

    public func endOffsets(of partitions: [TopicPartition]) async throws -> [TopicPartition: Int64] {
        var offsets: [TopicPartition: Int64] = [:]
        for partition in partitions { offsets[partition] = try await endOffset(of: partition) }
        return offsets
    }

    /// Creates a topic that keeps every record.
    public func createTopic(_ topic: String, partitions: Int) async throws {
        try await createTopic(topic, partitions: partitions, compacted: false)
    }

    /// Returns when any of the partitions has a record at its position, or after
    /// `timeout`: a reader of several partitions waits for whichever gets one first.
    public func waitForRecords(in positions: [TopicPartition: Int64], timeout: Duration) async throws {
        if positions.count == 1, let (partition, offset) = positions.first {
            return try await waitForRecords(in: partition, at: offset, timeout: timeout)
        }
        guard !positions.isEmpty else { return try await Task.sleep(for: timeout) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (partition, offset) in positions {
                group.addTask { try await self.waitForRecords(in: partition, at: offset, timeout: timeout) }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// `readBatch`, with each record copied out.
    public func read(_ partition: TopicPartition, from offset: Int64, maxRecords: Int, maxBytes: Int) async throws -> [StoredRecord] {
        let batch = try await readBatch(partition, from: offset, maxRecords: maxRecords, maxBytes: maxBytes)
        return (0..<batch.count).map { batch.record(at: $0) }
    }
}

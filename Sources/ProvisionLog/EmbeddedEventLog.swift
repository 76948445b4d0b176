import Foundation
import Logging
import ProvisionModel

/// The default `EventLog`: segmented files under a directory, one folder per partition
/// (`<topic>-<partition>`), as Kafka lays out its log directories.
public final class EmbeddedEventLog: EventLog, @unchecked Sendable {
    private let directory: String
    private let configuration: EmbeddedLogConfiguration
    private let logger: Logger
    private let lock = NSLock()
    // Guarded by lock.
    private var partitions: [String: [PartitionLog]] = [:]
    /// Topics created compacted: each has a marker file, `<topic>.compacted`. The embedded
    /// log keeps every record (a reader of a compacted topic takes the latest of each key
    /// either way) but refuses what Kafka refuses there: a record without a key.
    private var compactedTopics: Set<String> = []

    public init(directory: String, configuration: EmbeddedLogConfiguration = .init(), logger: Logger = Logger(label: "provision.log")) throws {
        self.directory = directory
        self.configuration = configuration
        self.logger = logger
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var found: [String: [Int]] = [:]
        for entry in try FileManager.default.contentsOfDirectory(atPath: directory) {
            if entry.hasSuffix(Self.compactedMarker) {
                compactedTopics.insert(String(entry.dropLast(Self.compactedMarker.count)))
                continue
            }
            guard let dash = entry.lastIndex(of: "-"), let partition = Int(entry[entry.index(after: dash)...]) else { continue }
            found[String(entry[..<dash]), default: []].append(partition)
        }
        for (topic, partitionNumbers) in found {
            // A topic's partitions are numbered 0..<n; a gap means a partial delete, so keep the prefix.
            let count = (0...).first { !partitionNumbers.contains($0) } ?? 0
            partitions[topic] = try (0..<count).map {
                try PartitionLog(directory: "\(directory)/\(topic)-\($0)", configuration: configuration, logger: logger)
            }
        }
    }

    public static func isValidTopicName(_ name: String) -> Bool { TopicName.isValid(name) }

    private static let compactedMarker = ".compacted"

    private func partitionLog(_ partition: TopicPartition) throws -> PartitionLog {
        try partitionLogAndPolicy(partition).log
    }

    /// The partition's log, and whether its topic is compacted, in one look under the lock.
    private func partitionLogAndPolicy(_ partition: TopicPartition) throws -> (log: PartitionLog, compacted: Bool) {
        lock.lock()
        defer { lock.unlock() }
        guard let logs = partitions[partition.topic] else {
            throw EventLogError(.unknownTopic, "topic '\(partition.topic)' does not exist")
        }
        guard logs.indices.contains(partition.partition) else {
            throw EventLogError(.invalidPartition, "topic '\(partition.topic)' has no partition \(partition.partition)")
        }
        return (logs[partition.partition], compactedTopics.contains(partition.topic))
    }

    public func createTopic(_ topic: String, partitions count: Int, compacted: Bool) async throws {
        guard Self.isValidTopicName(topic) else {
            throw EventLogError(.invalidTopicName, "'\(topic)' is not a valid topic name (letters, digits, '.', '_', '-')")
        }
        guard count >= 1 else { throw EventLogError(.invalidPartition, "a topic needs at least one partition") }
        try lock.withLock {
            if partitions[topic] != nil { return }
            if compacted {
                // Before the partitions: a topic found without its marker would take keyless records.
                guard FileManager.default.createFile(atPath: "\(directory)/\(topic)\(Self.compactedMarker)", contents: nil) else {
                    throw EventLogError(.io, "cannot mark topic '\(topic)' compacted in \(directory)")
                }
                compactedTopics.insert(topic)
            }
            partitions[topic] = try (0..<count).map {
                try PartitionLog(directory: "\(directory)/\(topic)-\($0)", configuration: configuration, logger: logger)
            }
        }
    }

    public func describeTopics() async throws -> [TopicDescription] {
        let snapshot = lock.withLock { partitions }
        return snapshot.keys.sorted().map { topic in
            TopicDescription(name: topic, partitions: snapshot[topic]!.enumerated().map { index, log in
                PartitionDescription(partition: index, startOffset: log.startOffset, endOffset: log.endOffset)
            })
        }
    }

    public func partitionCount(of topic: String) async throws -> Int? {
        lock.withLock { partitions[topic]?.count }
    }

    @discardableResult
    public func append(_ records: [LogRecord], to partition: TopicPartition) async throws -> Int64 {
        let (log, compacted) = try partitionLogAndPolicy(partition)
        if compacted, let keyless = records.firstIndex(where: { $0.key == nil }) {
            throw EventLogError(.invalidRecord, "topic '\(partition.topic)' is compacted: every record needs a key, and record \(keyless) of the append has none; nothing was appended")
        }
        return try log.append(records)
    }

    public func readBatch(_ partition: TopicPartition, from offset: Int64, maxRecords: Int, maxBytes: Int) async throws -> RecordBatch {
        try partitionLog(partition).readBatch(from: offset, maxRecords: maxRecords, maxBytes: maxBytes)
    }

    public func offset(forTimestamp timestamp: TimestampMilliseconds, in partition: TopicPartition) async throws -> Int64 {
        try partitionLog(partition).offset(forTimestamp: timestamp)
    }

    public func startOffset(of partition: TopicPartition) async throws -> Int64 {
        try partitionLog(partition).startOffset
    }

    public func endOffset(of partition: TopicPartition) async throws -> Int64 {
        try partitionLog(partition).endOffset
    }

    public func waitForRecords(in partition: TopicPartition, at offset: Int64, timeout: Duration) async throws {
        try await partitionLog(partition).waitForRecords(at: offset, timeout: timeout)
    }

    public func deleteTopic(_ topic: String) async throws {
        let removed = lock.withLock { partitions.removeValue(forKey: topic) }
        for log in removed ?? [] { log.removeAllFiles() }
        if lock.withLock({ compactedTopics.remove(topic) }) != nil {
            try? FileManager.default.removeItem(atPath: "\(directory)/\(topic)\(Self.compactedMarker)")
        }
    }

    /// Applies the retention limits to every partition; returns the number of segments deleted.
    ///
    /// - Parameter unreadFrom: per partition, the lowest offset some product has not read;
    ///   retention by age keeps every record from there on.
    @discardableResult
    public func enforceRetention(now: TimestampMilliseconds, unreadFrom: [TopicPartition: Int64] = [:]) throws -> Int {
        let logs = lock.withLock { partitions.flatMap { topic, logs in logs.enumerated().map { (TopicPartition(topic: topic, partition: $0), $1) } } }
        return try logs.reduce(0) { $0 + (try $1.1.enforceRetention(now: now, unreadFrom: unreadFrom[$1.0])) }
    }
}

import ProvisionLog
import ProvisionModel
import Synchronization

/// What the API does with topics: list them, append records, read a page. The HTTP server
/// reaches the event store only through this, so it depends on the control plane and the
/// model, never on which store runs underneath.
public struct Topics: Sendable {
    private let log: any EventLog

    init(log: any EventLog) {
        self.log = log
    }

    public func describe() async throws -> [TopicDescription] {
        try await log.describeTopics().filter { !TopicName.isInternal($0.name) }
    }

    /// Appends `records` to the topic, creating it first as `dataset` (the one on this topic)
    /// says, or with one partition when no dataset names it yet (an existing topic keeps its
    /// own count and policy). A keyed record goes to its key's partition (`KafkaPartitioner`);
    /// the records without a key go together to one partition, a different one each request.
    /// Returns, per partition written, the offset of its first record and how many; an empty
    /// request writes nothing and returns none.
    ///
    /// Each partition's records are appended whole or not at all; a request spanning several
    /// partitions is several appends, made side by side: a failure may leave some of them
    /// done (each whole), and the request fails.
    public func append(_ records: [LogRecord], to topic: String, dataset: DatasetSpec? = nil) async throws -> [PartitionAppend] {
        guard !TopicName.isInternal(topic) else { throw EventLogError(.invalidTopicName, "'\(topic)' is the server's own topic") }
        // One look-up when the topic exists (a metadata request on Kafka), every request.
        var existing = try await log.partitionCount(of: topic)
        if existing == nil {
            if let dataset, dataset.topic == topic {
                try await log.createTopic(for: dataset)
            } else {
                try await log.createTopic(topic, partitions: 1)
            }
            existing = try await log.partitionCount(of: topic)
        }
        let count = existing ?? 1
        guard !records.isEmpty else { return [] }
        var byPartition: [Int: [LogRecord]] = [:]
        if count == 1 {
            byPartition[0] = records
        } else {
            let unkeyed = Self.nextUnkeyedPartition.add(1, ordering: .relaxed).oldValue % count
            for record in records {
                let partition = record.key.map { KafkaPartitioner.partition(forKey: $0, partitions: count) } ?? unkeyed
                byPartition[partition, default: []].append(record)
            }
        }
        // The partitions' appends side by side: each waits for its own sync.
        let log = self.log
        return try await withThrowingTaskGroup(of: PartitionAppend.self) { group in
            for (partition, batch) in byPartition {
                group.addTask {
                    let first = try await log.append(batch, to: TopicPartition(topic: topic, partition: partition))
                    return PartitionAppend(partition: partition, firstOffset: first, count: batch.count)
                }
            }
            var appended: [PartitionAppend] = []
            for try await append in group { appended.append(append) }
            return appended.sorted { $0.partition < $1.partition }
        }
    }

    /// Where the next request's records without a key go (modulo the partition count).
    private static let nextUnkeyedPartition = Atomic<Int>(0)

    /// Up to `limit` records from `from` (negative: that many before the end; nil: the last
    /// `limit`), waiting up to `wait` for one to arrive when there are none yet. Nil when the
    /// topic does not exist.
    /// - Parameter masking: the schema whose `pii` fields are masked in each value (and the
    ///   key too when `maskingKey`), for a caller whose team does not own the dataset.
    public func page(of topic: String, partition number: Int = 0, from requested: Int64?, limit: Int, wait: Duration?,
                     masking: Schema? = nil, maskingKey: Bool = false) async throws -> RecordsPage? {
        guard !TopicName.isInternal(topic), let partitions = try await log.partitionCount(of: topic), (0..<partitions).contains(number)
        else { return nil }
        let partition = TopicPartition(topic: topic, partition: number)
        let end = try await log.endOffset(of: partition)
        var from = requested ?? max(0, end - Int64(limit))
        if from < 0 { from = max(0, end + from) }
        if let wait, from >= end, wait > .zero {
            try await log.waitForRecords(in: partition, at: from, timeout: wait)
        }
        let stored = try await log.read(partition, from: from, maxRecords: limit, maxBytes: 8 * 1024 * 1024)
        let views = stored.map { record in
            RecordView(
                partition: number, offset: record.offset, time: Timestamp.format(record.record.timestamp),
                key: record.record.key.map { maskingKey ? Schema.mask : String(decoding: $0, as: UTF8.self) },
                value: record.record.value.map { bytes in
                    let value = (try? JSONParser.parse(bytes)) ?? .string(String(decoding: bytes, as: UTF8.self))
                    return masking.map { $0.masking(value) } ?? value
                },
                headers: record.record.headers.isEmpty ? nil : Dictionary(
                    record.record.headers.map { ($0.name, String(decoding: $0.value, as: UTF8.self)) },
                    uniquingKeysWith: { _, last in last }))
        }
        let logStart = try await log.startOffset(of: partition)
        let next = stored.last.map { $0.offset + 1 } ?? max(from, logStart)
        var page = RecordsPage(records: views, nextOffset: next, endOffset: try await log.endOffset(of: partition))
        page.partitions = partitions
        return page
    }
}

extension Reconciler {
    /// The topics of the store this reconciler runs on.
    public nonisolated var topics: Topics { Topics(log: eventLog) }
}

import ProvisionLog
import ProvisionModel

/// What the API does with topics: list them, append records, read a page. The HTTP server
/// reaches the event store only through this, so it depends on the control plane and the
/// model, never on which store runs underneath.
public struct Topics: Sendable {
    private let log: any EventLog

    init(log: any EventLog) {
        self.log = log
    }

    public func describe() async throws -> [TopicDescription] {
        try await log.describeTopics()
    }

    /// Appends `records` to the topic, creating it first; returns the offset of the first
    /// (the end of the topic when there are none).
    public func append(_ records: [LogRecord], to topic: String) async throws -> Int64 {
        try await log.createTopic(topic, partitions: 1)
        let partition = TopicPartition(topic: topic, partition: 0)
        return records.isEmpty ? try await log.endOffset(of: partition) : try await log.append(records, to: partition)
    }

    /// Up to `limit` records from `from` (negative: that many before the end; nil: the last
    /// `limit`), waiting up to `wait` for one to arrive when there are none yet. Nil when the
    /// topic does not exist.
    /// - Parameter masking: the schema whose `pii` fields are masked in each value (and the
    ///   key too when `maskingKey`), for a caller whose team does not own the dataset.
    public func page(of topic: String, from requested: Int64?, limit: Int, wait: Duration?,
                     masking: Schema? = nil, maskingKey: Bool = false) async throws -> RecordsPage? {
        guard try await log.partitionCount(of: topic) != nil else { return nil }
        let partition = TopicPartition(topic: topic, partition: 0)
        let end = try await log.endOffset(of: partition)
        var from = requested ?? max(0, end - Int64(limit))
        if from < 0 { from = max(0, end + from) }
        if let wait, from >= end, wait > .zero {
            try await log.waitForRecords(in: partition, at: from, timeout: wait)
        }
        let stored = try await log.read(partition, from: from, maxRecords: limit, maxBytes: 8 * 1024 * 1024)
        let views = stored.map { record in
            RecordView(
                partition: 0, offset: record.offset, time: Timestamp.format(record.record.timestamp),
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
        return RecordsPage(records: views, nextOffset: next, endOffset: try await log.endOffset(of: partition))
    }
}

extension Reconciler {
    /// The topics of the store this reconciler runs on.
    public nonisolated var topics: Topics { Topics(log: eventLog) }
}

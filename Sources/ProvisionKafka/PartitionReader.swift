import CRdKafka
import Foundation
import ProvisionLog
import ProvisionModel

/// Reads one partition with a consumer of its own, assigned (not subscribed: no group, no
/// committed offsets; the product's checkpoint is the position) at the offset asked for. A
/// read that continues where the last ended reuses what the consumer has fetched ahead.
/// Its calls block; the log runs them off the concurrency pool, one at a time.
final class PartitionReader: @unchecked Sendable {
    let partition: TopicPartition
    private let consumer: OpaquePointer
    private let lock = NSLock()
    /// The offset the consumer delivers next, once assigned.
    private var position: Int64?
    /// A record a wait received, not yet read.
    private var pending: [StoredRecord] = []
    /// The consumer said the partition ends at `position` and has delivered nothing since:
    /// librdkafka says so once, so a read there takes what has arrived meanwhile and returns.
    private var atEnd = false
    /// How long a read waits for the partition's first answer before the leader is taken to
    /// be unreachable.
    private static let answerTimeout = Duration.seconds(10)

    init(partition: TopicPartition, bootstrapServers: String, options: [String: String]) throws {
        self.partition = partition
        consumer = try KafkaEventLog.client(RD_KAFKA_CONSUMER, bootstrapServers, options.merging([
            "group.id": "provision-reader",
            "enable.auto.commit": "false",
            "enable.auto.offset.store": "false",
            "enable.partition.eof": "true",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": "100",
        ]) { given, _ in given })
    }

    /// The offset the next read continues from without reassigning, if assigned.
    var nextOffset: Int64? { lock.withLock { position } }

    func close() {
        lock.withLock {
            rd_kafka_consumer_close(consumer)
            rd_kafka_destroy(consumer)
        }
    }

    /// The position is at the end the last fetch response gave (its high watermark): the
    /// read stops there instead of waiting for an empty fetch to say so (up to
    /// `fetch.wait.max.ms` per partition read to its end).
    private var reachedFetchedEnd: Bool {
        guard let position else { return false }
        var low: Int64 = 0, high: Int64 = 0
        guard rd_kafka_get_watermark_offsets(consumer, partition.topic, Int32(partition.partition), &low, &high) == RD_KAFKA_RESP_ERR_NO_ERROR,
              high >= 0 else { return false }
        return position >= high
    }

    private func assign(at offset: Int64) throws {
        let list = rd_kafka_topic_partition_list_new(1)!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        rd_kafka_topic_partition_list_add(list, partition.topic, Int32(partition.partition)).pointee.offset = offset
        let code = rd_kafka_assign(consumer, list)
        guard code == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaEventLog.error(code, partition) }
        position = offset
        pending.removeAll()
        atEnd = false
    }

    private enum Polled {
        case record(StoredRecord)
        /// The consumer reached the end of the partition.
        case end
        case timedOut
    }

    private func poll(_ milliseconds: Int32) throws -> Polled {
        guard let message = rd_kafka_consumer_poll(consumer, Int32(milliseconds)) else { return .timedOut }
        defer { rd_kafka_message_destroy(message) }
        let code = message.pointee.err
        if code == RD_KAFKA_RESP_ERR__PARTITION_EOF { return .end }
        guard code == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaEventLog.error(code, partition) }
        return .record(Self.record(message))
    }

    static func record(_ message: UnsafeMutablePointer<rd_kafka_message_t>) -> StoredRecord {
        let key = message.pointee.key.map { Array(UnsafeRawBufferPointer(start: $0, count: message.pointee.key_len)) }
        let value = message.pointee.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: message.pointee.len)) }
        var kind = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(message, &kind)
        var headers: [LogHeader] = []
        var list: OpaquePointer?
        if rd_kafka_message_headers(message, &list) == RD_KAFKA_RESP_ERR_NO_ERROR, let list {
            var index = 0
            var name: UnsafePointer<CChar>?
            var bytes: UnsafeRawPointer?
            var size = 0
            while rd_kafka_header_get_all(list, index, &name, &bytes, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
                headers.append(LogHeader(name: String(cString: name!),
                                            value: bytes.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []))
                index += 1
            }
        }
        return StoredRecord(offset: message.pointee.offset,
                            record: LogRecord(key: key, value: value, timestamp: max(0, timestamp), headers: headers))
    }

    /// Records from `offset` on, up to the limits, or none when the partition ends there;
    /// at least one when there is one. Compaction may leave gaps: offsets are the records'.
    /// Throws `unavailable` when the leader gives no answer at all.
    func read(from offset: Int64, maxRecords: Int, maxBytes: Int) throws -> [StoredRecord] {
        try lock.withLock {
            if position != offset { try assign(at: offset) }
            var records: [StoredRecord] = []
            var bytes = 0
            func take(_ record: StoredRecord) -> Bool {
                records.append(record)
                position = record.offset + 1
                atEnd = false
                bytes += (record.record.value?.count ?? 0) + (record.record.key?.count ?? 0)
                return records.count < maxRecords && bytes < maxBytes && !reachedFetchedEnd
            }
            while !pending.isEmpty {
                let record = pending.removeFirst()
                guard take(record) else { return records }
            }
            // At the end already: only what has arrived since.
            if atEnd || reachedFetchedEnd {
                while case .record(let record) = try poll(0) {
                    guard take(record) else { break }
                }
                return records
            }
            // The first record may need a fetch; after it, what is fetched already, until the
            // partition's end or a limit.
            let deadline = ContinuousClock.now + Self.answerTimeout
            polling: while true {
                switch try poll(records.isEmpty ? 500 : 100) {
                case .record(let record):
                    guard take(record) else { break polling }
                case .end:
                    // Nothing more (what is left below the end was compacted away, or is a
                    // transaction's marker).
                    atEnd = true
                    break polling
                case .timedOut:
                    if !records.isEmpty { break polling }
                    guard ContinuousClock.now < deadline else {
                        throw EventLogError(.unavailable, "Kafka, \(partition.topic) partition \(partition.partition): no answer from its leader in \(Self.answerTimeout)")
                    }
                }
            }
            return records
        }
    }

    /// Returns when a record at or after `offset` arrives, or after `milliseconds`; the record
    /// is kept for the next read.
    func wait(at offset: Int64, milliseconds: Int32) throws {
        try lock.withLock {
            if !pending.isEmpty && position == offset { return }
            if position != offset { try assign(at: offset) }
            let deadline = ContinuousClock.now + .milliseconds(Int(milliseconds))
            while ContinuousClock.now < deadline {
                let left = Int32(max(1, min(Int64(milliseconds), (deadline - ContinuousClock.now).components.seconds * 1000 + 1)))
                switch try poll(min(left, 500)) {
                case .record(let record):
                    pending.append(record)
                    atEnd = false
                    return
                case .end:
                    atEnd = true
                case .timedOut:
                    continue
                }
            }
        }
    }
}

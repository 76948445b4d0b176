import CRdKafka
import Foundation
import ProvisionLog
import ProvisionModel

/// Reads one partition with a consumer of its own, assigned (not subscribed: no group, no
/// committed offsets; the product's checkpoint is the position) at the offset asked for. A
/// read that continues where the last ended reuses what the consumer has fetched ahead.
/// Its calls block; the log runs them off the concurrency pool, one at a time.
///
/// Records go from librdkafka's messages straight into a `RecordBatch`, taken from the
/// consumer's queue many at a time: one copy of each record, and one lock of the queue per
/// batch instead of one per record.
final class PartitionReader: @unchecked Sendable {
    let partition: TopicPartition
    private let consumer: OpaquePointer
    private let queue: OpaquePointer
    private let lock = NSLock()
    /// The offset the consumer delivers next, once assigned.
    private var position: Int64?
    /// Messages taken from the queue that the last read had no room for, oldest first.
    private var leftover: [UnsafeMutablePointer<rd_kafka_message_t>] = []
    /// The consumer said the partition ends at `position` and has delivered nothing since:
    /// librdkafka says so once, so a read there takes what has arrived meanwhile and returns.
    private var atEnd = false
    /// Where messages are taken from the queue into.
    private var taken: [UnsafeMutablePointer<rd_kafka_message_t>?] = Array(repeating: nil, count: 1024)
    /// How long a read waits for the partition's first answer before the leader is taken to
    /// be unreachable.
    private static let answerTimeout = Duration.seconds(10)

    init(partition: TopicPartition, bootstrapServers: String, options: [String: String]) throws {
        self.partition = partition
        consumer = try KafkaEventLog.assignedConsumer(bootstrapServers, options, group: "provision-reader",
                                                      settings: ["auto.offset.reset": "earliest"])
        queue = rd_kafka_queue_get_consumer(consumer)
    }

    /// The offset the next read continues from without reassigning, if assigned.
    var nextOffset: Int64? { lock.withLock { position } }

    func close() {
        lock.withLock {
            dropLeftover()
            rd_kafka_queue_destroy(queue)
            rd_kafka_consumer_close(consumer)
            rd_kafka_destroy(consumer)
        }
    }

    private func dropLeftover() {
        for message in leftover { rd_kafka_message_destroy(message) }
        leftover.removeAll()
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
        if position == nil { KafkaEventLog.learnLeaders(of: partition.topic, with: consumer) }
        dropLeftover()
        position = offset
        atEnd = false
    }

    /// Positions the consumer at `offset`, where it starts fetching at once.
    func prepare(at offset: Int64) throws {
        try lock.withLock { if position != offset { try assign(at: offset) } }
    }

    /// Up to `count` messages, in order: the leftover first, then the queue's, waiting up
    /// to `milliseconds` for the first when there is none.
    private func take(upTo count: Int, waiting milliseconds: Int32) -> ArraySlice<UnsafeMutablePointer<rd_kafka_message_t>> {
        if !leftover.isEmpty {
            let slice = leftover.prefix(count)
            leftover.removeFirst(slice.count)
            return slice
        }
        var got = max(0, rd_kafka_consume_batch_queue(queue, 0, &taken, min(count, taken.count)))
        // Waiting for a whole batch would wait out the timeout at a partition's end:
        // wait for one, then take what has come with it.
        if got == 0, milliseconds > 0 {
            got = max(0, rd_kafka_consume_batch_queue(queue, Int32(milliseconds), &taken, 1))
            if got == 1, count > 1 {
                got += taken.withUnsafeMutableBufferPointer { buffer in
                    max(0, rd_kafka_consume_batch_queue(queue, 0, buffer.baseAddress! + 1, min(count, buffer.count) - 1))
                }
            }
        }
        guard got > 0 else { return [] }
        return ArraySlice(taken[0..<got].map { $0! })
    }

    /// Records from `offset` on, up to the limits, or none when the partition ends there;
    /// at least one when there is one. Compaction may leave gaps: offsets are the records'.
    /// Throws `unavailable` when the leader gives no answer at all.
    func read(from offset: Int64, maxRecords: Int, maxBytes: Int) throws -> RecordBatch {
        try lock.withLock {
            if position != offset { try assign(at: offset) }
            var batch = RecordBatch()
            var bytes = 0
            var full: Bool { batch.count >= maxRecords || bytes >= maxBytes }
            let deadline = ContinuousClock.now + Self.answerTimeout
            // At the end already: only what has arrived since.
            let waitForFirst = !(atEnd || reachedFetchedEnd)
            reading: while !full {
                // The first record may need a fetch; after it, what is fetched already, until
                // the partition's end or a limit.
                let wait: Int32 = !waitForFirst ? 0 : batch.isEmpty ? 500 : 100
                let messages = take(upTo: maxRecords - batch.count, waiting: wait)
                if messages.isEmpty {
                    if !batch.isEmpty || !waitForFirst || reachedFetchedEnd { break reading }
                    guard ContinuousClock.now < deadline else {
                        throw EventLogError(.unavailable, "Kafka, \(partition.topic) partition \(partition.partition): no answer from its leader in \(Self.answerTimeout)")
                    }
                    continue reading
                }
                if batch.isEmpty { reserve(&batch, for: messages, maxRecords: maxRecords, maxBytes: maxBytes) }
                for (index, message) in zip(messages.indices, messages) {
                    if full {
                        // No room: kept, in order, for the next read.
                        leftover.insert(contentsOf: messages[index...], at: 0)
                        break reading
                    }
                    defer { rd_kafka_message_destroy(message) }
                    let code = message.pointee.err
                    if code == RD_KAFKA_RESP_ERR__PARTITION_EOF {
                        // Nothing more (what is left below the end was compacted away, or is
                        // a transaction's marker) unless more came after it.
                        atEnd = true
                        continue
                    }
                    guard code == RD_KAFKA_RESP_ERR_NO_ERROR else {
                        for rest in messages[(index + 1)...] { rd_kafka_message_destroy(rest) }
                        throw KafkaEventLog.error(code, partition)
                    }
                    bytes += Self.append(message, to: &batch)
                    position = message.pointee.offset + 1
                    atEnd = false
                }
                if atEnd || (!batch.isEmpty && leftover.isEmpty && reachedFetchedEnd) { break reading }
            }
            return batch
        }
    }

    /// Room for what the batch will take, guessed from the first messages and how many more
    /// are queued: a batch grown by doubling copied its bytes again at each step and touched
    /// fresh pages for each copy (a third of a read's time went to page faults).
    private func reserve(_ batch: inout RecordBatch, for first: ArraySlice<UnsafeMutablePointer<rd_kafka_message_t>>,
                         maxRecords: Int, maxBytes: Int)
    {
        let firstBytes = first.reduce(0) { $0 + $1.pointee.len + $1.pointee.key_len }
        let expected = min(maxRecords, first.count + leftover.count + rd_kafka_queue_length(queue))
        let bytesPerRecord = firstBytes / max(1, first.count) + 1
        // A batch ends once past maxBytes, by at most one record.
        batch.reserveCapacity(bytes: min(expected * bytesPerRecord * 9 / 8, maxBytes) + bytesPerRecord * 2, records: expected)
    }

    /// Adds a message's record to the batch; returns its key and value bytes.
    private static func append(_ message: UnsafeMutablePointer<rd_kafka_message_t>, to batch: inout RecordBatch) -> Int {
        let key = message.pointee.key.map { UnsafeRawBufferPointer(start: $0, count: message.pointee.key_len) }
        let value = message.pointee.payload.map { UnsafeRawBufferPointer(start: $0, count: message.pointee.len) }
        var kind = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let timestamp = rd_kafka_message_timestamp(message, &kind)
        batch.append(offset: message.pointee.offset, timestamp: max(0, timestamp), key: key, value: value, headers: headers(of: message))
        return (key?.count ?? 0) + (value?.count ?? 0)
    }

    private static func headers(of message: UnsafeMutablePointer<rd_kafka_message_t>) -> [LogHeader] {
        var headers: [LogHeader] = []
        var list: OpaquePointer?
        guard rd_kafka_message_headers(message, &list) == RD_KAFKA_RESP_ERR_NO_ERROR, let list else { return headers }
        var index = 0
        var name: UnsafePointer<CChar>?
        var bytes: UnsafeRawPointer?
        var size = 0
        while rd_kafka_header_get_all(list, index, &name, &bytes, &size) == RD_KAFKA_RESP_ERR_NO_ERROR {
            headers.append(LogHeader(name: String(cString: name!),
                                     value: bytes.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []))
            index += 1
        }
        return headers
    }
}

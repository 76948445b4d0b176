import CRdKafka
import Foundation
import Logging
import ProvisionLog
import ProvisionModel

/// Waits for records at the ends of partitions for every product idle there, with one
/// consumer: each partition someone waits at is assigned to it, and each record or
/// end-of-partition it sees says how far the partition reaches, which wakes the waits it
/// passes. A consumer per waiting product and partition would hold one client each doing
/// nothing, and backfills would queue behind them for readers.
///
/// The consumer reads what arrives only to learn its offset; it fetches little at a time
/// and keeps little queued, as it throws the records away, and it lets a partition go once
/// nobody has waited there for a few seconds (its products are busy reading it).
final class ArrivalWatcher: @unchecked Sendable {
    private struct Waiter {
        var partition: TopicPartition
        var offset: Int64
        var deadline: ContinuousClock.Instant
        var continuation: CheckedContinuation<Void, Never>
    }

    private let consumer: OpaquePointer
    private let queue: OpaquePointer
    private let lock = NSLock()
    // Guarded by lock.
    /// Assigned partitions, with the offset after the last record known to exist (nil: not
    /// known yet).
    private var reach: [TopicPartition: Int64?] = [:]
    /// Partitions to add to the assignment, from the offset their first waiter waits at.
    private var toAssign: [TopicPartition: Int64] = [:]
    /// Partitions to take out of the assignment (their topic went).
    private var toUnassign: Set<TopicPartition> = []
    private var waiters: [Int: Waiter] = [:]
    /// When someone last waited at each assigned partition.
    private var lastWaited: [TopicPartition: ContinuousClock.Instant] = [:]
    /// How long a partition stays assigned with nobody waiting at it: an idle product waits
    /// again right after each wait ends, so a short gap must not let it go.
    private static let keptWithoutWaits = Duration.seconds(5)
    private var nextWaiter = 0
    private var stopping = false
    private let stopped = DispatchSemaphore(value: 0)
    private let logger = Logger(label: "provision.kafka")

    init(bootstrapServers: String, options: [String: String]) throws {
        consumer = try KafkaEventLog.assignedConsumer(bootstrapServers, options, group: "provision-arrivals", settings: [
            "auto.offset.reset": "latest",
            "max.partition.fetch.bytes": "65536",
            "queued.max.messages.kbytes": "1024",
        ])
        queue = rd_kafka_queue_get_consumer(consumer)
        let thread = Thread { [self] in
            serve()
            stopped.signal()
        }
        thread.name = "provision.kafka.arrivals"
        thread.start()
    }

    var waitsPending: Int { lock.withLock { waiters.count } }

    /// Partitions the consumer is assigned (followed for someone waiting there lately).
    var partitionsFollowed: Int { lock.withLock { reach.count } }

    /// Ends the consumer's thread and closes it.
    func stop() {
        lock.withLock { stopping = true }
        rd_kafka_queue_yield(queue)
        stopped.wait()
        rd_kafka_queue_destroy(queue)
        rd_kafka_consumer_close(consumer)
        rd_kafka_destroy(consumer)
    }

    /// Returns once a record at or after `offset` exists in the partition, after `timeout`, or
    /// when the task is cancelled.
    func wait(for partition: TopicPartition, at offset: Int64, timeout: Duration) async {
        let id: Int = lock.withLock {
            defer { nextWaiter += 1 }
            return nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let waiting: Bool = lock.withLock {
                    if let known = reach[partition] ?? nil, known > offset { return false }
                    if Task.isCancelled { return false }
                    waiters[id] = Waiter(partition: partition, offset: offset, deadline: .now + timeout, continuation: continuation)
                    if reach[partition] == nil, toAssign[partition] == nil { toAssign[partition] = offset }
                    return true
                }
                guard waiting else { return continuation.resume() }
                // Out of its poll, to assign the partition or take the new deadline into account.
                rd_kafka_queue_yield(queue)
            }
        } onCancel: {
            lock.withLock { waiters.removeValue(forKey: id) }?.continuation.resume()
        }
    }

    private func serve() {
        while true {
            let next: (assign: [TopicPartition: Int64], unassign: Set<TopicPartition>, timeout: Int32)? = lock.withLock {
                guard !stopping else { return nil }
                defer { toAssign = [:]; toUnassign = [] }
                let now = ContinuousClock.now
                for waiter in waiters.values { lastWaited[waiter.partition] = now }
                // A partition nobody has waited at for a while is let go: it would be fetched
                // (every record of it, again) for nothing while its products read.
                for partition in reach.keys where toAssign[partition] == nil {
                    let since = lastWaited[partition] ?? now
                    lastWaited[partition] = since
                    if now - since > Self.keptWithoutWaits { toUnassign.insert(partition) }
                }
                for partition in toAssign.keys { reach[partition] = .some(nil) }
                for partition in toUnassign {
                    reach[partition] = nil
                    lastWaited[partition] = nil
                }
                let nearest = waiters.values.map(\.deadline).min()
                let milliseconds = nearest.map { max(0, min(100, ($0 - .now).milliseconds)) } ?? 100
                return (toAssign, toUnassign, Int32(milliseconds))
            }
            guard let (assign, unassign, timeout) = next else { break }
            if !assign.isEmpty {
                change(assign, add: true)
                for topic in Set(assign.keys.map(\.topic)) { KafkaEventLog.learnLeaders(of: topic, with: consumer) }
            }
            if !unassign.isEmpty { change(Dictionary(uniqueKeysWithValues: unassign.map { ($0, Int64(RD_KAFKA_OFFSET_INVALID)) }), add: false) }
            if let message = rd_kafka_consumer_poll(consumer, timeout) {
                seen(message)
                rd_kafka_message_destroy(message)
            }
            wakeReady()
        }
        // Whoever still waits goes on; nothing will wake it any more.
        let left = lock.withLock {
            defer { waiters = [:] }
            return Array(waiters.values)
        }
        for waiter in left { waiter.continuation.resume() }
    }

    private func change(_ partitions: [TopicPartition: Int64], add: Bool) {
        let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for (partition, offset) in partitions {
            rd_kafka_topic_partition_list_add(list, partition.topic, Int32(partition.partition)).pointee.offset = offset
        }
        if let error = add ? rd_kafka_incremental_assign(consumer, list) : rd_kafka_incremental_unassign(consumer, list) {
            logger.warning("Kafka: watching partitions for new records: \(String(cString: rd_kafka_error_string(error)))")
            rd_kafka_error_destroy(error)
        }
    }

    /// A record, the end of a partition, or an error: how far its partition reaches.
    private func seen(_ message: UnsafeMutablePointer<rd_kafka_message_t>) {
        guard let topic = message.pointee.rkt else { return }
        let partition = TopicPartition(topic: String(cString: rd_kafka_topic_name(topic)), partition: Int(message.pointee.partition))
        let code = message.pointee.err
        lock.withLock {
            guard let known = reach[partition] else { return }
            switch code {
            case RD_KAFKA_RESP_ERR_NO_ERROR:
                reach[partition] = max(known ?? 0, message.pointee.offset + 1)
            case RD_KAFKA_RESP_ERR__PARTITION_EOF:
                reach[partition] = max(known ?? 0, message.pointee.offset)
            default:
                // The topic went, or the partition cannot be read: its waiters go back and read,
                // which says what is wrong.
                toUnassign.insert(partition)
                for (id, waiter) in waiters where waiter.partition == partition { waiters[id]?.deadline = .now }
            }
        }
    }

    private func wakeReady() {
        let ready: [CheckedContinuation<Void, Never>] = lock.withLock {
            let now = ContinuousClock.now
            var ready: [CheckedContinuation<Void, Never>] = []
            for (id, waiter) in waiters {
                let arrived = (reach[waiter.partition] ?? nil).map { $0 > waiter.offset } ?? false
                guard arrived || waiter.deadline <= now else { continue }
                waiters[id] = nil
                ready.append(waiter.continuation)
            }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }
}

extension Duration {
    /// Whole milliseconds, rounded up (a wait of 0.4 ms is a wait of 1, not of 0).
    fileprivate var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    }
}

import CRdKafka
import Dispatch
import Foundation
import Logging
import ProvisionLog
import ProvisionModel

/// The `EventLog` on Apache Kafka, through librdkafka: topics and partitions are Kafka's, an
/// offset is a Kafka offset, a record's timestamp is its Kafka timestamp (CreateTime), and
/// records any Kafka producer wrote are read like Provision's own.
///
/// librdkafka's calls block; they run on threads of their own, never on the concurrency
/// pool, and their results are handed back through continuations. Appends are
/// acknowledged by all in-sync replicas (`acks=all`) with the idempotent producer, so a
/// retried request neither duplicates nor reorders a partition's records.
public final class KafkaEventLog: EventLog, @unchecked Sendable {
    public let bootstrapServers: String
    private let producer: OpaquePointer
    private let timeoutMilliseconds: Int32 = 30_000
    /// How long an offset query waits for the partition's leader: past it, the store is
    /// unavailable (a product says `SourceUnavailable` and retries).
    private let offsetTimeoutMilliseconds: Int32 = 10_000
    private let lock = NSLock()
    // Guarded by lock.
    /// Each partition's idle readers, the least recently used first. A read takes one out
    /// while it works, so products reading the same partition at different offsets (two
    /// backfills) never wait for each other's consumer, and a reader that stopped where a
    /// read starts keeps what it fetched ahead. Waits hold none (`ArrivalWatcher`): when they
    /// did, four products idle at a partition's end kept its four readers busy, and a new
    /// product's backfill waited up to a second for one at each of its partitions.
    private var idleReaders: [TopicPartition: [PartitionReader]] = [:]
    private var readerCounts: [TopicPartition: Int] = [:]
    /// Consumers per partition, at most: past it a read takes the least recently used idle
    /// one and moves it (each buffers up to librdkafka's `queued.max.messages.kbytes`).
    private static let readersPerPartitionMax = 4
    /// Topics seen in the cluster's metadata, with their partition counts: a read checks its
    /// partition exists here first (a miss refreshes), as asking a broker for a topic it does
    /// not have may create it.
    private var knownTopics: [String: Int] = [:]
    private let options: [String: String]
    /// The producer's handle of each topic appended to: naming the topic on every record
    /// made librdkafka look it up under a lock, and Swift copy the name, once per record.
    private var producerTopics: [String: UncheckedHandle] = [:]
    private let poller: Poller
    /// Waits of products idle at partitions' ends, all on one consumer.
    private let arrivals: ArrivalWatcher

    /// Connects to the brokers of `bootstrapServers` (`host:port,host:port`); `options` are
    /// librdkafka properties for every client it makes (`security.protocol`, …).
    public init(bootstrapServers: String, options: [String: String] = [:]) throws {
        self.bootstrapServers = bootstrapServers
        let handle = try Self.client(RD_KAFKA_PRODUCER, bootstrapServers, options.merging([
            "acks": "all",
            "enable.idempotence": "true",
            "linger.ms": "2",
            // Appends of many requests at once are queued whole (the default is 100,000
            // records, past which an append fails).
            "queue.buffering.max.messages": "1000000",
            // Provision's own producer never creates a topic by writing to it.
            "allow.auto.create.topics": "false",
        ]) { given, _ in given }) { rd_kafka_conf_set_dr_msg_cb($0, deliveryReported) }
        producer = handle
        self.options = options
        poller = Poller(UncheckedHandle(handle))
        do {
            arrivals = try ArrivalWatcher(bootstrapServers: bootstrapServers, options: options)
        } catch {
            poller.stop()
            rd_kafka_destroy(handle)
            throw error
        }
    }

    deinit {
        rd_kafka_flush(producer, 5_000)
        // The poller must be out of rd_kafka_poll before the handle goes.
        poller.stop()
        arrivals.stop()
        for topic in producerTopics.values { rd_kafka_topic_destroy(topic.pointer) }
        for reader in idleReaders.values.joined() { reader.close() }
        rd_kafka_destroy(producer)
    }

    /// A librdkafka client (producer or consumer) of the brokers, with these properties.
    static func client(_ type: rd_kafka_type_t, _ bootstrapServers: String, _ properties: [String: String],
                       configure: (OpaquePointer) -> Void = { _ in }) throws -> OpaquePointer
    {
        let configuration = rd_kafka_conf_new()!
        var error = [CChar](repeating: 0, count: 512)
        for (name, value) in [("bootstrap.servers", bootstrapServers), ("client.id", "provision")] + properties.sorted(by: { $0.key < $1.key }) {
            guard rd_kafka_conf_set(configuration, name, value, &error, error.count) == RD_KAFKA_CONF_OK else {
                rd_kafka_conf_destroy(configuration)
                throw EventLogError(.io, "Kafka setting \(name): \(errorText(error))")
            }
        }
        rd_kafka_conf_set_log_cb(configuration, logFromLibrdkafka)
        configure(configuration)
        // On success the client owns the configuration.
        guard let client = rd_kafka_new(type, configuration, &error, error.count) else {
            rd_kafka_conf_destroy(configuration)
            throw EventLogError(.io, "Kafka client: \(errorText(error))")
        }
        return client
    }

    /// A consumer that is assigned partitions at offsets (never subscribed, nothing
    /// committed: a product's checkpoint is its position) and says where a partition ends.
    /// The group id only names it to the brokers. `settings` add to or override these;
    /// `options`, the operator's, win over both.
    static func assignedConsumer(_ bootstrapServers: String, _ options: [String: String], group: String,
                                 settings: [String: String]) throws -> OpaquePointer
    {
        let assigned = ["group.id": group, "enable.auto.commit": "false", "enable.auto.offset.store": "false",
                        "enable.partition.eof": "true", "fetch.wait.max.ms": "100"]
        return try client(RD_KAFKA_CONSUMER, bootstrapServers,
                          options.merging(assigned.merging(settings) { _, specific in specific }) { given, _ in given })
    }

    /// Asks the brokers for a topic's partitions and leaders for a client that was just
    /// assigned one of them. Without it, a consumer learns them on librdkafka's scan of its
    /// topics, once a second: a new reader's first fetch waited up to a second for it.
    static func learnLeaders(of topic: String, with client: OpaquePointer) {
        guard let handle = rd_kafka_topic_new(client, topic, nil) else { return }
        defer { rd_kafka_topic_destroy(handle) }
        var metadata: UnsafePointer<rd_kafka_metadata>?
        // On failure (the brokers are away) the scan finds them later; the read says so then.
        if rd_kafka_metadata(client, 0, handle, &metadata, 5_000) == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata {
            rd_kafka_metadata_destroy(metadata)
        }
    }

    /// Runs a blocking librdkafka call off the concurrency pool, on a thread of its own. Not
    /// on a dispatch queue: a concurrent queue runs about as many blocks at once as there are
    /// cores, so on two cores two blocking calls of a second held up every read behind them.
    private func run<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Swift.Result { try body() }) }
            thread.stackSize = 512 * 1024
            thread.start()
        }
    }

    // MARK: Topics

    public func createTopic(_ topic: String, partitions: Int, compacted: Bool) async throws {
        guard TopicName.isValid(topic) else {
            throw EventLogError(.invalidTopicName, "'\(topic)' is not a valid topic name (letters, digits, '.', '_', '-')")
        }
        guard partitions >= 1 else { throw EventLogError(.invalidPartition, "a topic needs at least one partition") }
        if try await partitionCount(of: topic) != nil { return }
        let producer = UncheckedHandle(self.producer), timeout = timeoutMilliseconds
        try await run {
            var error = [CChar](repeating: 0, count: 512)
            // The broker's default replication factor (-1, KIP-464).
            guard let newTopic = rd_kafka_NewTopic_new(topic, Int32(partitions), -1, &error, error.count) else {
                throw EventLogError(.invalidPartition, "topic '\(topic)': \(errorText(error))")
            }
            defer { rd_kafka_NewTopic_destroy(newTopic) }
            // A dataset is the company's ledger, kept like the embedded log keeps it: forever.
            // Kafka's default (retention.ms of 7 days, measured from the records' timestamps)
            // would delete history imported with its real, older times within minutes. State
            // kept by key is compacted instead, as Kafka Connect keeps its configs and offsets.
            let settings = compacted ? [("cleanup.policy", "compact")] : [("retention.ms", "-1"), ("retention.bytes", "-1")]
            for (name, value) in settings {
                guard rd_kafka_NewTopic_set_config(newTopic, name, value) == RD_KAFKA_RESP_ERR_NO_ERROR else {
                    throw EventLogError(.io, "Kafka: topic '\(topic)': cannot set \(name)")
                }
            }
            let queue = rd_kafka_queue_new(producer.pointer)
            defer { rd_kafka_queue_destroy(queue) }
            var topics: [OpaquePointer?] = [newTopic]
            rd_kafka_CreateTopics(producer.pointer, &topics, 1, nil, queue)
            guard let event = rd_kafka_queue_poll(queue, timeout) else {
                throw EventLogError(.io, "Kafka: creating topic '\(topic)' had no answer in \(timeout / 1000) s")
            }
            defer { rd_kafka_event_destroy(event) }
            if rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR {
                throw EventLogError(.io, "Kafka: creating topic '\(topic)': \(String(cString: rd_kafka_event_error_string(event)))")
            }
            var count = 0
            let results = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(event), &count)
            for index in 0..<count {
                let code = rd_kafka_topic_result_error(results![index])
                // Created meanwhile by another server: the topic keeps its own partitions.
                guard code != RD_KAFKA_RESP_ERR_NO_ERROR, code != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS else { continue }
                throw EventLogError(.io, "Kafka: creating topic '\(topic)': \(String(cString: rd_kafka_topic_result_error_string(results![index])))")
            }
        }
        // Metadata reaches every broker a moment after creation.
        for _ in 0..<100 {
            if try await partitionCount(of: topic) != nil { return }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Topic name → partition count, from the cluster's metadata (Kafka's internal topics left out).
    private func topicPartitions() async throws -> [String: Int] {
        let producer = UncheckedHandle(self.producer), timeout = timeoutMilliseconds
        return try await run {
            var metadata: UnsafePointer<rd_kafka_metadata>?
            // All topics: asking for one by name would create it on a broker that auto-creates.
            let code = rd_kafka_metadata(producer.pointer, 1, nil, &metadata, timeout)
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR, let metadata else {
                throw EventLogError(.io, "Kafka metadata: \(String(cString: rd_kafka_err2str(code)))")
            }
            defer { rd_kafka_metadata_destroy(metadata) }
            var topics: [String: Int] = [:]
            for index in 0..<Int(metadata.pointee.topic_cnt) {
                let topic = metadata.pointee.topics[index]
                let name = String(cString: topic.topic)
                guard topic.err == RD_KAFKA_RESP_ERR_NO_ERROR, !name.hasPrefix("__") else { continue }
                topics[name] = Int(topic.partition_cnt)
            }
            return topics
        }
    }

    public func describeTopics() async throws -> [TopicDescription] {
        var descriptions: [TopicDescription] = []
        for (topic, count) in try await topicPartitions().sorted(by: { $0.key < $1.key }) {
            var partitions: [PartitionDescription] = []
            for partition in 0..<count {
                let (low, high) = try await watermarks(TopicPartition(topic: topic, partition: partition))
                partitions.append(PartitionDescription(partition: partition, startOffset: low, endOffset: high))
            }
            descriptions.append(TopicDescription(name: topic, partitions: partitions))
        }
        return descriptions
    }

    public func partitionCount(of topic: String) async throws -> Int? {
        let topics = try await topicPartitions()
        lock.withLock { knownTopics = topics }
        return topics[topic]
    }

    /// Throws unless the partition exists, from the known topics or, on a miss, fresh metadata.
    private func checkExists(_ partition: TopicPartition) async throws {
        var count = lock.withLock { knownTopics[partition.topic] }
        if count == nil || count! <= partition.partition { count = try await partitionCount(of: partition.topic) }
        guard let count else { throw EventLogError(.unknownTopic, "topic '\(partition.topic)' does not exist") }
        guard partition.partition >= 0 && partition.partition < count else {
            throw EventLogError(.invalidPartition, "topic '\(partition.topic)' has no partition \(partition.partition)")
        }
    }

    public func deleteTopic(_ topic: String) async throws {
        let producer = UncheckedHandle(self.producer), timeout = timeoutMilliseconds
        let removed = lock.withLock {
            knownTopics[topic] = nil
            let partitions = idleReaders.keys.filter { $0.topic == topic }
            defer {
                for partition in partitions {
                    idleReaders[partition] = nil
                    readerCounts[partition] = nil
                }
            }
            return partitions.flatMap { idleReaders[$0] ?? [] }
        }
        for reader in removed { reader.close() }
        try await run {
            let deletion = rd_kafka_DeleteTopic_new(topic)
            defer { rd_kafka_DeleteTopic_destroy(deletion) }
            let queue = rd_kafka_queue_new(producer.pointer)
            defer { rd_kafka_queue_destroy(queue) }
            var topics: [OpaquePointer?] = [deletion]
            rd_kafka_DeleteTopics(producer.pointer, &topics, 1, nil, queue)
            guard let event = rd_kafka_queue_poll(queue, timeout) else { throw EventLogError(.io, "Kafka: deleting topic '\(topic)' had no answer") }
            defer { rd_kafka_event_destroy(event) }
            var count = 0
            let results = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(event), &count)
            for index in 0..<count {
                let code = rd_kafka_topic_result_error(results![index])
                guard code != RD_KAFKA_RESP_ERR_NO_ERROR, code != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART else { continue }
                throw EventLogError(.io, "Kafka: deleting topic '\(topic)': \(String(cString: rd_kafka_err2str(code)))")
            }
        }
    }

    // MARK: Offsets

    /// The partition's log start and end (high watermark), from its leader.
    private func watermarks(_ partition: TopicPartition) async throws -> (low: Int64, high: Int64) {
        (try await listOffset(partition, Int64(RD_KAFKA_OFFSET_BEGINNING)), try await listOffset(partition, Int64(RD_KAFKA_OFFSET_END)))
    }

    /// One of a partition's offsets from its leader (ListOffsets): the start, the end, or
    /// the first at or after a time. `offsets_for_times` keeps to its timeout when the leader
    /// is down; `query_watermark_offsets` waits for the leader without end (librdkafka 2.0).
    private func listOffset(_ partition: TopicPartition, _ query: Int64) async throws -> Int64 {
        try await listOffsets([partition], query)[partition]!
    }

    /// The same offset of several partitions in one call: librdkafka sends each leader one
    /// request for all of its partitions.
    private func listOffsets(_ partitions: [TopicPartition], _ query: Int64) async throws -> [TopicPartition: Int64] {
        guard let first = partitions.first else { return [:] }
        for partition in partitions { try await checkExists(partition) }
        let producer = UncheckedHandle(self.producer), timeout = offsetTimeoutMilliseconds
        return try await run {
            let list = rd_kafka_topic_partition_list_new(Int32(partitions.count))!
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for partition in partitions {
                rd_kafka_topic_partition_list_add(list, partition.topic, Int32(partition.partition)).pointee.offset = query
            }
            let code = rd_kafka_offsets_for_times(producer.pointer, list, timeout)
            guard code == RD_KAFKA_RESP_ERR_NO_ERROR else { throw Self.error(code, first) }
            var offsets: [TopicPartition: Int64] = [:]
            for index in 0..<Int(list.pointee.cnt) {
                let element = list.pointee.elems[index]
                let partition = TopicPartition(topic: String(cString: element.topic), partition: Int(element.partition))
                guard element.err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw Self.error(element.err, partition) }
                offsets[partition] = element.offset
            }
            return offsets
        }
    }

    static func error(_ code: rd_kafka_resp_err_t, _ partition: TopicPartition) -> EventLogError {
        switch code {
        case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
            return EventLogError(.unknownTopic, "topic '\(partition.topic)' (or its partition \(partition.partition)) does not exist")
        case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
            return EventLogError(.invalidPartition, "topic '\(partition.topic)' has no partition \(partition.partition)")
        case RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__TIMED_OUT,
             RD_KAFKA_RESP_ERR__RESOLVE, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
             RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
            return EventLogError(.unavailable, "Kafka, \(partition.topic) partition \(partition.partition): \(String(cString: rd_kafka_err2str(code)))")
        case RD_KAFKA_RESP_ERR_INVALID_RECORD:
            // The one documented cause for a topic Provision writes: a keyless record in a compacted topic.
            return EventLogError(.invalidRecord, "Kafka, \(partition.topic) partition \(partition.partition): the broker refused a record (\(String(cString: rd_kafka_err2str(code)))); a compacted topic's records need a key")
        case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
            return EventLogError(.recordTooLarge, "a record is larger than the broker accepts for '\(partition.topic)'")
        default:
            return EventLogError(.io, "Kafka, \(partition.topic) partition \(partition.partition): \(String(cString: rd_kafka_err2str(code)))")
        }
    }

    public func startOffset(of partition: TopicPartition) async throws -> Int64 { try await listOffset(partition, Int64(RD_KAFKA_OFFSET_BEGINNING)) }

    public func endOffset(of partition: TopicPartition) async throws -> Int64 { try await listOffset(partition, Int64(RD_KAFKA_OFFSET_END)) }

    public func startOffsets(of partitions: [TopicPartition]) async throws -> [TopicPartition: Int64] {
        try await listOffsets(partitions, Int64(RD_KAFKA_OFFSET_BEGINNING))
    }

    public func endOffsets(of partitions: [TopicPartition]) async throws -> [TopicPartition: Int64] {
        try await listOffsets(partitions, Int64(RD_KAFKA_OFFSET_END))
    }

    /// Kafka's `offsetsForTimes` (ListOffsets by timestamp).
    public func offset(forTimestamp timestamp: TimestampMilliseconds, in partition: TopicPartition) async throws -> Int64 {
        let found = try await listOffset(partition, max(0, timestamp))
        // -1: no record at or after the time; the reader starts at the end.
        return found >= 0 ? found : try await endOffset(of: partition)
    }

    // MARK: Appending

    @discardableResult
    public func append(_ records: [LogRecord], to partition: TopicPartition) async throws -> Int64 {
        guard !records.isEmpty else { return try await endOffset(of: partition) }
        try await checkExists(partition)
        let delivery = DeliveryBatch(count: records.count)
        let producer = self.producer
        let topic = try producerTopic(partition.topic)
        let first: Int64 = try await withCheckedThrowingContinuation { continuation in
            delivery.continuation = continuation
            let opaque = Unmanaged.passRetained(delivery).toOpaque()
            // Each record looked at in the array: `enumerated()` copied it, retaining and
            // releasing its key, value and headers (4% of the server's samples producing a million).
            for index in records.indices {
                var headers: OpaquePointer?
                if !records[index].headers.isEmpty {
                    headers = rd_kafka_headers_new(records[index].headers.count)
                    for header in records[index].headers {
                        header.value.withUnsafeBytes { value in
                            _ = rd_kafka_header_add(headers, header.name, -1, value.baseAddress, value.count)
                        }
                    }
                }
                let code = Self.produce(producer, records[index], topic.pointer, Int32(partition.partition), headers, opaque)
                if code != RD_KAFKA_RESP_ERR_NO_ERROR {
                    if let headers { rd_kafka_headers_destroy(headers) }
                    // The ones not enqueued will never be reported: count them as failed.
                    delivery.failed(count: records.count - index, error: Self.error(code, partition))
                    break
                }
            }
        }
        return first
    }

    private func producerTopic(_ name: String) throws -> UncheckedHandle {
        try lock.withLock {
            if let handle = producerTopics[name] { return handle }
            guard let handle = rd_kafka_topic_new(producer, name, nil) else {
                throw EventLogError(.io, "Kafka: no handle for topic '\(name)': \(String(cString: rd_kafka_err2str(rd_kafka_last_error())))")
            }
            producerTopics[name] = UncheckedHandle(handle)
            return UncheckedHandle(handle)
        }
    }

    private static func produce(_ producer: OpaquePointer, _ record: LogRecord, _ topic: OpaquePointer, _ partition: Int32,
                                _ headers: OpaquePointer?, _ opaque: UnsafeMutableRawPointer) -> rd_kafka_resp_err_t
    {
        func withOptionalBytes<T>(_ bytes: [UInt8]?, _ body: (UnsafeRawPointer?, Int) -> T) -> T {
            guard let bytes else { return body(nil, 0) }
            return bytes.withUnsafeBytes { body($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), $0.count) }
        }
        return withOptionalBytes(record.key) { key, keyLength in
            withOptionalBytes(record.value) { value, valueLength in
                provision_rdkafka_produce(producer, topic, partition, key, keyLength, value, valueLength,
                                          record.timestamp, headers, opaque)
            }
        }
    }

    // MARK: Reading

    /// A reader of `partition` for a read at `offset`, taken out of the pool until `checkIn`:
    /// the idle one positioned there, or a new one, or (at the limit) the least recently used.
    /// Nil when every reader of the partition is busy and none may be added.
    private func checkOutReader(_ partition: TopicPartition, at offset: Int64) throws -> PartitionReader? {
        try lock.withLock {
            var idle = idleReaders[partition] ?? []
            defer { idleReaders[partition] = idle }
            if let index = idle.firstIndex(where: { $0.nextOffset == offset }) { return idle.remove(at: index) }
            if readerCounts[partition, default: 0] < Self.readersPerPartitionMax {
                let reader = try PartitionReader(partition: partition, bootstrapServers: bootstrapServers, options: options)
                readerCounts[partition, default: 0] += 1
                return reader
            }
            return idle.isEmpty ? nil : idle.removeFirst()
        }
    }

    /// Back into the pool; closed instead when its topic was deleted while it read (the
    /// deletion closed the idle ones and forgot the partition's count).
    private func checkIn(_ reader: PartitionReader) {
        let pooled = lock.withLock {
            guard readerCounts[reader.partition] != nil else { return false }
            idleReaders[reader.partition, default: []].append(reader)
            return true
        }
        if !pooled { reader.close() }
    }

    /// Runs `body` with a reader of the partition at `offset`, waiting for one while all are busy.
    private func withReader<Result: Sendable>(_ partition: TopicPartition, at offset: Int64,
                                              _ body: @escaping @Sendable (PartitionReader) throws -> Result) async throws -> Result
    {
        var reader = try checkOutReader(partition, at: offset)
        while reader == nil {
            try await Task.sleep(for: .milliseconds(5))
            reader = try checkOutReader(partition, at: offset)
        }
        let taken = reader!
        defer { checkIn(taken) }
        return try await run { try body(taken) }
    }

    public func readBatch(_ partition: TopicPartition, from offset: Int64, maxRecords: Int, maxBytes: Int) async throws -> RecordBatch {
        try await checkExists(partition)
        guard maxRecords > 0 else { return RecordBatch() }
        // No offset query first: the consumer says where the partition ends (an offset below
        // the start reads from the start: `auto.offset.reset=earliest`).
        return try await withReader(partition, at: offset) { try $0.read(from: offset, maxRecords: maxRecords, maxBytes: maxBytes) }
    }

    /// A reader of each partition is positioned now, so librdkafka fetches them all at once
    /// (it fetches ahead of the reads, `queued.min.messages`): a backfill reading its
    /// partitions in turn then finds each one's records there when its turn comes.
    public func prepareReads(from positions: [TopicPartition: Int64]) async {
        await withTaskGroup(of: Void.self) { group in
            for (partition, offset) in positions {
                guard (try? await checkExists(partition)) != nil,
                      let reader = try? checkOutReader(partition, at: offset) else { continue }
                group.addTask {
                    _ = try? await self.run { try reader.prepare(at: offset) }
                    self.checkIn(reader)
                }
            }
        }
    }

    /// Waits for records under way now, on every partition.
    public var waitsPending: Int { arrivals.waitsPending }

    /// Partitions followed for waits: each one someone waited at in the last few seconds.
    public var partitionsFollowedForWaits: Int { arrivals.partitionsFollowed }

    public func waitForRecords(in partition: TopicPartition, at offset: Int64, timeout: Duration) async throws {
        try await checkExists(partition)
        // No reader held while waiting: one consumer watches every partition someone waits at.
        await arrivals.wait(for: partition, at: offset, timeout: timeout)
    }
}

/// A handle librdkafka makes safe to share between threads.
struct UncheckedHandle: @unchecked Sendable {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
}

/// Serves the producer's delivery reports, which arrive through rd_kafka_poll, on a thread of
/// its own until stopped.
final class Poller: @unchecked Sendable {
    private let lock = NSLock()
    private var stopping = false
    private let stopped = DispatchSemaphore(value: 0)

    init(_ producer: UncheckedHandle) {
        let thread = Thread { [self] in
            while !lock.withLock({ stopping }) { rd_kafka_poll(producer.pointer, 100) }
            stopped.signal()
        }
        thread.name = "provision.kafka.poll"
        thread.start()
    }

    /// Returns once the thread has left rd_kafka_poll for good.
    func stop() {
        lock.withLock { stopping = true }
        stopped.wait()
    }
}

/// The records of one append, until librdkafka has reported each delivered or failed.
final class DeliveryBatch: @unchecked Sendable {
    private let lock = NSLock()
    private var remaining: Int
    private var first: Int64 = .max
    private var error: Error?
    var continuation: CheckedContinuation<Int64, Error>?

    init(count: Int) { remaining = count }

    func delivered(offset: Int64) { finish(count: 1) { first = min(first, offset) } }

    func failed(count: Int, error: Error) { finish(count: count) { self.error = self.error ?? error } }

    private func finish(count: Int, _ update: () -> Void) {
        let done: CheckedContinuation<Int64, Error>? = lock.withLock {
            update()
            remaining -= count
            guard remaining == 0 else { return nil }
            defer { continuation = nil }
            return continuation
        }
        guard let done else { return }
        if let error { done.resume(throwing: error) } else { done.resume(returning: first) }
        // The one reference the append gave librdkafka's reports to share.
        Unmanaged.passUnretained(self).release()
    }
}

/// librdkafka's delivery report, on the poller thread: one per record.
private let deliveryReported: @convention(c) (OpaquePointer?, UnsafePointer<rd_kafka_message_t>?, UnsafeMutableRawPointer?) -> Void = {
    _, message, _ in
    guard let message, let opaque = message.pointee._private else { return }
    let batch = Unmanaged<DeliveryBatch>.fromOpaque(opaque).takeUnretainedValue()
    let code = message.pointee.err
    if code == RD_KAFKA_RESP_ERR_NO_ERROR {
        batch.delivered(offset: message.pointee.offset)
    } else {
        batch.failed(count: 1, error: KafkaEventLog.error(code, TopicPartition(topic: String(cString: rd_kafka_topic_name(message.pointee.rkt)),
                                                                               partition: Int(message.pointee.partition))))
    }
}

/// The text librdkafka wrote into an error buffer.
func errorText(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// librdkafka's log lines (a broker refusing connections, a leader moving) in the server's
/// log, with its syslog levels, instead of on standard error.
private let librdkafkaLogger = Logger(label: "provision.kafka")

private func logFromLibrdkafka(_ client: OpaquePointer?, _ level: Int32, _ facility: UnsafePointer<CChar>?, _ message: UnsafePointer<CChar>?) {
    let severity: Logger.Level = switch level {
    case ...3: .error
    case 4: .warning
    case 5: .notice
    case 6: .info
    default: .debug
    }
    librdkafkaLogger.log(level: severity, "\(message.map { String(cString: $0) } ?? "")",
                         metadata: ["facility": "\(facility.map { String(cString: $0) } ?? "")",
                                    "client": "\(client.map { String(cString: rd_kafka_name($0)) } ?? "")"])
}

import Foundation
import ProvisionLog
import ProvisionModel
import ProvisionPipeline
import Synchronization

/// Checkpoints of sinks with no transactional place of their own (files, Elasticsearch,
/// webhooks) in a compacted topic of the event log, one record per product keyed by its name:
/// on Kafka, a server on an empty data directory resumes them from the brokers, as Kafka
/// Connect keeps source offsets. The topic is read once when the store opens; a save returns
/// once the log has it.
public final class LogCheckpointStore: CheckpointStore {
    public static let defaultTopic = "_provision.checkpoints"

    public let log: any EventLog
    public let partition: TopicPartition
    private let checkpoints: Mutex<[String: Checkpoint]>

    public init(log: any EventLog, topic: String = defaultTopic) async throws {
        self.log = log
        partition = TopicPartition(topic: topic, partition: 0)
        try await log.createTopic(topic, partitions: 1, compacted: true)
        var loaded: [String: Checkpoint] = [:]
        let decoder = JSONDecoder()
        for stored in try await log.readToEnd(partition) {
            guard let key = stored.record.key else { continue }
            let product = String(decoding: key, as: UTF8.self)
            loaded[product] = try stored.record.value.map { try decoder.decode(Checkpoint.self, from: Data($0)) }
        }
        checkpoints = Mutex(loaded)
    }

    public func load(_ product: String) async throws -> Checkpoint? {
        checkpoints.withLock { $0[product] }
    }

    // A product's saves come one at a time from its own pipeline, in order.
    public func save(_ checkpoint: Checkpoint, for product: String) async throws {
        let value = try JSONEncoder().encode(checkpoint)
        try await log.append([LogRecord(key: Array(product.utf8), value: Array(value), timestamp: Reconciler.now())], to: partition)
        checkpoints.withLock { $0[product] = checkpoint }
    }

    public func remove(_ product: String) async throws {
        guard checkpoints.withLock({ $0[product] != nil }) else { return }
        try await log.append([LogRecord(key: Array(product.utf8), value: nil, timestamp: Reconciler.now())], to: partition)
        checkpoints.withLock { $0[product] = nil }
    }
}

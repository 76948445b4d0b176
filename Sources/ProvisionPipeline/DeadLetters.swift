import ProvisionLog
import ProvisionModel

/// Where a product's unprocessable events go: a topic of their own, each record the original
/// key, value and time, with headers saying why and where it came from.
public enum DeadLetters {
    public static func topic(for product: String) -> String { TopicName.deadLetters(of: product) }

    public static let reasonHeader = "provision.reason"
    public static let sourceTopicHeader = "provision.source.topic"
    public static let sourcePartitionHeader = "provision.source.partition"
    public static let sourceOffsetHeader = "provision.source.offset"

    public static func record(for stored: StoredRecord, from source: TopicPartition, reason: String) -> LogRecord {
        var headers = stored.record.headers
        headers.append(LogHeader(name: reasonHeader, text: reason))
        headers.append(LogHeader(name: sourceTopicHeader, text: source.topic))
        headers.append(LogHeader(name: sourcePartitionHeader, text: String(source.partition)))
        headers.append(LogHeader(name: sourceOffsetHeader, text: String(stored.offset)))
        return LogRecord(key: stored.record.key, value: stored.record.value, timestamp: stored.record.timestamp, headers: headers)
    }
}

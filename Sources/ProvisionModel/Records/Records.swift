/// The records of the central event store as values: what is appended, what is read back,
/// and where. The store itself (`EventLog`) lives in ProvisionLog; these types are shared by
/// everything that names records without reading a log (the API's wire formats among them).

/// A record header: a name and opaque bytes.
public struct LogHeader: Sendable, Equatable {
    public var name: String
    public var value: [UInt8]

    public init(name: String, value: [UInt8]) {
        self.name = name
        self.value = value
    }

    public init(name: String, text: String) {
        self.init(name: name, value: Array(text.utf8))
    }
}

/// A record as appended: a key, a value (nil is a tombstone: it deletes the key), the
/// record's timestamp in milliseconds, and headers.
public struct LogRecord: Sendable, Equatable {
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var timestamp: TimestampMilliseconds
    public var headers: [LogHeader]

    public init(key: [UInt8]?, value: [UInt8]?, timestamp: TimestampMilliseconds, headers: [LogHeader] = []) {
        self.key = key
        self.value = value
        self.timestamp = timestamp
        self.headers = headers
    }

    public func header(_ name: String) -> [UInt8]? {
        headers.first { $0.name == name }?.value
    }
}

/// A record as read back, with its position in the partition.
public struct StoredRecord: Sendable, Equatable {
    public var offset: Int64
    public var record: LogRecord

    public init(offset: Int64, record: LogRecord) {
        self.offset = offset
        self.record = record
    }
}

public struct TopicPartition: Sendable, Hashable, CustomStringConvertible {
    public var topic: String
    public var partition: Int

    public init(topic: String, partition: Int) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)-\(partition)" }
}

public struct PartitionDescription: Sendable, Equatable, Codable {
    public var partition: Int
    /// The first offset still retained.
    public var startOffset: Int64
    /// The offset the next record will get.
    public var endOffset: Int64

    public init(partition: Int, startOffset: Int64, endOffset: Int64) {
        self.partition = partition
        self.startOffset = startOffset
        self.endOffset = endOffset
    }
}

public struct TopicDescription: Sendable, Equatable, Codable {
    public var name: String
    public var partitions: [PartitionDescription]

    public init(name: String, partitions: [PartitionDescription]) {
        self.name = name
        self.partitions = partitions
    }
}

public enum TopicName {
    /// Where a product's dead letters go: `_deadletter.<product>`.
    public static func deadLetters(of product: String) -> String { "_deadletter.\(product)" }

    /// The product whose dead letters `topic` holds, if it is such a topic.
    public static func product(ofDeadLetters topic: String) -> String? {
        topic.hasPrefix("_deadletter.") ? String(topic.dropFirst("_deadletter.".count)) : nil
    }

    /// The server's own state (control objects, checkpoints) when the store is Kafka: never
    /// listed, read or written through the API.
    public static func isInternal(_ name: String) -> Bool { name.hasPrefix("_provision.") }

    /// Letters, digits, `.`, `_` and `-`, at most 200 (a name is a directory of the embedded
    /// log, and Kafka allows no more).
    public static func isValid(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 200 && name != "." && name != ".."
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") }
    }
}

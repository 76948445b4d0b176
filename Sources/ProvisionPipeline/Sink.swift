import ProvisionModel

/// One output record of a product.
public struct OutputRecord: Sendable {
    public enum Body: Sendable {
        /// Values in the order of the output schema (a product with `select`).
        case row([Value])
        /// The whole event (a product without `select`): its JSON text as it arrived, and
        /// the values of the output schema's fields, in schema order.
        case document(raw: [UInt8], fields: [JSONValue?])
        /// The key was deleted upstream.
        case tombstone
    }

    public var key: Value?
    public var body: Body
    public var partition: Int
    public var offset: Int64
    public var eventTime: TimestampMilliseconds

    public init(key: Value?, body: Body, partition: Int, offset: Int64, eventTime: TimestampMilliseconds) {
        self.key = key
        self.body = body
        self.partition = partition
        self.offset = offset
        self.eventTime = eventTime
    }
}

/// A destination for a product's output. Every sink (file, PostgreSQL, Elasticsearch,
/// webhook) implements this one protocol; the pipeline knows no other.
///
/// The contract that makes delivery exactly once (or effectively once): `open` returns the
/// checkpoint that matches the output as it stands, repairing the output if a crash left it
/// ahead, and `write` commits records and checkpoint together.
public protocol Sink: Sendable {
    /// A human description of where the output is, for status and logs (no secrets).
    var location: String { get }

    /// Provisions the destination if needed and returns the committed checkpoint (nil when
    /// the output is new).
    func open() async throws -> Checkpoint?

    /// Writes the records and commits `checkpoint` with them.
    func write(_ records: [OutputRecord], checkpoint: Checkpoint) async throws

    func close() async

    /// Removes the output and its checkpoint: the product was deleted with `Delete`, or its
    /// output is rebuilt from scratch.
    func destroy() async throws
}

/// A sink failure with a reason fit for status (`SinkUnavailable`, `OutputConflict`…).
public struct SinkError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var message: String

    public init(reason: String, message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { message }
}

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

extension OutputRecord {
    /// Appends the record's value as JSON on one line: a row as an object of the schema's
    /// fields, a whole event as it arrived (a producer may have pretty-printed it; newlines
    /// can only be whitespace between tokens, so they go). Returns false for a tombstone,
    /// which has no value.
    @discardableResult
    public func writeJSONValue(schema: Schema, into output: inout [UInt8]) -> Bool {
        writeJSONValue(keys: JSONRowKeys(schema), into: &output)
    }

    /// The same, with the field names encoded once for every record of a schema.
    public func writeJSONValue(keys: JSONRowKeys, into output: inout [UInt8]) -> Bool {
        switch body {
        case .row(let values):
            if values.isEmpty { output.append(UInt8(ascii: "{")) }
            for index in values.indices {
                output.append(contentsOf: keys.prefixes[index])
                values[index].writeJSON(into: &output)
            }
            output.append(UInt8(ascii: "}"))
        case .document(let raw, _):
            if raw.contains(0x0A) || raw.contains(0x0D) {
                output.append(contentsOf: raw.filter { $0 != 0x0A && $0 != 0x0D })
            } else {
                output.append(contentsOf: raw)
            }
        case .tombstone:
            return false
        }
        return true
    }
}

/// The `{"name":` and `,"name":` before each field of an output row, encoded once per schema.
public struct JSONRowKeys: Sendable {
    let prefixes: [[UInt8]]

    public init(_ schema: Schema) {
        prefixes = schema.fields.enumerated().map { index, field in
            var prefix: [UInt8] = [index == 0 ? UInt8(ascii: "{") : UInt8(ascii: ",")]
            JSONWriter.writeString(field.name, into: &prefix)
            prefix.append(UInt8(ascii: ":"))
            return prefix
        }
    }
}

/// Which build of a product's output a sink writes. A product is built again from its
/// history when its output changes; sinks that can build the new output beside the one
/// readers use (a table, an index behind an alias) swap it in when it has caught up.
public struct SinkBuild: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable, Codable {
        /// The output is new, or its old contents were removed first.
        case fresh
        /// The output changes shape: build it beside the current one, then swap.
        case replacement
        /// The output only gains fields: keep it, add them, and fill them from history.
        case widening
    }

    /// Increases with every rebuild of the product's output.
    public var number: Int
    public var kind: Kind

    public init(number: Int, kind: Kind) {
        self.number = number
        self.kind = kind
    }
}

/// A record the destination refused (a value out of range, a mapping conflict): it goes to
/// the product's dead-letter topic with the destination's own words, and the rest proceed.
public struct SinkRejection: Sendable, Equatable {
    public var partition: Int
    public var offset: Int64
    public var reason: String

    public init(partition: Int, offset: Int64, reason: String) {
        self.partition = partition
        self.offset = offset
        self.reason = reason
    }
}

/// One batch for a sink: the records, the checkpoint to commit with them, and where to send
/// the records the destination refuses.
public struct SinkBatch: Sendable {
    public var records: [OutputRecord]
    public var checkpoint: Checkpoint
    /// Makes rejected records durable in the dead-letter topic. A sink calls it before it
    /// commits the checkpoint that passes them, so none is lost (a crash in between
    /// dead-letters them again: at least once).
    public var deadLetter: @Sendable ([SinkRejection]) async throws -> Void

    public init(records: [OutputRecord], checkpoint: Checkpoint,
                deadLetter: @escaping @Sendable ([SinkRejection]) async throws -> Void)
    {
        self.records = records
        self.checkpoint = checkpoint
        self.deadLetter = deadLetter
    }

    /// The checkpoint to commit once `rejected` records went to the dead-letter topic.
    public func checkpoint(rejecting rejected: Int) -> Checkpoint {
        var committed = checkpoint
        committed.recordsWritten -= Int64(rejected)
        committed.deadLettered += Int64(rejected)
        return committed
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

    /// True when writes wait on another server, so reading and processing the next batch
    /// meanwhile pays for the second batch it holds in memory. A local file is written
    /// faster than a batch is processed: there it would only cost memory.
    var readsAhead: Bool { get }

    /// How long a live record may wait for others to go out with it (zero: not at all).
    var linger: Duration { get }

    /// Provisions the destination if needed and returns the committed checkpoint (nil when
    /// the output is new).
    func open() async throws -> Checkpoint?

    /// Writes the records and commits the batch's checkpoint with them; returns the
    /// checkpoint committed (its counts include records the destination refused).
    func write(_ batch: SinkBatch) async throws -> Checkpoint

    /// Called each time the pipeline has caught up with the log: a build written beside the
    /// output readers use takes its place here, atomically. Idempotent.
    func promote() async throws

    func close() async

    /// The product is deleted with `Retain`: the output stays as it is, but it is no longer
    /// maintained, and a product that takes it over later starts from the beginning.
    func detach() async throws

    /// Removes the output and its checkpoint: the product was deleted with `Delete`, or its
    /// output is rebuilt from scratch.
    func destroy() async throws
}

extension Sink {
    public var readsAhead: Bool { false }
    public var linger: Duration { .zero }
    public func promote() async throws {}
    public func detach() async throws {}
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

import Foundation
import ProvisionModel

/// How far a product's output has got: per source partition, the next offset to read.
/// A sink commits it atomically with the output it covers.
public struct Checkpoint: Sendable, Equatable, Codable {
    /// Source partition → the next offset to process.
    public var offsets: [Int: Int64]
    /// Output records written so far.
    public var recordsWritten: Int64
    /// Records sent to the dead-letter topic so far.
    public var deadLettered: Int64
    /// Sink-specific position, such as the byte length of an output file.
    public var sinkPosition: Int64
    /// For a product with joins: how far each joined input was read for the output this
    /// checkpoint covers. The join state is rebuilt from it on restart.
    public var joins: JoinPosition?
    /// Source records read so far (those filtered out too).
    public var recordsRead: Int64?
    /// The event time of the newest record delivered: how fresh the output is.
    public var newestEventTime: TimestampMilliseconds?

    public init(offsets: [Int: Int64], recordsWritten: Int64 = 0, deadLettered: Int64 = 0, sinkPosition: Int64 = 0,
                joins: JoinPosition? = nil)
    {
        self.offsets = offsets
        self.recordsWritten = recordsWritten
        self.deadLettered = deadLettered
        self.sinkPosition = sinkPosition
        self.joins = joins
    }
}

/// The part of a joined product's progress that is not source offsets. Join state itself is
/// not stored: it is a function of the joined inputs up to these offsets and of the
/// watermark, so a restart reads it back and resumes with the same output.
public struct JoinPosition: Sendable, Equatable, Codable {
    /// Join name (`as`) → partition → the next offset to read.
    public var inputs: [String: [Int: Int64]]
    /// The newest source event time processed, in checkpoints written before partitions had
    /// watermarks of their own: read (as partition 0's), no longer written.
    public var watermark: TimestampMilliseconds?
    /// Per source partition, the newest event time processed: an event's lookups follow its
    /// partition's, and the prune horizon the slowest partition's.
    public var watermarks: [Int: TimestampMilliseconds]?
    /// Records that arrived after the output they belonged to (see `JoinInputs` and
    /// `StreamJoin`).
    public var late: Int64
    /// A windowed join's stream time: the newest event time of both inputs processed, or
    /// the wall clock a quiet join moved it to.
    public var streamTime: TimestampMilliseconds?

    public init(inputs: [String: [Int: Int64]] = [:], watermark: TimestampMilliseconds? = nil, late: Int64 = 0,
                watermarks: [Int: TimestampMilliseconds]? = nil, streamTime: TimestampMilliseconds? = nil)
    {
        self.watermarks = watermarks
        self.inputs = inputs
        self.watermark = watermark
        self.late = late
        self.streamTime = streamTime
    }
}

/// Keeps checkpoints for sinks that cannot store them beside their output (files,
/// Elasticsearch, webhooks). Sinks with transactions (PostgreSQL) keep theirs in the
/// destination instead. A save is durable when it returns.
public protocol CheckpointStore: Sendable {
    func load(_ product: String) async throws -> Checkpoint?
    func save(_ checkpoint: Checkpoint, for product: String) async throws
    func remove(_ product: String) async throws
}

/// One small JSON file per product, replaced atomically (write, fsync, rename, fsync the
/// directory), so a crash leaves either the old or the new checkpoint.
public struct FileCheckpointStore: CheckpointStore {
    public let directory: String

    public init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    private func path(_ product: String) -> String { "\(directory)/\(product).json" }

    public func load(_ product: String) throws -> Checkpoint? {
        guard let data = FileManager.default.contents(atPath: path(product)) else { return nil }
        return try JSONDecoder().decode(Checkpoint.self, from: data)
    }

    public func save(_ checkpoint: Checkpoint, for product: String) throws {
        try DurableFile.replace(path(product), with: try JSONEncoder().encode(checkpoint))
    }

    public func remove(_ product: String) throws {
        if FileManager.default.fileExists(atPath: path(product)) {
            try FileManager.default.removeItem(atPath: path(product))
        }
    }
}

/// Crash-safe whole-file replacement.
public enum DurableFile {
    public static func replace(_ path: String, with data: Data) throws {
        let temporary = path + ".tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(descriptor) }
        try data.withUnsafeBytes { bytes in
            var written = 0
            while written < bytes.count {
                let result = write(descriptor, bytes.baseAddress! + written, bytes.count - written)
                if result < 0 {
                    if errno == EINTR { continue }
                    throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
                }
                written += result
            }
        }
        guard fsync(descriptor) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        guard rename(temporary, path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let directory = (path as NSString).deletingLastPathComponent
        let directoryDescriptor = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY)
        if directoryDescriptor >= 0 {
            fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }
}

/// Another store's checkpoints under a suffixed name: a second reader of a product (its
/// redelivery of dead letters) keeps its position beside the product's own.
public struct SuffixedCheckpointStore: CheckpointStore {
    public let base: any CheckpointStore
    public let suffix: String

    public init(base: any CheckpointStore, suffix: String) {
        self.base = base
        self.suffix = suffix
    }

    public func load(_ product: String) async throws -> Checkpoint? { try await base.load(product + suffix) }
    public func save(_ checkpoint: Checkpoint, for product: String) async throws { try await base.save(checkpoint, for: product + suffix) }
    public func remove(_ product: String) async throws { try await base.remove(product + suffix) }
}

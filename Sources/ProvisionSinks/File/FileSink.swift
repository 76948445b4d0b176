#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import ProvisionFailpoints
import ProvisionModel
import ProvisionPipeline

/// Writes a product as JSON Lines or CSV under the server's file root, exactly once: each
/// batch is synced before its checkpoint (which records the file's length) is saved, and
/// `open` cuts the file back to the checkpointed length, so a crash neither loses nor
/// doubles a line.
///
/// Not thread-safe: one pipeline owns it, and calls it from one task at a time.
public final class FileSink: Sink, @unchecked Sendable {
    public let path: String
    private let format: FileSinkSpec.Format
    private let outputSchema: Schema
    private let rowKeys: JSONRowKeys
    private let product: String
    private let checkpoints: any CheckpointStore
    private var descriptor: Int32 = -1
    private var sizeBytes: Int = 0
    private let root: String
    private let relativePath: String

    /// - Parameters:
    ///   - root: the file root; every path component below it is opened without following
    ///     symbolic links, so the output stays inside it.
    ///   - relativePath: the output's path below the root, normalised (no `.` or `..`).
    public init(root: String, relativePath: String, format: FileSinkSpec.Format, outputSchema: Schema, product: String,
                checkpoints: any CheckpointStore)
    {
        self.root = root.hasSuffix("/") ? String(root.dropLast()) : root
        self.relativePath = relativePath
        path = "\(self.root)/\(relativePath)"
        self.format = format
        rowKeys = JSONRowKeys(outputSchema)
        self.outputSchema = outputSchema
        self.product = product
        self.checkpoints = checkpoints
    }

    deinit {
        if descriptor >= 0 { Glibc.close(descriptor) }
    }

    public var location: String { "file://\(path)" }

    public func open() async throws -> Checkpoint? {
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = -1
        descriptor = try RootedFile.open(root: root, relativePath: relativePath)
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw posixFailure("cannot stat \(path)") }
        var checkpoint = try await checkpoints.load(product)
        if let committed = checkpoint, Int(info.st_size) < Int(committed.sinkPosition) {
            // The file is shorter than what was committed: it was removed or cut outside
            // Provision. Padding it would write garbage, so the output is rebuilt instead.
            try await checkpoints.remove(product)
            checkpoint = nil
        }
        let committedBytes = Int(checkpoint?.sinkPosition ?? 0)
        if Int(info.st_size) != committedBytes {
            // Bytes past the checkpoint were written by a batch whose checkpoint never landed:
            // that batch is read again, so its lines must go.
            guard ftruncate(descriptor, off_t(committedBytes)) == 0 else { throw posixFailure("cannot truncate \(path)") }
            guard fsync(descriptor) == 0 else { throw posixFailure("cannot sync \(path)") }
        }
        sizeBytes = committedBytes
        if sizeBytes == 0, format == .csv {
            var header: [UInt8] = []
            for (index, field) in outputSchema.fields.enumerated() {
                if index > 0 { header.append(UInt8(ascii: ",")) }
                CSV.writeCell(field.name, into: &header)
            }
            header.append(UInt8(ascii: "\n"))
            try writeAndSync(header)
            // The header is part of the committed output from now on.
            var initial = checkpoint ?? Checkpoint(offsets: [:])
            initial.sinkPosition = Int64(sizeBytes)
            if checkpoint != nil { try await checkpoints.save(initial, for: product) }
        }
        return checkpoint
    }

    public func write(_ batch: SinkBatch) async throws -> Checkpoint {
        let records = batch.records
        var buffer: [UInt8] = []
        buffer.reserveCapacity(records.count * 128)
        for record in records {
            switch format {
            case .jsonl: encodeJSONLine(record, into: &buffer)
            case .csv: encodeCSVLine(record, into: &buffer)
            }
        }
        if !buffer.isEmpty { try writeAndSync(buffer) }
        Failpoint.reached(.fileBatchSynced)
        var committed = batch.checkpoint
        committed.sinkPosition = Int64(sizeBytes)
        try await checkpoints.save(committed, for: product)
        return committed
    }

    public func close() async {
        if descriptor >= 0 {
            Glibc.close(descriptor)
            descriptor = -1
        }
    }

    public func destroy() async throws {
        await close()
        try RootedFile.remove(root: root, relativePath: relativePath)
        try await checkpoints.remove(product)
    }

    // MARK: Encoding

    /// Tombstones have no line: a file is a record of events, not a table.
    private func encodeJSONLine(_ record: OutputRecord, into buffer: inout [UInt8]) {
        if record.writeJSONValue(keys: rowKeys, into: &buffer) { buffer.append(UInt8(ascii: "\n")) }
    }

    private func encodeCSVLine(_ record: OutputRecord, into buffer: inout [UInt8]) {
        switch record.body {
        case .row(let values):
            for (index, value) in values.enumerated() {
                if index > 0 { buffer.append(UInt8(ascii: ",")) }
                CSV.writeCell(value.text, into: &buffer)
            }
        case .document(_, let fields):
            for (index, value) in fields.enumerated() {
                if index > 0 { buffer.append(UInt8(ascii: ",")) }
                let value = value ?? .null
                CSV.writeCell(value.isNull ? "" : Value.json(value).text, into: &buffer)
            }
        case .tombstone:
            return
        }
        buffer.append(UInt8(ascii: "\n"))
    }

    // MARK: I/O

    private func writeAndSync(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var written = 0
            while written < raw.count {
                let result = pwrite(descriptor, raw.baseAddress! + written, raw.count - written, off_t(sizeBytes + written))
                if result < 0 {
                    if errno == EINTR { continue }
                    throw posixFailure("cannot write \(path)")
                }
                written += result
            }
        }
        guard fdatasync(descriptor) == 0 else { throw posixFailure("cannot sync \(path)") }
        sizeBytes += bytes.count
    }

    private func posixFailure(_ what: String) -> SinkError {
        SinkError(reason: "SinkUnavailable", message: "\(what): \(String(cString: strerror(errno)))")
    }
}

/// RFC 4180 cells: quoted when they hold a comma, a quote or a line break.
enum CSV {
    static func writeCell(_ text: String, into buffer: inout [UInt8]) {
        let needsQuotes = text.utf8.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 0x0A || $0 == 0x0D }
        guard needsQuotes else {
            buffer.append(contentsOf: text.utf8)
            return
        }
        buffer.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            if byte == UInt8(ascii: "\"") { buffer.append(byte) }
            buffer.append(byte)
        }
        buffer.append(UInt8(ascii: "\""))
    }
}

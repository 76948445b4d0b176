#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import ProvisionModel
import Synchronization

/// A file descriptor that closes when its last user lets go, so a reader can finish with a
/// segment that retention deleted meanwhile.
final class FileDescriptor: Sendable {
    let rawValue: Int32

    init(path: String, flags: Int32) throws {
        let descriptor = open(path, flags | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw EventLogError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        rawValue = descriptor
    }

    deinit { close(rawValue) }

    func size() throws -> Int {
        var info = stat()
        guard fstat(rawValue, &info) == 0 else { throw EventLogError(.io, "fstat failed: \(String(cString: strerror(errno)))") }
        return Int(info.st_size)
    }

    func write(_ bytes: UnsafeRawBufferPointer, at position: Int) throws {
        var written = 0
        while written < bytes.count {
            let result = pwrite(rawValue, bytes.baseAddress! + written, bytes.count - written, off_t(position + written))
            if result < 0 {
                if errno == EINTR { continue }
                throw EventLogError(.io, "write failed: \(String(cString: strerror(errno)))")
            }
            written += result
        }
    }

    /// Reads up to `count` bytes; fewer only at the end of the file.
    func read(into buffer: UnsafeMutableRawBufferPointer, count: Int, at position: Int) throws -> Int {
        var total = 0
        while total < count {
            let result = pread(rawValue, buffer.baseAddress! + total, count - total, off_t(position + total))
            if result < 0 {
                if errno == EINTR { continue }
                throw EventLogError(.io, "read failed: \(String(cString: strerror(errno)))")
            }
            if result == 0 { break }
            total += result
        }
        return total
    }

    func synchronize() throws {
        guard fdatasync(rawValue) == 0 else { throw EventLogError(.io, "fdatasync failed: \(String(cString: strerror(errno)))") }
    }

    func truncate(to size: Int) throws {
        guard ftruncate(rawValue, off_t(size)) == 0 else {
            throw EventLogError(.io, "truncate failed: \(String(cString: strerror(errno)))")
        }
    }
}

/// The data files' descriptors, opened on use and closed when unused for longest: a log of
/// thousands of topics holds the descriptors of the few hundred segments in use, not one per
/// segment, so neither serving nor starting depends on how many topics exist. A descriptor
/// in use stays open until its user lets go (`FileDescriptor` closes on its last release).
final class DescriptorPool: Sendable {
    static let shared = DescriptorPool(capacity: 256)

    private struct Entry {
        var descriptor: FileDescriptor
        var lastUse: UInt64
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var uses: UInt64 = 0
    }

    let capacity: Int
    private let state = Mutex(State())

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// The open descriptor of a data file, opening it if needed.
    func descriptor(for path: String) throws -> FileDescriptor {
        let cached = state.withLock { state -> FileDescriptor? in
            guard var entry = state.entries[path] else { return nil }
            state.uses += 1
            entry.lastUse = state.uses
            state.entries[path] = entry
            return entry.descriptor
        }
        if let cached { return cached }
        return keep(try FileDescriptor(path: path, flags: O_RDWR), for: path)
    }

    /// Keeps a descriptor just opened; returns the one kept (another caller may have opened
    /// the same file meanwhile).
    @discardableResult
    func keep(_ descriptor: FileDescriptor, for path: String) -> FileDescriptor {
        state.withLock { state in
            state.uses += 1
            if var existing = state.entries[path] {
                existing.lastUse = state.uses
                state.entries[path] = existing
                return existing.descriptor
            }
            if state.entries.count >= capacity, let oldest = state.entries.min(by: { $0.value.lastUse < $1.value.lastUse }) {
                state.entries[oldest.key] = nil
            }
            state.entries[path] = Entry(descriptor: descriptor, lastUse: state.uses)
            return descriptor
        }
    }

    /// Lets go of a file that was removed.
    func forget(_ path: String) {
        _ = state.withLock { $0.entries.removeValue(forKey: path) }
    }
}

/// One sparse index entry: the record at `offset` starts at byte `position`, and every record
/// before it in the segment has a timestamp ≤ `maxTimestampBefore`.
struct IndexEntry: Equatable {
    var offset: Int64
    var position: Int
    var maxTimestampBefore: Int64
}

/// A data file of frames plus its sparse offset and time index, named by the zero-padded
/// base offset so that `ls` sorts segments in log order.
///
/// Not thread-safe: `PartitionLog` guards every mutable field with its state lock.
final class Segment: @unchecked Sendable {
    let baseOffset: Int64
    let dataPath: String
    /// The data file, through the shared pool.
    var file: FileDescriptor {
        get throws { try DescriptorPool.shared.descriptor(for: dataPath) }
    }
    /// Bytes that hold whole, durable records.
    var sizeBytes: Int
    var nextOffset: Int64
    var maxTimestamp: Int64
    var index: [IndexEntry]
    var bytesSinceIndexEntry: Int

    static let noTimestamp = Int64.min

    static func fileStem(_ baseOffset: Int64) -> String {
        let digits = String(baseOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    /// When a record was last appended: the data file's modification time, in milliseconds.
    /// Retention by age measures from here (Kafka's `LogAppendTime`), not from event times,
    /// so history imported with its real, old event times is kept like any other.
    var lastAppendTime: TimestampMilliseconds? {
        var info = stat()
        guard stat(dataPath, &info) == 0 else { return nil }
        return Int64(info.st_mtim.tv_sec) * 1000 + Int64(info.st_mtim.tv_nsec) / 1_000_000
    }

    var offsetIndexPath: String { String(dataPath.dropLast(4)) + ".index" }
    var timeIndexPath: String { String(dataPath.dropLast(4)) + ".timeindex" }

    init(directory: String, baseOffset: Int64, create: Bool) throws {
        self.baseOffset = baseOffset
        dataPath = "\(directory)/\(Self.fileStem(baseOffset)).log"
        if create {
            DescriptorPool.shared.keep(try FileDescriptor(path: dataPath, flags: O_RDWR | O_CREAT), for: dataPath)
        }
        sizeBytes = 0
        nextOffset = baseOffset
        maxTimestamp = Self.noTimestamp
        index = []
        bytesSinceIndexEntry = 0
    }

    /// Rebuilds size, next offset, timestamps and the index by reading every frame, and cuts
    /// a torn or corrupt tail. Returns a description of what was cut, if anything.
    func recover(indexIntervalBytes: Int) throws -> String? {
        let file = try self.file
        let fileSize = try file.size()
        index = []
        sizeBytes = 0
        nextOffset = baseOffset
        maxTimestamp = Self.noTimestamp
        bytesSinceIndexEntry = 0
        let chunkBytes = 4 * 1024 * 1024
        var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 8)
        defer { buffer.deallocate() }
        var problem: String?
        var chunkStart = 0
        scanning: while chunkStart < fileSize {
            let available = try file.read(into: buffer, count: min(buffer.count, fileSize - chunkStart), at: chunkStart)
            var cursor = 0
            frames: while true {
                switch RecordFrame.scan(UnsafeRawBufferPointer(rebasing: buffer[0..<available]), at: cursor) {
                case .record(let offset, let timestamp, let frameBytes):
                    guard offset == nextOffset else {
                        problem = "offset \(offset) where \(nextOffset) was expected"
                        break scanning
                    }
                    noteAppended(offset: offset, timestamp: timestamp, position: chunkStart + cursor, frameBytes: frameBytes,
                                 indexIntervalBytes: indexIntervalBytes)
                    cursor += frameBytes
                case .incomplete:
                    break frames
                case .corrupt(let reason):
                    problem = reason
                    break scanning
                }
            }
            if cursor == 0 {
                if available == fileSize - chunkStart {
                    problem = "a torn record of \(available) bytes"
                    break scanning
                }
                // One frame larger than the buffer: grow it and read again.
                let larger = UnsafeMutableRawBufferPointer.allocate(byteCount: buffer.count * 2, alignment: 8)
                buffer.deallocate()
                buffer = larger
                continue scanning
            }
            chunkStart += cursor
        }
        if problem == nil, sizeBytes < fileSize { problem = "\(fileSize - sizeBytes) trailing bytes" }
        guard let problem else { return nil }
        let cut = fileSize - sizeBytes
        try file.truncate(to: sizeBytes)
        try file.synchronize()
        return "truncated \(cut) bytes at position \(sizeBytes) (\(problem)); the log ends at offset \(nextOffset)"
    }

    /// Accounts for a frame now in the file, adding a sparse index entry every `indexIntervalBytes`.
    func noteAppended(offset: Int64, timestamp: Int64, position: Int, frameBytes: Int, indexIntervalBytes: Int) {
        if index.isEmpty || bytesSinceIndexEntry >= indexIntervalBytes {
            index.append(IndexEntry(offset: offset, position: position, maxTimestampBefore: maxTimestamp))
            bytesSinceIndexEntry = 0
        }
        bytesSinceIndexEntry += frameBytes
        maxTimestamp = max(maxTimestamp, timestamp)
        nextOffset = offset + 1
        sizeBytes = position + frameBytes
    }

    /// The last index entry at or before `offset`.
    func indexEntry(atOrBefore offset: Int64) -> IndexEntry? {
        var low = 0, high = index.count - 1, found: IndexEntry?
        while low <= high {
            let middle = (low + high) / 2
            if index[middle].offset <= offset {
                found = index[middle]
                low = middle + 1
            } else {
                high = middle - 1
            }
        }
        return found
    }

    /// The last index entry before which every timestamp is < `timestamp`: the first record
    /// with a timestamp ≥ it lies at or after this entry.
    func indexEntry(beforeTimestamp timestamp: Int64) -> IndexEntry? {
        var low = 0, high = index.count - 1, found: IndexEntry?
        while low <= high {
            let middle = (low + high) / 2
            if index[middle].maxTimestampBefore < timestamp {
                found = index[middle]
                low = middle + 1
            } else {
                high = middle - 1
            }
        }
        return found
    }

    /// Writes the offset index and the time index beside the data file. Done when a segment
    /// is closed; the active segment's index is rebuilt from its data on open instead.
    func writeIndexFiles() throws {
        var offsetIndex: [UInt8] = []
        var timeIndex: [UInt8] = []
        for entry in index {
            withUnsafeBytes(of: UInt32(entry.offset - baseOffset).littleEndian) { offsetIndex.append(contentsOf: $0) }
            withUnsafeBytes(of: UInt32(entry.position).littleEndian) { offsetIndex.append(contentsOf: $0) }
            withUnsafeBytes(of: entry.maxTimestampBefore.littleEndian) { timeIndex.append(contentsOf: $0) }
            withUnsafeBytes(of: UInt32(entry.offset - baseOffset).littleEndian) { timeIndex.append(contentsOf: $0) }
        }
        // The time index ends with the segment's maximum timestamp and its end offset.
        withUnsafeBytes(of: maxTimestamp.littleEndian) { timeIndex.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt32(nextOffset - baseOffset).littleEndian) { timeIndex.append(contentsOf: $0) }
        for (path, bytes) in [(offsetIndexPath, offsetIndex), (timeIndexPath, timeIndex)] {
            let indexFile = try FileDescriptor(path: path, flags: O_RDWR | O_CREAT | O_TRUNC)
            try bytes.withUnsafeBytes { try indexFile.write($0, at: 0) }
            try indexFile.synchronize()
        }
    }

    /// Loads a closed segment's index files; false if they are missing or do not match the data.
    func loadIndexFiles() -> Bool {
        guard let offsetData = FileManager.default.contents(atPath: offsetIndexPath),
            let timeData = FileManager.default.contents(atPath: timeIndexPath),
            offsetData.count % 8 == 0, timeData.count % 12 == 0, timeData.count == offsetData.count / 8 * 12 + 12,
            let dataSize = try? file.size()
        else { return false }
        let entryCount = offsetData.count / 8
        var entries: [IndexEntry] = []
        entries.reserveCapacity(entryCount)
        for entry in 0..<entryCount {
            let relative = offsetData.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: entry * 8, as: UInt32.self)) }
            let position = offsetData.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: entry * 8 + 4, as: UInt32.self)) }
            let maxBefore = timeData.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(fromByteOffset: entry * 12, as: Int64.self)) }
            guard Int(position) < dataSize else { return false }
            entries.append(IndexEntry(offset: baseOffset + Int64(relative), position: Int(position), maxTimestampBefore: maxBefore))
        }
        let tail = timeData.count - 12
        maxTimestamp = timeData.withUnsafeBytes { Int64(littleEndian: $0.loadUnaligned(fromByteOffset: tail, as: Int64.self)) }
        nextOffset = baseOffset + Int64(timeData.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: tail + 8, as: UInt32.self)) })
        index = entries
        sizeBytes = dataSize
        return true
    }

    func removeFiles() {
        DescriptorPool.shared.forget(dataPath)
        for path in [dataPath, offsetIndexPath, timeIndexPath] { unlink(path) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Logging
import ProvisionFailpoints
import ProvisionModel

/// Limits of the embedded log.
public struct EmbeddedLogConfiguration: Sendable {
    public var segmentBytesMax: Int
    public var indexIntervalBytes: Int
    /// Segments whose newest record is older than this are deleted; nil keeps history forever.
    public var retentionAge: Duration?
    /// When a partition holds more than this, its oldest segments are deleted; nil for no limit.
    public var retentionBytes: Int?

    public init(segmentBytesMax: Int = 256 * 1024 * 1024, indexIntervalBytes: Int = 4096, retentionAge: Duration? = nil,
                retentionBytes: Int? = nil)
    {
        self.segmentBytesMax = segmentBytesMax
        self.indexIntervalBytes = indexIntervalBytes
        self.retentionAge = retentionAge
        self.retentionBytes = retentionBytes
    }
}

/// One partition of the embedded log: its segments, appends, reads and waiters.
///
/// Appends are serialised by `appendLock` and write and sync outside `stateLock`, so readers
/// only wait for the brief bookkeeping after a write, never for an fsync.
final class PartitionLog: @unchecked Sendable {
    private let directory: String
    private let configuration: EmbeddedLogConfiguration
    private let appendLock = NSLock()
    private let stateLock = NSLock()
    // Guarded by stateLock.
    private var segments: [Segment] = []
    private var waiters: [Int: (threshold: Int64, continuation: CheckedContinuation<Void, Never>)] = [:]
    private var cancelledWaiters: Set<Int> = []
    private var nextWaiterID = 0

    init(directory: String, configuration: EmbeddedLogConfiguration, logger: Logger) throws {
        self.directory = directory
        self.configuration = configuration
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let baseOffsets = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { $0.hasSuffix(".log") }
            .compactMap { Int64($0.dropLast(4)) }
            .sorted()
        for (position, baseOffset) in baseOffsets.enumerated() {
            let segment = try Segment(directory: directory, baseOffset: baseOffset, create: false)
            let isLast = position == baseOffsets.count - 1
            if isLast || !segment.loadIndexFiles() {
                if let repair = try segment.recover(indexIntervalBytes: configuration.indexIntervalBytes) {
                    logger.warning("recovered log segment", metadata: ["segment": "\(segment.dataPath)", "repair": "\(repair)"])
                }
            }
            segments.append(segment)
        }
        if segments.isEmpty {
            segments.append(try Segment(directory: directory, baseOffset: 0, create: true))
            syncDirectory()
        }
    }

    private func syncDirectory() {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY)
        if descriptor >= 0 {
            fsync(descriptor)
            close(descriptor)
        }
    }

    private func withState<T>(_ body: () throws -> T) rethrows -> T {
        stateLock.lock()
        defer { stateLock.unlock() }
        return try body()
    }

    var startOffset: Int64 { withState { segments[0].baseOffset } }
    var endOffset: Int64 { withState { segments[segments.count - 1].nextOffset } }

    // MARK: Append

    func append(_ records: [LogRecord]) throws -> Int64 {
        appendLock.lock()
        defer { appendLock.unlock() }
        var (active, firstOffset) = withState { (segments[segments.count - 1], segments[segments.count - 1].nextOffset) }
        guard !records.isEmpty else { return firstOffset }
        var encoded: [UInt8] = []
        encoded.reserveCapacity(records.reduce(0) { $0 + RecordFrame.encodedSize($1) })
        var frames: [(offset: Int64, timestamp: Int64, start: Int, bytes: Int)] = []
        frames.reserveCapacity(records.count)
        for (index, record) in records.enumerated() {
            let start = encoded.count
            RecordFrame.encode(record, offset: firstOffset + Int64(index), into: &encoded)
            guard encoded.count - start - RecordFrame.headerBytes <= RecordFrame.payloadBytesMax else {
                throw EventLogError(.recordTooLarge, "record \(index) is larger than \(RecordFrame.payloadBytesMax) bytes")
            }
            frames.append((firstOffset + Int64(index), record.timestamp, start, encoded.count - start))
        }
        if active.sizeBytes > 0, active.sizeBytes + encoded.count > configuration.segmentBytesMax {
            active = try roll(active)
            firstOffset = active.nextOffset
            // Offsets do not change on roll (the new base is the old next offset), so the frames stand.
        }
        let position = active.sizeBytes
        let file = try active.file
        Failpoint.reached(.logAppendTorn) {
            encoded.withUnsafeBytes { bytes in try? file.write(UnsafeRawBufferPointer(rebasing: bytes[..<(bytes.count / 2)]), at: position) }
        }
        do {
            try encoded.withUnsafeBytes { try file.write($0, at: position) }
            try file.synchronize()
        } catch {
            // Leave no partial frames behind: the next append writes at the same position.
            try? file.truncate(to: position)
            throw error
        }
        var ready: [CheckedContinuation<Void, Never>] = []
        withState {
            for frame in frames {
                active.noteAppended(offset: frame.offset, timestamp: frame.timestamp, position: position + frame.start,
                                    frameBytes: frame.bytes, indexIntervalBytes: configuration.indexIntervalBytes)
            }
            let end = active.nextOffset
            for (id, waiter) in waiters where waiter.threshold < end {
                ready.append(waiter.continuation)
                waiters[id] = nil
            }
        }
        for continuation in ready { continuation.resume() }
        return firstOffset
    }

    private func roll(_ active: Segment) throws -> Segment {
        try active.writeIndexFiles()
        let next = try Segment(directory: directory, baseOffset: active.nextOffset, create: true)
        syncDirectory()
        withState { segments.append(next) }
        return next
    }

    // MARK: Read

    func readBatch(from requestedOffset: Int64, maxRecords: Int, maxBytes: Int) throws -> RecordBatch {
        let snapshot: [(segment: Segment, size: Int, end: Int64, startPosition: Int)] = withState {
            let offset = max(requestedOffset, segments[0].baseOffset)
            guard offset < segments[segments.count - 1].nextOffset else { return [] }
            var result: [(Segment, Int, Int64, Int)] = []
            for segment in segments where segment.nextOffset > offset {
                let startPosition = segment.baseOffset <= offset ? (segment.indexEntry(atOrBefore: offset)?.position ?? 0) : 0
                result.append((segment, segment.sizeBytes, segment.nextOffset, startPosition))
            }
            return result
        }
        var batch = RecordBatch()
        guard !snapshot.isEmpty else { return batch }
        batch.reserveCapacity(bytes: min(maxBytes, snapshot.reduce(0) { $0 + $1.size - $1.startPosition }) + 64 * 1024,
                              records: min(maxRecords, 65_536))
        var bytesRead = 0
        for part in snapshot {
            try scanFrames(part.segment, from: part.startPosition, to: part.size) { bytes, position, scan in
                guard case .record(let offset, _, let frameBytes) = scan else { return false }
                if offset < requestedOffset { return true }
                if !batch.isEmpty && (batch.count >= maxRecords || bytesRead + frameBytes > maxBytes) { return false }
                batch.append(frame: bytes, at: position, frameBytes: frameBytes)
                bytesRead += frameBytes
                return true
            }
            if batch.count >= maxRecords || bytesRead >= maxBytes { break }
        }
        return batch
    }

    /// Calls `visit` for each verified frame between two positions until it returns false.
    private func scanFrames(_ segment: Segment, from start: Int, to end: Int,
                            visit: (UnsafeRawBufferPointer, Int, RecordFrame.Scan) throws -> Bool) throws
    {
        let file = try segment.file
        var chunkBytes = 1024 * 1024
        var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 8)
        defer { buffer.deallocate() }
        var filePosition = start
        while filePosition < end {
            let wanted = min(chunkBytes, end - filePosition)
            let available = try file.read(into: buffer, count: wanted, at: filePosition)
            guard available > 0 else { throw EventLogError(.io, "\(segment.dataPath): ends before \(end)") }
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<available])
            var cursor = 0
            frames: while cursor < available {
                let scan = RecordFrame.scan(bytes, at: cursor)
                switch scan {
                case .record(_, _, let frameBytes):
                    guard try visit(bytes, cursor, scan) else { return }
                    cursor += frameBytes
                case .incomplete:
                    // The chunk cut a frame; the next read starts at it.
                    break frames
                case .corrupt(let reason):
                    throw EventLogError(.io, "\(segment.dataPath): corrupt record at \(filePosition + cursor): \(reason)")
                }
            }
            if cursor == 0 {
                guard available == chunkBytes, chunkBytes < end - filePosition else {
                    throw EventLogError(.io, "\(segment.dataPath): truncated record at \(filePosition)")
                }
                // One frame larger than the buffer.
                chunkBytes *= 2
                buffer.deallocate()
                buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 8)
                continue
            }
            filePosition += cursor
        }
    }

    func offset(forTimestamp timestamp: Int64) throws -> Int64 {
        let found: (segment: Segment, size: Int, start: Int)? = withState {
            for segment in segments where segment.maxTimestamp != Segment.noTimestamp && segment.maxTimestamp >= timestamp {
                return (segment, segment.sizeBytes, segment.indexEntry(beforeTimestamp: timestamp)?.position ?? 0)
            }
            return nil
        }
        guard let found else { return endOffset }
        var result: Int64?
        try scanFrames(found.segment, from: found.start, to: found.size) { _, _, scan in
            guard case .record(let offset, let recordTimestamp, _) = scan else { return false }
            if recordTimestamp >= timestamp {
                result = offset
                return false
            }
            return true
        }
        return result ?? endOffset
    }

    // MARK: Waiting

    /// Returns when a record at `offset` exists, or after `timeout`.
    func waitForRecords(at offset: Int64, timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitUntilEnd(exceeds: offset) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitUntilEnd(exceeds offset: Int64) async {
        let id: Int = withState {
            nextWaiterID += 1
            return nextWaiterID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow: Bool = withState {
                    if cancelledWaiters.remove(id) != nil || segments[segments.count - 1].nextOffset > offset { return true }
                    waiters[id] = (offset, continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let continuation: CheckedContinuation<Void, Never>? = withState {
                if let waiter = waiters.removeValue(forKey: id) { return waiter.continuation }
                cancelledWaiters.insert(id)
                return nil
            }
            continuation?.resume()
        }
    }

    // MARK: Retention

    /// Deletes whole closed segments that are too old or beyond the size limit, oldest first.
    /// Returns the number of segments deleted.
    ///
    /// - Parameter unreadFrom: the lowest offset a reader (a product) has not read yet. Age
    ///   never removes a segment holding records from there on; only the size limit, which
    ///   protects the disk, may.
    @discardableResult
    func enforceRetention(now: TimestampMilliseconds, unreadFrom: Int64? = nil) throws -> Int {
        appendLock.lock()
        defer { appendLock.unlock() }
        let removed: [Segment] = withState {
            var removed: [Segment] = []
            var totalBytes = segments.reduce(0) { $0 + $1.sizeBytes }
            while segments.count > 1 {
                let oldest = segments[0]
                var expired = false
                if let age = configuration.retentionAge, let appended = oldest.lastAppendTime,
                   unreadFrom.map({ oldest.nextOffset <= $0 }) ?? true
                {
                    let ageMilliseconds = age.components.seconds * 1000 + age.components.attoseconds / 1_000_000_000_000_000
                    expired = appended < now - ageMilliseconds
                }
                if let limit = configuration.retentionBytes, totalBytes > limit { expired = true }
                guard expired else { break }
                totalBytes -= oldest.sizeBytes
                removed.append(segments.removeFirst())
            }
            return removed
        }
        for segment in removed { segment.removeFiles() }
        if !removed.isEmpty { syncDirectory() }
        return removed.count
    }

    func removeAllFiles() {
        withState {
            for segment in segments { segment.removeFiles() }
            segments.removeAll()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

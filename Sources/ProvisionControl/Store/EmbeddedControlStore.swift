import Foundation
import ProvisionFailpoints
import ProvisionLog
import Synchronization

/// The control store in one append-only file of commits, `objects.log`:
///
///     u32 payloadLength  u32 crc32c(payload)  payload
///     payload: u32 count, then per record
///              u64 resourceVersion  u8 kind  u16 nameLength  name
///              u8 present  u32 valueLength  value          (present 0: a delete)
///
/// A commit is one frame, written with one `write` and synced before it is answered, so
/// its records appear together or not at all: a frame torn by a crash fails its checksum
/// and is cut off when the file is next opened (a commit nobody was told of). When the file
/// holds more than twice the live records, the live records are written to a new file that
/// replaces it by rename, so a crash during compaction leaves the old file whole.
public final class EmbeddedControlStore: ControlStore {
    public struct Configuration: Sendable {
        /// Compact once the file is larger than this and than twice its live records.
        public var compactionMinimumBytes: Int = 4 * 1024 * 1024
        /// How many recent changes a watch may start from.
        public var historyLimit: Int = 4096
        /// How many changes a watcher may be behind before its watch expires.
        public var watchBuffer: Int = 65_536

        public init() {}
    }

    private struct State {
        var descriptor: Int32
        var memory = ControlStoreMemory()
        var fileBytes = 0
        /// What the live records would take in a compacted file.
        var liveBytes = 0
    }

    public let path: String
    public let configuration: Configuration
    private let state: Mutex<State>

    /// Opens (or creates) the store in `directory`, cutting off a commit a crash left torn.
    public init(directory: String, configuration: Configuration = .init()) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = "\(directory)/objects.log"
        self.configuration = configuration
        // A compaction that a crash interrupted before its rename: the log is whole without it.
        try? FileManager.default.removeItem(atPath: path + ".compacting")
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw POSIXError.current }
        var loaded = State(descriptor: descriptor)
        do {
            let bytes = try Self.readAll(descriptor)
            var position = 0
            while let frame = Self.decodeFrame(bytes, at: position) {
                for event in frame.events { Self.applyLoaded(event, to: &loaded) }
                position = frame.end
            }
            if position < bytes.count {
                guard ftruncate(descriptor, off_t(position)) == 0, fsync(descriptor) == 0 else { throw POSIXError.current }
            }
            loaded.fileBytes = position
            loaded.memory.finishLoading()
        } catch {
            close(descriptor)
            throw error
        }
        state = Mutex(loaded)
    }

    deinit {
        state.withLock { state in
            state.memory.finishWatchers()
            close(state.descriptor)
        }
    }

    // MARK: ControlStore

    public func snapshot() async throws -> StoreSnapshot { snapshotNow() }

    /// `snapshot` without suspending.
    public func snapshotNow() -> StoreSnapshot {
        state.withLock { $0.memory.snapshot }
    }

    public func commit(_ writes: [RecordWrite], durable: Bool) async throws -> ResourceVersion {
        try commitNow(writes, durable: durable)
    }

    /// `commit` without suspending, for callers that are not async (migration, tests).
    public func commitNow(_ writes: [RecordWrite], durable: Bool) throws -> ResourceVersion {
        var expired: [ControlStoreMemory.Watcher] = []
        let version = try state.withLock { state throws -> ResourceVersion in
            try state.memory.checkPreconditions(writes)
            guard !writes.isEmpty else { return state.memory.resourceVersion }
            let version = state.memory.resourceVersion + 1
            let events = writes.map { StoreEvent(resourceVersion: version, key: $0.key, value: $0.value) }
            let frame = Self.encodeFrame(events)
            let position = state.fileBytes
            let descriptor = state.descriptor
            Failpoint.reached(.storeCommitTorn) {
                frame.withUnsafeBytes { _ = pwrite(descriptor, $0.baseAddress, $0.count / 2, off_t(position)) }
            }
            do {
                try Self.write(frame, to: descriptor, at: position)
                if durable { guard fsync(descriptor) == 0 else { throw POSIXError.current } }
            } catch {
                // Leave no partial frame: the next commit writes at the same position.
                _ = ftruncate(descriptor, off_t(position))
                throw error
            }
            Failpoint.reached(.storeCommitSynced)
            state.fileBytes += frame.count
            for event in events { Self.countLiveBytes(event, in: &state) }
            expired = state.memory.publish(events, historyLimit: configuration.historyLimit)
            if state.fileBytes > max(configuration.compactionMinimumBytes, 2 * state.liveBytes) {
                do { try compact(&state) } catch { /* the log stays as it is, whole; compaction is tried again on the next commit */ }
            }
            return version
        }
        ControlStoreMemory.expire(expired, at: version)
        return version
    }

    public func watch(from version: ResourceVersion) async throws -> AsyncThrowingStream<StoreEvent, Error> {
        let (stream, continuation) = ControlStoreMemory.makeWatch(buffer: configuration.watchBuffer)
        let id = try state.withLock { try $0.memory.addWatcher(continuation, from: version, buffer: configuration.watchBuffer) }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { $0.memory.removeWatcher(id) }
        }
        return stream
    }

    /// Bytes the file holds now (compaction keeps it near the live records).
    public var fileBytes: Int { state.withLock { $0.fileBytes } }

    // MARK: State

    private static func applyLoaded(_ event: StoreEvent, to state: inout State) {
        countLiveBytes(event, in: &state)
        state.memory.load(event)
    }

    /// Keeps `liveBytes` in step with a change about to be applied.
    private static func countLiveBytes(_ event: StoreEvent, in state: inout State) {
        if let old = state.memory.records[event.key] { state.liveBytes -= recordBytes(event.key, old.value) }
        if let value = event.value { state.liveBytes += recordBytes(event.key, value) }
    }

    /// Writes the live records to a new file and renames it over the log.
    private func compact(_ state: inout State) throws {
        let temporary = path + ".compacting"
        let descriptor = open(temporary, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw POSIXError.current }
        var written = 0
        do {
            let live = state.memory.records.sorted { $0.key < $1.key }
            for chunk in stride(from: 0, to: live.count, by: 1024) {
                let events = live[chunk..<min(chunk + 1024, live.count)].map {
                    StoreEvent(resourceVersion: $0.value.resourceVersion, key: $0.key, value: $0.value.value)
                }
                let frame = Self.encodeFrame(events)
                try Self.write(frame, to: descriptor, at: written)
                written += frame.count
            }
            guard fsync(descriptor) == 0 else { throw POSIXError.current }
            Failpoint.reached(.storeCompactionWritten)
            guard rename(temporary, path) == 0 else { throw POSIXError.current }
        } catch {
            close(descriptor)
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
        Self.syncDirectory(of: path)
        close(state.descriptor)
        state.descriptor = descriptor
        state.fileBytes = written
    }

    // MARK: Encoding

    private static func recordBytes(_ key: ObjectKey, _ value: [UInt8]) -> Int { 8 + 1 + 2 + key.name.utf8.count + 1 + 4 + value.count }

    static func encodeFrame(_ events: [StoreEvent]) -> [UInt8] {
        var payload: [UInt8] = []
        payload.reserveCapacity(4 + events.reduce(0) { $0 + recordBytes($1.key, $1.value ?? []) })
        append(UInt32(events.count), to: &payload)
        for event in events {
            append(event.resourceVersion, to: &payload)
            payload.append(event.key.kind.rawValue)
            let name = Array(event.key.name.utf8)
            append(UInt16(name.count), to: &payload)
            payload += name
            payload.append(event.value == nil ? 0 : 1)
            append(UInt32(event.value?.count ?? 0), to: &payload)
            payload += event.value ?? []
        }
        var frame: [UInt8] = []
        frame.reserveCapacity(8 + payload.count)
        append(UInt32(payload.count), to: &frame)
        append(payload.withUnsafeBytes { CRC32C.checksum($0) }, to: &frame)
        frame += payload
        return frame
    }

    /// The frame at `position`, or nil where the file ends or a frame is torn or corrupt.
    static func decodeFrame(_ bytes: [UInt8], at position: Int) -> (events: [StoreEvent], end: Int)? {
        var reader = ByteReader(bytes: bytes, position: position)
        guard let length = reader.uint32(), let checksum = reader.uint32() else { return nil }
        let start = reader.position
        guard Int(length) <= bytes.count - start else { return nil }
        let end = start + Int(length)
        guard bytes.withUnsafeBytes({ CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start..<end])) }) == checksum else { return nil }
        reader = ByteReader(bytes: bytes, position: start, end: end)
        guard let count = reader.uint32() else { return nil }
        var events: [StoreEvent] = []
        for _ in 0..<count {
            guard let version = reader.uint64(), let kindByte = reader.uint8(), let kind = ObjectKey.Kind(rawValue: kindByte),
                let nameLength = reader.uint16(), let name = reader.bytes(Int(nameLength)),
                let present = reader.uint8(), let valueLength = reader.uint32(), let value = reader.bytes(Int(valueLength))
            else { return nil }
            events.append(StoreEvent(resourceVersion: version, key: ObjectKey(kind, String(decoding: name, as: UTF8.self)),
                                     value: present == 0 ? nil : value))
        }
        return (events, end)
    }

    private static func append<Integer: FixedWidthInteger>(_ value: Integer, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }

    private struct ByteReader {
        let bytes: [UInt8]
        var position: Int
        var end: Int

        init(bytes: [UInt8], position: Int, end: Int? = nil) {
            self.bytes = bytes
            self.position = position
            self.end = end ?? bytes.count
        }

        mutating func integer<Integer: FixedWidthInteger>(_: Integer.Type) -> Integer? {
            let size = MemoryLayout<Integer>.size
            guard end - position >= size else { return nil }
            var value: Integer = 0
            for index in 0..<size { value |= Integer(bytes[position + index]) << (8 * index) }
            position += size
            return value
        }

        mutating func uint8() -> UInt8? { integer(UInt8.self) }
        mutating func uint16() -> UInt16? { integer(UInt16.self) }
        mutating func uint32() -> UInt32? { integer(UInt32.self) }
        mutating func uint64() -> UInt64? { integer(UInt64.self) }

        mutating func bytes(_ count: Int) -> [UInt8]? {
            guard count >= 0, end - position >= count else { return nil }
            defer { position += count }
            return Array(bytes[position..<position + count])
        }
    }

    // MARK: Files

    private static func readAll(_ descriptor: Int32) throws -> [UInt8] {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw POSIXError.current }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var done = 0
        while done < bytes.count {
            let result = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if result < 0 {
                if errno == EINTR { continue }
                throw POSIXError.current
            }
            if result == 0 { break }
            done += result
        }
        return Array(bytes[..<done])
    }

    private static func write(_ bytes: [UInt8], to descriptor: Int32, at position: Int) throws {
        var done = 0
        while done < bytes.count {
            let result = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress! + done, $0.count - done, off_t(position + done)) }
            if result < 0 {
                if errno == EINTR { continue }
                throw POSIXError.current
            }
            done += result
        }
    }

    private static func syncDirectory(of path: String) {
        let directory = (path as NSString).deletingLastPathComponent
        let descriptor = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY)
        guard descriptor >= 0 else { return }
        fsync(descriptor)
        close(descriptor)
    }
}

extension POSIXError {
    static var current: POSIXError { POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
}

import Foundation
import ProvisionLog
import ProvisionModel
import Synchronization

/// The control store in a compacted topic of the event log: on Kafka, the control plane's
/// objects live where its datasets do, so a server on an empty data directory resumes from
/// the same brokers (Kafka Connect keeps its configs and status the same way).
///
/// One record per object, keyed `kind/name` (`product/eu-orders`), a tombstone for a
/// delete, and the commit's version in a `provision-version` header. Compaction keeps the
/// latest record of each key, so every object's latest state is always in a record of its
/// own key. A commit of several records is made whole by an intent: first one record keyed
/// `_commit/VERSION` holding them all, then the records, then a tombstone of the intent. A
/// server that dies part-way leaves an intent without its tombstone; the next one to open
/// the topic applies the intent's records and finishes the commit, as a database replays
/// its log.
///
/// One server writes the topic: commits are checked against what it holds in memory.
public final class LogControlStore: ControlStore {
    public struct Configuration: Sendable {
        /// How many recent changes a watch may start from.
        public var historyLimit: Int = 4096
        /// How many changes a watcher may be behind before its watch expires.
        public var watchBuffer: Int = 65_536

        public init() {}
    }

    public static let defaultTopic = "_provision.control"
    static let versionHeader = "provision-version"
    static let intentPrefix = "_commit/"

    private struct State {
        var memory = ControlStoreMemory()
        /// Why a commit failed part-way: the topic may hold part of it, so nothing more is
        /// written until a server opens the topic again and finishes or drops it.
        var failure: String?
    }

    public let log: any EventLog
    public let partition: TopicPartition
    public let configuration: Configuration
    private let state: Mutex<State>
    /// One commit at a time: each is checked against the ones before it.
    private let commits = AsyncSerialGate()

    /// Opens the store in `topic` (made, compacted, if missing), reading every record, and
    /// finishes a multi-record commit a previous writer left part-way.
    public init(log: any EventLog, topic: String = defaultTopic, configuration: Configuration = .init()) async throws {
        self.log = log
        partition = TopicPartition(topic: topic, partition: 0)
        self.configuration = configuration
        try await log.createTopic(topic, partitions: 1, compacted: true)
        var memory = ControlStoreMemory()
        var unfinished: (version: ResourceVersion, intentKey: [UInt8], events: [StoreEvent])?
        for stored in try await log.readToEnd(partition) {
            let record = stored.record
            guard let keyBytes = record.key, let version = Self.version(of: record) else {
                throw ControlStoreUnreadable(topic: topic, offset: stored.offset, reason: "a record without a key or a \(Self.versionHeader) header")
            }
            let keyText = String(decoding: keyBytes, as: UTF8.self)
            if keyText.hasPrefix(Self.intentPrefix) {
                if let value = record.value {
                    guard let frame = EmbeddedControlStore.decodeFrame(value, at: 0) else {
                        throw ControlStoreUnreadable(topic: topic, offset: stored.offset, reason: "an unreadable commit")
                    }
                    unfinished = (version, keyBytes, frame.events.map { StoreEvent(resourceVersion: version, key: $0.key, value: $0.value) })
                } else if unfinished?.intentKey == keyBytes {
                    unfinished = nil
                }
                continue
            }
            guard let key = Self.objectKey(keyText) else {
                throw ControlStoreUnreadable(topic: topic, offset: stored.offset, reason: "an unknown key '\(keyText)'")
            }
            memory.load(StoreEvent(resourceVersion: version, key: key, value: record.value))
        }
        if let unfinished {
            // Written after every other commit (a writer stops at a failed one): its records
            // are the latest.
            for event in unfinished.events { memory.load(event) }
            try await log.append(unfinished.events.map { Self.record($0) } + [Self.intentTombstone(unfinished.intentKey, unfinished.version)],
                                 to: partition)
        }
        memory.finishLoading()
        state = Mutex(State(memory: memory))
    }

    deinit {
        state.withLock { $0.memory.finishWatchers() }
    }

    public func snapshot() async throws -> StoreSnapshot {
        state.withLock { $0.memory.snapshot }
    }

    /// Every commit is durable when answered (the log's append is), `durable` or not.
    public func commit(_ writes: [RecordWrite], durable: Bool) async throws -> ResourceVersion {
        await commits.enter()
        defer { commits.leave() }
        let version = try state.withLock { state throws -> ResourceVersion in
            if let failure = state.failure { throw ControlStoreUnavailable(reason: failure) }
            try state.memory.checkPreconditions(writes)
            return state.memory.resourceVersion + 1
        }
        guard !writes.isEmpty else { return version - 1 }
        let events = writes.map { StoreEvent(resourceVersion: version, key: $0.key, value: $0.value) }
        do {
            if events.count == 1 {
                try await log.append([Self.record(events[0])], to: partition)
            } else {
                let intentKey = Array("\(Self.intentPrefix)\(version)".utf8)
                let intent = LogRecord(key: intentKey, value: EmbeddedControlStore.encodeFrame(events), timestamp: Reconciler.now(),
                                       headers: [Self.versionHeader(version)])
                // In order: a reader that finds the intent without its tombstone has all it needs.
                try await log.append([intent] + events.map { Self.record($0) } + [Self.intentTombstone(intentKey, version)], to: partition)
            }
        } catch {
            state.withLock { $0.failure = "a commit failed part-way (\(error)); the server must be restarted to read the control topic again" }
            throw error
        }
        let expired = state.withLock { $0.memory.publish(events, historyLimit: configuration.historyLimit) }
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

    // MARK: Records

    static func keyText(_ key: ObjectKey) -> String { "\(key.kind.name)/\(key.name)" }

    static func objectKey(_ text: String) -> ObjectKey? {
        guard let slash = text.firstIndex(of: "/"),
              let kind = ObjectKey.Kind.allCases.first(where: { $0.name == text[..<slash] }) else { return nil }
        return ObjectKey(kind, String(text[text.index(after: slash)...]))
    }

    private static func versionHeader(_ version: ResourceVersion) -> LogHeader {
        LogHeader(name: versionHeader, value: Array(String(version).utf8))
    }

    private static func version(of record: LogRecord) -> ResourceVersion? {
        record.header(versionHeader).flatMap { ResourceVersion(String(decoding: $0, as: UTF8.self)) }
    }

    private static func record(_ event: StoreEvent) -> LogRecord {
        LogRecord(key: Array(keyText(event.key).utf8), value: event.value, timestamp: Reconciler.now(),
                  headers: [versionHeader(event.resourceVersion)])
    }

    private static func intentTombstone(_ key: [UInt8], _ version: ResourceVersion) -> LogRecord {
        LogRecord(key: key, value: nil, timestamp: Reconciler.now(), headers: [versionHeader(version)])
    }
}

/// The control topic holds a record this server cannot read: written by something else,
/// or by a newer version of Provision.
public struct ControlStoreUnreadable: Error, CustomStringConvertible {
    public var topic: String
    public var offset: Int64
    public var reason: String

    public var description: String { "the control topic '\(topic)' has \(reason) at offset \(offset)" }
}

/// The store takes no more commits (see `LogControlStore`).
public struct ControlStoreUnavailable: Error, CustomStringConvertible {
    public var reason: String
    public var description: String { "the control store takes no commits: \(reason)" }
}

/// Lets one task at a time through, in the order they came; a task waiting is not
/// cancelled (a commit in progress always finishes).
final class AsyncSerialGate: Sendable {
    private struct State {
        var busy = false
        var waiting: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    func enter() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { state -> Bool in
                guard state.busy else {
                    state.busy = true
                    return true
                }
                state.waiting.append(continuation)
                return false
            }
            if admitted { continuation.resume() }
        }
    }

    func leave() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiting.isEmpty else {
                state.busy = false
                return nil
            }
            return state.waiting.removeFirst()
        }
        next?.resume()
    }
}

extension EventLog {
    /// Every record of `partition`, from its start to its end as of the call.
    public func readToEnd(_ partition: TopicPartition) async throws -> [StoredRecord] {
        let end = try await endOffset(of: partition)
        var offset = try await startOffset(of: partition)
        var records: [StoredRecord] = []
        while offset < end {
            let batch = try await read(partition, from: offset, maxRecords: 10_000, maxBytes: 8 << 20)
            // Compaction leaves gaps: the next record may be past the end asked for.
            guard let last = batch.last else { break }
            records += batch.filter { $0.offset < end }
            offset = last.offset + 1
        }
        return records
    }
}

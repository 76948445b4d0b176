/// What every control store keeps in memory, whatever holds its records durably: the live
/// records, the latest changes a watch may start from, and the watchers. A store checks a
/// commit's preconditions here, writes the commit its own way, then publishes it here.
struct ControlStoreMemory {
    typealias Watcher = AsyncThrowingStream<StoreEvent, Error>.Continuation

    var records: [ObjectKey: VersionedRecord] = [:]
    var resourceVersion: ResourceVersion = 0
    /// The latest changes, oldest first; a watch from before the first one has expired.
    private var history: [StoreEvent] = []
    private var historyStart = 0
    /// Changes before this version are not in `history`.
    private(set) var oldestWatchable: ResourceVersion = 0
    private var watchers: [Int: Watcher] = [:]
    private var nextWatcher = 0

    var snapshot: StoreSnapshot { StoreSnapshot(records: records, resourceVersion: resourceVersion) }

    /// Throws `StoreConflict` for the first write whose precondition does not hold.
    func checkPreconditions(_ writes: [RecordWrite]) throws {
        for write in writes {
            let found = records[write.key]?.resourceVersion
            switch write.precondition {
            case .none: continue
            case .absent where found == nil: continue
            case .version(let version) where found == version: continue
            default: throw StoreConflict(key: write.key, expected: write.precondition, found: found)
            }
        }
    }

    /// Applies a change read back while opening the store: no watcher can have missed it.
    mutating func load(_ event: StoreEvent) {
        if let value = event.value {
            records[event.key] = VersionedRecord(resourceVersion: event.resourceVersion, value: value)
        } else {
            records[event.key] = nil
        }
        resourceVersion = max(resourceVersion, event.resourceVersion)
    }

    /// Every change loaded: watches may start from here.
    mutating func finishLoading() { oldestWatchable = resourceVersion }

    /// Applies a commit's changes, remembers them and hands them to every watcher. Returns
    /// the watchers that fell too far behind: the caller finishes them with `WatchExpired`
    /// outside its lock (finishing a stream runs its termination handler, which takes it).
    mutating func publish(_ events: [StoreEvent], historyLimit: Int) -> [Watcher] {
        var expired: [Watcher] = []
        for event in events {
            load(event)
            history.append(event)
            if history.count - historyStart > historyLimit {
                // A watch from this version on needs none of what is dropped.
                oldestWatchable = history[historyStart].resourceVersion
                historyStart += 1
                if historyStart > historyLimit {
                    history.removeFirst(historyStart)
                    historyStart = 0
                }
            }
            for (id, watcher) in watchers {
                if case .dropped = watcher.yield(event) {
                    watchers[id] = nil
                    expired.append(watcher)
                }
            }
        }
        return expired
    }

    /// Registers a watcher after handing it the remembered changes after `version`; throws
    /// `WatchExpired` when they are not all remembered or would not fit its buffer.
    mutating func addWatcher(_ watcher: Watcher, from version: ResourceVersion, buffer: Int) throws -> Int {
        guard version >= oldestWatchable || version >= resourceVersion else {
            throw WatchExpired(requested: version, oldestAvailable: oldestWatchable)
        }
        let missed = history[historyStart...].filter { $0.resourceVersion > version }
        guard missed.count <= buffer else { throw WatchExpired(requested: version, oldestAvailable: oldestWatchable) }
        for event in missed { watcher.yield(event) }
        let id = nextWatcher
        nextWatcher += 1
        watchers[id] = watcher
        return id
    }

    mutating func removeWatcher(_ id: Int) { watchers[id] = nil }

    /// Ends every watch (the store is closing).
    mutating func finishWatchers() {
        for watcher in watchers.values { watcher.finish() }
        watchers = [:]
    }

    static func expire(_ watchers: [Watcher], at version: ResourceVersion) {
        for watcher in watchers { watcher.finish(throwing: WatchExpired(requested: version, oldestAvailable: version)) }
    }

    /// A watch stream and the continuation feeding it.
    static func makeWatch(buffer: Int) -> (AsyncThrowingStream<StoreEvent, Error>, Watcher) {
        AsyncThrowingStream.makeStream(of: StoreEvent.self, throwing: Error.self, bufferingPolicy: .bufferingOldest(buffer))
    }
}

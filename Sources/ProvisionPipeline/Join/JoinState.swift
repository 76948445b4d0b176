import ProvisionModel

/// The versions of a table still needed to join events as of their time.
///
/// `horizon` is the oldest event time an on-time event can still have (the fastest input's
/// time minus `maxDelay`). Per key, versions older than the newest one at or before the
/// horizon are dropped; a lookup for an older, late event is clamped to the horizon. So the
/// answer of every lookup depends only on the records, never on when versions were
/// dropped — which is what lets a restart rebuild the state by reading the table again.
public struct TableVersions: Sendable {
    struct Version: Sendable {
        var time: TimestampMilliseconds
        /// Nil for a tombstone: the row is deleted from this time on.
        var value: JSONValue?
    }

    private(set) var rows: [JoinKey: [Version]] = [:]

    public init() {}

    public var versionCount: Int { rows.values.reduce(0) { $0 + $1.count } }

    /// Adds a version; of two with the same time, the one inserted later answers.
    public mutating func insert(key: JoinKey, time: TimestampMilliseconds, value: JSONValue?,
                                horizon: TimestampMilliseconds)
    {
        // Edited in place: no second lookup, no copy of the list.
        Self.insert(Version(time: time, value: value), into: &rows[key, default: []], horizon: horizon)
    }

    private static func insert(_ version: Version, into versions: inout [Version], horizon: TimestampMilliseconds) {
        var position = versions.count
        while position > 0, versions[position - 1].time > version.time { position -= 1 }
        versions.insert(version, at: position)
        // The newest version at or before the horizon answers every lookup older than the
        // versions after it; anything before it is never read again. A deletion stays even
        // when it is the oldest: a late version older than it may still arrive, and must not
        // bring the row back.
        if versions.count > 1, let base = versions.lastIndex(where: { $0.time <= horizon }), base > 0 {
            versions.removeFirst(base)
        }
    }

    /// The newest version at or before `max(time, horizon)`; nil when there is none or it
    /// is a deletion.
    public func value(of key: JoinKey, asOf time: TimestampMilliseconds, horizon: TimestampMilliseconds) -> JSONValue? {
        guard let versions = rows[key] else { return nil }
        let effective = max(time, horizon)
        for version in versions.reversed() where version.time <= effective { return version.value }
        return nil
    }
}

/// The events of a windowed join's input still inside some event's window, by key, with
/// a min-heap of their times so expiry is exact whatever order they arrive in.
public struct WindowedEvents: Sendable {
    struct Event: Sendable {
        var time: TimestampMilliseconds
        var value: JSONValue
    }

    private var events: [JoinKey: [Event]] = [:]
    private var expiries = TimeHeap()

    public init() {}

    public var count: Int { expiries.count }

    /// Keeps an event unless it is already older than `floor`, the oldest time a window can
    /// still reach; returns false for such a late event.
    @discardableResult
    public mutating func insert(key: JoinKey, time: TimestampMilliseconds, value: JSONValue,
                                floor: TimestampMilliseconds) -> Bool
    {
        guard time >= floor else { return false }
        var list = events.removeValue(forKey: key) ?? []
        var position = list.count
        while position > 0, list[position - 1].time > time { position -= 1 }
        list.insert(Event(time: time, value: value), at: position)
        events[key] = list
        expiries.push(time: time, key: key)
        return true
    }

    /// Drops every event older than `floor`.
    public mutating func expire(before floor: TimestampMilliseconds) {
        while let (time, key) = expiries.minimum, time < floor {
            expiries.popMinimum()
            guard var list = events.removeValue(forKey: key) else { continue }
            // Sorted by time: the expired ones are in front.
            let expired = list.firstIndex { $0.time >= floor } ?? list.count
            list.removeFirst(expired)
            if !list.isEmpty { events[key] = list }
        }
    }

    /// The events of `key` with `from ≤ time ≤ through`, in time order.
    public func matches(of key: JoinKey, from: TimestampMilliseconds, through: TimestampMilliseconds) -> [JSONValue] {
        guard let list = events[key] else { return [] }
        var result: [JSONValue] = []
        for event in list where event.time >= from && event.time <= through { result.append(event.value) }
        return result
    }
}

/// A binary min-heap of (time, key).
struct TimeHeap: Sendable {
    private var items: [(time: TimestampMilliseconds, key: JoinKey)] = []

    var count: Int { items.count }
    var minimum: (TimestampMilliseconds, JoinKey)? { items.first.map { ($0.time, $0.key) } }

    mutating func push(time: TimestampMilliseconds, key: JoinKey) {
        items.append((time, key))
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].time < items[parent].time else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popMinimum() {
        guard !items.isEmpty else { return }
        items.swapAt(0, items.count - 1)
        items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count, items[left].time < items[smallest].time { smallest = left }
            if right < items.count, items[right].time < items[smallest].time { smallest = right }
            guard smallest != parent else { return }
            items.swapAt(parent, smallest)
            parent = smallest
        }
    }
}

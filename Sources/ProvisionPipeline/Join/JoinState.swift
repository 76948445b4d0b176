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

    private(set) var rows: [[UInt8]: [Version]] = [:]

    public init() {}

    public var keyCount: Int { rows.count }
    public var versionCount: Int { rows.values.reduce(0) { $0 + $1.count } }

    /// Adds a version; a later record with the same time replaces an earlier one.
    public mutating func insert(key: [UInt8], time: TimestampMilliseconds, value: JSONValue?,
                                horizon: TimestampMilliseconds)
    {
        var versions = rows.removeValue(forKey: key) ?? []
        var position = versions.count
        while position > 0, versions[position - 1].time > time { position -= 1 }
        versions.insert(Version(time: time, value: value), at: position)
        // The newest version at or before the horizon answers every lookup older than the
        // versions after it; anything before it is never read again.
        if let base = versions.lastIndex(where: { $0.time <= horizon }), base > 0 {
            versions.removeFirst(base)
        }
        // A deletion with nothing before it answers like no row at all.
        if versions.first?.value == nil { versions.removeFirst() }
        if !versions.isEmpty { rows[key] = versions }
    }

    /// The newest version at or before `max(time, horizon)`; nil when there is none or it
    /// is a deletion.
    public func value(of key: [UInt8], asOf time: TimestampMilliseconds, horizon: TimestampMilliseconds) -> JSONValue? {
        guard let versions = rows[key] else { return nil }
        let effective = max(time, horizon)
        for version in versions.reversed() where version.time <= effective { return version.value }
        return nil
    }
}

/// The events of a windowed join's input still inside some event's window, by key, with
/// their expiry in arrival order.
public struct WindowedEvents: Sendable {
    struct Event: Sendable {
        var time: TimestampMilliseconds
        var value: JSONValue
    }

    private var events: [[UInt8]: [Event]] = [:]
    private var arrivals: [(time: TimestampMilliseconds, key: [UInt8])] = []
    private var arrivalsHead = 0

    public init() {}

    public var count: Int { arrivals.count - arrivalsHead }

    /// Keeps an event unless it is already older than `floor`, the oldest time a window can
    /// still reach; returns false for such a late event.
    @discardableResult
    public mutating func insert(key: [UInt8], time: TimestampMilliseconds, value: JSONValue,
                                floor: TimestampMilliseconds) -> Bool
    {
        guard time >= floor else { return false }
        var list = events.removeValue(forKey: key) ?? []
        var position = list.count
        while position > 0, list[position - 1].time > time { position -= 1 }
        list.insert(Event(time: time, value: value), at: position)
        events[key] = list
        arrivals.append((time, key))
        return true
    }

    /// Drops events older than `floor`. Arrivals are roughly in time order; an event that
    /// arrived out of order waits behind a newer one, which only delays its removal.
    public mutating func expire(before floor: TimestampMilliseconds) {
        while arrivalsHead < arrivals.count, arrivals[arrivalsHead].time < floor {
            let key = arrivals[arrivalsHead].key
            arrivalsHead += 1
            if var list = events.removeValue(forKey: key) {
                list.removeAll { $0.time < floor }
                if !list.isEmpty { events[key] = list }
            }
        }
        if arrivalsHead > 4096, arrivalsHead * 2 > arrivals.count {
            arrivals.removeFirst(arrivalsHead)
            arrivalsHead = 0
        }
    }

    /// The events of `key` with `from ≤ time ≤ through`, in time order.
    public func matches(of key: [UInt8], from: TimestampMilliseconds, through: TimestampMilliseconds) -> [JSONValue] {
        guard let list = events[key] else { return [] }
        var result: [JSONValue] = []
        for event in list where event.time >= from && event.time <= through { result.append(event.value) }
        return result
    }
}

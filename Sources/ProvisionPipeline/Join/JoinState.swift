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

import ProvisionModel

/// A windowed stream–stream join in event time, as Kafka Streams and ksqlDB do it: a plain
/// value fed the records of both inputs one at a time, in the order the driver merges them,
/// returning what to emit. No clock: time is the records' own.
///
/// The rules (the README's Joins section says the same):
/// - **Stream time** is the newest event time of any record processed, source or joined.
/// - A record older than stream time minus the grace period (`maxDelay`) is **late**: it
///   joins nothing, and the caller dead-letters it with the reason and counts it.
/// - A source event and a joined event of the same key whose times differ by at most
///   `within` make a **pair**, emitted when the second of the two is processed: an arriving
///   event pairs with the buffered events of the other input in (time, arrival) order.
/// - A source event's window closes when stream time passes its time + `within` + grace;
///   a left join then emits it once **unmatched** if it made no pair. Closed windows are
///   emitted in (time, arrival) order, after the pairs of the step that closed them.
///
/// Every pair of two on-time events is found whatever the order they arrive in: an event is
/// kept while stream time is at most its time + `within` + grace, and an on-time partner is
/// at most `within` away from it. So the output depends on the order of processing only
/// through which records are late.
public struct StreamJoin: Sendable {
    /// One thing to emit. `left` is the id the caller gave the source event.
    public enum Emission: Sendable, Equatable {
        case pair(left: Int, right: JSONValue)
        /// A left join's event that made no pair, once its window has closed.
        case unmatched(left: Int)
    }

    /// What one record did.
    public struct Step: Sendable, Equatable {
        public var emissions: [Emission] = []
        /// True when the record was late: it joined nothing and was not kept.
        public var late = false
        /// Source events whose windows closed: the caller may forget them.
        public var released: [Int] = []
    }

    private struct LeftEntry: Sendable {
        var id: Int
        var time: TimestampMilliseconds
        var key: JoinKey?
        var matched: Bool
    }

    private struct RightEntry: Sendable {
        var sequence: Int
        var time: TimestampMilliseconds
        var value: JSONValue
    }

    public let within: TimestampMilliseconds
    public let grace: TimestampMilliseconds
    /// A left join: an event without a pair is emitted once when its window closes.
    public let keepsUnmatched: Bool

    public private(set) var streamTime: TimestampMilliseconds?
    private var lefts: [JoinKey: [LeftEntry]] = [:]
    private var keylessLefts: [LeftEntry] = []
    private var rights: [JoinKey: [RightEntry]] = [:]
    private var leftExpiry = ExpiryHeap()
    private var rightExpiry = ExpiryHeap()
    private var rightSequence = 0
    /// Source events buffered, by id: their key, to find them when they expire.
    private var leftKeys: [Int: JoinKey?] = [:]

    public init(within: TimestampMilliseconds, grace: TimestampMilliseconds, keepsUnmatched: Bool,
                streamTime: TimestampMilliseconds? = nil)
    {
        self.within = within
        self.grace = grace
        self.keepsUnmatched = keepsUnmatched
        self.streamTime = streamTime
    }

    /// Events kept, of both inputs: bounded by what arrives in `within` + grace of stream time.
    public var bufferedCount: Int { leftKeys.count + rightExpiry.count }

    private func isLate(_ time: TimestampMilliseconds) -> Bool {
        guard let streamTime else { return false }
        return time < streamTime - grace
    }

    /// A source event; `id` increases with each event, so ties in time keep arrival order.
    public mutating func left(id: Int, time: TimestampMilliseconds, key: JoinKey?) -> Step {
        var step = Step()
        guard !isLate(time) else {
            step.late = true
            return step
        }
        var entry = LeftEntry(id: id, time: time, key: key, matched: false)
        if let key, let candidates = rights[key] {
            for candidate in candidates where abs(candidate.time - time) <= within {
                step.emissions.append(.pair(left: id, right: candidate.value))
                entry.matched = true
            }
        }
        if let key {
            Self.insert(entry, into: &lefts[key, default: []])
        } else {
            keylessLefts.append(entry)
        }
        leftKeys[id] = key
        leftExpiry.push(time: time, sequence: id)
        advance(to: time, into: &step)
        return step
    }

    /// A joined event and the value it joins with.
    public mutating func right(time: TimestampMilliseconds, key: JoinKey?, value: JSONValue) -> Step {
        var step = Step()
        guard !isLate(time) else {
            step.late = true
            return step
        }
        // A joined event without a key matches nothing, but still moves stream time.
        if let key {
            if var candidates = lefts[key] {
                for index in candidates.indices where abs(candidates[index].time - time) <= within {
                    step.emissions.append(.pair(left: candidates[index].id, right: value))
                    candidates[index].matched = true
                }
                lefts[key] = candidates
            }
            rightSequence += 1
            let entry = RightEntry(sequence: rightSequence, time: time, value: value)
            var list = rights[key] ?? []
            var position = list.count
            while position > 0, (list[position - 1].time, list[position - 1].sequence) > (time, rightSequence) { position -= 1 }
            list.insert(entry, at: position)
            rights[key] = list
            rightExpiry.push(time: time, sequence: rightSequence, key: key)
        }
        advance(to: time, into: &step)
        return step
    }

    /// Moves stream time forward without a record: when the inputs have been quiet for the
    /// idle timeout, so windows still close.
    public mutating func advance(to time: TimestampMilliseconds) -> Step {
        var step = Step()
        advance(to: time, into: &step)
        return step
    }

    private mutating func advance(to time: TimestampMilliseconds, into step: inout Step) {
        let now = max(streamTime ?? time, time)
        streamTime = now
        // A window is open while stream time ≤ event time + within + grace.
        let horizon = now - within - grace
        while let (time, id, _) = leftExpiry.minimum, time < horizon {
            leftExpiry.popMinimum()
            guard let key = leftKeys.removeValue(forKey: id) else { continue }
            let entry: LeftEntry?
            if let key {
                var list = lefts[key] ?? []
                let index = list.firstIndex { $0.id == id }
                entry = index.map { list[$0] }
                if let index { list.remove(at: index) }
                lefts[key] = list.isEmpty ? nil : list
            } else {
                let index = keylessLefts.firstIndex { $0.id == id }
                entry = index.map { keylessLefts[$0] }
                if let index { keylessLefts.remove(at: index) }
            }
            if let entry, keepsUnmatched, !entry.matched { step.emissions.append(.unmatched(left: id)) }
            step.released.append(id)
        }
        while let (time, sequence, key) = rightExpiry.minimum, time < horizon {
            rightExpiry.popMinimum()
            guard let key, var list = rights[key] else { continue }
            list.removeAll { $0.sequence == sequence }
            rights[key] = list.isEmpty ? nil : list
        }
    }

    private static func insert(_ entry: LeftEntry, into list: inout [LeftEntry]) {
        var position = list.count
        while position > 0, (list[position - 1].time, list[position - 1].id) > (entry.time, entry.id) { position -= 1 }
        list.insert(entry, at: position)
    }
}

/// A binary min-heap of (time, sequence): ties in time leave in arrival order, so what
/// expires together is emitted in a deterministic order.
struct ExpiryHeap: Sendable {
    private var items: [(time: TimestampMilliseconds, sequence: Int, key: JoinKey?)] = []

    var count: Int { items.count }
    var minimum: (TimestampMilliseconds, Int, JoinKey?)? { items.first.map { ($0.time, $0.sequence, $0.key) } }

    private func before(_ a: Int, _ b: Int) -> Bool {
        (items[a].time, items[a].sequence) < (items[b].time, items[b].sequence)
    }

    mutating func push(time: TimestampMilliseconds, sequence: Int, key: JoinKey? = nil) {
        items.append((time, sequence, key))
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard before(child, parent) else { break }
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
            if left < items.count, before(left, smallest) { smallest = left }
            if right < items.count, before(right, smallest) { smallest = right }
            guard smallest != parent else { return }
            items.swapAt(parent, smallest)
            parent = smallest
        }
    }
}

import ProvisionLog
import ProvisionModel

/// One source event as the join step sees it: its time and, per join, the value it joins
/// on (nil when the event lacks it).
public struct JoinProbe: Sendable {
    public var eventTime: TimestampMilliseconds
    public var keys: [JoinKey?]
    /// False for a deletion: it is output once, with nothing joined.
    public var isJoined = true
    /// Where the event is and its record key: kept by `latest` joins, which send the event
    /// again when a row it joined changes.
    public var position: EventPosition?
    public var recordKey: JoinKey?
    /// The event's fields as the processor reads them (its slots, then any `on` fields
    /// beyond), so it is read once.
    public var fields: [JSONValue?] = []

    public init(eventTime: TimestampMilliseconds, keys: [JoinKey?]) {
        self.eventTime = eventTime
        self.keys = keys
    }

    public static let unjoined = {
        var probe = JoinProbe(eventTime: 0, keys: [])
        probe.isJoined = false
        return probe
    }()
}

/// The fields scanned from a joined record when expressions read only some of it.
struct FieldScan: Sendable {
    let names: JSONFieldNames
    let time: Int?
    let matched: Int
    let read: [(name: String, slot: Int)]

    init(time timeField: String?, matched matchedField: String, read fieldsRead: [String]) {
        var slots = FieldSlots()
        time = timeField.map { slots.slot(for: $0) }
        matched = slots.slot(for: matchedField)
        read = fieldsRead.map { ($0, slots.slot(for: $0)) }
        names = JSONFieldNames(slots.names)
    }
}

/// Reads a joined dataset's records as join state keeps them: only the fields expressions
/// read (all of them when one reads the record whole), its event time and its matched field.
struct JoinedRecordReader: Sendable {
    let plan: ProductPlan.JoinPlan
    private let scan: FieldScan?

    init(_ plan: ProductPlan.JoinPlan) {
        self.plan = plan
        scan = plan.fieldsRead.map { FieldScan(time: plan.dataset.spec.time, matched: plan.matchedField, read: $0) }
    }

    /// The record's kept value, event time (its time field, else the log timestamp) and
    /// matched field; nil if it is a tombstone or not a JSON object.
    func read(_ batch: RecordBatch, at position: Int) -> (value: JSONObject, time: TimestampMilliseconds, matched: JSONValue?)? {
        let entry = batch.entries[position]
        guard entry.value != nil else { return nil }
        let object: JSONObject, recordTime: JSONValue?, matched: JSONValue?
        if let scan {
            var values = [JSONValue?](repeating: nil, count: scan.names.count)
            let scanned: Bool = batch.withValue(at: position) { (try? JSONParser.scanObject($0, names: scan.names, into: &values)) != nil }
            guard scanned else { return nil }
            var kept = JSONObject()
            kept.fields.reserveCapacity(scan.read.count)
            for (name, slot) in scan.read {
                if let value = values[slot] { kept.fields.append((name, value)) }
            }
            (object, recordTime, matched) = (kept, scan.time.flatMap { values[$0] }, values[scan.matched])
        } else {
            guard case .object(let parsed)? = batch.withValue(at: position, { try? JSONParser.parse($0) }) else { return nil }
            (object, recordTime, matched) = (parsed, plan.dataset.spec.time.flatMap { parsed[$0] }, parsed[plan.matchedField])
        }
        var time = entry.timestamp
        switch recordTime {
        case .string(let text)?: time = Timestamp.parse(text) ?? time
        case .integer(let milliseconds)?: time = milliseconds
        default: break
        }
        return (object, time, matched)
    }
}

/// A source event's place in the log.
public struct EventPosition: Sendable, Hashable, Comparable {
    public var partition: Int
    public var offset: Int64

    public init(partition: Int, offset: Int64) {
        self.partition = partition
        self.offset = offset
    }

    public static func < (lhs: EventPosition, rhs: EventPosition) -> Bool {
        (lhs.partition, lhs.offset) < (rhs.partition, rhs.offset)
    }
}

/// The outputs to make from a batch of source events: row `r` is the event at `events[r]`
/// in its batch with, per join, the matched record (nil for no match in a left join) at
/// `values[r * joinCount + j]`. A windowed join with several matches makes several rows for
/// one event. Flat, so a batch of rows is two arrays, not one per row.
public struct JoinedRows: Sendable {
    public let joinCount: Int
    public private(set) var events: [Int] = []
    public private(set) var values: [JSONValue?] = []

    public init(joinCount: Int, capacity: Int = 0) {
        self.joinCount = joinCount
        events.reserveCapacity(capacity)
        values.reserveCapacity(capacity * joinCount)
    }

    public var count: Int { events.count }

    mutating func append(event: Int, _ matches: [JSONValue?]) {
        events.append(event)
        values.append(contentsOf: matches)
    }

    mutating func appendUnjoined(event: Int) {
        events.append(event)
        for _ in 0..<joinCount { values.append(nil) }
    }
}

/// The joined tables of a product (`asOf` and `latest` joins): reads them beside the source,
/// in event time, and answers each source event with its rows. A windowed join of two
/// streams is not here: `StreamJoin` and the pipeline's merged reading do it in stream time.
///
/// Before a batch of source events is joined, every table is read until it has passed the
/// batch's newest event time: then no record that belongs to those events is still unread,
/// so history and live give the same answer. At the end of a table that has not got that
/// far, a live product waits for it up to `maxDelay` (and not at all for events older than
/// `maxDelay`); a record that arrives later still counts, is joined to what comes after it,
/// and is counted as late.
///
/// One task uses it at a time: the pipeline's reader, or the read-ahead task that replaces it.
public actor JoinInputs {
    private struct Input {
        let plan: ProductPlan.JoinPlan
        let topic: String
        let reader: JoinedRecordReader
        var positions: [Int: Int64] = [:]
        /// Per partition, the newest record time read.
        var newest: [Int: TimestampMilliseconds] = [:]
        var table = TableVersions()
        var current: [JoinKey: JSONValue] = [:]
        /// `latest`: the events that joined each row, to send again when it changes.
        var joinedBy: [JoinKey: [EventPosition]] = [:]

        var maxDelay: TimestampMilliseconds { plan.spec.maxDelayMilliseconds }
    }

    /// What each join does, apart from its state, so matching reads no plan.
    private struct Rule {
        enum Lookup { case asOf, latest }
        var lookup: Lookup
        var kind: JoinSpec.Kind
        var maxDelay: TimestampMilliseconds
        /// Where the join is among the plan's joins, and so among a probe's keys.
        var planIndex: Int
    }

    private let rules: [Rule]
    private let log: any EventLog
    private let clock: @Sendable () -> TimestampMilliseconds
    private var inputs: [Input]
    /// Per source partition, the newest event time joined so far. An event's lookups and
    /// lateness follow its own partition's; table versions are dropped only behind the
    /// slowest partition, so how the partitions' reads interleave changes no answer.
    private var watermarks: [Int: TimestampMilliseconds] = [:]
    private let sourcePartitions: Int
    /// The partition of the events being matched.
    private var matchingPartition = 0
    private var late: Int64 = 0
    /// When the current batch started waiting for a joined input: a batch waits `maxDelay`
    /// at most, however many slices and inputs it waits for.
    private var waitStarted: TimestampMilliseconds?
    /// `latest`: the newest position of each source record key, so an event replaced by a
    /// newer version of itself is not sent again.
    private var newestPosition: [JoinKey: EventPosition] = [:]
    /// `latest`: rows that changed and were joined before; their events go out again.
    private var changedRows: Set<EventPosition> = []
    private let matchSliceMax = 4_096
    private let readRecordsMax = 2_048
    private let readBytesMax = 1 << 20

    /// Opens the joined inputs and rebuilds their state up to `position`, from a checkpoint.
    /// - Parameter sourcePartitions: how many partitions the product's source has.
    public static func open(plan: ProductPlan, log: any EventLog, startTime: TimestampMilliseconds?, position: JoinPosition?,
                            sourcePartitions: Int = 1, clock: @escaping @Sendable () -> TimestampMilliseconds) async throws -> JoinInputs
    {
        let inputs = JoinInputs(plan: plan, log: log, sourcePartitions: sourcePartitions, clock: clock)
        try await inputs.restore(startTime: startTime, position: position)
        return inputs
    }

    private init(plan: ProductPlan, log: any EventLog, sourcePartitions: Int, clock: @escaping @Sendable () -> TimestampMilliseconds) {
        self.log = log
        self.sourcePartitions = max(1, sourcePartitions)
        self.clock = clock
        resendsOnChange = plan.joins.contains { $0.spec.followsRowChanges }
        let tables = plan.joins.enumerated().filter { !$0.element.spec.isWindowed }
        rules = tables.map { index, join in
            Rule(lookup: join.spec.followsRowChanges ? .latest : .asOf, kind: join.spec.kind,
                 maxDelay: join.spec.maxDelayMilliseconds, planIndex: index)
        }
        inputs = tables.map { _, join in Input(plan: join, topic: join.dataset.spec.topic, reader: JoinedRecordReader(join)) }
    }

    /// Whether some join sends events again when a row they joined changes.
    public nonisolated let resendsOnChange: Bool

    public var position: JoinPosition {
        JoinPosition(inputs: Dictionary(uniqueKeysWithValues: inputs.map { ($0.plan.spec.alias, $0.positions) }),
                     late: late, watermarks: watermarks)
    }

    private func restore(startTime: TimestampMilliseconds?, position: JoinPosition?) async throws {
        // A checkpoint from before partitions had watermarks of their own: one partition.
        watermarks = position?.watermarks ?? position?.watermark.map { [0: $0] } ?? [:]
        late = position?.late ?? 0
        for index in inputs.indices {
            let topic = inputs[index].topic
            try await log.createTopic(for: inputs[index].plan.dataset.spec)
            let partitionCount = try await log.partitionCount(of: topic) ?? 1
            for partition in 0..<partitionCount {
                let source = TopicPartition(topic: topic, partition: partition)
                // A table is read from its beginning: an event joins the row as of its time,
                // however old that row is.
                inputs[index].positions[partition] = try await log.startOffset(of: source)
                guard let committed = position?.inputs[inputs[index].plan.spec.alias]?[partition] else { continue }
                while inputs[index].positions[partition]! < committed {
                    let batch = try await log.readBatch(source, from: inputs[index].positions[partition]!,
                                                        maxRecords: readRecordsMax, maxBytes: readBytesMax)
                    guard let last = batch.entries.last else { break }
                    ingest(batch, into: index, partition: partition, until: committed, counting: false)
                    inputs[index].positions[partition] = min(last.offset + 1, committed)
                }
                inputs[index].positions[partition] = committed
            }
        }
    }

    /// Matches a batch of source events (nil for events that are not joined: skipped or
    /// dead-lettered) and returns the rows to output, in event order.
    public func match(_ probes: [JoinProbe?], partition: Int = 0) async throws -> JoinedRows {
        matchingPartition = partition
        var rows = JoinedRows(joinCount: inputs.count, capacity: probes.count)
        waitStarted = nil
        // A slice of events at a time: the joined inputs are read only as far as the slice
        // needs, and windows expire after it, so the state spans a slice, not a batch.
        for sliceStart in stride(from: 0, to: probes.count, by: matchSliceMax) {
            let slice = sliceStart..<min(sliceStart + matchSliceMax, probes.count)
            var newestEvent: TimestampMilliseconds?
            for index in slice where probes[index]?.isJoined == true {
                newestEvent = max(newestEvent ?? .min, probes[index]!.eventTime)
            }
            if let newestEvent {
                for index in inputs.indices {
                    try await load(index, through: rules[index].lookup == .latest ? nil : newestEvent)
                }
            }
            match(probes, slice, into: &rows)
        }
        return rows
    }

    /// `latest`: the events to send again because a row they joined changed, oldest first;
    /// an event since replaced by a newer version of its record is left out.
    public func takeChangedEvents() -> [EventPosition] {
        defer { changedRows.removeAll() }
        return changedRows.sorted()
    }

    /// Whether the event at `position` with this record key is still its key's newest.
    public func isNewest(_ position: EventPosition, recordKey: JoinKey?) -> Bool {
        guard let recordKey, let newest = newestPosition[recordKey] else { return true }
        return newest == position
    }

    /// Matches events again with the rows as they are now, changing no state (with no
    /// position, an event is not remembered again): for events sent again after a `latest`
    /// row changed.
    public func rematch(_ probes: [JoinProbe?]) -> JoinedRows {
        let (savedWatermarks, savedLate) = (watermarks, late)
        var rows = JoinedRows(joinCount: inputs.count)
        match(probes.map { probe in
            var probe = probe
            probe?.position = nil
            probe?.recordKey = nil
            probe?.fields = []
            return probe
        }, probes.indices, into: &rows)
        (watermarks, late) = (savedWatermarks, savedLate)
        return rows
    }

    /// Rebuilds what `latest` joins know of earlier events, from the events before a
    /// checkpoint read again; nothing is output.
    public func remember(_ probes: [JoinProbe?]) {
        for probe in probes {
            guard let probe, probe.isJoined, let position = probe.position else { continue }
            if let recordKey = probe.recordKey { newestPosition[recordKey] = position }
            for index in inputs.indices where rules[index].lookup == .latest {
                if let key = probe.keys[rules[index].planIndex] { inputs[index].joinedBy[key, default: []].append(position) }
            }
        }
    }

    private func match(_ probes: [JoinProbe?], _ slice: Range<Int>, into rows: inout JoinedRows) {
        // Read in place: copying each probe would retain and release its arrays per event.
        probes.withUnsafeBufferPointer { probes in match(probes, slice, into: &rows) }
    }

    private func match(_ probes: UnsafeBufferPointer<JoinProbe?>, _ slice: Range<Int>, into rows: inout JoinedRows) {
        let joinCount = inputs.count
        var values: [JSONValue?] = []
        values.reserveCapacity(joinCount)
        for eventIndex in slice {
            guard probes[eventIndex] != nil else { continue }
            guard probes[eventIndex]!.isJoined else {
                rows.appendUnjoined(event: eventIndex)
                continue
            }
            let time = probes[eventIndex]!.eventTime
            let newest = max(watermarks[matchingPartition] ?? time, time)
            watermarks[matchingPartition] = newest
            if let position = probes[eventIndex]!.position, let recordKey = probes[eventIndex]!.recordKey {
                newestPosition[recordKey] = position
            }
            values.removeAll(keepingCapacity: true)
            var isLate = false
            var dropped = false
            for joinIndex in 0..<joinCount {
                let rule = rules[joinIndex]
                let horizon = newest - rule.maxDelay
                if time < horizon { isLate = true }
                let key = probes[eventIndex]!.keys[rule.planIndex]
                var match: JSONValue?
                switch rule.lookup {
                case .asOf:
                    match = key.flatMap { inputs[joinIndex].table.value(of: $0, asOf: time, horizon: horizon) }
                case .latest:
                    if let key {
                        match = inputs[joinIndex].current[key]
                        if let position = probes[eventIndex]!.position { inputs[joinIndex].joinedBy[key, default: []].append(position) }
                    }
                }
                if match == nil && rule.kind == .inner {
                    dropped = true
                    break
                }
                values.append(match)
            }
            if isLate { late += 1 }
            guard !dropped else { continue }
            rows.append(event: eventIndex, values)
        }
    }

    /// Reads a joined input until every partition has passed `target` (nil: to its end), or
    /// is at its end and has been waited for long enough.
    private func load(_ index: Int, through target: TimestampMilliseconds?) async throws {
        let topic = inputs[index].topic
        let maxDelay = inputs[index].maxDelay
        for partition in inputs[index].positions.keys.sorted() {
            let source = TopicPartition(topic: topic, partition: partition)
            while true {
                if let target, let newest = inputs[index].newest[partition], newest > target { break }
                let position = inputs[index].positions[partition]!
                let batch = try await log.readBatch(source, from: position, maxRecords: readRecordsMax, maxBytes: readBytesMax)
                if let last = batch.entries.last {
                    ingest(batch, into: index, partition: partition, until: nil, counting: true)
                    inputs[index].positions[partition] = last.offset + 1
                    continue
                }
                // At the end of the input, short of the target. Records older than maxDelay
                // are assumed complete; a table row is waited for maxDelay at most per batch.
                guard let target else { break }
                let now = clock()
                let started = waitStarted ?? now
                waitStarted = started
                let remaining = min(target + maxDelay - now, maxDelay - (now - started))
                if remaining <= 0 { break }
                // In steps of a second at most, so a shutdown is not held up.
                try Task.checkCancellation()
                try await log.waitForRecords(in: source, at: position, timeout: .milliseconds(min(remaining, 1_000)))
                try Task.checkCancellation()
            }
        }
    }

    /// The oldest of the source partitions' watermarks; nil until every partition has one.
    private var slowestWatermark: TimestampMilliseconds? {
        watermarks.count < sourcePartitions ? nil : watermarks.values.min()
    }

    private func ingest(_ batch: RecordBatch, into index: Int, partition: Int, until end: Int64?, counting: Bool) {
        let spec = inputs[index].plan.spec
        let watermark = slowestWatermark
        let horizon = watermark.map { $0 - inputs[index].maxDelay } ?? .min
        for (position, entry) in batch.entries.enumerated() {
            if let end, entry.offset >= end { break }
            var time = entry.timestamp
            var object: JSONObject?
            if entry.value != nil {
                // A joined record that is not a JSON object cannot be matched; the dataset's
                // own products dead-letter it.
                guard let read = inputs[index].reader.read(batch, at: position) else { continue }
                object = read.value
                time = read.time
            }
            inputs[index].newest[partition] = max(inputs[index].newest[partition] ?? time, time)
            let value = object.map(JSONValue.object)
            // A version older than events already joined came too late for them.
            if counting, spec.mode == .asOf, let watermark, time < watermark { late += 1 }
            if let key = entry.key.map({ JoinKey(batch.bytes[$0]) }) {
                if spec.mode == .latest {
                    inputs[index].current[key] = value
                    if counting, let positions = inputs[index].joinedBy[key] { changedRows.formUnion(positions) }
                } else {
                    inputs[index].table.insert(key: key, time: time, value: value, horizon: horizon)
                }
            }
        }
    }
}

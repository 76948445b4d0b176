import ProvisionLog
import ProvisionModel

/// Turns source records into output records: time window, filter, projection. Pure: the
/// same record and plan give the same outcome, which is what makes replays exact.
public struct RecordProcessor: Sendable {
    public enum Outcome: Sendable {
        case output(OutputRecord)
        /// Outside the time window or rejected by `where`.
        case skipped
        /// The event cannot be processed; it goes to the dead-letter topic with the reason.
        case deadLetter(reason: String)
    }

    public let plan: ProductPlan
    /// Events before this time are not part of the product.
    public let startTime: TimestampMilliseconds?
    /// Events at or after this time are not part of the product.
    public let endTime: TimestampMilliseconds?

    /// The fields the time window and the filter need: read from every event.
    private let filterNames: JSONFieldNames
    /// The fields only an accepted event needs: read after the filter passes.
    private let outputNames: JSONFieldNames
    /// The projection's evaluators, apart from the plan so evaluating one borrows it
    /// rather than copying an `Expression` (and retaining its parts) per field and event.
    private let projection: [Expression.Evaluator]?
    /// Where the key is among the output values.
    private let keyIndex: Int?
    /// What a joined product reads from each event, once: every slot but the joins', then
    /// each join's `on` field (where the slots lack it). The slots are kept for processing.
    private let probeNames: JSONFieldNames
    /// Where each join's `on` value is among the probed fields.
    private let probeKeyIndices: [Int]
    /// The slot each join's match fills, in join order.
    private let joinSlots: [Int]
    /// Some join sends events again when their row changes: probes carry where they are.
    private let followsRowChanges: Bool

    public init(plan: ProductPlan, startTime: TimestampMilliseconds?, endTime: TimestampMilliseconds?) {
        self.plan = plan
        self.startTime = startTime
        self.endTime = endTime
        // Without a window the event time only matters for output, so it waits for phase two,
        // unless the filter reads the time field itself.
        let windowed = startTime != nil || endTime != nil
        let timeNeededFirst = windowed || plan.filterReadsTimeField
        let timeSlot = plan.timeSlot
        let filterSlotCount = plan.filterSlotCount
        // Joined records fill their slots from the join, never from the event.
        let joined = Set(plan.joins.map(\.slot))
        filterNames = JSONFieldNames(plan.slots.names) { index in
            index < filterSlotCount && (index != timeSlot || timeNeededFirst) && !joined.contains(index)
        }
        outputNames = JSONFieldNames(plan.slots.names) { index in
            (index >= filterSlotCount || (index == timeSlot && !timeNeededFirst)) && !joined.contains(index)
        }
        joinSlots = plan.joins.map(\.slot)
        followsRowChanges = plan.joins.contains { $0.spec.followsRowChanges }
        var probeFields = plan.slots.names
        var keyIndices: [Int] = []
        for join in plan.joins {
            if let index = probeFields.firstIndex(of: join.spec.on), !joined.contains(index) {
                keyIndices.append(index)
            } else {
                probeFields.append(join.spec.on)
                keyIndices.append(probeFields.count - 1)
            }
        }
        probeKeyIndices = keyIndices
        probeNames = JSONFieldNames(probeFields) { index in !joined.contains(index) }
        projection = plan.projection?.map(\.expression.evaluator)
        if let keyField = plan.keyField {
            keyIndex = plan.projection.map { $0.firstIndex { $0.name == keyField } }
                ?? plan.outputSchema.fields.firstIndex { $0.name == keyField }
        } else {
            keyIndex = nil
        }
    }

    public func process(_ stored: StoredRecord, partition: Int, now: TimestampMilliseconds) -> Outcome {
        process(RecordBatch(records: [stored]), range: 0..<1, partition: partition, now: now)[0]
    }

    /// Processes a range of a batch, reading values in place, with one scratch row of slots.
    public func process(_ batch: RecordBatch, range: Range<Int>, partition: Int, now: TimestampMilliseconds) -> [Outcome] {
        var outcomes: [Outcome] = []
        outcomes.reserveCapacity(range.count)
        var slots = [JSONValue?](repeating: nil, count: plan.slots.names.count)
        for index in range {
            for slot in slots.indices { slots[slot] = nil }
            outcomes.append(process(batch, index: index, partition: partition, now: now, slots: &slots))
        }
        return outcomes
    }

    /// A dead-lettered event of a batch: its index and why.
    public struct Rejection: Sendable {
        public var index: Int
        public var reason: String
    }

    /// What a joined product reads first from each event: its time and the values it joins
    /// on. Per event of the range, a probe, or nil for an event that is not joined: outside
    /// the time window (skipped) or dead-lettered (with the reason in `rejections`).
    public struct Probes: Sendable {
        public var probes: [JoinProbe?] = []
        public var rejections: [Rejection] = []
    }

    public func probe(_ batch: RecordBatch, range: Range<Int>, partition: Int) -> Probes {
        var result = Probes()
        result.probes.reserveCapacity(range.count)
        for index in range {
            let entry = batch.entries[index]
            // A deletion deletes the output whatever it joined.
            guard entry.value != nil else {
                result.probes.append(.unjoined)
                continue
            }
            var fields = [JSONValue?](repeating: nil, count: probeNames.count)
            let parsed: Bool = batch.withValue(at: index) { bytes in
                (try? JSONParser.scanObject(bytes, names: probeNames, into: &fields)) != nil
            }
            guard parsed else {
                // The processing step says what is wrong with it.
                if case .deadLetter(let reason) = process(batch, range: index..<(index + 1), partition: 0, now: 0)[0] {
                    result.rejections.append(Rejection(index: index, reason: reason))
                }
                result.probes.append(nil)
                continue
            }
            var eventTime = entry.timestamp
            switch readEventTime(fields) {
            case .success(let time?): eventTime = time
            case .success(nil): break
            case .failure(let error):
                result.rejections.append(Rejection(index: index, reason: error.message))
                result.probes.append(nil)
                continue
            }
            guard isInWindow(eventTime) else {
                result.probes.append(nil)
                continue
            }
            var probe = JoinProbe(eventTime: eventTime, keys: probeKeyIndices.map { JoinKey(fields[$0]) })
            probe.fields = fields
            if followsRowChanges {
                probe.position = EventPosition(partition: partition, offset: entry.offset)
                probe.recordKey = entry.key.map { JoinKey(batch.bytes[$0]) }
            }
            result.probes.append(probe)
        }
        return result
    }

    /// Outputs and dead letters of joined rows, in row order.
    public struct JoinedOutcomes: Sendable {
        public var outputs: [OutputRecord] = []
        public var rejections: [Rejection] = []
    }

    /// Processes a range of joined rows: each row's event with its join slots filled.
    public func process(_ batch: RecordBatch, probes: [JoinProbe?], rows: JoinedRows, range: Range<Int>, partition: Int,
                        now: TimestampMilliseconds) -> JoinedOutcomes
    {
        var result = JoinedOutcomes()
        result.outputs.reserveCapacity(range.count)
        let joinCount = rows.joinCount
        for row in range {
            let index = rows.events[row]
            // The probe read the event's fields already; a deletion has none.
            var slots = probes[index]?.fields ?? []
            let scanned = !slots.isEmpty
            if !scanned { slots = [JSONValue?](repeating: nil, count: plan.slots.names.count) }
            for join in 0..<joinCount { slots[joinSlots[join]] = rows.values[row * joinCount + join] }
            switch process(batch, index: index, partition: partition, now: now, slots: &slots, scanned: scanned) {
            case .output(let output): result.outputs.append(output)
            case .skipped: continue
            case .deadLetter(let reason): result.rejections.append(Rejection(index: index, reason: reason))
            }
        }
        return result
    }

    /// - Parameter scanned: the slots hold the event's fields already.
    private func process(_ batch: RecordBatch, index: Int, partition: Int, now: TimestampMilliseconds,
                         slots: inout [JSONValue?], scanned: Bool = false) -> Outcome
    {
        let entry = batch.entries[index]
        guard entry.value != nil else {
            guard let key = batch.key(at: index), isInWindow(entry.timestamp) else { return .skipped }
            return .output(OutputRecord(key: .string(String(decoding: key, as: UTF8.self)), body: .tombstone,
                                        partition: partition, offset: entry.offset, eventTime: entry.timestamp))
        }
        let failure: String? = scanned ? nil : batch.withValue(at: index) { bytes in
            do {
                try JSONParser.scanObject(bytes, names: filterNames, into: &slots)
                return nil
            } catch {
                let first = bytes.first { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }
                return first == UInt8(ascii: "[") || first == UInt8(ascii: "\"") || (first.map { $0 &- 0x30 < 10 } ?? false)
                    ? "the value is not a JSON object" : "the value is not valid JSON: \(error)"
            }
        }
        if let failure { return .deadLetter(reason: failure) }
        var eventTime = entry.timestamp
        let windowed = startTime != nil || endTime != nil
        if windowed {
            switch readEventTime(slots) {
            case .success(let time?): eventTime = time
            case .success(nil): break
            case .failure(let error): return .deadLetter(reason: error.message)
            }
            guard isInWindow(eventTime) else { return .skipped }
        }
        do {
            // Optional chaining borrows the filter; binding it with `if let` would copy the
            // expression, and its references, for every event.
            if try plan.filter?.matches(EvaluationContext(slots: slots, eventTime: eventTime, now: now)) == false {
                return .skipped
            }
        } catch {
            return .deadLetter(reason: error.message)
        }
        if !outputNames.matchesNothing && !scanned {
            // The event was checked whole by the first scan, so this one cannot fail.
            batch.withValue(at: index) { bytes in
                try? JSONParser.scanObject(bytes, names: outputNames, into: &slots)
            }
        }
        if !windowed {
            switch readEventTime(slots) {
            case .success(let time?): eventTime = time
            case .success(nil): break
            case .failure(let error): return .deadLetter(reason: error.message)
            }
        }
        let context = EvaluationContext(slots: slots, eventTime: eventTime, now: now)
        do {
            let body: OutputRecord.Body
            var key: Value?
            if let count = projection?.count {
                var row: [Value] = []
                row.reserveCapacity(count)
                for index in 0..<count { row.append(try projection![index](context)) }
                if let keyIndex { key = row[keyIndex] }
                body = .row(row)
            } else {
                let passthrough = plan.passthroughSlots ?? []
                if let index = keyIndex {
                    let field = plan.outputSchema.fields[index]
                    key = try FieldReader.read(slots[passthrough[index]], as: field.type, path: field.name)
                }
                body = .document(raw: batch.value(at: index) ?? [], fields: passthrough.map { slots[$0] })
            }
            return .output(OutputRecord(key: key, body: body, partition: partition, offset: entry.offset, eventTime: eventTime))
        } catch {
            return .deadLetter(reason: error.message)
        }
    }

    private func readEventTime(_ slots: [JSONValue?]) -> Result<TimestampMilliseconds?, EvaluationError> {
        guard let timeSlot = plan.timeSlot else { return .success(nil) }
        do {
            if case .timestamp(let time) = try FieldReader.read(slots[timeSlot], as: .timestamp, path: plan.dataset.spec.time!) {
                return .success(time)
            }
            return .success(nil)
        } catch {
            return .failure(error)
        }
    }

    @inline(__always)
    private func isInWindow(_ time: TimestampMilliseconds) -> Bool {
        if let startTime, time < startTime { return false }
        if let endTime, time >= endTime { return false }
        return true
    }
}

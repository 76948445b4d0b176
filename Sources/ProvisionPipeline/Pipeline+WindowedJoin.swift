import ProvisionLog
import ProvisionModel

/// A product with a windowed join reads every partition of its source and of the joined
/// stream as one sequence in event time, the way a Kafka Streams task merges its partitions:
/// of the next records of all of them, the oldest goes first (on a tie the source's, then the
/// lower partition's). When a partition has no records, the merge waits for it up to the
/// join's idle timeout (wall clock) since a record last arrived on any partition before going
/// on without it; so records that arrive within that time of each other are processed in the
/// same order whether they were in the log at apply or came live in separate slices, and the
/// output is the same, line for line. (Timed from the last arrival rather than per partition:
/// at the end of a backfill the partitions run dry one after another, and each would wait in
/// turn.)
/// `StreamJoin` decides what each record emits.
extension Pipeline {
    /// A source event the join may still emit, kept until its window closes.
    struct BufferedEvent: Sendable {
        /// The batch it was read in, shared by the batch's events rather than copied out.
        var batch: RecordBatch
        var index: Int
        var partition: Int
        var probe: JoinProbe
        var stored: StoredRecord { batch.record(at: index) }
        /// The product's table joins' values for it, in table order.
        var tableValues: [JSONValue?]
    }

    enum LeftItem: Sendable {
        case event(id: Int, time: TimestampMilliseconds, offset: Int64)
        /// A deletion of the source: output once, joined to nothing.
        case deletion(StoredRecord)
        /// Outside the product (its time window, or dropped by an inner table join), or
        /// dead-lettered with the record.
        case skipped(offset: Int64, deadLetter: LogRecord?)

        var offset: Int64 {
            switch self {
            case .event(_, _, let offset): return offset
            case .deletion(let stored): return stored.offset
            case .skipped(let offset, _): return offset
            }
        }

        var time: TimestampMilliseconds {
            switch self {
            case .event(_, let time, _): return time
            case .deletion(let stored): return stored.record.timestamp
            case .skipped: return .min
            }
        }
    }

    struct RightItem: Sendable {
        var offset: Int64
        var time: TimestampMilliseconds
        var key: JoinKey?
        /// Nil for a record that cannot be matched (a tombstone, or not a JSON object): it is
        /// passed over; the dataset's own products dead-letter it.
        var value: JSONValue?
        var batch: RecordBatch
        var index: Int
    }

    /// The records read from one partition and not merged yet, and where it stands.
    struct PartitionQueue<Item: Sendable>: Sendable {
        var items: [Item] = []
        var head = 0
        /// The next offset to read, and the next not yet processed.
        var read: Int64
        var done: Int64

        init(at offset: Int64) {
            read = offset
            done = offset
        }

        var isEmpty: Bool { head >= items.count }
        var next: Item { items[head] }

        /// Drops what was merged, before more is appended.
        mutating func compact() {
            items.removeFirst(head)
            head = 0
        }

        /// Forgets what was read and not merged, and goes back to `offset`.
        mutating func reset(to offset: Int64) {
            items.removeAll()
            head = 0
            read = offset
            done = offset
        }
    }

    enum PendingRow: Sendable {
        case joined(id: Int, right: JSONValue?)
        case deletion(StoredRecord, partition: Int)
    }

    /// The merged reading's state. Owned by the pipeline's one task.
    struct WindowedState: Sendable {
        var join: StreamJoin
        var events: [Int: BufferedEvent] = [:]
        var nextID = 0
        /// One queue per partition of the source (left) and of the joined stream (right).
        var left: [PartitionQueue<LeftItem>]
        var right: [PartitionQueue<RightItem>]
        let leftTopic: String
        let rightTopic: String
        /// The wall-clock time a record last arrived on any partition.
        var lastArrival: TimestampMilliseconds
        var late: Int64 = 0
        var rows: [PendingRow] = []
        var deadLetters: [LogRecord] = []
        var released: [Int] = []

        var hasPending: Bool { !rows.isEmpty || !deadLetters.isEmpty }
        var allEmpty: Bool { left.allSatisfy(\.isEmpty) && right.allSatisfy(\.isEmpty) }

        /// Processes records in merged order until a partition runs dry; false if none was
        /// processed. `silently` (a restart rebuilding state) waits for nothing and keeps no
        /// output.
        mutating func merge(now: TimestampMilliseconds, idle: TimestampMilliseconds, windowed: Int, silently: Bool = false) -> Bool {
            var progressed = false
            while true {
                // What joins nothing goes at once, in its partition's order.
                for partition in left.indices {
                    while !left[partition].isEmpty, case .skipped(let offset, let deadLetter) = left[partition].next {
                        if let deadLetter, !silently { deadLetters.append(deadLetter) }
                        left[partition].head += 1
                        left[partition].done = offset + 1
                        progressed = true
                    }
                }
                for partition in right.indices {
                    while !right[partition].isEmpty, right[partition].next.value == nil {
                        right[partition].done = right[partition].next.offset + 1
                        right[partition].head += 1
                        progressed = true
                    }
                }
                // The oldest next record of all partitions; a partition with none holds the
                // merge until `idle` has passed since the last arrival.
                var oldest: (time: TimestampMilliseconds, side: Int, partition: Int)?
                var dry = false
                for partition in left.indices {
                    guard !left[partition].isEmpty else { dry = true; continue }
                    let candidate = (time: left[partition].next.time, side: 0, partition: partition)
                    if oldest.map({ candidate < $0 }) ?? true { oldest = candidate }
                }
                for partition in right.indices {
                    guard !right[partition].isEmpty else { dry = true; continue }
                    let candidate = (time: right[partition].next.time, side: 1, partition: partition)
                    if oldest.map({ candidate < $0 }) ?? true { oldest = candidate }
                }
                guard let oldest, !dry || silently || now - lastArrival >= idle else { return progressed }
                progressed = true
                if oldest.side == 0 {
                    let partition = oldest.partition
                    let item = left[partition].next
                    left[partition].head += 1
                    left[partition].done = item.offset + 1
                    switch item {
                    case .event(let id, let time, _):
                        let step = join.left(id: id, time: time, key: events[id]!.probe.keys[windowed])
                        if step.late {
                            late += 1
                            if !silently, let event = events[id] {
                                deadLetters.append(DeadLetters.record(for: event.stored, from: TopicPartition(topic: leftTopic, partition: partition),
                                                                      reason: lateReason(time)))
                            }
                            events[id] = nil
                        }
                        take(step, silently: silently)
                    case .deletion(let stored):
                        if !silently { rows.append(.deletion(stored, partition: partition)) }
                    case .skipped:
                        break
                    }
                } else {
                    let partition = oldest.partition
                    let item = right[partition].next
                    right[partition].head += 1
                    right[partition].done = item.offset + 1
                    let step = join.right(time: item.time, key: item.key, value: item.value!)
                    if step.late {
                        late += 1
                        if !silently {
                            deadLetters.append(DeadLetters.record(for: item.batch.record(at: item.index),
                                                                  from: TopicPartition(topic: rightTopic, partition: partition),
                                                                  reason: lateReason(item.time)))
                        }
                    }
                    take(step, silently: silently)
                }
            }
        }

        private func lateReason(_ time: TimestampMilliseconds) -> String {
            "late for the windowed join: event time \(Timestamp.format(time)) is more than maxDelay "
                + "(\(DurationText.format(milliseconds: join.grace))) before its stream time \(Timestamp.format(join.streamTime ?? time))"
        }

        mutating func take(_ step: StreamJoin.Step, silently: Bool) {
            if !silently {
                for emission in step.emissions {
                    switch emission {
                    case .pair(let id, let value): rows.append(.joined(id: id, right: value))
                    case .unmatched(let id): rows.append(.joined(id: id, right: nil))
                    }
                }
            }
            released.append(contentsOf: step.released)
        }

        /// Forgets the events whose windows closed, once their rows are made.
        mutating func forgetReleased() {
            for id in released { events[id] = nil }
            released.removeAll()
        }
    }

    func runWindowed(join windowed: Int, tables: JoinInputs, checkpoint initial: Checkpoint, caughtUp initialCaughtUp: Bool,
                     liveBoundary: [Int: Int64]) async throws
    {
        let plan = processor.plan
        let joinPlan = plan.joins[windowed]
        let spec = joinPlan.spec
        let reader = JoinedRecordReader(joinPlan)
        let within = spec.withinMilliseconds ?? 0, grace = spec.maxDelayMilliseconds
        let idle = spec.effectiveIdleTimeoutMilliseconds
        let leftTopic = sourceTopic, rightTopic = joinPlan.dataset.spec.topic
        try await log.createTopic(for: joinPlan.dataset.spec)
        let leftCount = try await log.partitionCount(of: leftTopic) ?? 1
        let rightCount = try await log.partitionCount(of: rightTopic) ?? 1
        func leftSource(_ partition: Int) -> TopicPartition { TopicPartition(topic: leftTopic, partition: partition) }
        func rightSource(_ partition: Int) -> TopicPartition { TopicPartition(topic: rightTopic, partition: partition) }
        var checkpoint = initial
        var caughtUp = initialCaughtUp

        let leftCommitted = (0..<leftCount).map { checkpoint.offsets[$0] ?? 0 }
        let rightCommitted = checkpoint.joins?.inputs[spec.alias]
        let join = StreamJoin(within: within, grace: grace, keepsUnmatched: spec.kind == .left)
        var state = WindowedState(join: join, left: leftCommitted.map { PartitionQueue(at: $0) },
                                  right: (0..<rightCount).map { _ in PartitionQueue(at: 0) }, leftTopic: leftTopic, rightTopic: rightTopic,
                                  lastArrival: clock())
        state.late = checkpoint.joins?.late ?? 0

        func readLeft(_ partition: Int, upTo end: Int64? = nil) async throws -> Bool {
            // Smaller batches than a plain product's: each event of a batch is kept until it has
            // been merged, and windows hold on to the batches their events came in.
            var read = try await log.readBatch(leftSource(partition), from: state.left[partition].read,
                                               maxRecords: min(limits.batchRecordsMax, 8_192), maxBytes: limits.batchBytesMax)
            if let end, let cut = read.entries.firstIndex(where: { $0.offset >= end }) {
                read = RecordBatch(records: (0..<cut).map { read.record(at: $0) })
            }
            let batch = read
            guard let last = batch.entries.last else { return false }
            let processor = self.processor
            let probed = await inParallelChunks(count: batch.count) { range in processor.probe(batch, range: range, partition: partition) }
            var probes: [JoinProbe?] = []
            probes.reserveCapacity(batch.count)
            var reasons: [Int: String] = [:]
            for chunk in probed {
                probes.append(contentsOf: chunk.probes)
                for rejection in chunk.rejections { reasons[rejection.index] = rejection.reason }
            }
            // Table joins answer as of each event's time, once, when it is read.
            let tableRows = end == nil ? try await tables.match(probes, partition: partition) : await tables.rematch(probes)
            var tableValues: [Int: [JSONValue?]] = [:]
            for row in 0..<tableRows.count {
                let start = row * tableRows.joinCount
                tableValues[tableRows.events[row]] = Array(tableRows.values[start..<(start + tableRows.joinCount)])
            }
            state.left[partition].compact()
            for index in 0..<batch.count {
                let offset = batch.entries[index].offset
                guard let probe = probes[index] else {
                    let deadLetter = reasons[index].map {
                        DeadLetters.record(for: batch.record(at: index), from: leftSource(partition), reason: $0)
                    }
                    state.left[partition].items.append(.skipped(offset: offset, deadLetter: deadLetter))
                    continue
                }
                guard probe.isJoined else {
                    state.left[partition].items.append(.deletion(batch.record(at: index)))
                    continue
                }
                guard let values = tableValues[index] else {
                    state.left[partition].items.append(.skipped(offset: offset, deadLetter: nil))
                    continue
                }
                let id = state.nextID
                state.nextID += 1
                state.events[id] = BufferedEvent(batch: batch, index: index, partition: partition, probe: probe, tableValues: values)
                state.left[partition].items.append(.event(id: id, time: probe.eventTime, offset: offset))
            }
            state.left[partition].read = last.offset + 1
            return true
        }

        func readRight(_ partition: Int, upTo end: Int64? = nil) async throws -> Bool {
            let batch = try await log.readBatch(rightSource(partition), from: state.right[partition].read, maxRecords: 16_384, maxBytes: 4 << 20)
            guard let last = batch.entries.last else { return false }
            state.right[partition].compact()
            for index in 0..<batch.count {
                let offset = batch.entries[index].offset
                if let end, offset >= end { break }
                let read = reader.read(batch, at: index)
                state.right[partition].items.append(RightItem(offset: offset, time: read?.time ?? batch.entries[index].timestamp,
                                                              key: JoinKey(read?.matched), value: read.map { .object($0.value) },
                                                              batch: batch, index: index))
            }
            state.right[partition].read = min(last.offset + 1, end ?? .max)
            return true
        }

        // Where each partition of the joined stream starts: its committed offset, or the first
        // record that can fall in the first window.
        var rightStart: [Int64] = []
        for partition in 0..<rightCount {
            let source = rightSource(partition)
            if let startTime = processor.startTime {
                rightStart.append(try await log.offset(forTimestamp: startTime - within - grace, in: source))
            } else {
                rightStart.append(try await log.startOffset(of: source))
            }
        }
        if let rightCommitted, let streamTime = checkpoint.joins?.streamTime {
            // A restart: the state is what processing every partition up to the committed
            // offsets left, so read them again from where the oldest window still open begins,
            // and keep nothing but the state.
            let back = streamTime - 2 * (within + grace)
            let rightDone = (0..<rightCount).map { rightCommitted[$0] ?? rightStart[$0] }
            for partition in 0..<leftCount {
                let source = leftSource(partition)
                let from = min(max(try await log.offset(forTimestamp: back, in: source), try await startOffset(source)), leftCommitted[partition])
                state.left[partition].reset(to: from)
            }
            for partition in 0..<rightCount {
                let from = min(max(try await log.offset(forTimestamp: back, in: rightSource(partition)), rightStart[partition]), rightDone[partition])
                state.right[partition].reset(to: from)
            }
            func behind() -> Bool {
                state.left.indices.contains { state.left[$0].done < leftCommitted[$0] }
                    || state.right.indices.contains { state.right[$0].done < rightDone[$0] }
            }
            while behind() {
                var read = false
                for partition in 0..<leftCount where state.left[partition].isEmpty && state.left[partition].read < leftCommitted[partition] {
                    read = try await readLeft(partition, upTo: leftCommitted[partition]) || read
                }
                for partition in 0..<rightCount where state.right[partition].isEmpty && state.right[partition].read < rightDone[partition] {
                    read = try await readRight(partition, upTo: rightDone[partition]) || read
                }
                let merged = state.merge(now: clock(), idle: idle, windowed: windowed, silently: true)
                state.forgetReleased()
                if !read && !merged { break }
            }
            state.take(state.join.advance(to: streamTime), silently: true)
            state.forgetReleased()
            for partition in 0..<leftCount { state.left[partition].reset(to: leftCommitted[partition]) }
            for partition in 0..<rightCount { state.right[partition].reset(to: rightDone[partition]) }
            state.late = checkpoint.joins?.late ?? 0
        } else {
            for partition in 0..<rightCount { state.right[partition].reset(to: rightCommitted?[partition] ?? rightStart[partition]) }
        }
        let tablesLateAtStart = await tables.position.late

        while !Task.isCancelled && !stop.isRequested {
            var arrived = false
            for partition in 0..<leftCount where state.left[partition].isEmpty {
                arrived = try await readLeft(partition) || arrived
            }
            for partition in 0..<rightCount where state.right[partition].isEmpty {
                arrived = try await readRight(partition) || arrived
            }
            let now = clock()
            if arrived { state.lastArrival = now }
            let progressed = state.merge(now: now, idle: idle, windowed: windowed)
            if state.allEmpty && !arrived && now - state.lastArrival >= idle, let streamTime = state.join.streamTime, now > streamTime {
                // Quiet: stream time moves to the wall clock, so windows still close.
                state.take(state.join.advance(to: now), silently: false)
            }
            let positionsMoved = state.left.indices.contains { state.left[$0].done != (checkpoint.offsets[$0] ?? 0) }
                || state.right.indices.contains { state.right[$0].done != checkpoint.joins?.inputs[spec.alias]?[$0] }
            if state.hasPending || positionsMoved {
                try await commitWindowed(&state, windowed: windowed, alias: spec.alias, tables: tables,
                                         tablesLateAtStart: tablesLateAtStart, checkpoint: &checkpoint)
            }
            state.forgetReleased()
            var endOffsets: [Int: Int64] = [:]
            for (source, end) in try await log.endOffsets(of: (0..<leftCount).map(leftSource)) { endOffsets[source.partition] = end }
            if !caughtUp {
                caughtUp = liveBoundary.allSatisfy { checkpoint.offsets[$0.key]! >= $0.value }
                if caughtUp { try await sink.promote() }
            }
            await report(PipelineProgress(checkpoint: checkpoint, endOffsets: endOffsets, caughtUp: caughtUp))
            guard !progressed && !arrived else { continue }
            // Nothing to do: wait for a partition that has run dry (no polling), at most a
            // little at a time so the idle timeout and shutdown are noticed.
            var dry: [TopicPartition: Int64] = [:]
            for partition in 0..<leftCount where state.left[partition].isEmpty { dry[leftSource(partition)] = state.left[partition].read }
            for partition in 0..<rightCount where state.right[partition].isEmpty { dry[rightSource(partition)] = state.right[partition].read }
            try await log.waitForRecords(in: dry, timeout: .milliseconds(min(1_000, max(10, idle / 4))))
        }
    }

    /// Makes the rows emitted so far into outputs and commits them with every partition's
    /// position and the stream time.
    private func commitWindowed(_ state: inout WindowedState, windowed: Int, alias: String, tables: JoinInputs,
                                tablesLateAtStart: Int64, checkpoint: inout Checkpoint) async throws
    {
        // Rows are processed in runs of one source partition, so each output carries its
        // partition, and in the order they were emitted.
        var outputs: [OutputRecord] = []
        var deadLetters = state.deadLetters
        var sources: [EventPosition: StoredRecord] = [:]
        var start = 0
        while start < state.rows.count {
            func partition(of row: PendingRow) -> Int {
                switch row {
                case .joined(let id, _): return state.events[id]?.partition ?? -1
                case .deletion(_, let partition): return partition
                }
            }
            let runPartition = partition(of: state.rows[start])
            var end = start + 1
            while end < state.rows.count, partition(of: state.rows[end]) == runPartition { end += 1 }
            var records: [StoredRecord] = []
            var probes: [JoinProbe?] = []
            var rows = JoinedRows(joinCount: processor.plan.joins.count, capacity: end - start)
            var indexOfEvent: [Int: Int] = [:]
            for row in state.rows[start..<end] {
                switch row {
                case .joined(let id, let right):
                    guard let event = state.events[id] else { continue }
                    let index: Int
                    if let known = indexOfEvent[id] {
                        index = known
                    } else {
                        index = records.count
                        indexOfEvent[id] = index
                        records.append(event.stored)
                        probes.append(event.probe)
                    }
                    var values = event.tableValues
                    values.insert(right, at: windowed)
                    rows.append(event: index, values)
                case .deletion(let stored, _):
                    rows.appendUnjoined(event: records.count)
                    records.append(stored)
                    probes.append(.unjoined)
                }
            }
            start = end
            guard runPartition >= 0 else { continue }
            let batch = RecordBatch(records: records)
            let processed = processor.process(batch, probes: probes, rows: rows, range: 0..<rows.count, partition: runPartition, now: clock())
            outputs += processed.outputs
            let source = TopicPartition(topic: sourceTopic, partition: runPartition)
            for rejection in processed.rejections {
                deadLetters.append(DeadLetters.record(for: batch.record(at: rejection.index), from: source, reason: rejection.reason))
            }
            for record in records { sources[EventPosition(partition: runPartition, offset: record.offset)] = record }
        }
        var position = await tables.position
        position.inputs[alias] = Dictionary(uniqueKeysWithValues: state.right.indices.map { ($0, state.right[$0].done) })
        position.late = (position.late - tablesLateAtStart) + state.late
        position.streamTime = state.join.streamTime
        state.rows.removeAll()
        state.deadLetters.removeAll()
        let processed = ProcessedBatch(outputs: outputs, deadLetters: deadLetters,
                                       positions: Dictionary(uniqueKeysWithValues: state.left.indices.map { ($0, state.left[$0].done) }),
                                       joinPosition: position) { [sources] partition, offset in
            sources[EventPosition(partition: partition, offset: offset)]
        }
        try await commit(processed, checkpoint: &checkpoint)
    }
}

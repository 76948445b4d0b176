import ProvisionLog
import ProvisionModel

/// A product with a windowed join reads its source and the joined stream as one sequence in
/// event time, the way a Kafka Streams task merges its partitions: of the two next records,
/// the older goes first (the source's on a tie). When only one input has records, it waits
/// for the other up to the join's idle timeout (wall clock) before going on without it; so
/// records that arrive within that time of each other are processed in the same order
/// whether they were in the log at apply or came live in separate slices, and the output is
/// the same, line for line. `StreamJoin` decides what each record emits.
extension Pipeline {
    /// A source event the join may still emit, kept until its window closes.
    struct BufferedEvent: Sendable {
        /// The batch it was read in, shared by the batch's events rather than copied out.
        var batch: RecordBatch
        var index: Int
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

    enum PendingRow: Sendable {
        case joined(id: Int, right: JSONValue?)
        case deletion(StoredRecord)
    }

    /// The merged reading's state. Owned by the pipeline's one task.
    struct WindowedState: Sendable {
        var join: StreamJoin
        var events: [Int: BufferedEvent] = [:]
        var nextID = 0
        var left: [LeftItem] = []
        var leftHead = 0
        var right: [RightItem] = []
        var rightHead = 0
        /// The next offset to read, and the next not yet processed, of each input.
        var leftRead: Int64
        var leftDone: Int64
        var rightRead: Int64
        var rightDone: Int64
        /// When the merge began waiting for an input that had no records (nil: not waiting).
        var leftWaitStarted: TimestampMilliseconds?
        var rightWaitStarted: TimestampMilliseconds?
        /// The wall-clock time a record last arrived on either input.
        var lastArrival: TimestampMilliseconds
        var late: Int64 = 0
        var rows: [PendingRow] = []
        var deadLetters: [LogRecord] = []
        var released: [Int] = []

        var leftEmpty: Bool { leftHead >= left.count }
        var rightEmpty: Bool { rightHead >= right.count }
        var hasPending: Bool { !rows.isEmpty || !deadLetters.isEmpty }

        /// Processes records in merged order until an input runs dry; false if none was
        /// processed. `silently` (a restart rebuilding state) waits for nothing and keeps no
        /// output.
        mutating func merge(now: TimestampMilliseconds, idle: TimestampMilliseconds, windowed: Int, leftSource: TopicPartition,
                            rightSource: TopicPartition, silently: Bool = false) -> Bool
        {
            var progressed = false
            while true {
                if !leftEmpty, case .skipped(let offset, let deadLetter) = left[leftHead] {
                    if let deadLetter, !silently { deadLetters.append(deadLetter) }
                    leftHead += 1
                    leftDone = offset + 1
                    progressed = true
                    continue
                }
                if !rightEmpty, right[rightHead].value == nil {
                    rightDone = right[rightHead].offset + 1
                    rightHead += 1
                    progressed = true
                    continue
                }
                let takeLeft: Bool
                switch (leftEmpty, rightEmpty) {
                case (false, false):
                    takeLeft = leftTime(left[leftHead]) <= right[rightHead].time
                case (false, true):
                    guard silently || waited(&rightWaitStarted, now: now, idle: idle) else { return progressed }
                    takeLeft = true
                case (true, false):
                    guard silently || waited(&leftWaitStarted, now: now, idle: idle) else { return progressed }
                    takeLeft = false
                case (true, true):
                    return progressed
                }
                progressed = true
                if takeLeft {
                    let item = left[leftHead]
                    leftHead += 1
                    leftDone = item.offset + 1
                    switch item {
                    case .event(let id, let time, _):
                        let step = join.left(id: id, time: time, key: events[id]!.probe.keys[windowed])
                        if step.late {
                            late += 1
                            if !silently, let event = events[id] {
                                deadLetters.append(DeadLetters.record(for: event.stored, from: leftSource, reason: lateReason(time)))
                            }
                            events[id] = nil
                        }
                        take(step, silently: silently)
                    case .deletion(let stored):
                        if !silently { rows.append(.deletion(stored)) }
                    case .skipped:
                        break
                    }
                } else {
                    let item = right[rightHead]
                    rightHead += 1
                    rightDone = item.offset + 1
                    let step = join.right(time: item.time, key: item.key, value: item.value!)
                    if step.late {
                        late += 1
                        if !silently {
                            deadLetters.append(DeadLetters.record(for: item.batch.record(at: item.index), from: rightSource,
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

        private func leftTime(_ item: LeftItem) -> TimestampMilliseconds {
            switch item {
            case .event(_, let time, _): return time
            case .deletion(let stored): return stored.record.timestamp
            case .skipped: return .min
            }
        }

        /// True once the merge has waited `idle` for an input that has nothing to read.
        private func waited(_ started: inout TimestampMilliseconds?, now: TimestampMilliseconds, idle: TimestampMilliseconds) -> Bool {
            let since = started ?? now
            started = since
            return now - since >= idle
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
        // The merge reads one partition of each stream (a product's spec cannot ask for more;
        // a topic that has more anyway stops the product rather than skip its other partitions).
        let leftSource = TopicPartition(topic: sourceTopic, partition: 0)
        let rightSource = TopicPartition(topic: joinPlan.dataset.spec.topic, partition: 0)
        try await log.createTopic(rightSource.topic, partitions: 1)
        for topic in [leftSource.topic, rightSource.topic] {
            if let count = try await log.partitionCount(of: topic), count > 1 {
                throw EventLogError(.invalidPartition, "topic '\(topic)' has \(count) partitions; a windowed join reads streams of one partition for now")
            }
        }
        var checkpoint = initial
        var caughtUp = initialCaughtUp

        let leftCommitted = checkpoint.offsets[0] ?? 0
        let rightCommitted = checkpoint.joins?.inputs[spec.alias]?[0]
        let join = StreamJoin(within: within, grace: grace, keepsUnmatched: spec.kind == .left)
        var state = WindowedState(join: join, leftRead: leftCommitted, leftDone: leftCommitted, rightRead: 0, rightDone: 0,
                                  lastArrival: clock())
        state.late = checkpoint.joins?.late ?? 0

        func readLeft(upTo end: Int64? = nil) async throws -> Bool {
            // Smaller batches than a plain product's: each event of a batch is kept until it has
            // been merged, and windows hold on to the batches their events came in.
            var read = try await log.readBatch(leftSource, from: state.leftRead, maxRecords: min(limits.batchRecordsMax, 8_192),
                                               maxBytes: limits.batchBytesMax)
            if let end, let cut = read.entries.firstIndex(where: { $0.offset >= end }) {
                read = RecordBatch(records: (0..<cut).map { read.record(at: $0) })
            }
            let batch = read
            guard let last = batch.entries.last else { return false }
            let processor = self.processor
            let probed = await inParallelChunks(count: batch.count) { range in processor.probe(batch, range: range, partition: 0) }
            var probes: [JoinProbe?] = []
            probes.reserveCapacity(batch.count)
            var reasons: [Int: String] = [:]
            for chunk in probed {
                probes.append(contentsOf: chunk.probes)
                for rejection in chunk.rejections { reasons[rejection.index] = rejection.reason }
            }
            // Table joins answer as of each event's time, once, when it is read.
            let tableRows = end == nil ? try await tables.match(probes) : await tables.rematch(probes)
            var tableValues: [Int: [JSONValue?]] = [:]
            for row in 0..<tableRows.count {
                let start = row * tableRows.joinCount
                tableValues[tableRows.events[row]] = Array(tableRows.values[start..<(start + tableRows.joinCount)])
            }
            state.left.removeFirst(state.leftHead)
            state.leftHead = 0
            for index in 0..<batch.count {
                let offset = batch.entries[index].offset
                guard let probe = probes[index] else {
                    let deadLetter = reasons[index].map { DeadLetters.record(for: batch.record(at: index), from: leftSource, reason: $0) }
                    state.left.append(.skipped(offset: offset, deadLetter: deadLetter))
                    continue
                }
                guard probe.isJoined else {
                    state.left.append(.deletion(batch.record(at: index)))
                    continue
                }
                guard let values = tableValues[index] else {
                    state.left.append(.skipped(offset: offset, deadLetter: nil))
                    continue
                }
                let id = state.nextID
                state.nextID += 1
                state.events[id] = BufferedEvent(batch: batch, index: index, probe: probe, tableValues: values)
                state.left.append(.event(id: id, time: probe.eventTime, offset: offset))
            }
            state.leftRead = last.offset + 1
            return true
        }

        func readRight(upTo end: Int64? = nil) async throws -> Bool {
            let batch = try await log.readBatch(rightSource, from: state.rightRead, maxRecords: 16_384, maxBytes: 4 << 20)
            guard let last = batch.entries.last else { return false }
            state.right.removeFirst(state.rightHead)
            state.rightHead = 0
            for index in 0..<batch.count {
                let offset = batch.entries[index].offset
                if let end, offset >= end { break }
                let read = reader.read(batch, at: index)
                state.right.append(RightItem(offset: offset, time: read?.time ?? batch.entries[index].timestamp,
                                             key: JoinKey(read?.matched), value: read.map { .object($0.value) }, batch: batch, index: index))
            }
            state.rightRead = min(last.offset + 1, end ?? .max)
            return true
        }

        // Where the joined stream starts: its committed offset, or the first record that can
        // fall in the first window.
        var rightStart = try await log.startOffset(of: rightSource)
        if let startTime = processor.startTime {
            rightStart = try await log.offset(forTimestamp: startTime - within - grace, in: rightSource)
        }
        if let rightCommitted, let streamTime = checkpoint.joins?.streamTime {
            // A restart: the state is what processing both inputs up to the committed offsets
            // left, so read them again from where the oldest window still open begins, and
            // keep nothing but the state.
            let back = streamTime - 2 * (within + grace)
            let sourceStart = try await startOffset(leftSource)
            state.leftRead = min(max(try await log.offset(forTimestamp: back, in: leftSource), sourceStart), leftCommitted)
            state.leftDone = state.leftRead
            state.rightRead = min(max(try await log.offset(forTimestamp: back, in: rightSource), rightStart), rightCommitted)
            state.rightDone = state.rightRead
            while state.leftDone < leftCommitted || state.rightDone < rightCommitted {
                var read = false
                if state.leftEmpty, state.leftRead < leftCommitted { read = try await readLeft(upTo: leftCommitted) || read }
                if state.rightEmpty, state.rightRead < rightCommitted { read = try await readRight(upTo: rightCommitted) || read }
                let merged = state.merge(now: clock(), idle: idle, windowed: windowed, leftSource: leftSource, rightSource: rightSource,
                                         silently: true)
                state.forgetReleased()
                if !read && !merged { break }
            }
            state.take(state.join.advance(to: streamTime), silently: true)
            state.forgetReleased()
            state.leftDone = leftCommitted
            state.rightDone = rightCommitted
            state.leftRead = leftCommitted
            state.rightRead = rightCommitted
            state.left.removeAll()
            state.leftHead = 0
            state.right.removeAll()
            state.rightHead = 0
            state.late = checkpoint.joins?.late ?? 0
        } else {
            state.rightRead = rightCommitted ?? rightStart
            state.rightDone = state.rightRead
        }
        let tablesLateAtStart = await tables.position.late

        while !Task.isCancelled && !stop.isRequested {
            let arrivedLeft = state.leftEmpty ? try await readLeft() : false
            let arrivedRight = state.rightEmpty ? try await readRight() : false
            let now = clock()
            if arrivedLeft { state.rightWaitStarted = nil }
            if arrivedRight { state.leftWaitStarted = nil }
            if arrivedLeft || arrivedRight { state.lastArrival = now }
            let progressed = state.merge(now: now, idle: idle, windowed: windowed, leftSource: leftSource, rightSource: rightSource)
            if state.leftEmpty && state.rightEmpty && !arrivedLeft && !arrivedRight && now - state.lastArrival >= idle,
               let streamTime = state.join.streamTime, now > streamTime
            {
                // Quiet: stream time moves to the wall clock, so windows still close.
                state.take(state.join.advance(to: now), silently: false)
            }
            let positionsMoved = state.leftDone != (checkpoint.offsets[0] ?? 0)
                || state.rightDone != checkpoint.joins?.inputs[spec.alias]?[0]
            if state.hasPending || positionsMoved {
                try await commitWindowed(&state, windowed: windowed, alias: spec.alias, tables: tables,
                                         tablesLateAtStart: tablesLateAtStart, source: leftSource, checkpoint: &checkpoint)
            }
            state.forgetReleased()
            let endOffset = try await log.endOffset(of: leftSource)
            if !caughtUp {
                caughtUp = liveBoundary.allSatisfy { checkpoint.offsets[$0.key]! >= $0.value }
                if caughtUp { try await sink.promote() }
            }
            await report(PipelineProgress(checkpoint: checkpoint, endOffsets: [0: endOffset], caughtUp: caughtUp))
            guard !progressed && !arrivedLeft && !arrivedRight else { continue }
            // Nothing to do: wait for an input that has run dry (no polling), at most a
            // little at a time so the idle timeout and shutdown are noticed.
            let (leftAt, rightAt) = (state.leftRead, state.rightRead)
            let (waitLeft, waitRight) = (state.leftEmpty, state.rightEmpty)
            let wait: Duration = .milliseconds(min(1_000, max(10, idle / 4)))
            let log = self.log
            try await withThrowingTaskGroup(of: Void.self) { group in
                if waitLeft { group.addTask { try await log.waitForRecords(in: leftSource, at: leftAt, timeout: wait) } }
                if waitRight { group.addTask { try await log.waitForRecords(in: rightSource, at: rightAt, timeout: wait) } }
                if !waitLeft && !waitRight { group.addTask { try await Task.sleep(for: wait) } }
                try await group.next()
                group.cancelAll()
            }
        }
    }

    /// Makes the rows emitted so far into outputs and commits them with both inputs'
    /// positions and the stream time.
    private func commitWindowed(_ state: inout WindowedState, windowed: Int, alias: String, tables: JoinInputs,
                                tablesLateAtStart: Int64, source: TopicPartition, checkpoint: inout Checkpoint) async throws
    {
        var records: [StoredRecord] = []
        var probes: [JoinProbe?] = []
        var rows = JoinedRows(joinCount: processor.plan.joins.count, capacity: state.rows.count)
        var indexOfEvent: [Int: Int] = [:]
        for row in state.rows {
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
            case .deletion(let stored):
                rows.appendUnjoined(event: records.count)
                records.append(stored)
                probes.append(.unjoined)
            }
        }
        let batch = RecordBatch(records: records)
        let processed = processor.process(batch, probes: probes, rows: rows, range: 0..<rows.count, partition: source.partition,
                                          now: clock())
        var deadLetters = state.deadLetters
        for rejection in processed.rejections {
            deadLetters.append(DeadLetters.record(for: batch.record(at: rejection.index), from: source, reason: rejection.reason))
        }
        var position = await tables.position
        position.inputs[alias] = [0: state.rightDone]
        position.late = (position.late - tablesLateAtStart) + state.late
        position.streamTime = state.join.streamTime
        state.rows.removeAll()
        state.deadLetters.removeAll()
        try await commit(ProcessedBatch(source: source, batch: batch, outputs: processed.outputs, deadLetters: deadLetters,
                                        lastOffset: state.leftDone - 1, joinPosition: position), checkpoint: &checkpoint)
    }
}

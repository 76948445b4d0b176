import Foundation
import Logging
import Testing
import ProvisionLog
import ProvisionModel
@testable import ProvisionPipeline
@testable import ProvisionSinks

private func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "provision-pipeline-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

private let orders = Dataset(
    metadata: ObjectMetadata(name: "orders"),
    spec: DatasetSpec(topic: "orders", key: "order_id", time: "placed_at", schema: Schema(fields: [
        .init(name: "order_id", type: .string), .init(name: "amount", type: .decimal),
        .init(name: "region", type: .string), .init(name: "placed_at", type: .timestamp),
    ])))

private func plan(filter: String? = "amount > 100", select: [SelectField]? = [
    SelectField(name: "id", expression: "order_id"), SelectField(name: "amount", expression: "amount"),
    SelectField(name: "region", expression: "lower(region)"),
], format: FileSinkSpec.Format = .jsonl) throws -> ProductPlan {
    let product = DataProduct(metadata: ObjectMetadata(name: "big-orders"),
                              spec: DataProductSpec(from: "orders", filter: filter, select: select, key: select == nil ? nil : "id",
                                                    sink: .file(.init(path: "out.jsonl", format: format))))
    return try ProductPlan.compile(product, datasets: ["orders": orders])
}

private func order(_ index: Int, amount: Double, region: String = "EU", time: Int64? = nil) -> LogRecord {
    let placed = time ?? Int64(index) * 60_000
    let value = #"{"order_id":"o-\#(index)","amount":\#(amount),"region":"\#(region)","placed_at":"\#(Timestamp.format(placed))"}"#
    return LogRecord(key: Array("o-\(index)".utf8), value: Array(value.utf8), timestamp: placed)
}

@Suite struct RecordProcessorTests {
    @Test func filtersProjectsAndKeys() throws {
        let processor = RecordProcessor(plan: try plan(), startTime: nil, endTime: nil)
        guard case .output(let output) = processor.process(StoredRecord(offset: 7, record: order(1, amount: 250, region: "EU")),
                                                          partition: 0, now: 0)
        else { Issue.record("expected output"); return }
        guard case .row(let row) = output.body else { Issue.record("expected a row"); return }
        #expect(row == [.string("o-1"), .decimal(250), .string("eu")])
        #expect(output.key == .string("o-1"))
        #expect(output.offset == 7)
        guard case .skipped = processor.process(StoredRecord(offset: 8, record: order(2, amount: 50)), partition: 0, now: 0) else {
            Issue.record("expected the filter to skip it")
            return
        }
    }

    /// Every field, whatever its role in the dataset (key, event time, plain), is read by a
    /// filter: without a time window the event-time field used to reach `where` as null.
    @Test(arguments: [nil, 0] as [Int64?])
    func whereReadsTheKeyAndTimeFieldsLikeAnyOther(windowStart: Int64?) throws {
        let cutoff = Timestamp.format(15 * 60_000)
        let filters: [(String, [Int])] = [
            ("placed_at >= \(cutoff)", Array(15..<30)),
            ("placed_at is not null", Array(0..<30)),
            ("placed_at < \"\(cutoff)\" and amount > 0", Array(1..<15)),
            ("order_id in ['o-3', 'o-4']", [3, 4]),
            ("order_id is not null and placed_at > now() - 10m", Array(21..<30)),
        ]
        for (filter, expected) in filters {
            let processor = RecordProcessor(plan: try plan(filter: filter), startTime: windowStart, endTime: nil)
            let kept = (0..<30).compactMap { index -> Int? in
                let outcome = processor.process(StoredRecord(offset: Int64(index), record: order(index, amount: Double(index))),
                                                partition: 0, now: 30 * 60_000)
                if case .output = outcome { return index }
                return nil
            }
            #expect(kept == expected, "\(filter)")
        }
    }

    @Test func theEventTimeFieldBoundsTheBackfill() throws {
        let processor = RecordProcessor(plan: try plan(filter: nil), startTime: 10 * 60_000, endTime: 20 * 60_000)
        let outcomes = (0..<30).map { processor.process(StoredRecord(offset: Int64($0), record: order($0, amount: 1)), partition: 0, now: 0) }
        let kept = outcomes.enumerated().compactMap { index, outcome -> Int? in
            if case .output = outcome { return index }
            return nil
        }
        #expect(kept == Array(10..<20))
    }

    @Test func badEventsGoToDeadLettersWithTheReason() throws {
        let processor = RecordProcessor(plan: try plan(), startTime: nil, endTime: nil)
        let cases: [(String, String)] = [
            ("not json", "the value is not valid JSON"),
            ("[1,2]", "the value is not a JSON object"),
            (#"{"order_id":"o","amount":"lots","region":"EU","placed_at":"2026-01-01T00:00:00Z"}"#, "field 'amount': expected decimal"),
            (#"{"order_id":"o","amount":500,"placed_at":"soon"}"#, "field 'placed_at': 'soon' is not an RFC 3339 timestamp"),
        ]
        for (value, reason) in cases {
            let record = StoredRecord(offset: 0, record: LogRecord(key: nil, value: Array(value.utf8), timestamp: 0))
            guard case .deadLetter(let actual) = processor.process(record, partition: 0, now: 0) else {
                Issue.record("\(value) was not dead-lettered")
                continue
            }
            #expect(actual.hasPrefix(reason), "\(actual)")
        }
    }

    @Test func tombstonesPassAsDeletesOfTheirKey() throws {
        let processor = RecordProcessor(plan: try plan(), startTime: nil, endTime: nil)
        let tombstone = StoredRecord(offset: 3, record: LogRecord(key: Array("o-9".utf8), value: nil, timestamp: 5))
        guard case .output(let output) = processor.process(tombstone, partition: 0, now: 0), case .tombstone = output.body else {
            Issue.record("expected a tombstone")
            return
        }
        #expect(output.key == .string("o-9"))
    }
}

@Suite struct FileSinkTests {
    private func rows(_ range: Range<Int>, partition: Int = 0) -> [OutputRecord] {
        range.map { OutputRecord(key: .string("o-\($0)"), body: .row([.string("o-\($0)"), .decimal(DecimalNumber(significand: Int128($0) * 10 + 5, scale: 1)!), .string("a,\"b\"")]),
                                 partition: partition, offset: Int64($0), eventTime: 0) }
    }

    private let schema = Schema(fields: [.init(name: "id", type: .string), .init(name: "amount", type: .decimal),
                                         .init(name: "note", type: .string)])

    @Test func writesJSONLinesAndCommitsTheCheckpointWithThem() async throws {
        let directory = temporaryDirectory()
        let checkpoints = try FileCheckpointStore(directory: directory + "/checkpoints")
        let sink = FileSink(root: directory, relativePath: "out/a.jsonl", format: .jsonl, outputSchema: schema, product: "p", checkpoints: checkpoints)
        #expect(try await sink.open() == nil)
        try await sink.write(rows(0..<3), checkpoint: Checkpoint(offsets: [0: 3], recordsWritten: 3))
        let text = try String(contentsOfFile: directory + "/out/a.jsonl", encoding: .utf8)
        #expect(text == """
            {"id":"o-0","amount":0.5,"note":"a,\\"b\\""}
            {"id":"o-1","amount":1.5,"note":"a,\\"b\\""}
            {"id":"o-2","amount":2.5,"note":"a,\\"b\\""}

            """)
        let saved = try checkpoints.load("p")
        #expect(saved?.offsets == [0: 3])
        #expect(saved?.sinkPosition == Int64(text.utf8.count))
    }

    @Test func reopeningCutsLinesWrittenAfterTheLastCheckpoint() async throws {
        let directory = temporaryDirectory()
        let checkpoints = try FileCheckpointStore(directory: directory + "/checkpoints")
        let path = directory + "/a.jsonl"
        let sink = FileSink(root: directory, relativePath: (path as NSString).lastPathComponent, format: .jsonl, outputSchema: schema, product: "p", checkpoints: checkpoints)
        _ = try await sink.open()
        try await sink.write(rows(0..<2), checkpoint: Checkpoint(offsets: [0: 2], recordsWritten: 2))
        let committed = try String(contentsOfFile: path, encoding: .utf8)
        // A crash after the lines were written but before their checkpoint landed.
        let handle = FileHandle(forWritingAtPath: path)!
        handle.seekToEndOfFile()
        handle.write(Data("{\"id\":\"o-2\",\"amount\":2.5,\"note\":\"x\"}\n{\"id\":\"o-3\",\"am".utf8))
        handle.closeFile()
        let reopened = FileSink(root: directory, relativePath: (path as NSString).lastPathComponent, format: .jsonl, outputSchema: schema, product: "p", checkpoints: checkpoints)
        let checkpoint = try await reopened.open()
        #expect(checkpoint?.offsets == [0: 2])
        #expect(try String(contentsOfFile: path, encoding: .utf8) == committed)
        try await reopened.write(rows(2..<4), checkpoint: Checkpoint(offsets: [0: 4], recordsWritten: 4))
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 4)
        #expect(lines.map { $0.contains("\"o-\(lines.firstIndex(of: $0)!)\"") }.allSatisfy { $0 })
    }

    @Test func aFileRemovedBehindProvisionsBackIsRebuiltFromTheStart() async throws {
        let directory = temporaryDirectory()
        let checkpoints = try FileCheckpointStore(directory: directory + "/checkpoints")
        let path = directory + "/a.jsonl"
        let sink = FileSink(root: directory, relativePath: (path as NSString).lastPathComponent, format: .jsonl, outputSchema: schema, product: "p", checkpoints: checkpoints)
        _ = try await sink.open()
        try await sink.write(rows(0..<2), checkpoint: Checkpoint(offsets: [0: 2], recordsWritten: 2))
        try FileManager.default.removeItem(atPath: path)
        let reopened = FileSink(root: directory, relativePath: (path as NSString).lastPathComponent, format: .jsonl, outputSchema: schema, product: "p", checkpoints: checkpoints)
        #expect(try await reopened.open() == nil)  // start over rather than pad the file
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int == 0)
    }

    @Test func writesCSVWithAHeaderAndQuoting() async throws {
        let directory = temporaryDirectory()
        let checkpoints = try FileCheckpointStore(directory: directory)
        let path = directory + "/a.csv"
        let sink = FileSink(root: directory, relativePath: (path as NSString).lastPathComponent, format: .csv, outputSchema: schema, product: "p", checkpoints: checkpoints)
        _ = try await sink.open()
        try await sink.write(rows(0..<2), checkpoint: Checkpoint(offsets: [0: 2]))
        // A crash before the next checkpoint, then a restart: the header is written once.
        let reopened = FileSink(root: directory, relativePath: (path as NSString).lastPathComponent, format: .csv, outputSchema: schema, product: "p", checkpoints: checkpoints)
        _ = try await reopened.open()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "id,amount,note\no-0,0.5,\"a,\"\"b\"\"\"\no-1,1.5,\"a,\"\"b\"\"\"\n")
    }

    @Test func destroyRemovesTheFileAndItsCheckpoint() async throws {
        let directory = temporaryDirectory()
        let checkpoints = try FileCheckpointStore(directory: directory + "/c")
        let sink = FileSink(root: directory, relativePath: "a.jsonl", format: .jsonl, outputSchema: schema, product: "p", checkpoints: checkpoints)
        _ = try await sink.open()
        try await sink.write(rows(0..<1), checkpoint: Checkpoint(offsets: [0: 1]))
        try await sink.destroy()
        #expect(!FileManager.default.fileExists(atPath: directory + "/a.jsonl"))
        #expect(try checkpoints.load("p") == nil)
    }
}

@Suite struct PipelineRunTests {
    @Test func backfillAndLiveAreOneReaderAndDeadLettersAreKept() async throws {
        let directory = temporaryDirectory()
        let log = try EmbeddedEventLog(directory: directory + "/log")
        try await log.createTopic("orders", partitions: 1)
        let source = TopicPartition(topic: "orders", partition: 0)
        try await log.append((0..<1000).map { order($0, amount: Double($0 % 300)) }, to: source)
        try await log.append([LogRecord(key: nil, value: Array("garbage".utf8), timestamp: 0)], to: source)
        let checkpoints = try FileCheckpointStore(directory: directory + "/checkpoints")
        let thePlan = try plan()
        let path = directory + "/out.jsonl"
        let sink = FileSink(root: directory, relativePath: (path as NSString).lastPathComponent, format: .jsonl, outputSchema: thePlan.outputSchema, product: "big-orders", checkpoints: checkpoints)
        let progress = ProgressRecorder()
        let pipeline = Pipeline(processor: RecordProcessor(plan: thePlan, startTime: nil, endTime: nil), log: log, sink: sink,
                                limits: .init(batchRecordsMax: 128, idleWait: .milliseconds(50)), logger: Logger(label: "test"),
                                clock: { 0 }, report: { await progress.record($0) })
        let running = Task { try await pipeline.run() }
        try await progress.waitUntil { $0.caughtUp }
        try await log.append((1000..<1100).map { order($0, amount: 500) }, to: source)
        try await progress.waitUntil { $0.checkpoint.offsets[0] == 1101 }
        running.cancel()
        try await running.value

        let expected = (0..<1000).filter { Double($0 % 300) > 100 }.map { "o-\($0)" } + (1000..<1100).map { "o-\($0)" }
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        let ids = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }.map { $0["id"] as! String }
        #expect(ids == expected)
        let dead = try await log.read(TopicPartition(topic: DeadLetters.topic(for: "big-orders"), partition: 0), from: 0,
                                      maxRecords: 10, maxBytes: 100_000)
        #expect(dead.count == 1)
        #expect(dead.first?.record.header(DeadLetters.sourceOffsetHeader) == Array("1000".utf8))
        let reason = String(decoding: dead.first?.record.header(DeadLetters.reasonHeader) ?? [], as: UTF8.self)
        #expect(reason.hasPrefix("the value is not valid JSON"))
        let last = await progress.last
        #expect(last?.checkpoint.recordsWritten == Int64(expected.count))
        #expect(last?.checkpoint.deadLettered == 1)
        #expect(last?.lag == 0)
    }
}

actor ProgressRecorder {
    private(set) var last: PipelineProgress?

    func record(_ progress: PipelineProgress) {
        last = progress
    }

    func waitUntil(timeout: Duration = .seconds(30), _ condition: (PipelineProgress) -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let last, condition(last) { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("condition not met; last progress: \(String(describing: last))")
        throw CancellationError()
    }
}

extension Sink {
    /// Writes a batch whose records the destination may not refuse.
    @discardableResult
    func write(_ records: [OutputRecord], checkpoint: Checkpoint) async throws -> Checkpoint {
        try await write(SinkBatch(records: records, checkpoint: checkpoint) { rejections in
            Issue.record("unexpected rejections: \(rejections)")
        })
    }
}

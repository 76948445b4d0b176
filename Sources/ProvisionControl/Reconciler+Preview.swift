import Foundation
import ProvisionLog
import ProvisionModel
import ProvisionPipeline

/// A product run over recent records without creating anything: what it would write.
public struct PreviewResult: Sendable {
    public var product: String
    /// The output rows of the sampled records that passed, as JSON.
    public var rows: [JSONValue]
    public var outputSchema: Schema
    /// Recent records of the source read, and how many passed the filter or were set aside.
    public var sampled: Int
    public var passed: Int
    public var deadLettered: Int
    /// The backfill: records inside the window now, and their bytes estimated from the sample.
    public var backfillRecords: Int64
    public var backfillBytesEstimate: Int64
    public var backfillStart: TimestampMilliseconds?
    /// What an apply of the same documents would do to the product.
    public var change: PlannedChange?
    /// The product's spec as the server read it (the team filled in), for a form to show.
    public var spec: DataProductSpec?
    /// Why some of the answer is missing, if it is.
    public var note: String?

    public var json: JSONValue {
        var object = JSONObject()
        object["product"] = .string(product)
        object["rows"] = .array(rows)
        object["outputSchema"] = .array(outputSchema.fields.map { field in
            var described = JSONObject([("name", .string(field.name)), ("type", .string(field.type.name))])
            if field.pii { described["pii"] = .bool(true) }
            return .object(described)
        })
        object["sampled"] = .integer(Int64(sampled))
        object["passed"] = .integer(Int64(passed))
        object["deadLettered"] = .integer(Int64(deadLettered))
        var backfill = JSONObject()
        backfill["records"] = .integer(backfillRecords)
        backfill["bytesEstimate"] = .integer(backfillBytesEstimate)
        backfill["since"] = backfillStart.map { .string(Timestamp.format($0)) } ?? .null
        object["backfill"] = .object(backfill)
        if let spec {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            if let data = try? encoder.encode(spec), let value = try? JSONParser.parse(Array(data)) { object["spec"] = value }
        }
        if let note { object["note"] = .string(note) }
        if let change {
            var planned = JSONObject()
            planned["action"] = .string(change.action.rawValue)
            if let detail = change.detail { planned["detail"] = .string(detail) }
            object["change"] = .object(planned)
        }
        return .object(object)
    }
}

extension Reconciler {
    /// Validates the documents as an apply would, then runs their one product's filter and
    /// projection over the most recent `sample` records of its source (at most 1,000) and
    /// estimates its backfill from the log's time index. Creates nothing, so a reader may.
    public func preview(_ request: ApplyRequest, sample: Int = 100, as caller: Caller) async throws -> PreviewResult {
        // The same validation, team scoping and plan as the apply, without its commit.
        let (planned, documents) = try planWithDocuments(request, against: currentState, caller: caller)
        let products = documents.compactMap { document -> DataProduct? in
            if case .dataProduct(let product, _) = document { return product }
            return nil
        }
        guard products.count == 1, let product = products.first else {
            throw ApplyRejected(errors: [SpecError(file: request.files.first?.name ?? "-", line: 1, column: 1, path: "",
                                                   message: "a preview is of exactly one DataProduct; these files hold \(products.count)")])
        }
        var datasets = currentState.datasets.mapValues(\.dataset)
        for case .dataset(let dataset, _) in documents { datasets[dataset.name] = dataset }
        let plan = try ProductPlan.compile(product, datasets: datasets)
        let topic = datasets[product.spec.from]?.spec.topic ?? product.spec.from
        let now = currentTime
        let backfillStart = product.spec.backfill.startTime(createdAt: now)
        var result = PreviewResult(product: product.name, rows: [], outputSchema: plan.outputSchema, sampled: 0, passed: 0,
                                   deadLettered: 0, backfillRecords: 0, backfillBytesEstimate: 0, backfillStart: backfillStart,
                                   change: planned.changes.first { $0.kind == .dataProduct && $0.name == product.name })
        result.spec = product.spec
        let estimate = try await backfillEstimate(of: topic, since: backfillStart)
        result.backfillRecords = estimate.records
        result.backfillBytesEstimate = estimate.bytesEstimate
        // A windowed join pairs two streams in stream time: not sampled yet.
        guard !product.spec.joins.contains(where: \.isWindowed) else {
            result.note = "sample rows are not shown for a product with a windowed join yet; the schema, the estimate and the plan are"
            return result
        }
        guard let partitions = try await eventLog.partitionCount(of: topic) else { return result }
        // The latest records of every partition, as one sequence in time: the sample.
        let wanted = min(max(sample, 1), 1000)
        var latest: [StoredRecord] = []
        for partition in 0..<partitions {
            let source = TopicPartition(topic: topic, partition: partition)
            let end = try await eventLog.endOffset(of: source)
            let from = max(try await eventLog.startOffset(of: source), end - Int64(wanted))
            guard from < end else { continue }
            latest += try await eventLog.read(source, from: from, maxRecords: Int(end - from), maxBytes: 16 * 1024 * 1024)
        }
        if partitions > 1 {
            latest.sort { ($0.record.timestamp, $0.offset) < ($1.record.timestamp, $1.offset) }
            latest = Array(latest.suffix(wanted))
        }
        let batch = RecordBatch(records: latest)
        let processor = RecordProcessor(plan: plan, startTime: nil, endTime: product.spec.backfill.endTime)
        let keys = JSONRowKeys(plan.outputSchema)
        // Personal data is shown only to a team that owns every dataset it may come from.
        let read = [product.spec.from] + product.spec.joins.map(\.dataset)
        let masked = plan.outputSchema.containsPII && !read.allSatisfy { caller.owns(team: datasets[$0]?.metadata.team) }
        for outcome in try await outcomes(of: processor, over: batch, now: now) {
            switch outcome {
            case .output(let output):
                result.passed += 1
                var bytes: [UInt8] = []
                if output.writeJSONValue(keys: keys, into: &bytes), let row = try? JSONParser.parse(bytes) {
                    result.rows.append(masked ? plan.outputSchema.masking(row) : row)
                }
            case .deadLetter:
                result.deadLettered += 1
            case .skipped:
                break
            }
        }
        result.sampled = batch.count
        return result
    }

    /// What the product makes of the batch. A table join reads its tables from their start
    /// as far as the sampled events need (as the pipeline does), and never waits for rows
    /// still to come: its clock is set far ahead.
    private func outcomes(of processor: RecordProcessor, over batch: RecordBatch, now: TimestampMilliseconds) async throws
        -> [RecordProcessor.Outcome]
    {
        guard !processor.plan.joins.isEmpty else { return processor.process(batch, range: 0..<batch.count, partition: 0, now: now) }
        let joins = try await JoinInputs.open(plan: processor.plan, log: eventLog, startTime: nil, position: nil,
                                              clock: { TimestampMilliseconds.max / 4 })
        let probed = processor.probe(batch, range: 0..<batch.count, partition: 0)
        let rows = try await joins.match(probed.probes)
        let joined = processor.process(batch, probes: probed.probes, rows: rows, range: 0..<rows.count, partition: 0, now: now)
        return joined.outputs.map { .output($0) } + (probed.rejections + joined.rejections).map { .deadLetter(reason: $0.reason) }
    }

    /// The records of `topic` at or after `since` (all of them when nil), from the log's time
    /// index, and their bytes from the average size of the latest 100 of each partition.
    func backfillEstimate(of topic: String, since: TimestampMilliseconds?) async throws -> BackfillEstimate {
        var records: Int64 = 0, bytes: Int64 = 0
        for partition in 0..<(try await eventLog.partitionCount(of: topic) ?? 0) {
            let source = TopicPartition(topic: topic, partition: partition)
            let start = try await eventLog.startOffset(of: source), end = try await eventLog.endOffset(of: source)
            var windowStart = start
            if let since { windowStart = max(start, try await eventLog.offset(forTimestamp: since, in: source)) }
            let inWindow = max(0, end - windowStart)
            guard inWindow > 0 else { continue }
            let latest = try await eventLog.readBatch(source, from: max(start, end - 100), maxRecords: 100, maxBytes: 4 << 20)
            var sampledBytes = 0
            for index in 0..<latest.count {
                let record = latest.record(at: index).record
                sampledBytes += (record.value?.count ?? 0) + (record.key?.count ?? 0)
            }
            records += inWindow
            if latest.count > 0 { bytes += inWindow * Int64(sampledBytes) / Int64(latest.count) }
        }
        return BackfillEstimate(records: records, bytesEstimate: bytes, since: since.map(Timestamp.format))
    }
}

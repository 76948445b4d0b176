import Foundation
import ProvisionLog
import ProvisionModel
import ProvisionPipeline


public enum RedeliveryError: Error, Sendable {
    case notFound(String)
    case unsupported(String)
    /// The sink's destination failed; `reason` is the sink's stable code.
    case sinkFailed(reason: String, message: String)
}

extension Reconciler {
    /// Sends a webhook product's dead letters to its endpoint again, from where the last
    /// redelivery stopped up to the topic's end now. Each record goes out with its original
    /// source position, so its record id is the one the receiver saw the first time.
    public func redeliver(_ name: String, as caller: Caller) async throws -> RedeliveryResult {
        guard let visible = visibleProduct(name, to: caller), !visible.deleting else { throw RedeliveryError.notFound(name) }
        guard caller.role >= .editor else { throw AccessDenied.needsEditor(caller, to: "redeliver") }
        do {
            return try await redeliverNow(name)
        } catch let error as SinkError {
            throw RedeliveryError.sinkFailed(reason: error.reason, message: error.message)
        }
    }

    private func redeliverNow(_ name: String) async throws -> RedeliveryResult {
        guard let stored = currentState.products[name], !stored.deleting else { throw RedeliveryError.notFound(name) }
        guard case .webhook = stored.product.spec.sink else {
            // Writing an old version again would set a table row or a document back.
            throw RedeliveryError.unsupported("redelivery is for webhook products; '\(name)' writes to \(stored.product.spec.sink.kind)")
        }
        guard stored.product.spec.joins.isEmpty else {
            // A dead letter alone cannot be joined again: the joined records it met are read
            // by the product's pipeline, not here. Sending it unjoined would be wrong data.
            throw RedeliveryError.unsupported("redelivery of products with joins is not supported yet; '\(name)' joins \(stored.product.spec.joins.map(\.dataset).joined(separator: ", "))")
        }
        let plan = try ProductPlan.compile(stored.product, datasets: currentState.datasets.mapValues(\.dataset))
        let processor = RecordProcessor(plan: plan, startTime: nil, endTime: nil)
        let log = eventLog
        let topic = TopicPartition(topic: DeadLetters.topic(for: name), partition: 0)
        guard try await log.partitionCount(of: topic.topic) != nil else { return RedeliveryResult(redelivered: 0, deadLetteredAgain: 0) }
        let end = try await log.endOffset(of: topic)
        let sink = redeliverySinks.makeSink(for: stored.product.spec, product: name, outputSchema: plan.outputSchema,
                                            keyField: plan.keyField, secrets: secretValues(of: stored.product.metadata.team))
        let firstOffset = try await log.startOffset(of: topic)
        var checkpoint = try await sink.open() ?? Checkpoint(offsets: [0: firstOffset])
        var result = RedeliveryResult(redelivered: 0, deadLetteredAgain: 0)
        while let position = checkpoint.offsets[0], position < end {
            let batch = try await log.readBatch(topic, from: position, maxRecords: 10_000, maxBytes: 8 * 1024 * 1024)
            guard let last = batch.entries.last else { break }
            let count = batch.entries.firstIndex { $0.offset >= end } ?? batch.count
            var outputs: [OutputRecord] = []
            var originals: [String: StoredRecord] = [:]
            var again: [LogRecord] = []
            for (index, outcome) in processor.process(batch, range: 0..<count, partition: 0, now: currentTime).enumerated() {
                let stored = batch.record(at: index)
                let source = Self.sourcePosition(of: stored)
                switch outcome {
                case .output(var output):
                    output.partition = source.partition
                    output.offset = source.offset
                    originals["\(source.partition):\(source.offset)"] = stored
                    outputs.append(output)
                case .skipped:
                    continue
                case .deadLetter(let reason):
                    again.append(Self.deadLetterAgain(stored, reason: reason))
                }
            }
            var next = checkpoint
            next.offsets[0] = count < batch.count ? end : last.offset + 1
            next.recordsWritten += Int64(outputs.count)
            let sources = originals
            let refused = SinkBatch(records: outputs, checkpoint: next) { rejections in
                let records = rejections.compactMap { rejection in
                    sources["\(rejection.partition):\(rejection.offset)"].map { Self.deadLetterAgain($0, reason: rejection.reason) }
                }
                if !records.isEmpty { try await log.append(records, to: topic) }
            }
            if !again.isEmpty { try await log.append(again, to: topic) }
            let committed = try await sink.write(refused)
            result.redelivered += committed.recordsWritten - checkpoint.recordsWritten
            result.deadLetteredAgain += committed.deadLettered - checkpoint.deadLettered + Int64(again.count)
            checkpoint = committed
        }
        await sink.close()
        return result
    }

    private static func sourcePosition(of stored: StoredRecord) -> (partition: Int, offset: Int64) {
        var partition = 0, offset = stored.offset
        for header in stored.record.headers {
            if header.name == DeadLetters.sourcePartitionHeader, let value = Int(String(decoding: header.value, as: UTF8.self)) {
                partition = value
            }
            if header.name == DeadLetters.sourceOffsetHeader, let value = Int64(String(decoding: header.value, as: UTF8.self)) {
                offset = value
            }
        }
        return (partition, offset)
    }

    /// The dead letter again, with the new reason in place of the old one.
    private static func deadLetterAgain(_ stored: StoredRecord, reason: String) -> LogRecord {
        var record = stored.record
        record.headers = record.headers.map { header in
            header.name == DeadLetters.reasonHeader ? LogHeader(name: DeadLetters.reasonHeader, text: reason) : header
        }
        return record
    }
}

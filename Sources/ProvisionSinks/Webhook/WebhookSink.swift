import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import ProvisionFailpoints
import ProvisionModel
import ProvisionPipeline

/// Delivers a product to a function behind an HTTP endpoint: records are POSTed as JSON in
/// batches, signed when the spec has a secret, at least once.
///
/// Order: records of one key are delivered in source order. Each key maps to one of a few
/// lanes; a lane sends its requests one after another, so a request for a key never leaves
/// while an earlier one for that key is unacknowledged, and the lanes run side by side.
/// The checkpoint moves once every request of the batch is delivered or dead-lettered.
///
/// Not thread-safe: one pipeline owns it, and calls it from one task at a time.
public final class WebhookSink: Sink, @unchecked Sendable {
    public struct Limits: Sendable {
        /// Requests in flight at once (one per lane).
        public var lanes: Int
        /// The most of a response body that is read (for the dead-letter reason).
        public var responseBytesMax: Int

        public init(lanes: Int = 4, responseBytesMax: Int = 64 * 1024) {
            self.lanes = max(1, lanes)
            self.responseBytesMax = responseBytesMax
        }
    }

    static let signatureHeader = "Provision-Signature"

    private let spec: WebhookSinkSpec
    private let resolver: SinkResolver
    private let product: String
    private let outputSchema: Schema
    private let checkpoints: any CheckpointStore
    private let client: HTTPClient
    private let limits: Limits
    private let logger: Logger
    /// When the endpoint last accepted a request; lanes update it side by side.
    private let lastSuccess = NIOLockedValueBox(ContinuousClock.now)

    public init(spec: WebhookSinkSpec, resolver: SinkResolver, product: String, outputSchema: Schema,
                checkpoints: any CheckpointStore, client: HTTPClient = SinkHTTPClient.shared, limits: Limits = .init(),
                logger: Logger)
    {
        self.spec = spec
        self.resolver = resolver
        self.product = product
        self.outputSchema = outputSchema
        self.checkpoints = checkpoints
        self.client = client
        self.limits = limits
        self.logger = logger
    }

    public var location: String { spec.redactedURL }
    public var readsAhead: Bool { true }
    public var linger: Duration { .milliseconds(spec.batch.lingerMilliseconds) }

    public func open() async throws -> Checkpoint? {
        _ = try resolve()
        lastSuccess.withLockedValue { $0 = .now }
        return try await checkpoints.load(product)
    }

    public func write(_ batch: SinkBatch) async throws -> Checkpoint {
        let server = try resolve()
        // A request per record keeps a lane's connection busy with round trips: more lanes
        // (as many as the client keeps connections to a host) carry the same per-key order.
        let laneCount = spec.effectiveFormat == .cloudeventsBinary ? max(limits.lanes, 16) : limits.lanes
        let requests = Self.lanes(of: batch.records, count: laneCount).map { lane in
            Self.requests(lane, product: product, schema: outputSchema, format: spec.effectiveFormat, maxRecords: spec.batch.maxRecords,
                          maxBytes: spec.batch.maxBytes)
        }
        var rejections: [SinkRejection] = []
        try await withThrowingTaskGroup(of: [SinkRejection].self) { group in
            for lane in requests where !lane.isEmpty {
                group.addTask {
                    var refused: [SinkRejection] = []
                    for request in lane { refused += try await self.deliver(request, to: server) }
                    return refused
                }
            }
            for try await refused in group { rejections += refused }
        }
        if !rejections.isEmpty {
            try await batch.deadLetter(rejections)
            logger.warning("records dead-lettered", metadata: ["endpoint": "\(location)", "count": "\(rejections.count)",
                                                              "first": "\(rejections[0].reason)"])
        }
        Failpoint.reached(.webhookBatchDelivered)
        let committed = batch.checkpoint(rejecting: rejections.count)
        try await checkpoints.save(committed, for: product)
        return committed
    }

    public func close() async {}

    public func destroy() async throws {
        try await checkpoints.remove(product)
    }

    // MARK: Requests

    /// One request's body and the records in it.
    struct Request: Sendable {
        var body: [UInt8]
        var records: [(partition: Int, offset: Int64)]
        /// The same on every retry: the `Idempotency-Key`, and Standard Webhooks' `webhook-id`.
        var idempotencyKey: String
        var contentType: String? = "application/json"
        /// A binary-mode CloudEvent's attributes (`ce-*`).
        var headers: [(String, String)] = []
    }

    /// The requests for one lane's records, in the spec's format.
    static func requests(_ records: [OutputRecord], product: String, schema: Schema, format: WebhookFormat,
                         maxRecords: Int, maxBytes: Int) -> [Request]
    {
        switch format {
        case .provision:
            return requests(records, product: product, schema: schema, maxRecords: maxRecords, maxBytes: maxBytes)
        case .cloudevents:
            return CloudEvents.batches(records, product: product, schema: schema, maxRecords: maxRecords, maxBytes: maxBytes)
        case .cloudeventsBinary:
            return records.map { CloudEvents.binary($0, product: product, schema: schema) }
        }
    }

    /// Splits records into lanes by key, keeping source order within each lane.
    static func lanes(of records: [OutputRecord], count: Int) -> [[OutputRecord]] {
        var lanes = [[OutputRecord]](repeating: [], count: count)
        for record in records {
            // FNV-1a: the same key always takes the same lane, in every process.
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in (record.key?.text ?? "").utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            lanes[Int(hash % UInt64(count))].append(record)
        }
        return lanes
    }

    /// `{"product": …, "records": [{"id", "key", "partition", "offset", "time", "value"}]}`
    /// bodies of at most `maxRecords` records and (unless one record alone is larger)
    /// `maxBytes` bytes.
    static func requests(_ records: [OutputRecord], product: String, schema: Schema, maxRecords: Int, maxBytes: Int) -> [Request] {
        let keys = JSONRowKeys(schema)
        var prefix: [UInt8] = Array(#"{"product":"#.utf8)
        JSONWriter.writeString(product, into: &prefix)
        prefix.append(contentsOf: #","records":["#.utf8)
        var batcher = RequestBatcher(opening: prefix, closing: Array("]}".utf8), contentType: "application/json",
                                     maxRecords: maxRecords, maxBytes: maxBytes)
        for record in records {
            var entry: [UInt8] = []
            let id = recordID(product: product, partition: record.partition, offset: record.offset)
            entry.append(contentsOf: #"{"id":"#.utf8)
            JSONWriter.writeString(id, into: &entry)
            entry.append(contentsOf: #","key":"#.utf8)
            if let key = record.key, !key.isNull { JSONWriter.writeString(key.text, into: &entry) } else { entry.append(contentsOf: "null".utf8) }
            entry.append(contentsOf: #","partition":"#.utf8)
            JSONWriter.writeInteger(Int64(record.partition), into: &entry)
            entry.append(contentsOf: #","offset":"#.utf8)
            JSONWriter.writeInteger(record.offset, into: &entry)
            entry.append(contentsOf: #","time":"#.utf8)
            JSONWriter.writeString(Timestamp.format(record.eventTime), into: &entry)
            entry.append(contentsOf: #","value":"#.utf8)
            if !record.writeJSONValue(keys: keys, into: &entry) { entry.append(contentsOf: "null".utf8) }
            entry.append(UInt8(ascii: "}"))
            batcher.add(entry, id: id, partition: record.partition, offset: record.offset)
        }
        return batcher.finish()
    }

    /// Gathers records' JSON into request bodies — `opening`, the entries separated by commas,
    /// `closing` — of at most `maxRecords` entries and (unless one entry alone is larger)
    /// `maxBytes` bytes; each request's idempotency key is derived from its records' ids.
    struct RequestBatcher {
        let opening: [UInt8], closing: [UInt8], contentType: String
        let maxRecords: Int, maxBytes: Int
        private var requests: [Request] = []
        private var body: [UInt8]
        private var positions: [(partition: Int, offset: Int64)] = []
        private var ids: [UInt8] = []

        init(opening: [UInt8], closing: [UInt8], contentType: String, maxRecords: Int, maxBytes: Int) {
            (self.opening, self.closing, self.contentType, self.maxRecords, self.maxBytes) = (opening, closing, contentType, maxRecords, maxBytes)
            body = opening
        }

        mutating func add(_ entry: [UInt8], id: String, partition: Int, offset: Int64) {
            if !positions.isEmpty, positions.count >= maxRecords || body.count + entry.count + closing.count > maxBytes { close() }
            if !positions.isEmpty { body.append(UInt8(ascii: ",")) }
            body.append(contentsOf: entry)
            positions.append((partition, offset))
            ids.append(contentsOf: id.utf8)
            ids.append(0)
        }

        mutating func finish() -> [Request] {
            close()
            return requests
        }

        private mutating func close() {
            guard !positions.isEmpty else { return }
            body.append(contentsOf: closing)
            let key = SHA256.hash(data: ids).prefix(16).map { String(format: "%02x", $0) }.joined()
            requests.append(Request(body: body, records: positions, idempotencyKey: key, contentType: contentType))
            body = opening
            positions = []
            ids = []
        }
    }

    /// Stable across replays: where the record sits in the source.
    static func recordID(product: String, partition: Int, offset: Int64) -> String { "\(product):\(partition):\(offset)" }

    /// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, as receivers verify it.
    static func signature(body: [UInt8], secret: String, unixSeconds: Int64) -> String {
        var message = Array("\(unixSeconds).".utf8)
        message.append(contentsOf: body)
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Array(secret.utf8)))
        return "t=\(unixSeconds),v1=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    /// The signing headers of a request, one signature per secret (two while a secret is
    /// rotated), the way the spec's signing says.
    static func signingHeaders(_ request: Request, signing: WebhookSigning, secrets: [SigningSecret], unixSeconds: Int64) -> [(String, String)] {
        guard !secrets.isEmpty else { return [] }
        switch signing {
        case .provision:
            // Several `v1=` in one header, as Stripe sends during a rotation.
            let signatures = secrets.map { signature(body: request.body, secret: $0.text, unixSeconds: unixSeconds) }
            let parts = signatures.enumerated().map { $0.offset == 0 ? $0.element : String($0.element.split(separator: ",", maxSplits: 1)[1]) }
            return [(signatureHeader, parts.joined(separator: ","))]
        case .standard:
            return [("webhook-id", request.idempotencyKey), ("webhook-timestamp", String(unixSeconds)),
                    ("webhook-signature", secrets.map { StandardWebhooks.signature(id: request.idempotencyKey, unixSeconds: unixSeconds,
                                                                                   body: request.body, key: $0.standardKey) }
                        .joined(separator: " "))]
        }
    }

    /// A secret as resolved, with its Standard Webhooks key when it is one.
    struct SigningSecret: Sendable {
        var text: String
        /// The bytes of `whsec_<base64>` (or of bare base64), as the Standard Webhooks
        /// libraries read a secret; nil when it is neither.
        var standardKey: [UInt8]?

        init(_ text: String) {
            self.text = text
            standardKey = StandardWebhooks.key(fromSecret: text)
        }
    }

    // MARK: Delivery

    private func deliver(_ request: Request, to server: Server) async throws -> [SinkRejection] {
        var delivery = WebhookDelivery(
            maxAttempts: spec.retry.maxAttempts,
            backoff: RetryBackoff(initial: .milliseconds(spec.retry.initialBackoffMilliseconds),
                                  cap: .milliseconds(spec.retry.maxBackoffMilliseconds)),
            unavailableAfter: .milliseconds(spec.retry.unavailableAfterMilliseconds))
        while true {
            let response = await send(request, to: server)
            if case .status(let status, _, _) = response, (200..<300).contains(status) { lastSuccess.withLockedValue { $0 = .now } }
            switch delivery.attempted(response, now: .now, lastSuccess: lastSuccess.withLockedValue { $0 }, unitRandom: Double.random(in: 0..<1)) {
            case .delivered:
                return []
            case .retry(let delay):
                try await Task.sleep(for: delay)
            case .deadLetter(let reason):
                return request.records.map { SinkRejection(partition: $0.partition, offset: $0.offset, reason: reason) }
            case .stall(let reason):
                throw SinkError(reason: "EndpointUnavailable", message: "\(location): \(reason)")
            }
        }
    }

    private func send(_ request: Request, to server: Server) async -> WebhookResponse {
        var http = HTTPClientRequest(url: server.url)
        http.method = .POST
        if let contentType = request.contentType { http.headers.add(name: "Content-Type", value: contentType) }
        http.headers.add(name: "Idempotency-Key", value: request.idempotencyKey)
        for (name, value) in request.headers { http.headers.add(name: name, value: value) }
        for (name, value) in server.headers { http.headers.add(name: name, value: value) }
        // Signed at each attempt: the receiver checks the timestamp is recent.
        let now = Int64(Date().timeIntervalSince1970)
        for (name, value) in Self.signingHeaders(request, signing: spec.effectiveSigning, secrets: server.secrets, unixSeconds: now) {
            http.headers.add(name: name, value: value)
        }
        http.body = .bytes(ByteBuffer(bytes: request.body))
        do {
            let response = try await client.execute(http, timeout: .milliseconds(spec.timeoutMilliseconds))
            var excerpt: [UInt8] = []
            for try await chunk in response.body {
                excerpt.append(contentsOf: chunk.readableBytesView.prefix(limits.responseBytesMax - excerpt.count))
                if excerpt.count >= limits.responseBytesMax { break }
            }
            let retryAfter = response.headers.first(name: "Retry-After").flatMap(Int64.init).map { Duration.seconds($0) }
            return .status(Int(response.status.code), retryAfter: retryAfter, excerpt: Self.excerpt(excerpt))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            return .timedOut
        } catch {
            return .connectionFailed("\(error)")
        }
    }

    static func excerpt(_ body: [UInt8]) -> String { ResponseExcerpt.of(body) }

    private struct Server {
        var url: String
        /// The current secret first, then one being retired.
        var secrets: [SigningSecret]
        var headers: [(String, String)]
    }

    private func resolve() throws -> Server {
        func lookup(_ text: String) throws -> String { try resolver.resolve(text) }
        let url = try lookup(spec.url)
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw SinkError(reason: "SinkUnavailable", message: "\(spec.redactedURL) is not an http:// or https:// URL")
        }
        try resolver.checkDestination(url: url, written: spec.url)
        let secrets = try [spec.secret, spec.previousSecret].compactMap { $0 }.map { SigningSecret(try lookup($0)) }
        if spec.effectiveSigning == .standard, let unreadable = secrets.firstIndex(where: { $0.standardKey == nil }) {
            let written = unreadable == 0 ? spec.secret! : spec.previousSecret!
            throw SinkError(reason: "InvalidSecret",
                            message: "\(written) is not a Standard Webhooks secret (whsec_ and base64 of 24 to 64 bytes); make one with: echo whsec_$(head -c 32 /dev/urandom | base64)")
        }
        return Server(url: url, secrets: secrets,
                      headers: try spec.headers.sorted { $0.key < $1.key }.map { ($0.key, try lookup($0.value)) })
    }
}

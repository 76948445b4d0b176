import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ProvisionFailpoints
import ProvisionModel
import ProvisionPipeline

/// Keeps a product as an Elasticsearch index behind an alias: readers use the alias `NAME`;
/// each build of the output is a concrete index `NAME-<build>`. A rebuild fills its index
/// while the alias still serves the previous one, then moves the alias in one `_aliases`
/// request and deletes the old index, so readers never see an empty or half-filled index.
///
/// Writes are idempotent: the document id is the product key, so a replay after a crash or
/// a retry overwrites rather than duplicates. Writes of one key stay in source order (a
/// batch holds each key once, and a batch is acknowledged whole before the next is sent), so
/// an older version never lands after a newer one; external versions would say the same
/// again at a third of the server's indexing rate (measured on noida-db). The checkpoint
/// moves only past acknowledged documents.
///
/// Not thread-safe: one pipeline owns it, and calls it from one task at a time.
public final class ElasticsearchSink: Sink, @unchecked Sendable {
    public struct Limits: Sendable {
        public var maxDocumentsPerRequest: Int
        public var maxBytesPerRequest: Int
        /// Bulk requests in flight at once. A batch holds each key once, so parallel
        /// requests never reorder the writes of one key.
        public var concurrentRequests: Int
        public var requestTimeout: Duration
        /// Attempts per request before the product stalls (it retries again from its
        /// checkpoint after the reconciler's backoff).
        public var maxAttempts: Int
        public var backoff: RetryBackoff

        public init(maxDocumentsPerRequest: Int = 5_000, maxBytesPerRequest: Int = 5 * 1024 * 1024, concurrentRequests: Int = 4,
                    requestTimeout: Duration = .seconds(60), maxAttempts: Int = 8,
                    backoff: RetryBackoff = RetryBackoff(initial: .milliseconds(100), cap: .seconds(10)))
        {
            self.maxDocumentsPerRequest = maxDocumentsPerRequest
            self.maxBytesPerRequest = maxBytesPerRequest
            self.concurrentRequests = concurrentRequests
            self.requestTimeout = requestTimeout
            self.maxAttempts = maxAttempts
            self.backoff = backoff
        }
    }

    private let spec: ElasticsearchSinkSpec
    private let resolver: SinkResolver
    private let product: String
    private let outputSchema: Schema
    private let keyField: String
    private let build: SinkBuild
    private let checkpoints: any CheckpointStore
    private let client: HTTPClient
    private let limits: Limits
    private let logger: Logger
    /// Where the documents of a projection are written; a whole event is written as it came.
    private let strictMapping: Bool

    public init(spec: ElasticsearchSinkSpec, resolver: SinkResolver, product: String, outputSchema: Schema,
                keyField: String, strictMapping: Bool, build: SinkBuild = SinkBuild(number: 1, kind: .fresh),
                checkpoints: any CheckpointStore, client: HTTPClient = SinkHTTPClient.shared, limits: Limits = .init(), logger: Logger)
    {
        self.spec = spec
        self.resolver = resolver
        self.product = product
        self.outputSchema = outputSchema
        self.keyField = keyField
        self.strictMapping = strictMapping
        self.build = build
        self.checkpoints = checkpoints
        self.client = client
        self.limits = limits
        self.logger = logger
    }

    public var location: String { "\(spec.redactedURL) index \(spec.index)" }
    public var readsAhead: Bool { true }

    /// The concrete index this build writes.
    var buildIndex: String { "\(spec.index)-\(build.number)" }

    // MARK: Sink

    public func open() async throws -> Checkpoint? {
        let served = try await aliasIndices()
        if served.isEmpty, try await exists(spec.index) {
            throw SinkError(reason: "OutputConflict",
                            message: "an index named \(spec.index) exists at \(spec.redactedURL); Provision serves its output through an alias of that name and does not touch the index")
        }
        for index in served where try await owner(of: index) == nil {
            throw SinkError(reason: "OutputConflict",
                            message: "the alias \(spec.index) points at \(index), which Provision does not manage; it is left as it is")
        }
        var resumable = false
        if let owner = try await owner(of: buildIndex) {
            guard owner.product == product, owner.build == build.number else {
                throw SinkError(reason: "OutputConflict",
                                message: "the index \(buildIndex) belongs to \(owner.product) build \(owner.build), not to this product's build \(build.number)")
            }
            resumable = true
        } else if try await exists(buildIndex) {
            throw SinkError(reason: "OutputConflict", message: "an index named \(buildIndex) exists and Provision does not manage it")
        } else {
            let body = ElasticsearchMapping.createIndexBody(schema: outputSchema, fullText: Set(spec.text), strict: strictMapping,
                                                            product: product, build: build.number)
            try await call(.PUT, "/\(buildIndex)", json: body, doing: "create the index \(buildIndex)")
            logger.info("index created", metadata: ["index": "\(buildIndex)", "alias": "\(spec.index)"])
        }
        if served.isEmpty {
            // Nothing is served yet: the alias points at this build from the start.
            try await call(.POST, "/_aliases", json: ["actions": [["add": ["index": .string(buildIndex), "alias": .string(spec.index)]]]],
                           doing: "point the alias \(spec.index) at \(buildIndex)")
        }
        // The checkpoint is kept beside the server (an index has no transactions); it is this
        // build's only if it names the build, and only while its index still exists.
        guard resumable, let checkpoint = try await checkpoints.load(product), checkpoint.sinkPosition == Int64(build.number) else {
            return nil
        }
        return checkpoint
    }

    public func write(_ batch: SinkBatch) async throws -> Checkpoint {
        let operations = try operations(for: batch.records)
        let ranges = BulkBody.split(operations, maxOperations: limits.maxDocumentsPerRequest, maxBytes: limits.maxBytesPerRequest,
                                    parallel: limits.concurrentRequests)
        var rejections: [SinkRejection] = []
        // Requests go out `concurrentRequests` at a time; the checkpoint waits for all.
        try await withThrowingTaskGroup(of: [SinkRejection].self) { group in
            var next = 0, inFlight = 0
            while next < ranges.count || inFlight > 0 {
                while next < ranges.count, inFlight < limits.concurrentRequests {
                    let slice = operations[ranges[next]]
                    group.addTask { try await self.deliver(slice) }
                    next += 1
                    inFlight += 1
                }
                if let refused = try await group.next() {
                    rejections += refused
                    inFlight -= 1
                }
            }
        }
        if !rejections.isEmpty {
            try await batch.deadLetter(rejections)
            logger.warning("documents refused", metadata: ["index": "\(buildIndex)", "count": "\(rejections.count)",
                                                          "first": "\(rejections[0].reason)"])
        }
        Failpoint.reached(.elasticsearchBulkIndexed)
        var committed = batch.checkpoint(rejecting: rejections.count)
        committed.sinkPosition = Int64(build.number)
        try await checkpoints.save(committed, for: product)
        return committed
    }

    public func promote() async throws {
        let served = try await aliasIndices()
        if served != [buildIndex] {
            // Everything written is searchable before readers are moved to it.
            try await call(.POST, "/\(buildIndex)/_refresh", doing: "refresh \(buildIndex)")
            var actions: [JSONValue] = served.map { ["remove": ["index": .string($0), "alias": .string(spec.index)]] }
            actions.append(["add": ["index": .string(buildIndex), "alias": .string(spec.index)]])
            Failpoint.reached(.elasticsearchAliasBeforeMove)
            try await call(.POST, "/_aliases", json: ["actions": .array(actions)], doing: "move the alias \(spec.index) to \(buildIndex)")
            Failpoint.reached(.elasticsearchAliasMoved)
            logger.info("rebuilt index swapped in", metadata: ["alias": "\(spec.index)", "index": "\(buildIndex)", "previous": "\(served)"])
        }
        // Also when the alias had moved already: a crash right after the move left the
        // previous builds' indices behind.
        try await deletePreviousBuilds()
    }

    /// Deletes this product's indices of earlier builds, which the alias no longer serves.
    private func deletePreviousBuilds() async throws {
        for (index, owner) in try await ownedIndices() where owner.product == product && owner.build < build.number {
            try await call(.DELETE, "/\(index)", doing: "delete the previous index \(index)")
            logger.info("previous index deleted", metadata: ["index": "\(index)", "alias": "\(spec.index)"])
        }
    }

    /// The indices named `<alias>-*` that Provision manages, with their owners.
    private func ownedIndices() async throws -> [(index: String, owner: Owner)] {
        let (status, body) = try await request(.GET, "/\(spec.index)-*/_mapping", doing: "list the indices of \(spec.index)")
        guard status == 200, case .object(let indices) = try JSONParser.parse(body) else { return [] }
        return indices.fields.compactMap { index, description in
            Owner(mappings: description["mappings"]).map { (index, $0) }
        }
    }

    public func close() async {}

    public func destroy() async throws {
        // The alias goes with its indices (every build's is named `<alias>-N`); only indices
        // this product owns are deleted.
        for (index, owner) in try await ownedIndices().sorted(by: { $0.index < $1.index }) where owner.product == product {
            try await call(.DELETE, "/\(index)", doing: "delete the index \(index)")
        }
        try await checkpoints.remove(product)
    }

    public func detach() async throws {
        try await checkpoints.remove(product)
    }

    // MARK: Writes

    /// The newest write per key in the batch, as bulk operations.
    private func operations(for records: [OutputRecord]) throws -> [BulkOperation] {
        var latest: [String: Int] = [:]
        latest.reserveCapacity(records.count)
        for (index, record) in records.enumerated() {
            guard let key = record.key, !key.isNull else { continue }
            latest[key.text] = index
        }
        var operations: [BulkOperation] = []
        operations.reserveCapacity(latest.count)
        let keys = JSONRowKeys(outputSchema)
        for index in latest.values.sorted() {
            let record = records[index]
            let id = record.key!.text
            var source: [UInt8] = []
            let action: BulkOperation.Action = record.writeJSONValue(keys: keys, into: &source) ? .index : .delete
            operations.append(BulkOperation(action: action, id: id, partition: record.partition, offset: record.offset, source: source))
        }
        return operations
    }

    /// Sends one bulk request until every item is done or refused: items the cluster could
    /// not take (429, 5xx) and whole requests that failed are sent again with capped
    /// exponential backoff and full jitter.
    private func deliver(_ operations: ArraySlice<BulkOperation>) async throws -> [SinkRejection] {
        var pending = Array(operations)
        var rejections: [SinkRejection] = []
        var attempt = 0
        var lastProblem = ""
        while !pending.isEmpty {
            attempt += 1
            if attempt > 1 {
                guard attempt <= limits.maxAttempts else {
                    throw SinkError(reason: "SinkUnavailable",
                                    message: "cannot write to \(location) after \(limits.maxAttempts) attempts: \(lastProblem)")
                }
                try await Task.sleep(for: limits.backoff.delay(attempt: attempt - 1, unitRandom: Double.random(in: 0..<1)))
            }
            let body = BulkBody.encode(pending[...], index: buildIndex)
            let status: Int, response: [UInt8]
            do {
                (status, response) = try await request(
                    .POST, "/_bulk?filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason",
                    body: body, contentType: "application/x-ndjson", doing: "write documents")
            } catch let error as SinkError {
                lastProblem = error.message
                continue
            }
            if status == 429 || status >= 500 {
                lastProblem = "status \(status): \(Self.excerpt(response))"
                continue
            }
            guard status == 200 else {
                throw SinkError(reason: "SinkUnavailable", message: "\(location) refused a bulk request: status \(status): \(Self.excerpt(response))")
            }
            guard let parsed = try? JSONParser.parse(response), let outcomes = BulkBody.outcomes(parsed, count: pending.count) else {
                lastProblem = "an unreadable bulk response: \(Self.excerpt(response))"
                continue
            }
            var retry: [BulkOperation] = []
            for (operation, outcome) in zip(pending, outcomes) {
                switch outcome {
                case .done: break
                case .retry(let problem):
                    retry.append(operation)
                    lastProblem = problem
                case .rejected(let reason):
                    rejections.append(SinkRejection(partition: operation.partition, offset: operation.offset, reason: reason))
                }
            }
            pending = retry
        }
        return rejections
    }

    // MARK: Index administration

    private struct Owner: Equatable {
        var product: String
        var build: Int

        /// From an index's mappings: its `_meta` says Provision made it, for which product and build.
        init?(mappings: JSONValue?) {
            let meta = mappings?["_meta"]
            guard case .string("provision")? = meta?["managed_by"], case .string(let product)? = meta?["product"] else { return nil }
            switch meta?["build"] {
            case .integer(let build)?: self.build = Int(build)
            case .number(let build)?: self.build = Int(build)
            default: return nil
            }
            self.product = product
        }
    }

    /// The indices the alias points at (none if it does not exist).
    private func aliasIndices() async throws -> [String] {
        let (status, body) = try await request(.GET, "/_alias/\(spec.index)", doing: "read the alias \(spec.index)")
        guard status == 200, case .object(let indices) = try JSONParser.parse(body) else { return [] }
        return indices.fields.map(\.key).filter { $0 != "error" && $0 != "status" }.sorted()
    }

    private func exists(_ index: String) async throws -> Bool {
        try await request(.HEAD, "/\(index)", doing: "look for the index \(index)").status == 200
    }

    /// Who manages an index, from the `_meta` of its mappings; nil if it does not exist or
    /// Provision did not create it.
    private func owner(of index: String) async throws -> Owner? {
        let (status, body) = try await request(.GET, "/\(index)/_mapping", doing: "read the mappings of \(index)")
        guard status == 200 else { return nil }
        return Owner(mappings: try JSONParser.parse(body)[index]?["mappings"])
    }

    // MARK: HTTP

    private func call(_ method: HTTPMethod, _ path: String, json: JSONValue? = nil, doing what: String) async throws {
        var body: [UInt8]?
        if let json {
            var bytes: [UInt8] = []
            JSONWriter.write(json, into: &bytes)
            body = bytes
        }
        let (status, response) = try await request(method, path, body: body, contentType: "application/json", doing: what)
        guard (200..<300).contains(status) else {
            throw SinkError(reason: status == 401 || status == 403 ? "SinkUnauthorized" : "SinkUnavailable",
                            message: "cannot \(what) at \(spec.redactedURL): status \(status): \(Self.excerpt(response))")
        }
    }

    /// Sends a request with a timeout and reads at most 64 MiB of the answer.
    private func request(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil, contentType: String = "application/json",
                         doing what: String) async throws -> (status: Int, body: [UInt8])
    {
        let server = try resolve()
        var request = HTTPClientRequest(url: server.base + path)
        request.method = method
        if let authorization = server.authorization { request.headers.add(name: "Authorization", value: authorization) }
        if let body {
            request.headers.add(name: "Content-Type", value: contentType)
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(Int64(limits.requestTimeout.components.seconds) * 1_000_000_000))
            let bytes = try await response.body.collect(upTo: 64 * 1024 * 1024)
            return (Int(response.status.code), Array(buffer: bytes))
        } catch {
            throw SinkError(reason: "SinkUnavailable", message: "cannot \(what) at \(spec.redactedURL): \(error)")
        }
    }

    private struct Server {
        var base: String
        var authorization: String?
    }

    private func resolve() throws -> Server {
        func lookup(_ reference: String) throws -> String { try resolver.resolve(reference) }
        var base = try lookup(spec.url)
        while base.hasSuffix("/") { base.removeLast() }
        guard base.hasPrefix("http://") || base.hasPrefix("https://") else {
            throw SinkError(reason: "SinkUnavailable", message: "\(spec.redactedURL) is not an http:// or https:// URL")
        }
        try resolver.checkDestination(url: base, written: spec.url)
        var authorization: String?
        switch spec.auth {
        case .basic(let reference)?: authorization = "Basic " + Data(try lookup(reference).utf8).base64EncodedString()
        case .apiKey(let reference)?: authorization = "ApiKey " + (try lookup(reference))
        case nil: break
        }
        return Server(base: base, authorization: authorization)
    }

    static func excerpt(_ body: [UInt8]) -> String { ResponseExcerpt.of(body) }
}

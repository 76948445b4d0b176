import Foundation
import Hummingbird
import ProvisionControl
import ProvisionLog
import ProvisionModel
import ServiceLifecycle

/// The REST API: JSON in and out, errors as `{"error": {"code", "message", "details"}}` with
/// stable codes.
public struct APIRouter: Sendable {
    public let reconciler: Reconciler
    /// Whether requests need a token. Off (`serve --dev`, `--demo`), every request acts as an admin.
    public let authenticating: Bool
    /// Products' JSON, reused while they do not change.
    private let encodedProducts = EncodedProducts()
    /// The largest request body accepted, such as a batch of records to produce.
    public var requestBytesMax = 64 * 1024 * 1024

    /// The git sources the server follows, if any (`serve --gitops`).
    public var gitSources: (any GitSources)?
    /// The text `GET /metrics` answers (Prometheus' exposition format), made at each scrape.
    public var metrics: @Sendable () async -> [UInt8] = { [] }

    public init(reconciler: Reconciler, authenticating: Bool) {
        self.reconciler = reconciler
        self.authenticating = authenticating
    }

    /// Who sends the request being answered (set by the authentication middleware).
    private func caller() throws -> Caller {
        guard let caller = RequestCaller.current else { throw AccessDenied("no caller: the request was not authenticated") }
        return caller
    }

    /// Every (method, path) `build` registers, for the contract test.
    var registered: [(method: String, path: String)] { routes().all.map { ($0.method.rawValue, $0.path) } }

    public func build() -> Router<BasicRequestContext> {
        let routes = routes()
        // The error middleware comes first, so it also answers what no route matches, and
        // knows every route, to answer a wrong method 405 with `Allow`.
        let router = Router()
        let table = RouteTable(routes.all.map { ($0.method, $0.path) })
        router.add(middleware: RequestMetricsMiddleware(routes: table))
        router.add(middleware: APIErrorMiddleware(routes: table))
        router.add(middleware: AuthenticationMiddleware(reconciler: reconciler, authenticating: authenticating))
        for route in routes.all { router.on(RouterPath(route.path), method: route.method, use: route.handler) }
        return router
    }

    private func routes() -> Routes {
        var routes = Routes()
        let auth = authenticating ? "on" : "off"
        routes.add(.get, "/healthz") { _, _ in Self.json(["status": "ok", "auth": auth]) }
        // Prometheus scrapes with an admin token: the metrics name every team's products.
        routes.add(.get, "/metrics") { _, _ in
            try self.requireAdmin(to: "read metrics")
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: await self.metrics())))
        }
        // The contract, without a token.
        routes.add(.get, "/openapi.json") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: PackageResources.openapi_json)))
        }
        // Probes, without a token: the process answers; the store is open and the reconciler runs.
        // The portal: static files compiled into the server, a client of this API only.
        routes.add(.get, "/") { _, _ in Self.asset(PackageResources.index_html, type: "text/html; charset=utf-8") }
        routes.add(.get, "/portal/portal.js") { _, _ in Self.asset(PackageResources.portal_js, type: "text/javascript; charset=utf-8") }
        routes.add(.get, "/portal/portal.css") { _, _ in Self.asset(PackageResources.portal_css, type: "text/css; charset=utf-8") }
        routes.add(.get, "/livez") { _, _ in Self.json(["status": "ok"]) }
        routes.add(.get, "/readyz") { _, _ in
            await self.reconciler.isRunning ? Self.json(["status": "ready"])
                : Self.json(["status": "not ready: the reconciler is not running"], status: .serviceUnavailable)
        }
        // Who the token is: what a client (the portal) shows and scopes itself to.
        routes.add(.get, "/v1/whoami") { _, _ in
            let caller = try self.caller()
            return Self.json(["token": caller.token, "team": caller.team, "role": caller.role.rawValue, "auth": auth])
        }
        routes.add(.post, "/v1/apply") { request, _ in try await self.apply(request) }
        routes.add(.post, "/v1/preview") { request, _ in try await self.preview(request) }
        // Lists come a page at a time (`?limit=`, default 500, and `?continue=` with the
        // `Provision-Continue` header of the page before).
        routes.add(.get, "/v1/products") { request, _ in
            let parameters = request.uri.queryParameters
            let (products, next, version) = await self.reconciler.listProducts(
                as: try self.caller(), limit: parameters.get("limit").flatMap(Int.init), after: parameters.get("continue"))
            var response = Self.json(bytes: self.encodedProducts.json(products))
            // The store version the list reflects: watch from it and nothing is missed.
            response.headers[.init("Provision-Resource-Version")!] = String(version)
            if let next { response.headers[.init("Provision-Continue")!] = next }
            return response
        }
        routes.add(.get, "/v1/products/:name") { _, context in
            let name = try context.parameters.require("name")
            guard let product = await self.reconciler.product(name, as: try self.caller()) else {
                return Self.error(.notFound, code: .notFound, message: "product '\(name)' does not exist")
            }
            return Self.json(bytes: self.encodedProducts.json(product))
        }
        routes.add(.delete, "/v1/products/:name") { _, context in
            let name = try context.parameters.require("name")
            return try await self.answeringRejections {
                guard let version = try await self.reconciler.deleteProduct(name, as: try self.caller()) else {
                    return Self.error(.notFound, code: .notFound, message: "product '\(name)' does not exist")
                }
                return Self.json(["deleted": name, "resourceVersion": String(version)], status: .accepted)
            }
        }
        routes.add(.post, "/v1/products/:name/pause") { _, context in
            let name = try context.parameters.require("name")
            guard let version = try await self.reconciler.setPaused(name, true, as: try self.caller()) else {
                return Self.error(.notFound, code: .notFound, message: "product '\(name)' does not exist")
            }
            return Self.json(["paused": name, "resourceVersion": String(version)], status: .accepted)
        }
        // `?acceptLoss=true` also lets a product stopped by records lost to retention go on.
        routes.add(.post, "/v1/products/:name/resume") { request, context in
            let name = try context.parameters.require("name")
            let acceptLoss = request.uri.queryParameters.get("acceptLoss") == "true"
            guard let version = try await self.reconciler.resume(name, acceptingLoss: acceptLoss, as: try self.caller()) else {
                return Self.error(.notFound, code: .notFound, message: "product '\(name)' does not exist")
            }
            return Self.json(["resumed": name, "resourceVersion": String(version)], status: .accepted)
        }
        routes.add(.post, "/v1/products/:name/redeliver") { _, context in
            let name = try context.parameters.require("name")
            do {
                return Self.json(try await self.reconciler.redeliver(name, as: try self.caller()))
            } catch RedeliveryError.notFound {
                return Self.error(.notFound, code: .notFound, message: "product '\(name)' does not exist")
            } catch RedeliveryError.unsupported(let message) {
                return Self.error(.conflict, code: .unsupported, message: message)
            } catch RedeliveryError.sinkFailed(let reason, let message) {
                return Self.error(.serviceUnavailable, code: APIErrorCode(rawValue: reason) ?? .sinkUnavailable, message: message)
            }
        }
        // `?q=` searches names, owners, teams, descriptions and field names.
        routes.add(.get, "/v1/datasets") { request, _ in
            let parameters = request.uri.queryParameters
            let (datasets, next) = try await self.reconciler.datasets(withRecordStats: parameters.get("stats") == "true",
                matching: parameters.get("q"), limit: parameters.get("limit").flatMap(Int.init), after: parameters.get("continue"))
            var response = Self.json(datasets)
            if let next { response.headers[.init("Provision-Continue")!] = next }
            return response
        }
        routes.add(.get, "/v1/datasets/:name") { request, context in
            let name = try context.parameters.require("name")
            var sample = 5
            if let text = request.uri.queryParameters.get("sample") {
                guard let count = Int(text), (0...Reconciler.datasetSampleMax).contains(count) else {
                    return Self.error(.badRequest, code: .invalidRequest,
                                      message: "sample must be a number of records from 0 to \(Reconciler.datasetSampleMax)")
                }
                sample = count
            }
            guard let dataset = try await self.reconciler.dataset(name, sample: sample, as: try self.caller()) else {
                return Self.error(.notFound, code: .notFound, message: "dataset '\(name)' does not exist")
            }
            return Self.json(dataset)
        }
        // Changes as JSON lines, from `?resourceVersion=N` (exclusive) or from now: the
        // catalog's, and the caller's team's products' (every product's for an admin).
        routes.add(.get, "/v1/watch") { request, _ in try await self.watch(request) }
        routes.add(.post, "/v1/tokens") { request, _ in try await self.createToken(request) }
        routes.add(.get, "/v1/tokens") { _, _ in
            try self.requireAdmin(to: "list tokens")
            return Self.json(await self.reconciler.listTokens())
        }
        routes.add(.delete, "/v1/tokens/:name") { _, context in
            try self.requireAdmin(to: "revoke tokens")
            let name = try context.parameters.require("name")
            do {
                try await self.reconciler.revokeToken(name)
            } catch TokenError.notFound {
                return Self.error(.notFound, code: .notFound, message: "token '\(name)' does not exist")
            }
            return Self.json(["revoked": name])
        }
        routes.add(.get, "/v1/secrets") { request, _ in
            let team = request.uri.queryParameters.get("team")
            return Self.json(try await self.reconciler.listSecrets(team: team, as: try self.caller()))
        }
        routes.add(.put, "/v1/secrets/:name") { request, context in
            try await self.setSecret(request, name: try context.parameters.require("name"))
        }
        routes.add(.delete, "/v1/secrets/:name") { request, context in
            let name = try context.parameters.require("name")
            do {
                try await self.reconciler.deleteSecret(name, team: request.uri.queryParameters.get("team"), as: try self.caller())
            } catch let error as SecretError {
                return Self.secretError(error)
            }
            return Self.json(["deleted": name])
        }
        // Git sources (applied as `GitSource` specs): their status; a sync now (a push hook);
        // suspend and resume; an approval of a commit's deletions; deletion (the products stay).
        routes.add(.get, "/v1/sources") { _, _ in Self.json(await self.gitSourceStatuses(as: try self.caller())) }
        routes.add(.get, "/v1/sources/:name") { _, context in
            let name = try context.parameters.require("name")
            guard let source = await self.gitSourceStatuses(as: try self.caller(), named: name).first else {
                return Self.gitSourceNotFound(name)
            }
            return Self.json(source)
        }
        routes.add(.delete, "/v1/sources/:name") { _, context in
            let name = try context.parameters.require("name")
            guard try await self.reconciler.deleteGitSource(name, as: try self.caller()) else { return Self.gitSourceNotFound(name) }
            return Self.json(["deleted": name])
        }
        routes.add(.post, "/v1/sources/:name/sync") { _, context in
            let name = try context.parameters.require("name")
            let caller = try self.caller()
            guard await self.reconciler.gitSource(name, as: caller) != nil else { return Self.gitSourceNotFound(name) }
            guard caller.role >= .editor else { throw AccessDenied.needsEditor(caller, to: "sync a git source") }
            // A source whose sync has not started yet syncs as soon as it starts.
            _ = await self.gitSources?.requestSync(name)
            return Self.json(["syncing": name], status: .accepted)
        }
        for (action, suspended) in [("suspend", true), ("resume", false)] {
            routes.add(.post, "/v1/sources/:name/\(action)") { _, context in
                let name = try context.parameters.require("name")
                guard try await self.reconciler.setGitSourceSuspended(name, suspended, as: try self.caller()) != nil else {
                    return Self.gitSourceNotFound(name)
                }
                return Self.json([suspended ? "suspended" : "resumed": name])
            }
        }
        routes.add(.post, "/v1/sources/:name/approve") { request, context in
            let name = try context.parameters.require("name")
            var request = request
            let body = try await request.collectBody(upTo: 64 * 1024)
            guard let approval = try? JSONDecoder().decode(ApproveSyncRequest.self, from: Data(buffer: body)), !approval.commit.isEmpty else {
                return Self.error(.badRequest, code: .invalidRequest, message: "the body is not an approval: expected {\"commit\": \"…\"}")
            }
            guard try await self.reconciler.approveGitSourceCommit(name, commit: approval.commit, as: try self.caller()) != nil else {
                return Self.gitSourceNotFound(name)
            }
            return Self.json(["approved": approval.commit], status: .accepted)
        }
        routes.add(.get, "/v1/topics") { _, _ in Self.json(try await self.reconciler.topics.describe()) }
        routes.add(.post, "/v1/topics/:topic/records") { request, context in
            try await self.produce(request, topic: try context.parameters.require("topic"))
        }
        routes.add(.get, "/v1/topics/:topic/records") { request, context in
            try await self.readRecords(request, topic: try context.parameters.require("topic"))
        }
        return routes
    }

    /// The routes, collected before they are registered.
    private struct Routes {
        typealias Handler = @Sendable (Request, BasicRequestContext) async throws -> Response
        private(set) var all: [(method: HTTPRequest.Method, path: String, handler: Handler)] = []

        mutating func add(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping Handler) {
            all.append((method, path, handler))
        }
    }

    // MARK: Handlers

    private func gitSourceStatuses(as caller: Caller, named name: String? = nil) async -> [GitSourceStatus] {
        let stored = await reconciler.gitSources(as: caller).filter { name == nil || $0.source.name == name }
        let base = stored.map {
            GitSourceStatus(source: $0.source, suspended: $0.suspended, approvedCommit: $0.approvedCommit, appliedCommit: $0.appliedCommit)
        }
        return await gitSources?.statuses(of: base) ?? base
    }

    private static func gitSourceNotFound(_ name: String) -> Response {
        error(.notFound, code: .notFound, message: "git source '\(name)' does not exist")
    }

    private func requireAdmin(to action: String) throws {
        let caller = try caller()
        guard caller.isAdmin else {
            throw AccessDenied("token '\(caller.token)' is a \(caller.role.rawValue) of team '\(caller.team)'; to \(action) needs an admin token")
        }
    }

    private func createToken(_ request: Request) async throws -> Response {
        try requireAdmin(to: "create tokens")
        var request = request
        let body = try await request.collectBody(upTo: 64 * 1024)
        let create: CreateTokenRequest
        do {
            create = try JSONDecoder().decode(CreateTokenRequest.self, from: Data(buffer: body))
        } catch {
            return Self.error(.badRequest, code: .invalidRequest, message: "the body is not a token request: \(error)")
        }
        do {
            return Self.json(try await reconciler.createToken(create), status: .created)
        } catch TokenError.exists(let name) {
            return Self.error(.conflict, code: .conflict, message: "a token named '\(name)' exists already")
        } catch let error as TokenError {
            return Self.error(.badRequest, code: .invalidRequest, message: error.description)
        }
    }

    private func setSecret(_ request: Request, name: String) async throws -> Response {
        var request = request
        let body = try await request.collectBody(upTo: 64 * 1024)
        let set: SetSecretRequest
        do {
            set = try JSONDecoder().decode(SetSecretRequest.self, from: Data(buffer: body))
        } catch {
            // Not the decoder's words: they could quote the value.
            return Self.error(.badRequest, code: .invalidRequest, message: "the body is not a secret: expected {\"value\": \"…\", \"team\": \"…\"}")
        }
        do {
            return Self.json(try await reconciler.setSecret(name, set, as: try caller()))
        } catch let error as SecretError {
            return Self.secretError(error)
        }
    }

    private static func secretError(_ error: SecretError) -> Response {
        switch error {
        case .invalid(let message): return Self.error(.badRequest, code: .invalidRequest, message: message)
        case .notFound: return Self.error(.notFound, code: .notFound, message: error.description)
        }
    }

    private struct PreviewBody: Decodable {
        var files: [SpecFile]
    }

    /// A product run over the latest records of its source: sample rows, the output schema,
    /// how many passed, the backfill's size, and the plan. Creates nothing.
    private func preview(_ request: Request) async throws -> Response {
        var request = request
        let sample = request.uri.queryParameters.get("sample").flatMap(Int.init) ?? 100
        let body = try await request.collectBody(upTo: requestBytesMax)
        let preview: PreviewBody
        do {
            preview = try JSONDecoder().decode(PreviewBody.self, from: Data(buffer: body))
        } catch {
            return Self.error(.badRequest, code: .invalidRequest, message: "the body is not a preview request ({\"files\": [...]}): \(error)")
        }
        return try await answeringRejections {
            do {
                let result = try await reconciler.preview(ApplyRequest(files: preview.files, dryRun: true), sample: sample, as: try caller())
                return Self.json(result.json)
            } catch RedeliveryError.unsupported(let message) {
                return Self.error(.conflict, code: .unsupported, message: message)
            }
        }
    }

    private func apply(_ request: Request) async throws -> Response {
        var request = request
        let body = try await request.collectBody(upTo: requestBytesMax)
        let applyRequest: ApplyRequest
        do {
            applyRequest = try JSONDecoder().decode(ApplyRequest.self, from: Data(buffer: body))
        } catch {
            return Self.error(.badRequest, code: .invalidRequest, message: "the body is not an apply request: \(error)")
        }
        return try await answeringRejections {
            let applied = try await reconciler.apply(applyRequest, as: try caller())
            var response = Self.json(applied)
            // As Kubernetes warns: a client that shows headers shows these without knowing the body.
            if let warnings = applied.warnings {
                response.headers[.init("Warning")!] = warnings.map { "299 - \"\($0.replacingOccurrences(of: "\"", with: "'"))\"" }
                    .joined(separator: ", ")
            }
            return response
        }
    }

    /// Rejected specs answered by why: another team (403), a conflict (409), invalid (422).
    private func answeringRejections(_ body: () async throws -> Response) async throws -> Response {
        do {
            return try await body()
        } catch let rejected as ApplyRejected where rejected.isForbidden {
            return Self.error(.forbidden, code: .forbidden, message: "the specs name another team; nothing was applied",
                              details: rejected.errors)
        } catch let rejected as ApplyRejected where rejected.isConflict {
            let count = rejected.errors.count
            return Self.error(.conflict, code: .conflict,
                              message: "\(count) object\(count == 1 ? " is" : "s are") managed by another writer or changed since read; nothing was applied",
                              details: rejected.errors)
        } catch let rejected as ApplyRejected {
            let count = rejected.errors.count
            return Self.error(.unprocessableContent, code: .invalidSpec,
                              message: "\(count) error\(count == 1 ? "" : "s") in the specs; nothing was applied",
                              details: rejected.errors)
        }
    }

    private func produce(_ request: Request, topic: String) async throws -> Response {
        let caller = try caller()
        guard caller.role >= .editor else {
            throw AccessDenied("token '\(caller.token)' is a reader; producing records needs an editor token")
        }
        var request = request
        let parameters = request.uri.queryParameters
        let envelope = parameters.get("format") == "envelope"
        // The dataset on this topic names the key and time fields, for every producer alike.
        let dataset = await reconciler.datasetSpec(onTopic: topic)
        let keyField = parameters.get("key") ?? (envelope ? nil : dataset?.key)
        let timeField = parameters.get("time") ?? (envelope ? nil : dataset?.time)
        let body = try await request.collectBody(upTo: requestBytesMax)
        let bytes = Array(buffer: body)
        let now = Reconciler.systemClock()
        let records: [LogRecord]
        do {
            records = try await RecordLines.parse(bytes, keyField: keyField, timeField: timeField, envelope: envelope, now: now,
                                                  parts: ProcessInfo.processInfo.activeProcessorCount)
        } catch {
            return Self.error(.badRequest, code: .invalidRecord, message: "\(error); nothing was appended")
        }
        guard TopicName.isValid(topic) else {
            return Self.error(.badRequest, code: .invalidTopic, message: "'\(topic)' is not a valid topic name")
        }
        guard !TopicName.isInternal(topic) else {
            return Self.error(.badRequest, code: .invalidTopic, message: "'\(topic)' is the server's own topic: records cannot be produced into it")
        }
        let appended: [PartitionAppend]
        do {
            appended = try await reconciler.topics.append(records, to: topic, dataset: dataset)
        } catch let error as EventLogError where error.code == .invalidRecord {
            return Self.error(.badRequest, code: .invalidRecord, message: error.message)
        }
        return Self.json(ProduceResponse(topic: topic, count: records.count, partitions: appended))
    }

    private func readRecords(_ request: Request, topic: String) async throws -> Response {
        // A product's dead letters are its team's: another team's are not found.
        if let product = TopicName.product(ofDeadLetters: topic), await reconciler.product(product, as: try caller()) == nil {
            return Self.error(.notFound, code: .notFound, message: "topic '\(topic)' does not exist")
        }
        let parameters = request.uri.queryParameters
        let limit = min(max(parameters.get("limit").flatMap(Int.init) ?? 100, 1), 10_000)
        // Long polling: `wait` milliseconds for records to arrive when there are none yet.
        let wait = parameters.get("wait").flatMap(Int.init).map { Duration.milliseconds(min($0, 30_000)) }
        // Personal data is its dataset's team's: masked here as in samples and previews.
        let mask = await reconciler.personalDataMask(forTopic: topic, as: try caller())
        let partition = parameters.get("partition").flatMap(Int.init) ?? 0
        guard let page = try await reconciler.topics.page(of: topic, partition: partition, from: parameters.get("from").flatMap(Int64.init),
                                                          limit: limit, wait: wait, masking: mask?.schema,
                                                          maskingKey: mask?.maskingKey ?? false)
        else {
            return Self.error(.notFound, code: .notFound, message: "topic '\(topic)' has no partition \(partition)")
        }
        return Self.json(page.json)
    }

    private func watch(_ request: Request) async throws -> Response {
        let requested = request.uri.queryParameters.get("resourceVersion")
        let version = requested.flatMap { UInt64($0) }
        if requested != nil, version == nil {
            return Self.error(.badRequest, code: .invalidRequest, message: "resourceVersion must be digits")
        }
        let events: AsyncThrowingStream<WatchEvent, Error>
        do {
            events = try await reconciler.watch(from: version, as: try caller())
        } catch let expired as WatchExpired {
            return Self.error(.gone, code: .expired, message: expired.description)
        }
        // Lines go through a stream of their own, which a graceful shutdown finishes: an
        // open watch must not hold the server's drain (it would wait for it forever).
        // Bounded: for a client that stops reading, the stream ends after the lines it holds
        // (all in order, no gap), and the client resumes from the last version it read.
        let (lines, continuation) = AsyncStream.makeStream(of: ByteBuffer.self, bufferingPolicy: .bufferingOldest(8192))
        let forward = Task {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            do {
                for try await event in events {
                    var line = try encoder.encode(event)
                    line.append(0x0A)
                    if case .dropped = continuation.yield(ByteBuffer(bytes: line)) { break }
                }
            } catch let expired as WatchExpired {
                // Fell too far behind: one last line says so, and the watcher lists again.
                let body = APIErrorBody(code: .expired, message: expired.description)
                if var line = try? encoder.encode(body) {
                    line.append(0x0A)
                    continuation.yield(ByteBuffer(bytes: line))
                }
            } catch {}
            continuation.finish()
        }
        continuation.onTermination = { _ in forward.cancel() }
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            try await withGracefulShutdownHandler {
                for await line in lines { try await writer.write(line) }
            } onGracefulShutdown: {
                continuation.finish()
            }
            try await writer.finish(nil)
        })
    }

    // MARK: Responses

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// A portal file. Scripts only from this server and nothing inline, so a value the page
    /// shows can never run as code.
    static func asset(_ bytes: [UInt8], type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.contentSecurityPolicy] = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        headers[.init("X-Content-Type-Options")!] = "nosniff"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func json(bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// A JSON value written by Provision's own writer: decimals keep their digits.
    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        var bytes: [UInt8] = []
        JSONWriter.write(value, into: &bytes)
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func error(_ status: HTTPResponse.Status, code: APIErrorCode, message: String, details: [SpecError]? = nil) -> Response {
        json(APIErrorBody(code: code, message: message, details: details), status: status)
    }
}


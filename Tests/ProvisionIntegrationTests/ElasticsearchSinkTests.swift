import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The Elasticsearch-API servers `scripts/test` starts: name → base URL. Under CI a missing
/// variable gives one server without a URL, whose every test fails saying so.
let elasticsearchServers: [ElasticsearchServer] = {
    let servers = (ProcessInfo.processInfo.environment["PROVISION_TEST_ELASTICSEARCH_URLS"] ?? "")
        .split(separator: ",").compactMap { pair -> ElasticsearchServer? in
            let parts = pair.split(separator: "=", maxSplits: 1)
            return parts.count == 2 ? ElasticsearchServer(name: String(parts[0]), url: String(parts[1])) : nil
        }
    return servers.isEmpty && runningInCI ? [ElasticsearchServer(name: "missing", url: "")] : servers
}()

struct ElasticsearchServer: CustomTestStringConvertible, Sendable {
    var name: String
    var url: String
    var testDescription: String { name }

    /// Sends a request (30 s at most) and returns the status and the parsed JSON body.
    @discardableResult
    func call(_ method: String, _ path: String, json: Any? = nil, ndjson: String? = nil) async throws -> (Int, Any?) {
        guard !url.isEmpty else {
            throw Failure("PROVISION_TEST_ELASTICSEARCH_URLS is not set: run the suite with scripts/test, which starts the servers")
        }
        var body: Data?
        var contentType = "application/json"
        if let json {
            body = try JSONSerialization.data(withJSONObject: json)
        } else if let ndjson {
            body = Data(ndjson.utf8)
            contentType = "application/x-ndjson"
        }
        let reply = try await httpRequest(.init(rawValue: method), url + path, body: body, contentType: contentType)
        return (reply.status, reply.json)
    }

    func count(_ index: String) async throws -> Int {
        try await call("POST", "/\(index)/_refresh")
        let (status, body) = try await call("GET", "/\(index)/_count")
        guard status == 200 else { return -1 }
        return ((body as? [String: Any])?["count"] as? NSNumber)?.intValue ?? -1
    }

    /// The documents with these ids (found ones only), by `_mget` in chunks.
    func documents(_ index: String, ids: [String]) async throws -> [String: [String: Any]] {
        var found: [String: [String: Any]] = [:]
        for start in stride(from: 0, to: ids.count, by: 1000) {
            let chunk = Array(ids[start..<min(start + 1000, ids.count)])
            let (_, body) = try await call("POST", "/\(index)/_mget", json: ["ids": chunk])
            for document in (body as? [String: Any])?["docs"] as? [[String: Any]] ?? [] where document["found"] as? Bool == true {
                found[document["_id"] as! String] = document["_source"] as? [String: Any]
            }
        }
        return found
    }

    func aliasTargets(_ alias: String) async throws -> [String] {
        let (status, body) = try await call("GET", "/_alias/\(alias)")
        guard status == 200 else { return [] }
        return ((body as? [String: Any])?.keys).map { Array($0).sorted() } ?? []
    }
}

private func elasticsearchSpec(index: String, url: String, select: String? = "{order_id: order_id, amount: amount, customer: upper(customer_id), placed_at: placed_at}",
                               filter: String = #"amount > 1000 and region == "EU""#) -> String
{
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: eu-large-orders, team: risk}
    spec:
      from: orders
      backfill: all
      where: \(filter)
    \(select.map { "  select: \($0)\n" } ?? "")  key: order_id
      sink: {elasticsearch: {url: "\(url)", index: \(index)}}
      deletionPolicy: Delete
    """
}

private func liveAt(_ count: Int) -> ([String: Any]) -> Bool {
    { $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == count }
}

@Suite(.serialized, .timeLimit(.minutes(8)), .enabled(if: !elasticsearchServers.isEmpty, "needs the Elasticsearch-API servers scripts/test starts"))
struct ElasticsearchSinkTests {
    @Test(arguments: elasticsearchServers)
    func indexesUpdatesAndDeletesBehindAnAlias(_ elasticsearch: ElasticsearchServer) async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let index = "orders-\(UUID().uuidString.prefix(8).lowercased())"
        let orders = TestOrder.generate(count: 20_000, end: Date(), days: 30, seed: 71)
        var lines: [String] = []
        var expected: [String: TestOrder] = [:]
        func add(_ order: TestOrder) {
            lines.append(#"{"key":"\#(order.id)","value":\#(order.jsonLine),"time":"\#(TestOrder.formatter.string(from: order.placedAt))"}"#)
            if order.amount > 1000, order.region == "EU" { expected[order.id] = order }
        }
        orders.forEach(add)
        for index in stride(from: 0, to: orders.count, by: 7) {
            var update = orders[index]
            update.amountCents += 250_000
            add(update)
        }
        for index in stride(from: 3, to: orders.count, by: 11) {
            lines.append(#"{"key":"\#(orders[index].id)","value":null}"#)
            expected[orders[index].id] = nil
        }
        let input = server.dataDirectory + "-events.jsonl"
        try lines.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        let applied = try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, elasticsearchSpec(index: index, url: elasticsearch.url),
                                                                 to: server.dataDirectory + "-specs")])
        #expect(applied.status == 0, "\(applied.errorOutput)")
        #expect(try server.ctl(["produce", "orders", "--file", input, "--format", "envelope"]).status == 0)
        let product = try await server.waitForProduct("eu-large-orders", timeout: .seconds(180), until: liveAt(lines.count))
        #expect((product.status["output"] as? String)?.contains("index \(index)") == true)

        #expect(try await elasticsearch.aliasTargets(index) == ["\(index)-1"])
        #expect(try await elasticsearch.count(index) == expected.count)
        let documents = try await elasticsearch.documents(index, ids: orders.map(\.id))
        #expect(Set(documents.keys) == Set(expected.keys))
        let mismatched = expected.values.filter { order in
            let document = documents[order.id]
            return (document?["amount"] as? NSNumber)?.doubleValue != order.amount
                || document?["customer"] as? String != order.customer.uppercased()
                || document?["placed_at"] as? String != TestOrder.formatter.string(from: order.placedAt)
        }
        #expect(mismatched.isEmpty, "\(mismatched.count) documents differ, e.g. \(mismatched.first.map { "\($0)" } ?? "")")

        #expect(try server.ctl(["delete", "product", "eu-large-orders"]).status == 0)
        let deadline = ContinuousClock.now + .seconds(30)
        while try await elasticsearch.call("HEAD", "/\(index)-1").0 != 404, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await elasticsearch.call("HEAD", "/\(index)-1").0 == 404)
        #expect(try await elasticsearch.aliasTargets(index) == [])
    }

    @Test(arguments: elasticsearchServers)
    func documentsTheMappingRefusesGoToTheDeadLetterTopic(_ elasticsearch: ElasticsearchServer) async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let index = "refused-\(UUID().uuidString.prefix(8).lowercased())"
        // Whole events (no select): the processor passes them as they are, and the index's
        // mapping (amount: double) refuses the ones whose amount is not a number.
        var orders = TestOrder.generate(count: 5_000, end: Date(), days: 10, seed: 81)
        for index in orders.indices { orders[index].region = "EU" }
        let broken = Set(stride(from: 5, to: orders.count, by: 97).map { orders[$0].id })
        let lines = orders.map { order in
            broken.contains(order.id) ? order.jsonLine.replacingOccurrences(of: #""amount":"#, with: #""amount":"lots","was":"#) : order.jsonLine
        }
        let input = server.dataDirectory + "-orders.jsonl"
        try lines.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        let spec = elasticsearchSpec(index: index, url: elasticsearch.url, select: nil, filter: #"region == "EU""#)
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec, to: server.dataDirectory + "-specs")]).status == 0)
        #expect(try server.ctl(["produce", "orders", "--file", input]).status == 0)
        let product = try await server.waitForProduct("eu-large-orders", timeout: .seconds(120), until: liveAt(orders.count))
        #expect((product.status["deadLettered"] as? NSNumber)?.intValue == broken.count)
        #expect(try await elasticsearch.count(index) == orders.count - broken.count)

        let tail = try server.ctl(["tail", "_deadletter.eu-large-orders", "--from-beginning"])
        let letters = tail.output.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(Set(letters.compactMap { ($0["value"] as? [String: Any])?["order_id"] as? String }) == broken)
        let reasons = letters.compactMap { ($0["headers"] as? [String: String])?["provision.reason"] }
        #expect(reasons.count == broken.count)
        #expect(reasons.allSatisfy { $0.contains("Elasticsearch refused the document: status 400") && $0.contains("amount") },
                "\(reasons.first ?? "")")
    }

    @Test(arguments: elasticsearchServers)
    func killedMidBackfillTheIndexHoldsExactlyTheExpectedDocuments(_ elasticsearch: ElasticsearchServer) async throws {
        let server = ServerProcess()
        let orders = TestOrder.generate(count: 60_000, end: Date(), days: 100, seed: 91)
        try await seedLog(server, orders)
        // Killed at a chosen moment: after the second of twelve batches is committed.
        server.arguments = ["--batch-records", "5000"]
        server.environment["PROVISION_FAILPOINTS"] = "pipeline.batch.committed=kill@2"
        try await server.start()
        let index = "killed-\(UUID().uuidString.prefix(8).lowercased())"
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, elasticsearchSpec(index: index, url: elasticsearch.url),
                                                            to: server.dataDirectory + "-specs")]).status == 0)
        let expected = orders.filter { $0.amount > 1000 && $0.region == "EU" }
        try server.waitForFailpoint("pipeline.batch.committed")
        let atKill = try await elasticsearch.count(index)
        #expect(atKill > 0 && atKill < expected.count, "the backfill finished before the kill; the test proves nothing")

        server.environment["PROVISION_FAILPOINTS"] = ""
        try await server.start()
        _ = try await server.waitForProduct("eu-large-orders", timeout: .seconds(600), until: liveAt(orders.count))
        #expect(try await elasticsearch.count(index) == expected.count)
        let documents = try await elasticsearch.documents(index, ids: expected.map(\.id))
        #expect(documents.count == expected.count)
        server.stop()
    }

    @Test(arguments: elasticsearchServers)
    func aRebuildNeverShowsReadersAnEmptyOrPartialIndex(_ elasticsearch: ElasticsearchServer) async throws {
        let server = ServerProcess()
        let orders = TestOrder.generate(count: 60_000, end: Date(), days: 60, seed: 101)
        try await seedLog(server, orders)
        try await server.start()
        defer { server.stop() }
        let index = "rebuilt-\(UUID().uuidString.prefix(8).lowercased())"
        let expected = orders.filter { $0.amount > 1000 && $0.region == "EU" }
        func apply(_ select: String) throws {
            let spec = elasticsearchSpec(index: index, url: elasticsearch.url, select: select)
            let result = try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec, to: server.dataDirectory + "-specs")])
            #expect(result.status == 0, "\(result.errorOutput)")
        }
        try apply("{order_id: order_id, amount: amount, customer: upper(customer_id), placed_at: placed_at}")
        _ = try await server.waitForProduct("eu-large-orders", timeout: .seconds(300), until: liveAt(orders.count))
        #expect(try await elasticsearch.count(index) == expected.count)

        let reading = Task.detached { () -> [Int] in
            var counts: [Int] = []
            while !Task.isCancelled {
                do {
                    let (status, body) = try await elasticsearch.call("GET", "/\(index)/_count")
                    // A failed read is recorded as minus its status.
                    counts.append(status == 200 ? ((body as? [String: Any])?["count"] as? NSNumber)?.intValue ?? -1 : -status)
                } catch {
                    if Task.isCancelled { break }
                    counts.append(-1)
                }
                // A breath between reads: back to back, they flood the server's connections.
                try? await Task.sleep(for: .milliseconds(5))
            }
            return counts
        }
        try apply("{order_id: order_id, amount: amount, region: region, customer: lower(customer_id), placed_at: placed_at}")
        let swapped = ContinuousClock.now + .seconds(300)
        while try await elasticsearch.aliasTargets(index) != ["\(index)-2"], ContinuousClock.now < swapped {
            try await Task.sleep(for: .milliseconds(50))
        }
        _ = try await server.waitForProduct("eu-large-orders", timeout: .seconds(300), until: liveAt(orders.count))
        try await Task.sleep(for: .milliseconds(200))
        reading.cancel()
        let counts = await reading.value

        #expect(counts.count > 10, "the reader did not overlap the rebuild")
        #expect(counts.allSatisfy { $0 == expected.count }, "the reader saw \(Set(counts)) documents")
        #expect(try await elasticsearch.aliasTargets(index) == ["\(index)-2"])
        #expect(try await elasticsearch.call("HEAD", "/\(index)-1").0 == 404)
        let sample = try await elasticsearch.documents(index, ids: [expected[0].id])[expected[0].id]
        #expect(sample?["region"] as? String == "EU")
        #expect(sample?["customer"] as? String == expected[0].customer.lowercased())
    }

    @Test(arguments: elasticsearchServers)
    func anIndexProvisionDoesNotOwnIsReportedAndLeftAlone(_ elasticsearch: ElasticsearchServer) async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let index = "taken-\(UUID().uuidString.prefix(8).lowercased())"
        try await elasticsearch.call("PUT", "/\(index)", json: ["mappings": ["properties": ["note": ["type": "text"]]]])
        try await elasticsearch.call("PUT", "/\(index)/_doc/mine?refresh=true", json: ["note": "a team's own document"])
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, elasticsearchSpec(index: index, url: elasticsearch.url),
                                                            to: server.dataDirectory + "-specs")]).status == 0)
        let product = try await server.waitForProduct("eu-large-orders", timeout: .seconds(60)) { $0.phase == "Failed" }
        let stalled = (product.status["conditions"] as? [[String: Any]])?.first { $0["type"] as? String == "Stalled" }
        #expect(stalled?["reason"] as? String == "OutputConflict")
        #expect((stalled?["message"] as? String)?.contains("does not touch the index") == true)
        #expect(try await elasticsearch.count(index) == 1)
        #expect(try await elasticsearch.call("HEAD", "/\(index)-1").0 == 404)
    }

    @Test(arguments: elasticsearchServers)
    func throttlingAndServerErrorsAreRetriedWithNothingLostOrDuplicated(_ elasticsearch: ElasticsearchServer) async throws {
        // A proxy in front of the real server answers 429 and 503 to part of the bulk
        // requests for the first seconds, as an overloaded cluster does.
        let proxy = try FlakyProxy(upstream: elasticsearch.url, failingFor: 6)
        defer { proxy.stop() }
        let server = ServerProcess()
        let orders = TestOrder.generate(count: 30_000, end: Date(), days: 30, seed: 111)
        try await seedLog(server, orders)
        try await server.start()
        defer { server.stop() }
        let index = "throttled-\(UUID().uuidString.prefix(8).lowercased())"
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, elasticsearchSpec(index: index, url: proxy.url),
                                                            to: server.dataDirectory + "-specs")]).status == 0)
        _ = try await server.waitForProduct("eu-large-orders", timeout: .seconds(300), until: liveAt(orders.count))
        #expect(proxy.refusedRequests() > 0, "the proxy refused nothing; the test proves nothing")
        let expected = orders.filter { $0.amount > 1000 && $0.region == "EU" }
        #expect(try await elasticsearch.count(index) == expected.count)
        #expect(try await elasticsearch.documents(index, ids: expected.map(\.id)).count == expected.count)
    }
}

/// `flaky_proxy.py` as a child process: forwards to the upstream server, answering 429 or
/// 503 to every other `_bulk` request for the first seconds.
final class FlakyProxy: @unchecked Sendable {
    let url: String
    private let process: Process
    private let statsPath: String

    init(upstream: String, failingFor seconds: Int, bodyLog: String? = nil) throws {
        let port = freePort()
        url = "http://127.0.0.1:\(port)"
        statsPath = NSTemporaryDirectory() + "provision-proxy-\(UUID().uuidString)"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("flaky_proxy.py").path
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, String(port), upstream, String(seconds), statsPath] + (bodyLog.map { [$0] } ?? [])
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try waitForPort(port, of: process, what: "flaky_proxy.py")
    }

    /// How many requests the proxy answered with 429 or 503.
    func refusedRequests() -> Int {
        Int((try? String(contentsOfFile: statsPath, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
    }

    func stop() {
        // SIGKILL: the test process may hand its children a signal mask that blocks SIGTERM.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        removeTestData(statsPath)
    }
}

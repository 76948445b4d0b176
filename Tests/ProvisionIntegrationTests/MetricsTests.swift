import Foundation
import Testing

let prometheusBinary = ProcessInfo.processInfo.environment["PROVISION_TEST_PROMETHEUS_BIN"]

/// A Prometheus server (Debian's) scraping one Provision server every second with the
/// suite's admin token.
private final class PrometheusProcess {
    let port = freePort()
    let directory: String
    private let process = Process()

    var url: String { "http://127.0.0.1:\(port)" }

    init(scraping target: ServerProcess) throws {
        directory = target.dataDirectory + "-prometheus"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try """
            global: {scrape_interval: 1s, scrape_timeout: 1s}
            scrape_configs:
              - job_name: provision
                metrics_path: /metrics
                authorization: {type: Bearer, credentials: "\(testAdminToken)"}
                static_configs: [{targets: ["127.0.0.1:\(target.port)"]}]
            """.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
        guard let prometheusBinary else { throw Failure("PROVISION_TEST_PROMETHEUS_BIN is not set: run the suite with scripts/test") }
        process.executableURL = URL(fileURLWithPath: prometheusBinary)
        process.arguments = ["--config.file=\(directory)/prometheus.yml", "--storage.tsdb.path=\(directory)/data",
                             "--web.listen-address=127.0.0.1:\(port)"]
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        let log = directory + "/prometheus.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: log)
        try process.run()
        try waitForPort(port, of: process, what: "prometheus")
    }

    /// The value of a PromQL query's single result, once it has one (polled, bounded).
    func value(of query: String, until condition: (Double) -> Bool, timeout: Duration = .seconds(60)) async throws -> Double {
        let deadline = ContinuousClock.now + timeout
        var last: String = ""
        while ContinuousClock.now < deadline {
            let encoded = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
            let reply = try await httpRequest(.GET, url + "/api/v1/query?query=" + encoded, token: nil)
            last = String(decoding: reply.body, as: UTF8.self)
            let result = ((reply.json as? [String: Any])?["data"] as? [String: Any])?["result"] as? [[String: Any]]
            if let sample = result?.first?["value"] as? [Any], let text = sample.last as? String, let value = Double(text), condition(value) {
                return value
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw Failure("Prometheus never answered \(query) as expected; last answer: \(last)")
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}

@Suite(.serialized, .timeLimit(.minutes(5)), .enabled(if: prometheusBinary != nil || runningInCI, "needs the Prometheus binary scripts/test installs"))
struct MetricsTests {
    /// `/metrics` in Prometheus' text format, scraped by a real Prometheus: a PromQL query
    /// through its HTTP API returns the product's records written and lag as its status
    /// says; request metrics are labelled by route template, never by raw path; a deleted
    /// product's series go.
    @Test func prometheusScrapesProductAndRequestMetrics() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let specs = try writeSpecs(catalogSpec, productSpec(backfill: "all"), to: server.dataDirectory + "-specs")
        #expect(try server.ctl(["apply", "-f", specs]).status == 0)
        let orders = TestOrder.generate(count: 3000, end: Date(), days: 30, seed: 171)
        let expected = orders.compactMap { $0.expectedRow(since: .distantPast) }.count
        let input = server.dataDirectory + "-orders.jsonl"
        try orders.map(\.jsonLine).joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        #expect(try server.ctl(["produce", "orders", "--file", input]).status == 0)
        let product = try await server.waitForProduct("eu-large-orders") { $0.phase == "Live" && $0.recordsWritten == expected }
        #expect(product.recordsWritten == expected)

        let text = String(decoding: try await httpRequest(.GET, server.url + "/metrics").body, as: UTF8.self)
        #expect(text.contains("provision_product_written_records{product=\"eu-large-orders\"} \(expected)"), "\(text.prefix(3000))")
        #expect(text.contains("provision_product_phase{product=\"eu-large-orders\",phase=\"Live\"} 1"))
        #expect(text.contains("provision_product_condition{product=\"eu-large-orders\",type=\"Ready\",status=\"true\"} 1"))
        #expect(text.contains("route=\"/v1/products/:name\""), "request metrics are by route template")
        #expect(!text.contains("route=\"/v1/products/eu-large-orders\""))
        #expect(text.contains("provision_reconcile_duration_seconds"))
        #expect(text.contains("provision_product_read_records{product=\"eu-large-orders\"} \(orders.count)"))
        // Freshness: from the newest event time among the rows the product should deliver.
        let newest = orders.filter { $0.expectedRow(since: .distantPast) != nil }.map(\.placedAt).max()!
        let status = product.status
        #expect((status["newestDeliveredTime"] as? String).flatMap(TestOrder.parseTime) == newest, "\(status)")
        let freshnessLine = text.split(separator: "\n").first { $0.hasPrefix("provision_product_freshness_seconds{product=\"eu-large-orders\"}") }
        let freshness = freshnessLine.flatMap { Double($0.split(separator: " ").last ?? "") }
        #expect(freshness.map { abs($0 - Date().timeIntervalSince(newest)) < 60 } == true, "\(String(describing: freshnessLine))")
        let writes = text.split(separator: "\n").first { $0.hasPrefix("provision_sink_write_duration_seconds_count{product=\"eu-large-orders\",sink=\"file\"}") }
        #expect(writes.flatMap { Int($0.split(separator: " ").last ?? "") }.map { $0 > 0 } == true, "\(String(describing: writes))")
        // Metrics name every team's products: an admin's to read.
        #expect(try await httpRequest(.GET, server.url + "/metrics", token: nil).status == 401)

        let prometheus = try PrometheusProcess(scraping: server)
        let written = try await prometheus.value(of: #"provision_product_written_records{product="eu-large-orders"}"#) { $0 > 0 }
        #expect(Int(written) == expected)
        let lag = try await prometheus.value(of: #"provision_product_lag_records{product="eu-large-orders"}"#) { _ in true }
        #expect(Int(lag) == (product.status["lag"] as? Int))
        let applies = try await prometheus.value(of: #"sum(provision_http_requests_total{route="/v1/apply",status="200"})"#) { $0 > 0 }
        #expect(applies >= 1)

        #expect(try server.ctl(["delete", "product", "eu-large-orders"]).status == 0)
        let deadline = ContinuousClock.now + .seconds(60)
        var after = ""
        while ContinuousClock.now < deadline {
            after = String(decoding: try await httpRequest(.GET, server.url + "/metrics").body, as: UTF8.self)
            if !after.contains("product=\"eu-large-orders\"") { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(!after.contains("product=\"eu-large-orders\""), "a deleted product's series stay")
    }
}

/// `POST /v1/preview` and `provisionctl preview`: a product run over the latest records of
/// its source, compared with the rows the test computes itself; nothing is created.
@Suite(.serialized, .timeLimit(.minutes(5))) struct PreviewTests {
    @Test func aPreviewShowsTheRowsCountsAndBackfillAndCreatesNothing() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, to: server.dataDirectory + "-catalog")]).status == 0)
        let orders = TestOrder.generate(count: 2000, end: Date(), days: 30, seed: 181)
        let input = server.dataDirectory + "-orders.jsonl"
        try orders.map(\.jsonLine).joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        #expect(try server.ctl(["produce", "orders", "--file", input]).status == 0)

        let specs = try writeSpecs(productSpec(backfill: "all"), to: server.dataDirectory + "-specs")
        let result = try server.ctl(["preview", "-f", specs, "--sample", "500", "--json"])
        #expect(result.status == 0, "\(result.errorOutput)")
        let answer = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any] ?? [:]
        let expected = orders.suffix(500).compactMap { $0.expectedRow(since: .distantPast) }.map { $0 as NSDictionary }
        let rows = (answer["rows"] as? [[String: Any]] ?? []).map { $0 as NSDictionary }
        #expect(rows == expected)
        #expect(answer["sampled"] as? Int == 500)
        #expect(answer["passed"] as? Int == expected.count)
        #expect((answer["backfill"] as? [String: Any])?["records"] as? Int == orders.count)
        #expect(((answer["backfill"] as? [String: Any])?["bytesEstimate"] as? Int ?? 0) > 0)
        #expect((answer["change"] as? [String: Any])?["action"] as? String == "create")
        let schema = (answer["outputSchema"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(schema == ["order_id", "amount", "customer", "placed_at"])
        #expect(try await server.fetchProduct("eu-large-orders") == nil, "a preview created the product")

        // The readable form, and a bad spec located like an apply's.
        let readable = try server.ctl(["preview", "-f", specs, "--sample", "500"])
        #expect(readable.output.contains("sampled 500 latest records: \(expected.count) passed, 0 dead-lettered"), "\(readable.output)")
        let bad = try server.ctl(["preview", "-f", try writeSpecs(productSpec(backfill: "all").replacingOccurrences(of: "amount > 1000", with: "amout > 1000"),
                                                                 to: server.dataDirectory + "-bad")])
        #expect(bad.status != 0 && bad.errorOutput.contains("unknown field 'amout'"), "\(bad.errorOutput)")
    }
}

let schemathesisBinary = ProcessInfo.processInfo.environment["PROVISION_TEST_SCHEMATHESIS_BIN"]

/// schemathesis, from the OpenAPI document the server serves, against the running server
/// with authentication on: no request gets a 5xx, every response (status, content type,
/// headers, body) matches its schema, malformed input is refused, and every route that
/// declares authentication refuses a request without it. The stream of `/v1/watch` never
/// ends, so it is left out (its own test covers it).
@Suite(.serialized, .timeLimit(.minutes(8)), .enabled(if: schemathesisBinary != nil || runningInCI, "needs schemathesis, which scripts/test installs"))
struct SchemathesisTests {
    @Test func theAPIMatchesItsContractUnderGeneratedRequests() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        // Something to find: a dataset with records and a product.
        let specs = try writeSpecs(catalogSpec, productSpec(backfill: "all"), to: server.dataDirectory + "-specs")
        #expect(try server.ctl(["apply", "-f", specs]).status == 0)
        let input = server.dataDirectory + "-orders.jsonl"
        try TestOrder.generate(count: 50, end: Date(), days: 3, seed: 191).map(\.jsonLine).joined(separator: "\n")
            .write(toFile: input, atomically: true, encoding: .utf8)
        #expect(try server.ctl(["produce", "orders", "--file", input]).status == 0)

        guard let schemathesisBinary else { throw Failure("PROVISION_TEST_SCHEMATHESIS_BIN is not set: run the suite with scripts/test") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: schemathesisBinary)
        process.arguments = ["run", server.url + "/openapi.json", "--experimental=openapi-3.1", "--checks", "all",
                             "--exclude-path", "/v1/watch", "--hypothesis-max-examples", "15", "--hypothesis-deadline", "none",
                             "--hypothesis-seed", "1", "-H", "Authorization: Bearer \(testAdminToken)"]
        let output = server.dataDirectory + "-schemathesis.log"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: output)
        process.standardError = process.standardOutput
        try process.run()
        try waitForExit(process, timeout: .seconds(420), what: "schemathesis")
        let report = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(process.terminationStatus == 0, "schemathesis found problems:\n\(report.suffix(6000))")
        #expect(report.contains("not_a_server_error") && report.contains("response_schema_conformance"), "\(report.suffix(2000))")
    }
}

extension PreviewTests {
    /// A table join in a preview: each sampled order with its customer's row as of the
    /// order's time (two versions of each customer, one before and one after the orders'
    /// midpoint), computed here from the records produced.
    @Test func aPreviewJoinsTablesAsOfEachEvent() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        #expect(try server.ctl(["apply", "-f", try writeSpecs(joinCatalogSpec, to: server.dataDirectory + "-catalog")]).status == 0)
        let start = Date().addingTimeInterval(-3600).timeIntervalSince1970.rounded(.down)
        func time(_ seconds: Double) -> String { TestOrder.formatter.string(from: Date(timeIntervalSince1970: start + seconds)) }
        // Customers c-0…c-9: "first" at 0 s, "second" at 1,000 s; c-9 has no second version.
        var customers: [String] = []
        for index in 0..<10 { customers.append(#"{"customer_id":"c-\#(index)","name":"first-\#(index)","tier":"gold","updated_at":"\#(time(0))"}"#) }
        for index in 0..<9 { customers.append(#"{"customer_id":"c-\#(index)","name":"second-\#(index)","tier":"gold","updated_at":"\#(time(1000))"}"#) }
        // Orders every 20 s over 2,000 s, of c-0…c-11 (c-10 and c-11 do not exist).
        let orders = (0..<100).map { (id: "o-\($0)", customer: "c-\($0 % 12)", at: Double($0) * 20) }
        let paths = [("customers", customers), ("orders", orders.map { #"{"order_id":"\#($0.id)","customer_id":"\#($0.customer)","amount":10,"placed_at":"\#(time($0.at))"}"# })]
        for (topic, lines) in paths {
            let path = server.dataDirectory + "-\(topic).jsonl"
            try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
            #expect(try server.ctl(["produce", topic, "--file", path]).status == 0)
        }
        let product = """
            apiVersion: provision/v1
            kind: DataProduct
            metadata: {name: named-orders, team: risk}
            spec:
              from: orders
              join: [{dataset: customers, on: customer_id, as: customer}]
              select: {order_id: order_id, name: customer.name}
              sink: {file: {path: risk/named.jsonl}}
            """
        let result = try server.ctl(["preview", "-f", try writeSpecs(product, to: server.dataDirectory + "-specs"), "--sample", "100", "--json"])
        #expect(result.status == 0, "\(result.errorOutput)")
        let answer = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any] ?? [:]
        let expected: [NSDictionary] = orders.map { order in
            let index = Int(order.customer.dropFirst(2))!
            let name: Any = index >= 10 ? NSNull() : (order.at >= 1000 && index < 9 ? "second-\(index)" : "first-\(index)")
            return ["order_id": order.id, "name": name] as NSDictionary
        }
        #expect((answer["rows"] as? [[String: Any]] ?? []).map { $0 as NSDictionary } == expected)
        #expect(answer["passed"] as? Int == 100 && answer["note"] == nil)
    }
}

/// A dataset's description (time span, recent rate, latest records) and personal data in
/// samples and previews: shown to the team that owns the dataset, masked to every other.
@Suite(.serialized, .timeLimit(.minutes(5))) struct DatasetSampleTests {
    private let people = """
        apiVersion: provision/v1
        kind: Dataset
        metadata: {name: people, team: crm, description: Customers who signed up}
        spec:
          topic: people
          key: id
          time: seen_at
          schema:
            id: string
            email: {type: string, pii: true}
            address: {city: string, street: {type: string, pii: true}}
            seen_at: timestamp
        """

    private let contacts = """
        apiVersion: provision/v1
        kind: DataProduct
        metadata: {name: contacts}
        spec:
          from: people
          select: {id: id, contact: lower(email), city: address.city}
          sink: {file: {path: growth/contacts.jsonl}}
        """

    @Test func theOwningTeamSeesPersonalDataAndOthersSeeItMasked() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let crm = try server.createToken("crm-editor", team: "crm")
        let growth = try server.createToken("growth-editor", team: "growth")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(people, to: server.dataDirectory + "-people")]).status == 0)
        // Fourteen people seen an hour ago, six in the last minute; the last has no email.
        let now = Date().timeIntervalSince1970.rounded(.down)
        let seen = (0..<20).map { Date(timeIntervalSince1970: $0 < 14 ? now - 3600 + Double($0) : now - 60 + Double($0)) }
        let records: [[String: Any]] = (0..<20).map { index in
            ["id": "p-\(index)", "email": index == 19 ? NSNull() : "Person\(index)@Example.com",
             "address": ["city": "City \(index % 3)", "street": "\(index) Main Street"], "seen_at": TestOrder.formatter.string(from: seen[index])]
        }
        let input = server.dataDirectory + "-people.jsonl"
        try records.map { String(decoding: try JSONSerialization.data(withJSONObject: $0, options: .sortedKeys), as: UTF8.self) }
            .joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        #expect(try server.ctl(["produce", "people", "--file", input]).status == 0)

        func describe(_ token: String) async throws -> [String: Any] {
            let reply = try await httpRequest(.GET, server.url + "/v1/datasets/people?sample=3", token: token)
            #expect(reply.status == 200)
            return reply.json as? [String: Any] ?? [:]
        }
        let owned = try await describe(crm)
        let status = owned["status"] as? [String: Any] ?? [:]
        #expect(status["records"] as? Int == 20)
        func date(_ text: Any?) -> Date? {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            return (text as? String).flatMap { formatter.date(from: $0) ?? ISO8601DateFormatter().date(from: $0) }
        }
        #expect(date(status["oldestRecordTime"]) == seen[0])
        #expect(date(status["newestRecordTime"]) == seen[19])
        #expect(status["recentRecordsPerSecond"] as? Double == 6.0 / 300)
        let ownedSample = (owned["sample"] as? [[String: Any]] ?? []).map { $0 as NSDictionary }
        #expect(ownedSample == records.suffix(3).map { $0 as NSDictionary })

        var masked = Array(records.suffix(3))
        for index in masked.indices {
            if !(masked[index]["email"] is NSNull) { masked[index]["email"] = "***" }
            masked[index]["address"] = ["city": (masked[index]["address"] as! [String: Any])["city"]!, "street": "***"]
        }
        let other = try await describe(growth)
        #expect((other["sample"] as? [[String: Any]] ?? []).map { $0 as NSDictionary } == masked.map { $0 as NSDictionary })
        let described = try provisionctl(["catalog", "describe", "people", "--server", server.url], environment: ["PROVISION_TOKEN": growth])
        #expect(described.output.contains("email: string (pii)") && described.output.contains(#""email":"***""#), "\(described.output)")
        #expect(!described.output.contains("Example.com"))

        // Reading the topic itself masks the same way.
        func topicEmails(_ token: String) async throws -> [String?] {
            let reply = try await httpRequest(.GET, server.url + "/v1/topics/people/records?from=0&limit=100", token: token)
            #expect(reply.status == 200)
            let page = reply.json as? [String: Any] ?? [:]
            return (page["records"] as? [[String: Any]] ?? []).map { ($0["value"] as? [String: Any])?["email"] as? String }
        }
        #expect(try await topicEmails(crm) == records.map { $0["email"] as? String })
        #expect(try await topicEmails(growth) == records.map { $0["email"] is NSNull ? nil : "***" })

        // A preview of what is computed from personal data: masked for growth, shown for crm.
        func preview(_ token: String) async throws -> [String: Any] {
            let body = try JSONSerialization.data(withJSONObject: ["files": [["name": "contacts.yaml", "content": contacts]]])
            let reply = try await httpRequest(.POST, server.url + "/v1/preview?sample=20", body: body, token: token)
            #expect(reply.status == 200, "\(String(decoding: reply.body, as: UTF8.self))")
            return reply.json as? [String: Any] ?? [:]
        }
        let expected = records.map { record -> [String: Any] in
            ["id": record["id"]!, "contact": (record["email"] as? String)?.lowercased() ?? NSNull(),
             "city": (record["address"] as! [String: Any])["city"]!]
        }
        let shown = try await preview(crm)
        #expect((shown["rows"] as? [[String: Any]] ?? []).map { $0 as NSDictionary } == expected.map { $0 as NSDictionary })
        let hidden = try await preview(growth)
        let hiddenRows = hidden["rows"] as? [[String: Any]] ?? []
        #expect(hiddenRows.count == 20)
        #expect(hiddenRows.dropLast().allSatisfy { $0["contact"] as? String == "***" } && hiddenRows.last?["contact"] is NSNull)
        #expect(hiddenRows.map { $0["city"] as? String } == expected.map { $0["city"] as? String })
        let schema = hidden["outputSchema"] as? [[String: Any]] ?? []
        #expect(schema.map { $0["pii"] as? Bool ?? false } == [false, true, false])
    }
}

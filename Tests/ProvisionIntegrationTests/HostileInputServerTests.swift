import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Inputs a hostile user sends to a running server. Each once crashed it, hung it or held a
/// connection forever; each must now be a clear error while the server goes on serving.
private let tradesDataset = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: trades, owner: markets}
    spec:
      topic: trades
      key: trade_id
      time: placed_at
      schema: {trade_id: string, placed_at: timestamp, shipped_at: timestamp}
    """

private func product(_ name: String, _ body: String) -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: \(name), team: markets}
    spec:
      from: trades
    \(body)
    """
}

@Suite(.serialized, .timeLimit(.minutes(8))) struct HostileInputServerTests {
    @Test func hostileSpecsAreLocatedErrorsAndTheServerKeepsServing() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let directory = server.dataDirectory + "-specs"
        #expect(try server.ctl(["apply", "-f", try writeSpecs(tradesDataset, to: directory)]).status == 0)

        var aliasBomb = "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: bomb}\nspec:\n  topic: bomb\n  schema:\n"
        aliasBomb += "    l0: &l0 {a: string, b: string, c: string, d: string, e: string, f: string, g: string, h: string, i: string, j: string}\n"
        for level in 1...9 {
            aliasBomb += "    l\(level): &l\(level) {" + (0..<10).map { "f\($0): *l\(level - 1)" }.joined(separator: ", ") + "}\n"
        }
        aliasBomb += "    ? *l9\n    : string\n"
        var deepSchema = "string"
        for _ in 0..<300 { deepSchema = "{inner: \(deepSchema)}" }
        let parentheses = String(repeating: "(", count: 5000) + "true" + String(repeating: ")", count: 5000)
        let cases: [(name: String, yaml: String, dryRun: Bool, message: String)] = [
            ("since", product("huge-since", "  backfill: {since: 9223372036854775807ms1ms}\n  sink: {file: {path: a.jsonl}}"), true,
             "hostile.yaml:6:21: spec.backfill.since: '9223372036854775807ms1ms' is longer than the limit of 3652425d"),
            ("batch", product("huge-batch", "  sink: {webhook: {url: \"http://127.0.0.1:9/x\", batch: {maxBytes: 9999999999999GiB}}}"), false,
             "hostile.yaml:6:67: spec.sink.webhook.batch.maxBytes: '9999999999999GiB' is more than the limit of 256MiB"),
            ("now", product("huge-now", "  where: now() - 9223372036854775807ms1ms < placed_at\n  sink: {file: {path: a.jsonl}}"), false,
             "hostile.yaml:6:18: spec.where: '9223372036854775807ms1ms' is longer than the limit of 3652425d"),
            ("parentheses", product("parens", "  where: \"\(parentheses)\"\n  sink: {file: {path: a.jsonl}}"), false,
             "hostile.yaml:6:4107: spec.where: the expression is longer than 4096 characters"),
            ("alias bomb", aliasBomb, false, "values once its aliases are expanded"),
            ("deep schema", "apiVersion: provision/v1\nkind: Dataset\nmetadata: {name: deep}\nspec: {topic: deep, schema: {outer: \(deepSchema)}}\n",
             false, "nests more than 32 levels deep"),
        ]
        for hostile in cases {
            let path = directory + "/hostile.yaml"
            try hostile.yaml.write(toFile: path, atomically: true, encoding: .utf8)
            let result = try server.ctl(["apply", "-f", path] + (hostile.dryRun ? ["--dry-run"] : []))
            #expect(result.status != 0, "\(hostile.name) was accepted")
            #expect(result.errorOutput.contains(path + ":") && result.errorOutput.contains(hostile.message),
                    "\(hostile.name): \(result.errorOutput)")
            let health = try await httpRequest(.GET, server.url + "/healthz", timeout: .seconds(10))
            #expect(health.status == 200, "the server stopped serving after the \(hostile.name) spec")
        }
        // Nothing of them was applied, and the state still saves: a valid apply succeeds.
        let products = try await httpRequest(.GET, server.url + "/v1/products")
        #expect(String(decoding: products.body, as: UTF8.self) == "[]")
        let valid = product("valid", "  sink: {file: {path: valid.jsonl}}")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(tradesDataset, valid, to: directory)]).status == 0)
    }

    /// A record whose timestamp field is the largest 64-bit number, under a filter that adds a
    /// day to it, once trapped the server on every start: a crash loop from one event.
    @Test func aRecordBeyondTheCalendarIsADeadLetterNotACrashLoop() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let filter = product("shipped", "  where: shipped_at + 1d > now()\n  sink: {file: {path: shipped.jsonl}}")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(tradesDataset, filter, to: server.dataDirectory + "-specs")]).status == 0)
        let future = Int64(Date().timeIntervalSince1970 * 1000) + 86_400_000
        let lines = [
            #"{"trade_id":"t-1","placed_at":"2026-01-01T00:00:00Z","shipped_at":\#(future)}"#,
            #"{"trade_id":"t-2","placed_at":"2026-01-01T00:00:01Z","shipped_at":9223372036854775807}"#,
            #"{"trade_id":"t-3","placed_at":"2026-01-01T00:00:02Z","shipped_at":\#(future)}"#,
        ].joined(separator: "\n") + "\n"
        let produced = try await httpRequest(.POST, server.url + "/v1/topics/trades/records?key=trade_id&time=placed_at",
                                             body: Data(lines.utf8), contentType: "application/x-ndjson")
        #expect(produced.status == 200)
        let settled: ([String: Any]) -> Bool = { $0.recordsWritten == 2 && ($0.status["deadLettered"] as? Int) == 1 }
        _ = try await server.waitForProduct("shipped", timeout: .seconds(60), until: settled)
        let deadLetters = try server.ctl(["deadletters", "shipped"])
        #expect(deadLetters.output.contains("outside the years 0000 to 9999"), "\(deadLetters.output)")

        // Killed and started again, it reads on from its checkpoint without a trap.
        server.stop(signal: SIGKILL)
        try await server.start()
        _ = try await server.waitForProduct("shipped", timeout: .seconds(60), until: settled)
        let rows = try outputRows(server.fileRoot + "/shipped.jsonl").map { $0["trade_id"] as? String }
        #expect(rows == ["t-1", "t-3"])

        // A time field beyond the calendar is refused when produced, with the line.
        let refused = try await httpRequest(.POST, server.url + "/v1/topics/trades/records?key=trade_id&time=placed_at",
                                            body: Data(#"{"trade_id":"t-4","placed_at":9223372036854775807}"#.utf8),
                                            contentType: "application/x-ndjson")
        #expect(refused.status == 400)
        #expect(String(decoding: refused.body, as: UTF8.self).contains("line 1: the time field 'placed_at' is not an RFC 3339 timestamp or epoch milliseconds of the years 0000 to 9999"))
    }

    /// A request that promises more body than it sends is cut by the idle timeout; other
    /// requests are served meanwhile.
    @Test func aRequestThatNeverSendsItsBodyIsCut() async throws {
        let server = ServerProcess()
        server.arguments = ["--http-idle-timeout", "2s"]
        try await server.start()
        defer { server.stop() }
        let socket = try connect(to: server.port)
        defer { close(socket) }
        let request = "POST /v1/topics/stalled/records HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(testAdminToken)\r\n"
            + "Content-Length: 100\r\n\r\n0123456789"
        _ = request.withCString { send(socket, $0, strlen($0), 0) }
        // New connections each: a kept-alive one would outlive the 2 s idle timeout.
        let close = [("Connection", "close")]
        #expect(try await httpRequest(.GET, server.url + "/healthz", headers: close, timeout: .seconds(10)).status == 200)
        // The server closes the connection: a read returns end of file (or a reset), well
        // before this test's own limit.
        var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, 30_000)
        #expect(ready == 1, "the stalled connection was still open after 30 s")
        var byte: UInt8 = 0
        let received = recv(socket, &byte, 1, 0)
        #expect(received <= 0, "the server answered a request whose body never came")
        #expect(try await httpRequest(.GET, server.url + "/v1/topics", headers: close, timeout: .seconds(10)).status == 200)
    }

    /// Symbolic links inside the file root, to a directory and to a file outside it: the
    /// product refuses to write through them, and deleting it with `Delete` removes nothing
    /// outside the root.
    @Test func outputsNeverFollowALinkOutOfTheFileRoot() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let outside = server.dataDirectory + "-outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try "precious\n".write(toFile: outside + "/out.jsonl", atomically: true, encoding: .utf8)
        try "precious\n".write(toFile: outside + "/victim.jsonl", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: server.fileRoot, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: server.fileRoot + "/escape", withDestinationPath: outside)
        try FileManager.default.createSymbolicLink(atPath: server.fileRoot + "/victim.jsonl", withDestinationPath: outside + "/victim.jsonl")
        let throughDirectory = product("through-directory", "  sink: {file: {path: escape/out.jsonl}}\n  deletionPolicy: Delete")
        let throughFile = product("through-file", "  sink: {file: {path: victim.jsonl}}\n  deletionPolicy: Delete")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(tradesDataset, throughDirectory, throughFile, to: server.dataDirectory + "-specs")]).status == 0)
        let lines = #"{"trade_id":"t-1","placed_at":"2026-01-01T00:00:00Z","shipped_at":"2026-01-02T00:00:00Z"}"# + "\n"
        _ = try await httpRequest(.POST, server.url + "/v1/topics/trades/records?key=trade_id&time=placed_at", body: Data(lines.utf8))
        for name in ["through-directory", "through-file"] {
            let refused = try await server.waitForProduct(name, timeout: .seconds(60)) { product in
                let conditions = product.status["conditions"] as? [[String: Any]] ?? []
                return conditions.contains { $0["reason"] as? String == "InvalidOutputPath" }
            }
            #expect(refused.recordsWritten <= 0, "\(name) wrote through a link")
            #expect(try server.ctl(["delete", "product", name]).status == 0)
        }
        // Deleted, both are gone from the server, and nothing outside the root changed.
        let deadline = ContinuousClock.now + .seconds(30)
        while try await httpRequest(.GET, server.url + "/v1/products").body.count > 2, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(String(decoding: try await httpRequest(.GET, server.url + "/v1/products").body, as: UTF8.self) == "[]")
        #expect(try String(contentsOfFile: outside + "/out.jsonl", encoding: .utf8) == "precious\n")
        #expect(try String(contentsOfFile: outside + "/victim.jsonl", encoding: .utf8) == "precious\n")
    }

    /// Killed with half of a large request's bytes written, the log keeps a prefix of the
    /// request's records, each whole and in order, and nothing of the torn rest: the prefix
    /// rule the README states.
    @Test func aProduceTornByAKillKeepsAPrefixOfWholeRecords() async throws {
        let server = ServerProcess()
        server.environment["PROVISION_FAILPOINTS"] = "log.append.torn=kill"
        try await server.start()
        defer { server.stop() }
        let count = 50_000
        let lines = (0..<count).map { #"{"id":"r-\#($0)","payload":"\#(String(repeating: "x", count: $0 % 50))"}"# }
        let answer = try? await httpRequest(.POST, server.url + "/v1/topics/torn/records?key=id",
                                            body: Data((lines.joined(separator: "\n") + "\n").utf8), timeout: .seconds(60))
        #expect(answer == nil || answer!.status != 200, "a request the server died writing was answered 200")
        try server.waitForFailpoint("log.append.torn")
        try await server.restart()
        var stored: [(key: String, value: String)] = []
        var from = 0
        while true {
            let page = try await httpRequest(.GET, server.url + "/v1/topics/torn/records?from=\(from)&limit=10000")
            let records = (page.json as? [String: Any])?["records"] as? [[String: Any]] ?? []
            if records.isEmpty { break }
            for record in records {
                let value = try JSONSerialization.data(withJSONObject: record["value"] ?? NSNull(), options: [.sortedKeys])
                stored.append((record["key"] as? String ?? "?", String(decoding: value, as: UTF8.self)))
            }
            from += records.count
        }
        #expect(stored.count > 0 && stored.count < count, "the torn write kept \(stored.count) of \(count) records")
        for (index, record) in stored.enumerated() {
            let wanted = #"{"id":"r-\#(index)","payload":"\#(String(repeating: "x", count: index % 50))"}"#
            guard record.key == "r-\(index)", record.value == wanted else {
                Issue.record("record \(index) is \(record), not the request's record \(index)")
                break
            }
        }
    }

    /// Under a limit of 512 descriptors, 600 topics created by produce requests: every request
    /// succeeds, and the server starts again with all of them (segment files are opened on use,
    /// a bounded number at a time).
    @Test func manyTopicsExhaustNeitherDescriptorsNorStartUp() async throws {
        let server = ServerProcess()
        server.launcher = ["/usr/bin/prlimit", "--nofile=512:512", "--"]
        try await server.start()
        defer { server.stop() }
        for number in 0..<600 {
            let reply = try await httpRequest(.POST, server.url + "/v1/topics/flood-\(number)/records", body: Data(#"{"n":\#(number)}"#.utf8),
                                              timeout: .seconds(10))
            guard reply.status == 200 else {
                Issue.record("topic \(number): \(reply.status) \(String(decoding: reply.body, as: UTF8.self))")
                break
            }
        }
        try await server.restart()
        let topics = try await httpRequest(.GET, server.url + "/v1/topics")
        let names = ((topics.json as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String ?? $0["topic"] as? String }
        #expect(names.filter { $0.hasPrefix("flood-") }.count == 600, "\(String(decoding: topics.body.prefix(300), as: UTF8.self))")
        // Every topic still reads back its record.
        for number in [0, 299, 599] {
            let page = try await httpRequest(.GET, server.url + "/v1/topics/flood-\(number)/records?from=0")
            let records = (page.json as? [String: Any])?["records"] as? [[String: Any]] ?? []
            #expect((records.first?["value"] as? [String: Any])?["n"] as? Int == number)
        }
    }

    @Test func unknownRoutesAndWrongMethodsAnswerJSONOverHTTP() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let unknown = try await httpRequest(.GET, server.url + "/v2/anything")
        #expect(unknown.status == 404)
        #expect(((unknown.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String == "NotFound")
        let wrongMethod = try await httpRequest(.PUT, server.url + "/v1/apply", body: Data("{}".utf8))
        #expect(wrongMethod.status == 405)
        #expect(((wrongMethod.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String == "MethodNotAllowed")
    }
}

private func connect(to port: Int) throws -> Int32 {
    let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw Failure("cannot connect to 127.0.0.1:\(port)") }
    return socket
}

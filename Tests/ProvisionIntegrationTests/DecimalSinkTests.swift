import Foundation
import Testing

/// Notionals as a trading system sends them: 17 significant digits, trailing zeros that
/// carry the scale, 36 places after the point, 37 digits in all.
private let notionals = [
    "841692974686333.29", "512.40", "-0.05", "0.000000000000000000000000000000000001",
    "99999999999999999999999999999999999.99", "7", "1234567890123456789.0123456789", "-3.000",
]

/// `notional * 3` by Python's decimal module, which keeps the scale as SQL does.
private func tripled(_ texts: [String]) throws -> [String] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    let script = "import decimal, sys\ndecimal.getcontext().prec = 80\nfor t in sys.argv[1:]: print(format(decimal.Decimal(t) * 3, 'f'))"
    process.arguments = ["python3", "-c", script] + texts
    let outputPath = NSTemporaryDirectory() + "provision-decimal-\(UUID().uuidString)"
    _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    process.standardOutput = FileHandle(forWritingAtPath: outputPath)
    try process.run()
    try waitForExit(process, timeout: .seconds(30), what: "python3")
    return (try String(contentsOfFile: outputPath, encoding: .utf8)).split(separator: "\n").map(String.init)
}

/// True when the JSON text has `"field":number` with exactly these digits.
private func hasNumber(_ text: String, field: String, _ digits: String) -> Bool {
    text.contains("\"\(field)\":\(digits),") || text.contains("\"\(field)\":\(digits)}")
}

private let tradesDataset = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: trades, owner: markets}
    spec:
      topic: trades
      key: trade_id
      schema: {trade_id: string, notional: decimal, book: string}
    """

private func product(_ name: String, select: String, sink: String, filter: String = "book != 'huge'") -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: \(name), team: markets}
    spec:
      from: trades
      where: \(filter)
      select: \(select)
      key: trade_id
      sink: \(sink)
    """
}

@Suite(.serialized, .timeLimit(.minutes(8)),
       .enabled(if: (postgresURL != nil && !elasticsearchServers.isEmpty) || runningInCI, "needs the servers scripts/test starts"))
struct DecimalSinkTests {
    /// A decimal selected as it is reaches every sink with its digits unchanged, and `tail`
    /// and the records API show the stored digits; arithmetic on it is exact, and an overflow
    /// is a dead letter with the reason.
    @Test func everySinkGetsTheDigitsThatWereStored() async throws {
        let postgres = try requirePostgresURL()
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let receiver = try WebhookReceiver(["--body-log", server.dataDirectory + "-bodies.jsonl"])
        defer { receiver.stop() }
        let table = "trades_\(UUID().uuidString.prefix(8).lowercased())"
        let index = "trades-\(UUID().uuidString.prefix(8).lowercased())"
        var lines = notionals.enumerated().map { #"{"trade_id":"t-\#($0.offset)","notional":\#($0.element),"book":"rates"}"# }
        lines.append(#"{"trade_id":"t-huge","notional":99999999999999999999999999999999999.99,"book":"huge"}"#)
        let produced = try server.ctl(["produce", "trades", "--file", "-", "--key", "trade_id"],
                                      input: Data((lines.joined(separator: "\n") + "\n").utf8))
        #expect(produced.status == 0, "\(produced.errorOutput)")

        var documents = [tradesDataset,
                         product("as-jsonl", select: "{trade_id: trade_id, notional: notional, tripled: notional * 3}",
                                 sink: "{file: {path: trades.jsonl}}"),
                         product("as-csv", select: "{trade_id: trade_id, notional: notional}",
                                 sink: "{file: {path: trades.csv, format: csv}}"),
                         product("as-table", select: "{trade_id: trade_id, notional: notional}",
                                 sink: #"{postgres: {url: "${env:PROVISION_TEST_POSTGRES_URL}", table: \#(table)}}"#),
                         product("as-webhook", select: "{trade_id: trade_id, notional: notional}",
                                 sink: #"{webhook: {url: "\#(receiver.url)", batch: {maxRecords: 100, linger: 10ms}}}"#),
                         product("overflow", select: "{trade_id: trade_id, squared: notional * notional}",
                                 sink: "{file: {path: overflow.jsonl}}", filter: "book == 'huge'")]
        // Each Elasticsearch API behind a proxy that keeps the bulk bodies as sent.
        let proxies = try elasticsearchServers.enumerated().map { number, elasticsearch in
            try FlakyProxy(upstream: elasticsearch.url, failingFor: 0, bodyLog: server.dataDirectory + "-bulk-\(number)")
        }
        defer { for proxy in proxies { proxy.stop() } }
        for (number, proxy) in proxies.enumerated() {
            documents.append(product("as-index-\(number)", select: "{trade_id: trade_id, notional: notional}",
                                     sink: #"{elasticsearch: {url: "\#(proxy.url)", index: \#(index)-\#(number)}}"#))
        }
        let applied = try server.ctl(["apply", "-f", try writeSpecs(documents.joined(separator: "\n---\n"), to: server.dataDirectory + "-specs")])
        try #require(applied.status == 0, "\(applied.errorOutput)")
        let names = ["as-jsonl", "as-csv", "as-table", "as-webhook"] + elasticsearchServers.indices.map { "as-index-\($0)" }
        for name in names {
            _ = try await server.waitForProduct(name, timeout: .seconds(120)) { $0.phase == "Live" && $0.recordsWritten == notionals.count }
        }

        // The file, as JSON Lines and as CSV.
        let jsonl = try String(contentsOfFile: server.fileRoot + "/trades.jsonl", encoding: .utf8).split(separator: "\n").map(String.init)
        let expectedTripled = try tripled(notionals)
        #expect(jsonl.count == notionals.count)
        for (number, notional) in notionals.enumerated() {
            let line = jsonl.first { $0.contains("\"t-\(number)\"") } ?? ""
            #expect(hasNumber(line, field: "notional", notional), "\(line)")
            #expect(hasNumber(line, field: "tripled", expectedTripled[number]), "\(line) (expected \(expectedTripled[number]))")
        }
        let csv = try String(contentsOfFile: server.fileRoot + "/trades.csv", encoding: .utf8)
        for (number, notional) in notionals.enumerated() {
            #expect(csv.contains("t-\(number),\(notional)\n"), "\(csv)")
        }
        // PostgreSQL's numeric, as its own text.
        let rows = try psqlRows("SELECT trade_id, notional::text FROM \(table) ORDER BY trade_id", url: postgres)
        #expect(Dictionary(uniqueKeysWithValues: rows.map { ($0[0], $0[1]) })
            == Dictionary(uniqueKeysWithValues: notionals.enumerated().map { ("t-\($0.offset)", $0.element) }))
        // The webhook's bodies, as they arrived.
        let bodies = try String(contentsOfFile: server.dataDirectory + "-bodies.jsonl", encoding: .utf8)
        for notional in notionals { #expect(hasNumber(bodies, field: "notional", notional), "\(notional) in \(bodies.prefix(2000))") }
        // Elasticsearch keeps a document's `_source` as it was sent: the bulk bodies carry every
        // digit, and the API that keeps `_source` verbatim returns them. (noida-db re-encodes
        // `_source` through binary floating point, which Elasticsearch does not do.)
        for (number, elasticsearch) in elasticsearchServers.enumerated() {
            let bulk = String(decoding: FileManager.default.contents(atPath: server.dataDirectory + "-bulk-\(number)") ?? Data(), as: UTF8.self)
            for (tradeNumber, notional) in notionals.enumerated() {
                #expect(hasNumber(bulk, field: "notional", notional), "\(elasticsearch.name) bulk: \(bulk.prefix(2000))")
                guard elasticsearch.name != "noida-db" else { continue }
                let reply = try await httpRequest(.GET, "\(elasticsearch.url)/\(index)-\(number)/_doc/t-\(tradeNumber)")
                let source = String(decoding: reply.body, as: UTF8.self)
                #expect(hasNumber(source, field: "notional", notional), "\(elasticsearch.name): \(source)")
            }
        }
        // tail and the records API show what is stored.
        let tail = try server.ctl(["tail", "trades", "--from-beginning"])
        let page = String(decoding: try await httpRequest(.GET, server.url + "/v1/topics/trades/records?from=0&limit=100").body, as: UTF8.self)
        for notional in notionals {
            #expect(hasNumber(tail.output, field: "notional", notional), "\(tail.output)")
            #expect(hasNumber(page, field: "notional", notional), "\(page)")
        }
        // 35 digits squared do not fit 38: a dead letter that says so, nothing written.
        let overflow = try await server.waitForProduct("overflow", timeout: .seconds(60)) { ($0.status["deadLettered"] as? Int) == 1 }
        #expect(overflow.recordsWritten == 0)
        let deadLetters = try server.ctl(["deadletters", "overflow"])
        #expect(deadLetters.output.contains("decimal overflow"), "\(deadLetters.output)")
    }
}

import Foundation
import Logging
import ProvisionLog
import ProvisionModel
import ProvisionPipeline
import ProvisionSinks
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The server `scripts/test` starts for these tests.
let postgresURL = ProcessInfo.processInfo.environment["PROVISION_TEST_POSTGRES_URL"]

/// The URL of the test PostgreSQL, or a failure saying how to get one.
func requirePostgresURL() throws -> String {
    guard let postgresURL else {
        throw Failure("PROVISION_TEST_POSTGRES_URL is not set: run the suite with scripts/test, which starts PostgreSQL")
    }
    return postgresURL
}

/// Runs a query with psql (two minutes at most) and returns its rows, fields split on tabs.
func psqlRows(_ sql: String, url: String? = postgresURL) throws -> [[String]] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["psql", try url ?? requirePostgresURL(), "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql]
    let outputPath = NSTemporaryDirectory() + "provision-psql-\(UUID().uuidString)"
    _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    process.standardOutput = FileHandle(forWritingAtPath: outputPath)
    process.standardError = FileHandle.nullDevice
    try process.run()
    try waitForExit(process, timeout: .seconds(120), what: "psql")
    let data = FileManager.default.contents(atPath: outputPath) ?? Data()
    guard process.terminationStatus == 0 else { throw Failure("psql failed for: \(sql)") }
    return String(decoding: data, as: UTF8.self).split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
}

@Suite(.serialized, .timeLimit(.minutes(8)), .enabled(if: postgresURL != nil || runningInCI, "needs the PostgreSQL server scripts/test starts"))
struct PostgresSinkTests {
    @Test func upsertsDeletesAndFiltersIntoATable() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let table = "orders_\(UUID().uuidString.prefix(8).lowercased())"

        // Orders, then updates of some of them, then tombstones for others: as envelopes.
        let orders = TestOrder.generate(count: 100_000, end: Date(), days: 30, seed: 21)
        var lines: [String] = []
        var events: [(id: String, order: TestOrder?)] = []
        func add(_ order: TestOrder) {
            lines.append(#"{"key":"\#(order.id)","value":\#(order.jsonLine),"time":"\#(TestOrder.formatter.string(from: order.placedAt))"}"#)
            events.append((order.id, order))
        }
        orders.forEach(add)
        for index in stride(from: 0, to: 100_000, by: 7) {
            var update = orders[index]
            update.amountCents += 250_000  // most of them now pass the filter
            add(update)
        }
        for index in stride(from: 3, to: 100_000, by: 11) {
            lines.append(#"{"key":"\#(orders[index].id)","value":null}"#)
            events.append((orders[index].id, nil))
        }
        let input = server.dataDirectory + "-events.jsonl"
        try lines.joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        #expect(try server.ctl(["produce", "orders", "--file", input, "--format", "envelope"]).status == 0)

        // Expected, independently: the last accepted version of each key, unless deleted later.
        var expected: [String: TestOrder] = [:]
        for event in events {
            if let order = event.order {
                if order.amount > 1000, order.region == "EU" { expected[event.id] = order }
            } else {
                expected[event.id] = nil
            }
        }

        let spec = productSpec(backfill: "all").replacingOccurrences(
            of: "  sink: {file: {path: risk/eu-large-orders.jsonl}}",
            with: "  sink: {postgres: {url: \"${env:PROVISION_TEST_POSTGRES_URL}\", table: \(table)}}\n  deletionPolicy: Delete")
        let applied = try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec, to: server.dataDirectory + "-specs")])
        #expect(applied.status == 0, "\(applied.errorOutput)")
        let product = try await server.waitForProduct("eu-large-orders", timeout: .seconds(120)) {
            $0.phase == "Live" && $0.lag == 0 && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == events.count
        }
        #expect((product.status["output"] as? String)?.contains("public.\(table)") == true)

        let rows = try psqlRows("SELECT order_id, amount::text, customer, to_char(placed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM \(table) ORDER BY order_id")
        let wanted = expected.values.sorted { $0.id < $1.id }.map { order in
            [order.id, String(order.amount), order.customer.uppercased(), TestOrder.formatter.string(from: order.placedAt)]
        }
        #expect(rows.count == wanted.count)
        // numeric prints as written ("1234.50"); compare the numbers, not their text.
        #expect(rows.map { [$0[0], Double($0[1]).map { String($0) } ?? $0[1], $0[2], $0[3]] } == wanted)
        // The checkpoint is in the database, in the same transactions as the rows.
        let checkpoint = try psqlRows("SELECT checkpoint->'offsets'->>'0' FROM provision_checkpoints WHERE output_table = '\(table)'")
        #expect(checkpoint == [[String(events.count)]])

        // Deleting the product with Delete drops the table.
        #expect(try server.ctl(["delete", "product", "eu-large-orders"]).status == 0)
        let deadline = ContinuousClock.now + .seconds(30)
        while try psqlRows("SELECT count(*) FROM information_schema.tables WHERE table_name = '\(table)'") != [["0"]],
            ContinuousClock.now < deadline
        {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try psqlRows("SELECT count(*) FROM information_schema.tables WHERE table_name = '\(table)'") == [["0"]])
    }

    @Test func killedMidBackfillTheTableHoldsExactlyTheExpectedRows() async throws {
        let server = ServerProcess()
        let orders = TestOrder.generate(count: 200_000, end: Date(), days: 360, seed: 31)
        try await seedLog(server, orders)
        let expected = orders.filter { $0.amount > 1000 && $0.region == "EU" }.map(\.id).sorted()
        // Killed at a chosen moment: after the second of ten batches is committed.
        server.arguments = ["--batch-records", "20000"]
        server.environment["PROVISION_FAILPOINTS"] = "pipeline.batch.committed=kill@2"
        try await server.start()
        let table = "killed_\(UUID().uuidString.prefix(8).lowercased())"
        let spec = productSpec(backfill: "all").replacingOccurrences(
            of: "  sink: {file: {path: risk/eu-large-orders.jsonl}}",
            with: "  sink: {postgres: {url: \"${env:PROVISION_TEST_POSTGRES_URL}\", table: \(table)}}")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec, to: server.dataDirectory + "-specs")]).status == 0)
        try server.waitForFailpoint("pipeline.batch.committed")
        // What was committed is consistent: the rows are exactly those up to the checkpoint.
        let committed = Int(try psqlRows("SELECT checkpoint->'offsets'->>'0' FROM provision_checkpoints WHERE output_table = '\(table)'").first?.first ?? "0") ?? 0
        #expect(committed < orders.count)
        let committedExpected = orders.prefix(committed).filter { $0.amount > 1000 && $0.region == "EU" }.map(\.id).sorted()
        #expect(try psqlRows("SELECT order_id FROM \(table) ORDER BY order_id").map { $0[0] } == committedExpected)

        server.environment["PROVISION_FAILPOINTS"] = ""
        try await server.start()
        _ = try await server.waitForProduct("eu-large-orders", timeout: .seconds(300)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == orders.count
        }
        #expect(try psqlRows("SELECT order_id FROM \(table) ORDER BY order_id").map { $0[0] } == expected)
        #expect(try psqlRows("SELECT checkpoint->'offsets'->>'0' FROM provision_checkpoints WHERE output_table = '\(table)'")
            == [[String(orders.count)]])
        server.stop()
    }

    @Test func aStaleWriteDoesNotOverwriteANewerRow() async throws {
        let table = "stale_\(UUID().uuidString.prefix(8).lowercased())"
        let schema = Schema(fields: [.init(name: "id", type: .string), .init(name: "amount", type: .decimal)])
        let sink = PostgresSink(spec: PostgresSinkSpec(url: "${env:PROVISION_TEST_POSTGRES_URL}", table: table),
                                resolver: SinkResolver(environment: ProcessInfo.processInfo.environment), product: "stale", outputSchema: schema,
                                keyField: "id", logger: Logger(label: "test"))
        func row(_ amount: DecimalNumber, offset: Int64) -> OutputRecord {
            OutputRecord(key: .string("k"), body: .row([.string("k"), .decimal(amount)]), partition: 0, offset: offset, eventTime: 0)
        }
        #expect(try await sink.open() == nil)
        try await sink.write([row(10, offset: 10)], checkpoint: Checkpoint(offsets: [0: 11]))
        // A replay of an older position, as after a restore from an old checkpoint, must lose.
        try await sink.write([row(5, offset: 5)], checkpoint: Checkpoint(offsets: [0: 11]))
        #expect(try psqlRows("SELECT amount::float8::text, _provision_offset FROM \(table)") == [["10", "10"]])
        try await sink.write([row(11, offset: 11)], checkpoint: Checkpoint(offsets: [0: 12]))
        #expect(try psqlRows("SELECT amount::float8::text, _provision_offset FROM \(table)") == [["11", "11"]])
        #expect(try await sink.open()?.offsets == [0: 12])
        try await sink.destroy()
        #expect(try psqlRows("SELECT count(*) FROM information_schema.tables WHERE table_name = '\(table)'") == [["0"]])
    }

    @Test func sslModesAreHonoured() async throws {
        _ = try requirePostgresURL()
        let schema = Schema(fields: [.init(name: "id", type: .string)])
        func sink(_ mode: String) -> PostgresSink {
            PostgresSink(spec: PostgresSinkSpec(url: "${env:DATABASE}", table: "tls_\(mode.replacingOccurrences(of: "-", with: "_"))"),
                         resolver: SinkResolver(environment: ["DATABASE": (postgresURL ?? "") + "?sslmode=\(mode)"]), product: "tls", outputSchema: schema,
                         keyField: "id", logger: Logger(label: "test"))
        }
        // Counted over a plain connection, so psql's own does not count.
        func encryptedConnections() throws -> Int {
            Int(try psqlRows("SELECT count(*) FROM pg_stat_ssl WHERE ssl", url: try requirePostgresURL() + "?sslmode=disable")[0][0]) ?? -1
        }
        let plain = sink("disable")
        _ = try await plain.open()
        #expect(try encryptedConnections() == 0)
        try await plain.destroy()

        let required = sink("require")
        _ = try await required.open()
        try await required.write([OutputRecord(key: .string("a"), body: .row([.string("a")]), partition: 0, offset: 0, eventTime: 0)],
                                 checkpoint: Checkpoint(offsets: [0: 1]))
        #expect(try encryptedConnections() == 1)
        try await required.destroy()

        // The test server's certificate is self-signed: full verification must refuse it.
        let verified = sink("verify-full")
        await #expect(throws: SinkError.self) { _ = try await verified.open() }
        #expect(try psqlRows("SELECT count(*) FROM information_schema.tables WHERE table_name = 'tls_verify_full'") == [["0"]])
    }

    /// Stops or starts the test server with pg_ctl, as scripts/test describes it.
    private func postgresControl(_ action: String) throws {
        let environment = ProcessInfo.processInfo.environment
        guard let control = environment["PROVISION_TEST_POSTGRES_CTL"], let options = environment["PROVISION_TEST_POSTGRES_OPTIONS"] else {
            throw Failure("PROVISION_TEST_POSTGRES_CTL is not set")
        }
        let extra = action == "start" ? "-w -o '\(options)'" : "-m fast -w"
        let status = try runShell("timeout 120 \(control) \(extra) \(action) >/dev/null 2>&1")
        guard status == 0 else { throw Failure("pg_ctl \(action) failed with status \(status)") }
    }

    /// Runs a shell command with posix_spawn and waitpid. Foundation's Process missed the exit
    /// of pg_ctl run through runuser and waited forever, and system(3) changes signal handling
    /// for the whole test process while it runs.
    private func runShell(_ command: String) throws -> Int32 {
        var pid: pid_t = 0
        let arguments = ["/bin/sh", "-c", command]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let spawned = posix_spawn(&pid, "/bin/sh", nil, nil, &argv, environ)
        guard spawned == 0 else { throw Failure("posix_spawn failed: \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw Failure("waitpid failed: \(errno)") }
        }
        return (status >> 8) & 0xFF
    }

    @Test func aPostgresOutageStallsAndRecoversWithNothingLost() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let table = "outage_\(UUID().uuidString.prefix(8).lowercased())"
        let spec = productSpec(backfill: "all").replacingOccurrences(
            of: "  sink: {file: {path: risk/eu-large-orders.jsonl}}",
            with: "  sink: {postgres: {url: \"${env:PROVISION_TEST_POSTGRES_URL}\", table: \(table)}}")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec, to: server.dataDirectory + "-specs")]).status == 0)
        let first = TestOrder.generate(count: 5_000, end: Date(), days: 2, seed: 41)
        let second = TestOrder.generate(count: 5_000, startIndex: 5_000, end: Date(), days: 1, seed: 42)
        func produce(_ orders: [TestOrder]) throws {
            let path = server.dataDirectory + "-\(orders[0].id).jsonl"
            try orders.map(\.jsonLine).joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
            #expect(try server.ctl(["produce", "orders", "--file", path]).status == 0)
        }
        try produce(first)
        _ = try await server.waitForProduct("eu-large-orders") { $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == 5_000 }

        try postgresControl("stop")
        do {
            try produce(second)
            let stalled = try await server.waitForProduct("eu-large-orders", timeout: .seconds(60)) { $0.phase == "Failed" }
            let condition = (stalled.status["conditions"] as? [[String: Any]])?.first { $0["type"] as? String == "Stalled" }
            #expect(condition?["reason"] as? String == "SinkUnavailable")
            #expect((condition?["message"] as? String)?.contains("${env:PROVISION_TEST_POSTGRES_URL}") == true)
            try await Task.sleep(for: .seconds(10))
        }
        try postgresControl("start")

        _ = try await server.waitForProduct("eu-large-orders", timeout: .seconds(120)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == 10_000
        }
        let expected = (first + second).filter { $0.amount > 1000 && $0.region == "EU" }.map(\.id).sorted()
        #expect(try psqlRows("SELECT order_id FROM \(table) ORDER BY order_id").map { $0[0] } == expected)
    }

    @Test func rowsThePostgresRefusesGoToTheDeadLetterTopicAndTheRestArrive() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        // A team's own table with a constraint the product does not know about: adopted, and
        // the rows it refuses are dead-lettered with the database's reason.
        let table = "checked_\(UUID().uuidString.prefix(8).lowercased())"
        _ = try psqlRows("""
            CREATE TABLE \(table) (order_id text PRIMARY KEY, amount numeric CHECK (amount < 2900), customer text,
              placed_at timestamptz, _provision_offset bigint NOT NULL)
            """)
        var orders = TestOrder.generate(count: 20_000, end: Date(), days: 30, seed: 51)
        // A NUL character is valid JSON but PostgreSQL text cannot hold it.
        orders[100].customer = "c-\\u0000-nul"
        orders[100].amountCents = 150_000
        orders[100].region = "EU"
        let input = server.dataDirectory + "-orders.jsonl"
        try orders.map(\.jsonLine).joined(separator: "\n").write(toFile: input, atomically: true, encoding: .utf8)
        #expect(try server.ctl(["produce", "orders", "--file", input]).status == 0)

        let spec = productSpec(backfill: "all").replacingOccurrences(
            of: "  sink: {file: {path: risk/eu-large-orders.jsonl}}",
            with: "  sink: {postgres: {url: \"${env:PROVISION_TEST_POSTGRES_URL}\", table: \(table)}}")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec, to: server.dataDirectory + "-specs")]).status == 0)
        let accepted = orders.filter { $0.amount > 1000 && $0.region == "EU" }
        let refused = Set(accepted.filter { $0.amount >= 2900 || $0.id == orders[100].id }.map(\.id))
        #expect(refused.count > 50)
        let product = try await server.waitForProduct("eu-large-orders", timeout: .seconds(120)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == orders.count
        }
        #expect((product.status["deadLettered"] as? NSNumber)?.intValue == refused.count)
        #expect(product.recordsWritten == accepted.count - refused.count)
        #expect(try psqlRows("SELECT order_id FROM \(table) ORDER BY order_id").map { $0[0] }
            == accepted.map(\.id).filter { !refused.contains($0) }.sorted())

        let tail = try server.ctl(["tail", "_deadletter.eu-large-orders", "--from-beginning"])
        let letters = tail.output.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(letters.count == refused.count)
        #expect(Set(letters.compactMap { ($0["value"] as? [String: Any])?["order_id"] as? String }) == refused)
        let reasons = letters.compactMap { ($0["headers"] as? [String: String])?["provision.reason"] }
        #expect(reasons.count == refused.count)
        #expect(reasons.filter { $0.contains("violates check constraint") }.count == refused.count - 1)
        #expect(reasons.contains { $0.contains("PostgreSQL refused the row") && $0.contains("0x00") })
    }

    @Test func addingAColumnAndChangingATypeNeverShowReadersAnEmptyOrPartialTable() async throws {
        let server = ServerProcess()
        let orders = TestOrder.generate(count: 200_000, end: Date(), days: 60, seed: 61)
        try await seedLog(server, orders)
        // A tenth of the rows are deleted afterwards: a refill that inserted rows instead of
        // updating the current ones would bring them back while it ran.
        let matching = orders.filter { $0.amount > 1000 && $0.region == "EU" }
        let deleted = Set(matching.enumerated().filter { $0.offset % 10 == 0 }.map(\.element.id))
        do {
            let log = try EmbeddedEventLog(directory: server.dataDirectory + "/log")
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            try await log.append(deleted.sorted().map { LogRecord(key: Array($0.utf8), value: nil, timestamp: now) },
                                 to: TopicPartition(topic: "orders", partition: 0))
        }
        let logEnd = orders.count + deleted.count
        try await server.start()
        defer { server.stop() }
        let table = "evolving_\(UUID().uuidString.prefix(8).lowercased())"
        let accepted = matching.filter { !deleted.contains($0.id) }
        func spec(_ select: String) -> String {
            productSpec(backfill: "all")
                .replacingOccurrences(of: "  sink: {file: {path: risk/eu-large-orders.jsonl}}",
                                      with: "  sink: {postgres: {url: \"${env:PROVISION_TEST_POSTGRES_URL}\", table: \(table)}}")
                .replacingOccurrences(of: "select: {order_id: order_id, amount: amount, customer: upper(customer_id), placed_at: placed_at}",
                                      with: "select: {\(select)}")
        }
        func apply(_ select: String) throws {
            let result = try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec(select), to: server.dataDirectory + "-specs")])
            #expect(result.status == 0, "\(result.errorOutput)")
        }
        func caughtUp() async throws {
            _ = try await server.waitForProduct("eu-large-orders", timeout: .seconds(300)) {
                $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == logEnd
            }
        }
        func tableIdentity() throws -> String { try psqlRows("SELECT '\(table)'::regclass::oid")[0][0] }

        try apply("order_id: order_id, amount: amount, customer: upper(customer_id), placed_at: placed_at")
        try await caughtUp()
        #expect(try psqlRows("SELECT count(*) FROM \(table)") == [[String(accepted.count)]])
        let original = try tableIdentity()

        // Readers query the table in a loop for as long as both changes take.
        let reading = Task.detached { () -> (counts: [Int], errors: [String]) in
            var counts: [Int] = [], errors: [String] = []
            while !Task.isCancelled {
                do {
                    counts.append(Int(try psqlRows("SELECT count(*) FROM \(table)")[0][0]) ?? -1)
                } catch {
                    errors.append("\(error)")
                }
            }
            return (counts, errors)
        }

        // Adding a field adds a column to the same table and fills it from history.
        try apply("order_id: order_id, amount: amount, customer: upper(customer_id), placed_at: placed_at, region: region")
        try await caughtUp()
        #expect(try tableIdentity() == original)
        #expect(try psqlRows("SELECT count(*), count(region), count(*) FILTER (WHERE region = 'EU') FROM \(table)")
            == [[String(accepted.count), String(accepted.count), String(accepted.count)]])

        // Changing a column's type builds a new table beside it and swaps it in.
        try apply("order_id: order_id, amount: amount, customer: length(customer_id), placed_at: placed_at, region: region")
        let swapped = ContinuousClock.now + .seconds(300)
        while try tableIdentity() == original, ContinuousClock.now < swapped { try await Task.sleep(for: .milliseconds(50)) }
        try await caughtUp()
        let (counts, errors) = await { reading.cancel(); return await reading.value }()

        #expect(errors == [])
        #expect(counts.count > 10, "the readers did not overlap the changes")
        #expect(counts.allSatisfy { $0 == accepted.count }, "a reader saw \(Set(counts)) rows")
        #expect(try psqlRows("""
            SELECT data_type FROM information_schema.columns WHERE table_name = '\(table)' AND column_name = 'customer'
            """) == [["bigint"]])
        let lengths = try psqlRows("SELECT order_id, customer FROM \(table) ORDER BY order_id")
        #expect(lengths == accepted.sorted { $0.id < $1.id }.map { [$0.id, String($0.customer.count)] })
        // Only the served table is left, and its checkpoint row.
        #expect(try psqlRows("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE '\(table)%'") == [["1"]])
        #expect(try psqlRows("SELECT output_table FROM provision_checkpoints WHERE serves = '\(table)'") == [[table]])
    }

    @Test func anIncompatibleTableStallsWithTheReasonAndIsNotAltered() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop() }
        let table = "taken_\(UUID().uuidString.prefix(8).lowercased())"
        _ = try psqlRows("CREATE TABLE \(table) (order_id integer PRIMARY KEY, note text)")
        let spec = productSpec(backfill: "all").replacingOccurrences(
            of: "  sink: {file: {path: risk/eu-large-orders.jsonl}}",
            with: "  sink: {postgres: {url: \"${env:PROVISION_TEST_POSTGRES_URL}\", table: \(table)}}")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec, to: server.dataDirectory + "-specs")]).status == 0)
        let product = try await server.waitForProduct("eu-large-orders", timeout: .seconds(60)) { $0.phase == "Failed" }
        let stalled = (product.status["conditions"] as? [[String: Any]])?.first { $0["type"] as? String == "Stalled" }
        #expect(stalled?["status"] as? String == "True")
        #expect(stalled?["reason"] as? String == "IncompatibleTable")
        #expect((stalled?["message"] as? String)?.contains("Provision does not alter it") == true)
        #expect(try psqlRows("SELECT column_name FROM information_schema.columns WHERE table_name = '\(table)' ORDER BY 1") == [["note"], ["order_id"]])
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

import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The server is killed (SIGKILL, at a named failpoint) at each risky moment of a product's
/// life — in the middle of a rebuild, inside and after a swap, after columns are added and
/// during their refill, between a batch's write and its checkpoint during live updates and
/// deletes — and after it starts again the output is exactly what the test computes from the
/// events it produced, without Provision.

/// Accounts opened, then updated, deleted and opened again; every version the test produced.
struct AccountLedger {
    struct Event: Equatable {
        var id: String
        /// nil: the account was deleted (a tombstone).
        var balance: Int?
        var region: String
    }

    private(set) var events: [Event] = []
    private var random: UInt64
    private var accounts = 0

    init(seed: UInt64) { random = seed }

    private mutating func next(_ bound: Int) -> Int {
        random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Int((random >> 33) % UInt64(bound))
    }

    mutating func open(_ count: Int) {
        for _ in 0..<count {
            events.append(Event(id: "a-\(accounts)", balance: next(1000), region: ["EU", "US", "APAC"][next(3)]))
            accounts += 1
        }
    }

    /// Updates of existing accounts (their balance and region), deletes, and accounts opened
    /// again after their deletion (a deleted document must not come back with old contents).
    mutating func change(_ count: Int) {
        for _ in 0..<count {
            let id = "a-\(next(accounts))"
            switch next(10) {
            case 0..<6: events.append(Event(id: id, balance: next(1000), region: ["EU", "US", "APAC"][next(3)]))
            default: events.append(Event(id: id, balance: nil, region: ""))
            }
        }
    }

    /// The events from `start` on as envelope lines for `provisionctl produce --format envelope`.
    func envelopes(from start: Int) -> String {
        events[start...].enumerated().map { position, event in
            let time = Date(timeIntervalSince1970: 1_767_225_600 + Double(start + position))
            guard let balance = event.balance else { return #"{"key":"\#(event.id)","value":null}"# }
            return #"{"key":"\#(event.id)","value":{"account_id":"\#(event.id)","balance":\#(balance),"region":"\#(event.region)","#
                + #""updated_at":"\#(TestOrder.formatter.string(from: time))"},"time":"\#(TestOrder.formatter.string(from: time))"}"#
        }.joined(separator: "\n") + "\n"
    }

    /// What a keyed output holds: for each key the last version that passed the filter,
    /// unless a later tombstone deleted it. (A version that fails the filter is not an
    /// output event, so it leaves the row as it was.)
    func table(minBalance: Int) -> [String: Event] {
        var rows: [String: Event] = [:]
        for event in events {
            if let balance = event.balance {
                if balance >= minBalance { rows[event.id] = event }
            } else {
                rows[event.id] = nil
            }
        }
        return rows
    }

    /// What a file holds: every version that passed the filter, in order; tombstones have no line.
    func changelog(minBalance: Int) -> [Event] {
        events.filter { ($0.balance ?? -1) >= minBalance }
    }

    var allIDs: [String] { (0..<accounts).map { "a-\($0)" } }
}

let accountsDataset = """
    apiVersion: provision/v1
    kind: Dataset
    metadata: {name: accounts, owner: finance}
    spec:
      topic: accounts
      key: account_id
      time: updated_at
      schema: {account_id: string, balance: integer, region: string, updated_at: timestamp}
    """

func balancesProduct(minBalance: Int, withRegion: Bool = false, sink: String) -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: balances, team: finance}
    spec:
      from: accounts
      backfill: all
      where: balance >= \(minBalance)
      select: {account_id: account_id, balance: balance\(withRegion ? ", region: region" : "")}
      key: account_id
      sink: \(sink)
      deletionPolicy: Delete
    """
}

/// One server, one ledger, one product: the steps every crash test takes.
final class CrashHarness: @unchecked Sendable {
    let server = ServerProcess()
    var ledger = AccountLedger(seed: 20_261_201)
    let sink: String

    init(sink: String) {
        self.sink = sink
        // Small batches, so a backfill of a few thousand events has many batches to stop between.
        server.arguments = ["--batch-records", "100"]
    }

    func start() async throws {
        try await server.start()
        #expect(try server.ctl(["apply", "-f", try writeSpecs(accountsDataset, to: server.dataDirectory + "-catalog")]).status == 0)
    }

    /// Applies the product. With a failpoint armed the server may die right after it saved
    /// the change, before its answer is sent; what it saved is checked after the restart.
    func apply(minBalance: Int, withRegion: Bool = false, serverMayDie: Bool = true) throws {
        let spec = balancesProduct(minBalance: minBalance, withRegion: withRegion, sink: sink)
        let applied = try server.ctl(["apply", "-f", try writeSpecs(accountsDataset, spec, to: server.dataDirectory + "-specs")])
        #expect(applied.status == 0 || (serverMayDie && applied.errorOutput.contains("cannot reach the Provision server")),
                "\(applied.errorOutput)")
    }

    /// Appends the ledger's events from `start` on.
    func produce(from start: Int) throws {
        let path = server.dataDirectory + "-events-\(start).jsonl"
        try ledger.envelopes(from: start).write(toFile: path, atomically: true, encoding: .utf8)
        let produced = try server.ctl(["produce", "accounts", "--file", path, "--format", "envelope"])
        #expect(produced.status == 0, "\(produced.errorOutput)")
    }

    /// Starts the server, produces the ledger, applies the product and waits for its first
    /// build to match.
    func buildFirst(minBalance: Int, matches: () async throws -> Bool) async throws {
        try await start()
        try produce(from: 0)
        try apply(minBalance: minBalance)
        try await waitUntilCaughtUp("the first build", matches: matches)
    }

    /// Live updates, deletes and reopened accounts, with the server killed at each failpoint
    /// in turn (its second hit); after each restart the output must match again.
    func killDuringLiveChanges(at failpoints: [String], matches: () async throws -> Bool) async throws {
        for failpoint in failpoints {
            try await server.restart(failpoints: "\(failpoint)=kill@2")
            let start = ledger.events.count
            ledger.change(800)
            try produce(from: start)
            try server.waitForFailpoint(failpoint)
            try await server.restart()
            try await waitUntilCaughtUp("live, killed at \(failpoint)", matches: matches)
        }
    }

    /// Waits until the product is live with every event read, then until `matches` holds
    /// (an output is swapped in just after the pipeline catches up).
    func waitUntilCaughtUp(_ what: String, matches: () async throws -> Bool) async throws {
        let count = ledger.events.count
        _ = try await server.waitForProduct("balances", timeout: .seconds(180)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == count
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if try await matches() { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw Failure("\(what): the output never became the expected one; log:\n\(server.serverLog.suffix(3000))")
    }
}

// MARK: PostgreSQL

@Suite(.serialized, .timeLimit(.minutes(8)), .enabled(if: postgresURL != nil || runningInCI, "needs the PostgreSQL server scripts/test starts"))
struct PostgresCrashTests {
    private func rows(_ table: String, withRegion: Bool = false) throws -> [[String]] {
        try psqlRows("SELECT account_id, balance::text\(withRegion ? ", region" : "") FROM \(table) ORDER BY account_id")
    }

    private func expected(_ ledger: AccountLedger, minBalance: Int, withRegion: Bool = false) -> [[String]] {
        ledger.table(minBalance: minBalance).values.sorted { $0.id < $1.id }.map { event in
            [event.id, String(event.balance!)] + (withRegion ? [event.region] : [])
        }
    }

    private func tableExists(_ name: String) throws -> Bool {
        try psqlRows("SELECT count(*) FROM information_schema.tables WHERE table_name = '\(name)'") == [["1"]]
    }

    @Test func killedInARebuildInsideAndAfterItsSwapAndBetweenLiveWritesTheTableIsExact() async throws {
        _ = try requirePostgresURL()
        let table = "crash_\(UUID().uuidString.prefix(8).lowercased())"
        let harness = CrashHarness(sink: "{postgres: {url: \"${env:PROVISION_TEST_POSTGRES_URL}\", table: \(table)}}")
        let server = harness.server
        defer { server.stop() }
        harness.ledger.open(3000)
        try await harness.buildFirst(minBalance: 100) { try rows(table) == expected(harness.ledger, minBalance: 100) }

        // A changed filter rebuilds into `<table>_build2` beside the table readers use.
        try await server.restart(failpoints: "pipeline.batch.committed=kill@3")
        try harness.apply(minBalance: 300)
        try server.waitForFailpoint("pipeline.batch.committed")
        #expect(try rows(table) == expected(harness.ledger, minBalance: 100), "readers saw the rebuild before its swap")
        #expect(try tableExists("\(table)_build2"))

        // Killed inside the swap's transaction, after the rename: nothing of it happened.
        try await server.restart(failpoints: "postgres.swap.renamed=kill")
        try server.waitForFailpoint("postgres.swap.renamed")
        #expect(try rows(table) == expected(harness.ledger, minBalance: 100), "a rolled-back swap left the table changed")

        // Killed just after the swap committed: the rebuilt table is served, and it is whole.
        try await server.restart(failpoints: "postgres.swap.committed=kill")
        try server.waitForFailpoint("postgres.swap.committed")
        #expect(try rows(table) == expected(harness.ledger, minBalance: 300))
        #expect(try !tableExists("\(table)_build2"))

        try await server.restart()
        try await harness.waitUntilCaughtUp("after the swap") { try rows(table) == expected(harness.ledger, minBalance: 300) }

        // Live, killed with a batch written but not committed, and again with one committed.
        try await harness.killDuringLiveChanges(at: ["postgres.batch.uncommitted", "pipeline.batch.committed"]) {
            try rows(table) == expected(harness.ledger, minBalance: 300)
        }
        let checkpoint = try psqlRows("SELECT checkpoint->'offsets'->>'0' FROM provision_checkpoints WHERE output_table = '\(table)'")
        #expect(checkpoint == [[String(harness.ledger.events.count)]])
    }

    @Test func killedAfterAddingColumnsAndDuringTheirRefillTheTableIsExact() async throws {
        _ = try requirePostgresURL()
        let table = "refill_\(UUID().uuidString.prefix(8).lowercased())"
        let harness = CrashHarness(sink: "{postgres: {url: \"${env:PROVISION_TEST_POSTGRES_URL}\", table: \(table)}}")
        let server = harness.server
        defer { server.stop() }
        harness.ledger.open(2000)
        harness.ledger.change(1000)
        try await harness.buildFirst(minBalance: 100) { try rows(table) == expected(harness.ledger, minBalance: 100) }

        // A new selected field adds a column and refills it from history, in place.
        try await server.restart(failpoints: "postgres.columns.added=kill")
        try harness.apply(minBalance: 100, withRegion: true)
        try server.waitForFailpoint("postgres.columns.added")
        #expect(try rows(table) == expected(harness.ledger, minBalance: 100), "adding a column changed the rows")

        try await server.restart(failpoints: "pipeline.batch.committed=kill@5")
        try server.waitForFailpoint("pipeline.batch.committed")
        // Mid-refill: every row is still there with its balance; some have their region.
        let midway = try rows(table, withRegion: true)
        #expect(midway.map { Array($0.prefix(2)) } == expected(harness.ledger, minBalance: 100))
        #expect(midway.contains { $0[2].isEmpty } && midway.contains { !$0[2].isEmpty }, "the kill was not in the middle of the refill")

        try await server.restart()
        try await harness.waitUntilCaughtUp("after the refill") {
            try rows(table, withRegion: true) == expected(harness.ledger, minBalance: 100, withRegion: true)
        }
    }
}

// MARK: Elasticsearch

@Suite(.serialized, .timeLimit(.minutes(8)), .enabled(if: !elasticsearchServers.isEmpty, "needs the Elasticsearch-API servers scripts/test starts"))
struct ElasticsearchCrashTests {
    /// Every document of the alias, by id: found by fetching every id the ledger ever had, so
    /// a deleted account that came back is seen, and with its contents.
    private func documents(_ elasticsearch: ElasticsearchServer, _ alias: String, _ ledger: AccountLedger) async throws -> [String: [String]] {
        try await elasticsearch.call("POST", "/\(alias)/_refresh")
        let found = try await elasticsearch.documents(alias, ids: ledger.allIDs)
        return found.mapValues { source in
            [(source["account_id"] as? String) ?? "?", (source["balance"] as? NSNumber).map { "\($0.intValue)" } ?? "?"]
        }
    }

    private func expected(_ ledger: AccountLedger, minBalance: Int) -> [String: [String]] {
        ledger.table(minBalance: minBalance).mapValues { [$0.id, String($0.balance!)] }
    }

    @Test(arguments: elasticsearchServers)
    func killedInARebuildAroundTheAliasMoveAndBetweenLiveWritesTheIndexIsExact(_ elasticsearch: ElasticsearchServer) async throws {
        let alias = "crash-\(UUID().uuidString.prefix(8).lowercased())"
        let harness = CrashHarness(sink: "{elasticsearch: {url: \"\(elasticsearch.url)\", index: \(alias)}}")
        let server = harness.server
        defer { server.stop() }
        harness.ledger.open(2000)
        try await harness.buildFirst(minBalance: 100) {
            try await documents(elasticsearch, alias, harness.ledger) == expected(harness.ledger, minBalance: 100)
        }

        try await server.restart(failpoints: "pipeline.batch.committed=kill@3")
        try harness.apply(minBalance: 300)
        try server.waitForFailpoint("pipeline.batch.committed")
        #expect(try await documents(elasticsearch, alias, harness.ledger) == expected(harness.ledger, minBalance: 100),
                "readers saw the rebuild before the alias moved")

        try await server.restart(failpoints: "elasticsearch.alias.before-move=kill")
        try server.waitForFailpoint("elasticsearch.alias.before-move")
        #expect(try await documents(elasticsearch, alias, harness.ledger) == expected(harness.ledger, minBalance: 100))

        try await server.restart(failpoints: "elasticsearch.alias.moved=kill")
        try server.waitForFailpoint("elasticsearch.alias.moved")
        #expect(try await documents(elasticsearch, alias, harness.ledger) == expected(harness.ledger, minBalance: 300))

        try await server.restart()
        try await harness.waitUntilCaughtUp("after the alias move") {
            try await documents(elasticsearch, alias, harness.ledger) == expected(harness.ledger, minBalance: 300)
        }
        // The previous build's index is deleted once the alias no longer serves it.
        let deadline = ContinuousClock.now + .seconds(30)
        while try await elasticsearch.call("HEAD", "/\(alias)-1").0 != 404, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(try await elasticsearch.call("HEAD", "/\(alias)-1").0 == 404)

        try await harness.killDuringLiveChanges(at: ["elasticsearch.bulk.indexed", "pipeline.batch.committed"]) {
            try await documents(elasticsearch, alias, harness.ledger) == expected(harness.ledger, minBalance: 300)
        }
    }
}

// MARK: File

@Suite(.serialized, .timeLimit(.minutes(8)))
struct FileCrashTests {
    /// The file's lines as (account, balance), parsed without Provision: JSON by Foundation,
    /// CSV by splitting (the values hold no commas or quotes).
    private func lines(_ path: String, csv: Bool) throws -> [[String]] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        let text = String(decoding: data, as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard lines.last == "" else { return [["a torn last line: \(lines.last ?? "")"]] }
        lines.removeLast()
        if csv {
            guard lines.first == "account_id,balance" else { return [["no header: \(lines.first ?? "")"]] }
            return lines.dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        }
        return try lines.map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
            return [object["account_id"] as? String ?? "?", (object["balance"] as? NSNumber).map { "\($0.intValue)" } ?? "?"]
        }
    }

    private func expected(_ ledger: AccountLedger, minBalance: Int) -> [[String]] {
        ledger.changelog(minBalance: minBalance).map { [$0.id, String($0.balance!)] }
    }

    @Test(arguments: ["jsonl", "csv"])
    func killedInARebuildAndBetweenLiveWritesTheFileIsExact(_ format: String) async throws {
        let path = "finance/balances.\(format)"
        let harness = CrashHarness(sink: "{file: {path: \(path)}}")
        let server = harness.server
        defer { server.stop() }
        let file = server.fileRoot + "/" + path
        let csv = format == "csv"
        harness.ledger.open(2000)
        try await harness.buildFirst(minBalance: 100) { try lines(file, csv: csv) == expected(harness.ledger, minBalance: 100) }

        // A file is rebuilt in place: the old one goes first. Killed just after it went, and
        // then in the middle of the new build, between a batch's bytes and its checkpoint.
        try await server.restart(failpoints: "reconciler.previous-output.removed=kill")
        try harness.apply(minBalance: 300)
        try server.waitForFailpoint("reconciler.previous-output.removed")
        try await server.restart(failpoints: "pipeline.batch.committed=kill@3")
        try server.waitForFailpoint("pipeline.batch.committed")
        let midway = try lines(file, csv: csv)
        let wanted = expected(harness.ledger, minBalance: 300)
        #expect(!midway.isEmpty && midway.count < wanted.count && Array(wanted.prefix(midway.count)) == midway,
                "mid-rebuild the file is not a prefix of the rebuilt output")
        try await server.restart(failpoints: "file.batch.synced=kill@2")
        try server.waitForFailpoint("file.batch.synced")
        try await server.restart()
        try await harness.waitUntilCaughtUp("after the rebuild") { try lines(file, csv: csv) == expected(harness.ledger, minBalance: 300) }

        // Live updates: killed with a batch's bytes synced but not checkpointed.
        try await harness.killDuringLiveChanges(at: ["file.batch.synced"]) {
            try lines(file, csv: csv) == expected(harness.ledger, minBalance: 300)
        }
    }
}

// MARK: Webhook

@Suite(.serialized, .timeLimit(.minutes(8)))
struct WebhookCrashTests {
    /// Killed after a batch was delivered and before its checkpoint, the batch is delivered
    /// again after the restart, under the same idempotency key; each key's records still
    /// first arrive in source order, and every one arrives.
    @Test func perKeyOrderHoldsAcrossAKillBetweenDeliveryAndCheckpoint() async throws {
        let receiver = try WebhookReceiver([])
        defer { receiver.stop() }
        let harness = CrashHarness(sink: "{webhook: {url: \"\(receiver.url)\", batch: {maxRecords: 50, linger: 10ms}}}")
        let server = harness.server
        defer { server.stop() }
        harness.ledger.open(500)
        harness.ledger.change(1500)
        try await harness.start()
        try harness.produce(from: 0)
        try await server.restart(failpoints: "webhook.batch.delivered=kill@3")
        try harness.apply(minBalance: 0)
        try server.waitForFailpoint("webhook.batch.delivered")
        try await server.restart(failpoints: "pipeline.batch.committed=kill@4")
        try server.waitForFailpoint("pipeline.batch.committed")
        try await server.restart()
        // Deletes go out as deletes: every event is a record for the receiver.
        let count = harness.ledger.events.count
        try await harness.waitUntilCaughtUp("the webhook") { Set(receiver.delivered.map(\.offset)).count == count }

        let delivered = receiver.delivered
        #expect(Set(delivered.map(\.offset)) == Set(0..<count))
        var keyOf: [Int: String] = [:]
        for record in delivered {
            if let key = keyOf[record.offset] { #expect(key == record.key) } else { keyOf[record.offset] = record.key }
        }
        // The replayed batch repeats an earlier request's idempotency key.
        let keys = receiver.requests.map(\.idempotencyKey)
        #expect(Set(keys).count < keys.count, "no batch was delivered twice: the kill did not fall between delivery and checkpoint")
        var firstArrivals: [String: [Int]] = [:]
        var seen: Set<Int> = []
        for record in delivered where seen.insert(record.offset).inserted {
            firstArrivals[record.key, default: []].append(record.offset)
        }
        for (key, offsets) in firstArrivals {
            #expect(offsets == offsets.sorted(), "key \(key) first arrived out of source order: \(offsets)")
            let sourceOrder = harness.ledger.events.indices.filter { harness.ledger.events[$0].id == key }
            #expect(offsets == sourceOrder, "key \(key): delivered \(offsets), produced \(sourceOrder)")
        }
    }
}

// MARK: Drain

@Suite(.serialized, .timeLimit(.minutes(8)))
struct DrainTests {
    /// SIGTERM while every webhook request takes 2 s: the server waits for the requests in
    /// flight and commits their batch, then exits 0. Nothing is sent twice: a request
    /// aborted by the shutdown would be sent again after the restart.
    @Test func sigtermFinishesTheRequestsInFlightAndCommits() async throws {
        let receiver = try WebhookReceiver(["--hang-every", "1", "--hang-seconds", "2"])
        defer { receiver.stop() }
        let harness = CrashHarness(sink: "{webhook: {url: \"\(receiver.url)\", batch: {maxRecords: 50, linger: 0ms}, timeout: 10s}}")
        let server = harness.server
        defer { server.stop() }
        harness.ledger.open(400)
        try await harness.start()
        try harness.produce(from: 0)
        try harness.apply(minBalance: 0, serverMayDie: false)
        // Stopped while requests are in flight: one answered, more still hanging.
        let deadline = ContinuousClock.now + .seconds(60)
        while receiver.requests.isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!receiver.requests.isEmpty, "no request reached the receiver")
        #expect(server.stop(signal: SIGTERM) == 0, "the server did not exit 0 on SIGTERM; log:\n\(server.serverLog.suffix(2000))")
        let atShutdown = receiver.requests
        #expect(atShutdown.allSatisfy { $0.attempt == 1 && $0.status == 200 })
        #expect(!server.serverLog.contains("shutdown timeout"))

        try await server.start()
        try await harness.waitUntilCaughtUp("after the restart") { Set(receiver.delivered.map(\.offset)).count == 400 }
        let keys = receiver.requests.map(\.idempotencyKey)
        #expect(Set(keys).count == keys.count, "a batch was sent twice: the shutdown aborted a request in flight")
    }
}

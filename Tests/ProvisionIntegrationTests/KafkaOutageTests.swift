import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

let noidaDB = ProcessInfo.processInfo.environment["PROVISION_TEST_NOIDA_DB"]

/// A Kafka-API server of the test's own (noida-db, as `scripts/test` installs it) on a fixed
/// port and data directory, so that it can be stopped and started again where it was.
final class OwnBroker: @unchecked Sendable {
    let port = freePort()
    let dataDirectory = NSTemporaryDirectory() + "provision-broker-\(UUID().uuidString)"
    private var process: Process?
    var bootstrap: String { "127.0.0.1:\(port)" }

    func start() throws {
        guard let noidaDB else { throw Failure("PROVISION_TEST_NOIDA_DB is not set: run the suite with scripts/test") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: noidaDB)
        process.arguments = ["start", "--data-dir", dataDirectory, "--only", "kafka", "--kafka-port", "\(port)"]
        let log = dataDirectory + ".log"
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = FileHandle(forWritingAtPath: log)!
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        self.process = process
        try waitForPort(port, of: process, timeout: .seconds(60), what: "noida-db's Kafka API")
    }

    func stop() throws {
        guard let process, process.isRunning else { return }
        // Its clean stop is Ctrl-C (on SIGTERM it waits for its clients to leave); a broker
        // that does not stop so is killed.
        kill(process.processIdentifier, SIGINT)
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning && ContinuousClock.now < deadline { usleep(50_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try waitForExit(process, timeout: .seconds(30), what: "noida-db")
        self.process = nil
    }
}

/// The broker stops under a live product: the product says its source is unavailable
/// (`Stalled`), and when the broker is back it is `Live` again with nothing lost or doubled.
@Suite(.serialized, .timeLimit(.minutes(4)), .enabled(if: noidaDB != nil || runningInCI, "needs noida-db, which scripts/test installs"))
struct KafkaOutageTests {
    @Test func aBrokerStoppedForTenSecondsStallsTheProductThenItIsLiveWithNothingLost() async throws {
        let broker = OwnBroker()
        try broker.start()
        defer { try? broker.stop() }
        let server = ServerProcess()
        server.arguments = ["--store", "kafka://\(broker.bootstrap)"]
        try await server.start()
        defer { server.stop(signal: SIGKILL) }
        let specs = """
            apiVersion: provision/v1
            kind: Dataset
            metadata: {name: trades, owner: markets}
            spec: {topic: trades, key: trade_id, partitions: 3, schema: {trade_id: string, seq: integer}}
            ---
            apiVersion: provision/v1
            kind: DataProduct
            metadata: {name: trades-copy, team: markets}
            spec:
              from: trades
              select: {trade_id: trade_id, seq: seq}
              sink: {file: {path: trades.jsonl}}
            """
        let applied = try server.ctl(["apply", "-f", try writeSpecs(specs, to: server.dataDirectory + "-specs")])
        #expect(applied.status == 0, "\(applied.errorOutput)")
        func produce(_ seq: Int) throws {
            let lines = (0..<200).map { #"{"trade_id":"t-\#($0)","seq":\#(seq)}"# }.joined(separator: "\n") + "\n"
            let result = try server.ctl(["produce", "trades", "--file", "-"], input: Data(lines.utf8))
            #expect(result.status == 0, "\(result.errorOutput)")
        }
        try produce(0)
        _ = try await server.waitForProduct("trades-copy") { $0.phase == "Live" && $0.checkpointTotal == 200 }

        let stopped = ContinuousClock.now
        try broker.stop()
        let stalled = try await server.waitForProduct("trades-copy", timeout: .seconds(90)) {
            ($0.status["conditions"] as? [[String: Any]])?.contains { $0["type"] as? String == "Stalled" && $0["status"] as? String == "True" } == true
        }
        let condition = (stalled.status["conditions"] as? [[String: Any]])?.first { $0["type"] as? String == "Stalled" }
        #expect(condition?["reason"] as? String == "SourceUnavailable", "\(condition ?? [:])")
        #expect(stalled.phase != "Live")
        let outage = Duration.seconds(10) - (ContinuousClock.now - stopped)
        if outage > .zero { try await Task.sleep(for: outage) }
        try broker.start()

        try produce(1)
        let live = try await server.waitForProduct("trades-copy", timeout: .seconds(120)) {
            $0.phase == "Live" && $0.checkpointTotal == 400 && $0.recordsWritten == 400
        }
        let ready = (live.status["conditions"] as? [[String: Any]])?.first { $0["type"] as? String == "Stalled" }
        #expect(ready?["status"] as? String == "False")
        let rows = try outputRows(server.fileRoot + "/trades.jsonl")
        var seqsByKey: [String: [Int]] = [:]
        for row in rows { seqsByKey[row["trade_id"] as! String, default: []].append(row["seq"] as! Int) }
        #expect(rows.count == 400, "every record once")
        #expect(seqsByKey.count == 200 && seqsByKey.values.allSatisfy { $0 == [0, 1] })
    }
}

import Foundation
import NIOHTTP1
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The python3 that has kafka-python, which `scripts/test` installs.
let kafkaPython = ProcessInfo.processInfo.environment["PROVISION_TEST_KAFKA_PYTHON"]

/// The partition a Kafka producer gives each key, from kafka-python's DefaultPartitioner
/// (murmur2, as the Java client): a reference Provision's code plays no part in.
func kafkaPartitions(of keys: [String], partitions: Int) throws -> [Int] {
    guard let kafkaPython else { throw Failure("PROVISION_TEST_KAFKA_PYTHON is not set: run the suite with scripts/test") }
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("kafka_partitions.py").path
    let process = Process()
    process.executableURL = URL(fileURLWithPath: kafkaPython)
    process.arguments = [script]
    let input = Pipe(), output = NSTemporaryDirectory() + "kafka-partitions-\(UUID().uuidString)"
    _ = FileManager.default.createFile(atPath: output, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: output) }
    process.standardInput = input
    process.standardOutput = FileHandle(forWritingAtPath: output)
    try process.run()
    input.fileHandleForWriting.write(try JSONSerialization.data(withJSONObject: ["partitions": partitions, "keys": keys]))
    try input.fileHandleForWriting.close()
    try waitForExit(process, timeout: .seconds(60), what: "kafka_partitions.py")
    guard process.terminationStatus == 0,
          let answer = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output))) as? [Int],
          answer.count == keys.count
    else { throw Failure("kafka_partitions.py failed (status \(process.terminationStatus))") }
    return answer
}

/// Every record of every partition of a topic, through the API: partition → records.
func recordsByPartition(_ server: ServerProcess, topic: String) async throws -> [Int: [[String: Any]]] {
    var result: [Int: [[String: Any]]] = [:]
    var partition = 0, partitions = 1
    while partition < partitions {
        var from = 0
        while true {
            let reply = try await httpRequest(.GET, "\(server.url)/v1/topics/\(topic)/records?partition=\(partition)&from=\(from)&limit=10000",
                                              token: testAdminToken)
            guard reply.status == 200, let page = reply.json as? [String: Any], let records = page["records"] as? [[String: Any]] else {
                throw Failure("reading \(topic) partition \(partition): \(reply.status)")
            }
            partitions = page["partitions"] as? Int ?? 1
            result[partition, default: []] += records
            if records.isEmpty { break }
            from = page["nextOffset"] as? Int ?? from
        }
        partition += 1
    }
    return result
}

extension Dictionary where Key == String, Value == Any {
    /// A product's position over every source partition: the sum of its checkpoint's offsets.
    var checkpointTotal: Int {
        (status["checkpoint"] as? [String: Any])?.values.reduce(0) { $0 + ((($1 as? NSNumber)?.intValue) ?? 0) } ?? -1
    }
}

@Suite(.serialized, .timeLimit(.minutes(6)), .enabled(if: kafkaPython != nil || runningInCI, "needs kafka-python, which scripts/test installs"))
struct PartitionTests {
    static let catalog = """
        apiVersion: provision/v1
        kind: Dataset
        metadata: {name: trades, owner: markets}
        spec:
          topic: trades
          key: trade_id
          time: at
          partitions: 6
          schema: {trade_id: string, seq: integer, at: timestamp}
        ---
        apiVersion: provision/v1
        kind: Dataset
        metadata: {name: clicks, owner: web}
        spec: {topic: clicks, partitions: 4, schema: {page: string}}
        ---
        apiVersion: provision/v1
        kind: Dataset
        metadata: {name: ticks, owner: markets}
        spec: {topic: ticks, key: id, time: at, partitions: 3, schema: {id: string, at: timestamp}}
        """

    static let product = """
        apiVersion: provision/v1
        kind: DataProduct
        metadata: {name: recent-trades, team: markets}
        spec:
          from: trades
          backfill: {since: 30d}
          select: {trade_id: trade_id, seq: seq, at: at}
          key: trade_id
          sink: {file: {path: recent-trades.jsonl}}
        """

    /// `count` versions of each of `keys` trades from `firstSeq` on, version by version; each
    /// version a minute after the one before, from `start`.
    static func tradeLines(keys: Int, seqs: Range<Int>, start: Int64) -> String {
        seqs.flatMap { seq in
            (0..<keys).map { key in
                #"{"trade_id":"t-\#(key)","seq":\#(seq),"at":"\#(JoinWorld.timestamp(start + Int64(seq) * 60_000))"}"#
            }
        }.joined(separator: "\n") + "\n"
    }

    @Test func recordsGoWhereKafkasPartitionerPutsThemAndAProductReadsEveryPartition() async throws {
        let server = ServerProcess()
        try await server.start()
        defer { server.stop(signal: SIGKILL) }
        let specs = try writeSpecs(Self.catalog, to: server.dataDirectory + "-catalog")
        let applied = try server.ctl(["apply", "-f", specs])
        #expect(applied.status == 0, "\(applied.errorOutput)")

        // 300 trades, 10 versions each: versions 0-4 sixty days old, 5-9 from an hour ago.
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let keys = 300
        let old = Self.tradeLines(keys: keys, seqs: 0..<5, start: now - 60 * JoinWorld.day)
        let recent = Self.tradeLines(keys: keys, seqs: 5..<10, start: now - 3_600_000 - 5 * 60_000)
        for lines in [old, recent] {
            let produced = try server.ctl(["produce", "trades", "--file", "-"], input: Data(lines.utf8))
            #expect(produced.status == 0, "\(produced.errorOutput)")
        }

        // Each key in one partition, the one Kafka's partitioner names, its versions in order.
        let stored = try await recordsByPartition(server, topic: "trades")
        #expect(stored.count == 6)
        #expect(stored.values.allSatisfy { !$0.isEmpty }, "a partition got no keys")
        var partitionOfKey: [String: Set<Int>] = [:]
        var versionsOfKey: [String: [Int]] = [:]
        for (partition, records) in stored {
            for record in records {
                let key = record["key"] as! String
                partitionOfKey[key, default: []].insert(partition)
                versionsOfKey[key, default: []].append(((record["value"] as? [String: Any])?["seq"] as? Int) ?? -1)
            }
        }
        let names = (0..<keys).map { "t-\($0)" }
        let reference = try kafkaPartitions(of: names, partitions: 6)
        #expect(names.map { partitionOfKey[$0] } == reference.map { Set([$0]) })
        #expect(versionsOfKey.values.allSatisfy { $0 == Array(0..<10) })

        // Records without a key: one request's go together to one partition, the next
        // request's to another.
        var used: [Int] = []
        for request in 0..<3 {
            let lines = (0..<5).map { #"{"page":"/p/\#(request)/\#($0)"}"# }.joined(separator: "\n") + "\n"
            let reply = try await httpRequest(.POST, "\(server.url)/v1/topics/clicks/records", body: Data(lines.utf8),
                                              contentType: "application/x-ndjson", token: testAdminToken)
            let written = (reply.json as? [String: Any])?["partitions"] as? [[String: Any]] ?? []
            #expect(reply.status == 200 && written.count == 1 && written.first?["count"] as? Int == 5, "\(reply.status) \(written)")
            used += written.compactMap { $0["partition"] as? Int }
        }
        #expect(Set(used).count == 3, "\(used)")

        // The product backfills every partition from its own offset for 30 days ago: the
        // recent versions only, each key's in order; then live records from all of them.
        #expect(try server.ctl(["apply", "-f", try writeSpecs(Self.product, to: server.dataDirectory + "-product")]).status == 0)
        var product = try await server.waitForProduct("recent-trades") { $0.phase == "Live" && $0.checkpointTotal == 10 * keys }
        #expect((product.status["checkpoint"] as? [String: Any])?.count == 6)
        var rows = try outputRows(server.fileRoot + "/recent-trades.jsonl")
        #expect(rows.count == 5 * keys)
        func versionsInOutput() -> [String: [Int]] {
            var versions: [String: [Int]] = [:]
            for row in rows { versions[row["trade_id"] as! String, default: []].append(row["seq"] as! Int) }
            return versions
        }
        #expect(Set(versionsInOutput().keys) == Set(names))
        #expect(versionsInOutput().values.allSatisfy { $0 == Array(5..<10) })

        let live = Self.tradeLines(keys: keys, seqs: 10..<12, start: now - 5 * 60_000)
        #expect(try server.ctl(["produce", "trades", "--file", "-"], input: Data(live.utf8)).status == 0)
        product = try await server.waitForProduct("recent-trades") { $0.checkpointTotal == 12 * keys && $0.recordsWritten == 7 * keys }
        #expect(product.lag == 0)
        rows = try outputRows(server.fileRoot + "/recent-trades.jsonl")
        #expect(rows.count == 7 * keys)
        #expect(versionsInOutput().values.allSatisfy { $0 == Array(5..<12) })

        // A partition count cannot change under records; a topic that has no such partition says so.
        let changed = Self.catalog.replacingOccurrences(of: "partitions: 6", with: "partitions: 8")
        let refused = try server.ctl(["apply", "-f", try writeSpecs(changed, to: server.dataDirectory + "-changed")])
        #expect(refused.status != 0)
        #expect(refused.errorOutput.contains("spec.partitions: topic 'trades' has 6 partitions; its count cannot change"), "\(refused.errorOutput)")
        let missing = try await httpRequest(.GET, "\(server.url)/v1/topics/trades/records?partition=6", token: testAdminToken)
        #expect(missing.status == 404)

        // tail merges partitions in time order, a whole second before the half second after it.
        let ticks = ["00.500", "00", "01.500", "01", "02", "00.250"].enumerated().map { index, seconds in
            #"{"id":"tick-\#(index)","at":"2026-01-01T00:00:\#(seconds)Z"}"#
        }
        #expect(try server.ctl(["produce", "ticks", "--file", "-"], input: Data((ticks.joined(separator: "\n") + "\n").utf8)).status == 0)
        let tailed = try server.ctl(["tail", "ticks", "--from-beginning"])
        #expect(tailed.status == 0, "\(tailed.errorOutput)")
        let order = tailed.output.split(separator: "\n").compactMap { line in
            ((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any])?["key"] as? String
        }
        #expect(order == ["tick-1", "tick-5", "tick-0", "tick-3", "tick-2", "tick-4"])
        #expect(try await recordsByPartition(server, topic: "ticks").values.filter { !$0.isEmpty }.count >= 2, "the ticks are in one partition")
    }
}

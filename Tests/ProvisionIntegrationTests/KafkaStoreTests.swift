import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `serve --store kafka://…` against the Kafka-API servers `scripts/test` starts: records
/// another producer (kcat, with Kafka's default partitioner) wrote into a 6-partition topic
/// reach a file product exactly, also across a SIGKILL mid-backfill; what `provisionctl
/// produce` writes lands where a Java producer would put it.
@Suite(.serialized, .timeLimit(.minutes(6)), .enabled(if: kafkaPython != nil || runningInCI, "needs kafka-python, which scripts/test installs"))
struct KafkaStoreTests {
    @Test(arguments: LogStore.kafka)
    func kcatsRecordsReachAFileProductExactlyAcrossAKill(_ store: LogStore) async throws {
        let kcat = try #require(["/usr/bin/kcat", "/usr/bin/kafkacat"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                "kcat is not installed: run the suite with scripts/test")
        let topic = store.topic("e2e-trades")
        let server = ServerProcess()
        server.arguments = ["--store", "kafka://\(store.bootstrap!)", "--batch-records", "300"]
        server.environment["PROVISION_FAILPOINTS"] = "pipeline.batch.committed=kill@2"
        try await server.start()
        defer { server.stop(signal: SIGKILL) }
        let catalog = """
            apiVersion: provision/v1
            kind: Dataset
            metadata: {name: trades, owner: markets}
            spec: {topic: \(topic), key: trade_id, partitions: 6, schema: {trade_id: string, seq: integer}}
            """
        let applied = try server.ctl(["apply", "-f", try writeSpecs(catalog, to: server.dataDirectory + "-catalog")])
        #expect(applied.status == 0, "\(applied.errorOutput)")

        // 200 trades, 15 versions each, written by kcat with Kafka's default partitioner.
        let keys = 200, versions = 15
        let lines = (0..<versions).flatMap { seq in (0..<keys).map { "t-\($0):{\"trade_id\":\"t-\($0)\",\"seq\":\(seq)}" } }
        _ = try runTool(kcat, ["-P", "-b", store.bootstrap!, "-t", topic, "-K:", "-X", "topic.partitioner=murmur2_random"],
                        input: lines.joined(separator: "\n") + "\n")
        let product = """
            apiVersion: provision/v1
            kind: DataProduct
            metadata: {name: trades-copy, team: markets}
            spec:
              from: trades
              select: {trade_id: trade_id, seq: seq}
              sink: {file: {path: trades-copy.jsonl}}
            """
        #expect(try server.ctl(["apply", "-f", try writeSpecs(product, to: server.dataDirectory + "-product")]).status == 0)
        try server.waitForFailpoint("pipeline.batch.committed")
        server.environment["PROVISION_FAILPOINTS"] = ""
        try await server.start()
        let state = try await server.waitForProduct("trades-copy") { $0.phase == "Live" && $0.checkpointTotal == keys * versions }
        #expect((state.status["checkpoint"] as? [String: Any])?.count == 6)
        var rows = try outputRows(server.fileRoot + "/trades-copy.jsonl")
        func versionsByKey() -> [String: [Int]] {
            var byKey: [String: [Int]] = [:]
            for row in rows { byKey[row["trade_id"] as! String, default: []].append(row["seq"] as! Int) }
            return byKey
        }
        #expect(rows.count == keys * versions, "every record once, after the kill")
        #expect(versionsByKey().count == keys)
        #expect(versionsByKey().values.allSatisfy { $0 == Array(0..<versions) }, "a key's versions in order")

        // provisionctl produce: each key where kafka-python's (Java's) partitioner puts it,
        // read back by kcat; and on to the product, live.
        let produced = (0..<keys).map { #"{"trade_id":"t-\#($0)","seq":\#(versions)}"# }.joined(separator: "\n") + "\n"
        let result = try server.ctl(["produce", topic, "--file", "-"], input: Data(produced.utf8))
        #expect(result.status == 0, "\(result.errorOutput)")
        let consumed = try runTool(kcat, ["-C", "-b", store.bootstrap!, "-t", topic, "-o", "beginning", "-e", "-J", "-q"])
        var partitionOfKey: [String: Set<Int>] = [:]
        for line in consumed.split(separator: "\n") {
            guard let record = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let key = record["key"] as? String, let partition = record["partition"] as? Int else { continue }
            partitionOfKey[key, default: []].insert(partition)
        }
        let names = (0..<keys).map { "t-\($0)" }
        let reference = try kafkaPartitions(of: names, partitions: 6)
        #expect(names.map { partitionOfKey[$0] } == reference.map { Set([$0]) })
        _ = try await server.waitForProduct("trades-copy") { $0.checkpointTotal == keys * (versions + 1) && $0.recordsWritten == keys * (versions + 1) }
        rows = try outputRows(server.fileRoot + "/trades-copy.jsonl")
        #expect(versionsByKey().values.allSatisfy { $0 == Array(0...versions) })
    }
}

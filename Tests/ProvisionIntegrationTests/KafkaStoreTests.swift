import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `serve --store kafka://…` against the Kafka-API servers `scripts/test` starts: records
/// another producer (kcat, with Kafka's default partitioner) wrote into a 6-partition topic
/// reach a file product exactly, also across a SIGKILL mid-backfill; what `provisionctl
/// produce` writes lands where a Java producer would put it; a server on an empty data
/// directory resumes every product from what Kafka keeps.
@Suite(.serialized, .timeLimit(.minutes(6)), .enabled(if: kafkaPython != nil || runningInCI, "needs kafka-python, which scripts/test installs"))
struct KafkaStoreTests {
    /// A compacted dataset's topic is created with Kafka's `cleanup.policy=compact` (as
    /// kafka-python's admin client reads it back, not Provision), and on either store a record
    /// without a key is refused with a JSON error, nothing of that request appended.
    @Test(arguments: LogStore.creatingTopics)
    func aCompactedDatasetsTopicIsCompactedAndTakesNoKeylessRecord(_ store: LogStore) async throws {
        let topic = store.topic("e2e-rates")
        let server = ServerProcess()
        if let bootstrap = store.bootstrap { server.arguments = ["--store", "kafka://\(bootstrap)?provision.cluster=\(store.topic("rates"))"] }
        try await server.start()
        defer { server.stop() }
        let catalog = """
            apiVersion: provision/v1
            kind: Dataset
            metadata: {name: rates, owner: treasury}
            spec: {topic: \(topic), key: currency, compacted: true, schema: {currency: string, rate: decimal}}
            """
        let applied = try server.ctl(["apply", "-f", try writeSpecs(catalog, to: server.dataDirectory + "-catalog")])
        #expect(applied.status == 0, "\(applied.errorOutput)")
        if let bootstrap = store.bootstrap, let kafkaPython {
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("kafka_topic_config.py").path
            let settings = try JSONSerialization.jsonObject(with: Data(try runTool(kafkaPython, [script, bootstrap, topic]).utf8)) as? [String: String]
            #expect(settings?["cleanup.policy"] == "compact", "\(settings ?? [:])")
        }
        let records = server.url + "/v1/topics/\(topic)/records"
        let keyed = #"{"key":"EUR","value":{"currency":"EUR","rate":1.08}}"# + "\n" + #"{"key":"GBP","value":{"currency":"GBP","rate":0.86}}"#
        #expect(try await httpRequest(.POST, records + "?format=envelope", body: Data(keyed.utf8), contentType: "application/x-ndjson").status == 200)
        let keyless = #"{"key":"CHF","value":{"currency":"CHF","rate":0.94}}"# + "\n" + #"{"value":{"currency":"JPY","rate":160.2}}"#
        let refused = try await httpRequest(.POST, records + "?format=envelope", body: Data(keyless.utf8), contentType: "application/x-ndjson")
        #expect(refused.status == 400)
        #expect(((refused.json as? [String: Any])?["error"] as? [String: Any])?["code"] as? String == "InvalidRecord",
                "\(String(decoding: refused.body, as: UTF8.self))")
        let page = try await httpRequest(.GET, records + "?limit=10")
        let read = ((page.json as? [String: Any])?["records"] as? [[String: Any]])?.compactMap { $0["key"] as? String }
        #expect(read == ["EUR", "GBP"], "\(String(decoding: page.body, as: UTF8.self))")
    }

    @Test(arguments: LogStore.kafka)
    func kcatsRecordsReachAFileProductExactlyAcrossAKill(_ store: LogStore) async throws {
        let kcat = try #require(["/usr/bin/kcat", "/usr/bin/kafkacat"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                "kcat is not installed: run the suite with scripts/test")
        let topic = store.topic("e2e-trades")
        let server = ServerProcess()
        server.arguments = ["--store", "kafka://\(store.bootstrap!)?provision.cluster=\(store.topic("kcat"))", "--batch-records", "300"]
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

    /// The server is killed mid-backfill (a file batch written, its checkpoint not yet saved)
    /// and another starts on an empty data directory
    /// against the same Kafka: it finds the dataset, both products and the team's token in
    /// the control topic, the file product's checkpoint in the checkpoint topic and the
    /// PostgreSQL product's in its table, and both finish with every record once.
    @Test(arguments: LogStore.kafka)
    func aServerOnAnEmptyDataDirectoryResumesEveryProductFromKafka(_ store: LogStore) async throws {
        let kcat = try #require(["/usr/bin/kcat", "/usr/bin/kafkacat"].first { FileManager.default.isExecutableFile(atPath: $0) },
                                "kcat is not installed: run the suite with scripts/test")
        _ = try requirePostgresURL()
        let topic = store.topic("e2e-resume")
        let address = "kafka://\(store.bootstrap!)?provision.cluster=\(store.topic("resume"))"
        let first = ServerProcess()
        first.arguments = ["--store", address, "--batch-records", "250"]
        // Killed with the file product's 4th batch in its file and its checkpoint not yet saved.
        first.environment["PROVISION_FAILPOINTS"] = "file.batch.synced=kill@4"
        try await first.start()
        defer { first.stop(signal: SIGKILL) }
        let table = "resumed_\(UUID().uuidString.prefix(8).lowercased())"
        let specs = """
            apiVersion: provision/v1
            kind: Dataset
            metadata: {name: trades, owner: markets}
            spec: {topic: \(topic), key: trade_id, partitions: 6, schema: {trade_id: string, seq: integer}}
            """
        let products = """
            apiVersion: provision/v1
            kind: DataProduct
            metadata: {name: trades-file, team: markets}
            spec:
              from: trades
              select: {trade_id: trade_id, seq: seq}
              sink: {file: {path: trades.jsonl}}
            ---
            apiVersion: provision/v1
            kind: DataProduct
            metadata: {name: trades-table, team: markets}
            spec:
              from: trades
              select: {trade_id: trade_id, seq: seq}
              key: trade_id
              sink: {postgres: {url: "${env:PROVISION_TEST_POSTGRES_URL}", table: \(table)}}
            """
        let token = try first.createToken("markets-reader", team: "markets", role: "reader")
        let dataset = try first.ctl(["apply", "-f", try writeSpecs(specs, to: first.dataDirectory + "-dataset")])
        #expect(dataset.status == 0, "\(dataset.errorOutput)")
        let keys = 300, versions = 10
        let lines = (0..<versions).flatMap { seq in (0..<keys).map { "t-\($0):{\"trade_id\":\"t-\($0)\",\"seq\":\(seq)}" } }
        _ = try runTool(kcat, ["-P", "-b", store.bootstrap!, "-t", topic, "-K:", "-X", "topic.partitioner=murmur2_random"],
                        input: lines.joined(separator: "\n") + "\n")
        let applied = try first.ctl(["apply", "-f", try writeSpecs(products, to: first.dataDirectory + "-products")])
        #expect(applied.status == 0, "\(applied.errorOutput)")
        try first.waitForFailpoint("file.batch.synced")

        let second = ServerProcess()
        second.arguments = ["--store", address, "--file-root", first.fileRoot]
        try await second.start()
        defer { second.stop() }
        for product in ["trades-file", "trades-table"] {
            let state = try await second.waitForProduct(product) { $0.phase == "Live" && $0.checkpointTotal == keys * versions }
            #expect((state.status["checkpoint"] as? [String: Any])?.count == 6)
        }
        let rows = try outputRows(first.fileRoot + "/trades.jsonl")
        var versionsByKey: [String: [Int]] = [:]
        for row in rows { versionsByKey[row["trade_id"] as! String, default: []].append(row["seq"] as! Int) }
        #expect(rows.count == keys * versions, "every record once, across the kill and the new server")
        #expect(versionsByKey.count == keys && versionsByKey.values.allSatisfy { $0 == Array(0..<versions) })
        #expect(try psqlRows("SELECT count(*), min(seq), max(seq) FROM \(table)") == [["\(keys)", "\(versions - 1)", "\(versions - 1)"]])
        // The file product went on from its 3rd batch's checkpoint, not from the start (with no
        // checkpoint it would start over, and its output would look just as right).
        for product in ["trades-file"] {
            let started = second.serverLog.split(separator: "\n").first { $0.contains("pipeline started") && $0.contains("product=\(product) ") }
            // from=[5: 120, 1: 96, …]
            let from = started?.split(separator: "from=[").dropFirst().first?.prefix { $0 != "]" } ?? ""
            let offsets = from.split(separator: ",").compactMap { Int($0.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") }
            #expect(offsets.count == 6 && offsets.reduce(0, +) > 0, "\(product) resumed from [\(from)]")
        }
        // The state came from Kafka: the new data directory holds none of its own.
        for local in ["control", "checkpoints"] {
            #expect(!FileManager.default.fileExists(atPath: "\(second.dataDirectory)/\(local)"))
        }
        let asReader = try await httpRequest(.GET, second.url + "/v1/products/trades-file", token: token)
        #expect(asReader.status == 200, "the team's token, made on the first server, works on the second")
    }
}

import Foundation
import ProvisionLog
import ProvisionModel
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `function_receiver.py` (the `standardwebhooks` and `cloudevents` packages from pip) as a
/// child process, and what it logged.
private final class FunctionReceiver: @unchecked Sendable {
    let url: String
    let logPath = NSTemporaryDirectory() + "provision-function-\(UUID().uuidString).jsonl"
    private let process = Process()

    init(_ options: [String]) throws {
        let port = freePort()
        url = "http://127.0.0.1:\(port)/function"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("function_receiver.py").path
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, String(port), logPath] + options
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        try waitForPort(port, of: process, what: "function_receiver.py")
    }

    var requests: [[String: Any]] {
        ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        removeTestData(logPath)
    }
}

/// A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes.
private func standardSecret() -> String {
    "whsec_" + Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
}

/// The function sink in the ecosystem's formats, checked by the libraries receivers use:
/// every request of a new product is signed the Standard Webhooks way (its default), with
/// both secrets while one is rotated, and `standardwebhooks` verifies each, refuses it
/// tampered, under a wrong secret or with an old timestamp; `cloudevents` parses every
/// event of a batch or a binary-mode request, and the events are the product's records, once
/// each, with the id kept across a retry.
@Suite(.serialized, .timeLimit(.minutes(6)))
struct FunctionFormatTests {
    @Test(arguments: ["provision", "cloudevents", "cloudevents-binary"])
    func requestsVerifyAndParseWithTheReceiversLibraries(_ format: String) async throws {
        let current = standardSecret(), retiring = standardSecret()
        setenv("PROVISION_TEST_FUNCTION_SECRET", current, 1)
        setenv("PROVISION_TEST_FUNCTION_OLD_SECRET", retiring, 1)
        TestSecrets.register(current)
        TestSecrets.register(retiring)
        let receiver = try FunctionReceiver(["--format", format, "--secret", current, "--secret", retiring, "--fail-first", "1"])
        let server = ServerProcess()
        let orders = TestOrder.generate(count: 300, end: Date(), days: 5, seed: 181)
        try await seedLog(server, orders)
        // Then three deletions (tombstones of the first three orders' keys), at offsets 300–302.
        let deleted = Array(orders.prefix(3))
        let log = try EmbeddedEventLog(directory: server.dataDirectory + "/log")
        try await log.append(deleted.map { LogRecord(key: Array($0.id.utf8), value: nil, timestamp: Int64(Date().timeIntervalSince1970 * 1000)) },
                             to: TopicPartition(topic: "orders", partition: 0))
        try await server.start()
        defer { server.stop() }
        let name = "fn-\(format)"
        let spec = """
            apiVersion: provision/v1
            kind: DataProduct
            metadata: {name: \(name), team: payments}
            spec:
              from: orders
              backfill: all
              select: {order_id: order_id, customer: customer_id, amount: amount}
              key: customer
              sink:
                webhook:
                  url: "\(receiver.url)"
                  format: \(format)
                  secret: ["${env:PROVISION_TEST_FUNCTION_SECRET}", "${env:PROVISION_TEST_FUNCTION_OLD_SECRET}"]
                  batch: {maxRecords: 40, linger: 10ms}
                  retry: {maxAttempts: 4, initialBackoff: 50ms, maxBackoff: 200ms}
            """
        let applied = try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec, to: server.dataDirectory + "-specs")])
        #expect(applied.status == 0, "\(applied.errorOutput)")
        _ = try await server.waitForProduct(name, timeout: .seconds(120)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == orders.count + deleted.count
        }
        let requests = receiver.requests
        #expect(!requests.isEmpty)
        for request in requests {
            #expect(request["verified"] as? [Bool] == [true, true], "both secrets' signatures verify: \(request)")
            #expect(request["tamperedRejected"] as? Bool == true && request["wrongSecretRejected"] as? Bool == true
                && request["oldTimestampRejected"] as? Bool == true, "\(request)")
            #expect(request["parseError"] == nil, "\(request["parseError"] ?? "")")
        }
        // Each message was refused once, then sent again under the same id.
        let attemptsByID = Dictionary(grouping: requests) { $0["id"] as? String ?? "" }
        #expect(attemptsByID.values.allSatisfy { $0.count == 2 }, "every message id twice: a retry keeps its id")
        let accepted = requests.filter { ($0["attempt"] as? Int) == 2 }
        let events = accepted.flatMap { $0["events"] as? [[String: Any]] ?? [] }
        #expect(events.map { $0["id"] as? String ?? "" }.sorted() == (0..<orders.count + deleted.count).map { "\(name):0:\($0)" }.sorted())
        if format == "cloudevents-binary" { #expect(accepted.allSatisfy { ($0["events"] as? [Any])?.count == 1 }) }
        for event in events {
            let offset = (event["offset"] as? NSNumber)?.intValue ?? -1
            if offset >= orders.count, deleted.indices.contains(offset - orders.count) {
                // A deletion: its key, and no data (a CloudEvents delete; `value: null` in today's body).
                #expect(event["subject"] as? String == deleted[offset - orders.count].id, "\(event)")
                #expect(event["data"] == nil || event["data"] is NSNull, "\(event)")
                if format != "provision" { #expect(event["type"] as? String == "provision.record.delete", "\(event)") }
                continue
            }
            guard orders.indices.contains(offset) else {
                Issue.record("an event for no record: \(event)")
                continue
            }
            let order = orders[offset]
            #expect(event["id"] as? String == "\(name):0:\(offset)" && (event["partition"] as? NSNumber)?.intValue == 0)
            #expect(event["subject"] as? String == order.customer)
            let data = event["data"] as? [String: Any]
            #expect(data?["order_id"] as? String == order.id && data?["customer"] as? String == order.customer, "\(event)")
            if format != "provision" {
                #expect(event["type"] as? String == "provision.record.upsert")
                #expect(event["source"] as? String == "provision/\(name)")
                #expect(event["datacontenttype"] as? String == "application/json")
                // The record's time, as the library read it.
                let time = (event["time"] as? String).flatMap { ISO8601DateFormatter().date(from: $0.replacingOccurrences(of: "+00:00", with: "Z")) }
                #expect(time.map { abs($0.timeIntervalSince(order.placedAt)) < 1 } == true, "\(event["time"] ?? "")")
            }
        }
    }
}

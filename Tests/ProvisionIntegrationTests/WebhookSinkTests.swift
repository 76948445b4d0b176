import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `webhook_receiver.py` as a child process, and what it logged.
final class WebhookReceiver: @unchecked Sendable {
    struct Request {
        var idempotencyKey: String
        var attempt: Int
        var status: Int
        var verified: Bool?
        /// (record id, key, offset), in the order of the body.
        var records: [(id: String, key: String, offset: Int)]
        /// The value of the header `--header` names.
        var header: String?
    }

    let url: String
    let port: Int
    let logPath: String
    private let process: Process

    init(_ options: [String], port: Int = freePort()) throws {
        self.port = port
        url = "http://127.0.0.1:\(port)/hook"
        logPath = NSTemporaryDirectory() + "provision-receiver-\(UUID().uuidString).jsonl"
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("webhook_receiver.py").path
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, String(port), logPath] + options
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        try waitForPort(port, of: process, what: "webhook_receiver.py")
    }

    var requests: [Request] {
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            let records = (object["records"] as? [[Any]] ?? []).map { ($0[0] as! String, $0[1] as? String ?? "", ($0[2] as! NSNumber).intValue) }
            return Request(idempotencyKey: object["idempotencyKey"] as! String, attempt: (object["attempt"] as! NSNumber).intValue,
                           status: (object["status"] as! NSNumber).intValue, verified: object["verified"] as? Bool, records: records,
                           header: object["header"] as? String)
        }
    }

    /// Record ids the receiver answered 2xx for, in arrival order.
    var delivered: [(id: String, key: String, offset: Int)] {
        requests.filter { (200..<300).contains($0.status) }.flatMap(\.records)
    }

    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        removeTestData(logPath)
    }
}

private func webhookSpec(url: String, extra: String = "") -> String {
    """
    apiVersion: provision/v1
    kind: DataProduct
    metadata: {name: confirmations, team: payments}
    spec:
      from: orders
      backfill: all
      select: {order_id: order_id, customer: customer_id, amount: amount, note: note}
      key: customer
      sink:
        webhook:
          url: "\(url)"
          batch: {maxRecords: 200, maxBytes: 256KiB, linger: 10ms}
          timeout: 1s
          retry: {maxAttempts: 6, initialBackoff: 100ms, maxBackoff: 2s}
    \(extra)
    """
}

/// The request bodies a function product can send (`webhook.format`).
private let bodyFormats = ["provision", "cloudevents", "cloudevents-binary"]

/// For each key, the offsets delivered, in arrival order.
private func offsetsByKey(_ delivered: [(id: String, key: String, offset: Int)]) -> [String: [Int]] {
    var byKey: [String: [Int]] = [:]
    for record in delivered { byKey[record.key, default: []].append(record.offset) }
    return byKey
}

@Suite(.serialized, .timeLimit(.minutes(8)))
struct WebhookSinkTests {
    /// In both batch formats (a request per record would make 12,000 requests of this).
    @Test(arguments: ["provision", "cloudevents"])
    func failuresAreRetriedInOrderSignedAndRefusalsDeadLettered(_ format: String) async throws {
        let secret = "whsec-\(UUID().uuidString)"
        setenv("PROVISION_TEST_WEBHOOK_SECRET", secret, 1)
        TestSecrets.register(secret)
        let receiver = try WebhookReceiver(["--fail-first", "1", "--throttle-every", "9", "--hang-every", "13",
                                            "--hang-seconds", "1.5", "--reject-marker", "REFUSE-ME", "--secret", secret, "--format", format])
        defer { receiver.stop() }
        let server = ServerProcess()
        var orders = TestOrder.generate(count: 12_000, end: Date(), days: 20, seed: 121)
        // Three customers' orders carry the marker the receiver refuses.
        let refusedCustomers: Set<String> = ["c-17", "c-42", "c-4242"]
        for index in orders.indices where refusedCustomers.contains(orders[index].customer) {
            orders[index].customer = orders[index].customer + "-REFUSE-ME"
        }
        try await seedLog(server, orders)
        try await server.start()
        defer { server.stop() }
        // The Provision-Signature this receiver checks (Standard Webhooks: FunctionFormatTests).
        let spec = webhookSpec(url: receiver.url, extra: "      secret: \"${env:PROVISION_TEST_WEBHOOK_SECRET}\"\n      signing: provision\n      format: \(format)")
        let applied = try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec, to: server.dataDirectory + "-specs")])
        #expect(applied.status == 0, "\(applied.errorOutput)")
        let product = try await server.waitForProduct("confirmations", timeout: .seconds(300)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == orders.count
        }

        let requests = receiver.requests
        #expect(requests.contains { $0.status == 500 } && requests.contains { $0.status == 429 })
        #expect(requests.allSatisfy { $0.verified == true }, "a request's signature did not verify")
        let delivered = receiver.delivered
        // Every record the receiver did not refuse arrived, at least once.
        let refused = Set(requests.filter { $0.status == 400 }.flatMap(\.records).map(\.id))
        let all = Set(orders.indices.map { "confirmations:0:\($0)" })
        #expect(Set(delivered.map(\.id)) == all.subtracting(refused))
        // A duplicate is the same record: same id, same key and offset.
        var seen: [String: (String, Int)] = [:]
        for record in delivered {
            if let first = seen[record.id] { #expect(first == (record.key, record.offset)) } else { seen[record.id] = (record.key, record.offset) }
        }
        // Each key's records first arrived in source order. A request that timed out can be
        // answered late, after the retry: that repeat is a duplicate of the same records.
        let lateAnswers = requests.filter { request in
            (200..<300).contains(request.status)
                && requests.contains { $0.idempotencyKey == request.idempotencyKey && $0.attempt > request.attempt }
        }
        #expect(!lateAnswers.isEmpty, "no late answer to a timed-out request was seen")
        for (key, offsets) in offsetsByKey(delivered) {
            var firsts: [Int] = []
            for offset in offsets where !firsts.contains(offset) { firsts.append(offset) }
            #expect(firsts == firsts.sorted(), "key \(key) arrived as \(offsets)")
        }
        // The refused records are in the dead-letter topic with the receiver's answer.
        let refusedOrders = orders.filter { $0.customer.hasSuffix("REFUSE-ME") }
        #expect(!refusedOrders.isEmpty)
        #expect(refused.isSuperset(of: Set(refusedOrders.map { order in "confirmations:0:\(orders.firstIndex { $0.id == order.id }!)" })))
        #expect((product.status["deadLettered"] as? NSNumber)?.intValue == refused.count)
        let tail = try server.ctl(["tail", "_deadletter.confirmations", "--from-beginning"])
        let letters = tail.output.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(letters.count == refused.count)
        #expect(letters.allSatisfy { (($0["headers"] as? [String: String])?["provision.reason"] ?? "").contains("status 400") })
        let listed = try server.ctl(["deadletters", "confirmations", "--limit", "5"])
        #expect(listed.status == 0)
        #expect(listed.output.contains("orders/0@") && listed.output.contains("status 400")
            && listed.output.contains("5 of \(refused.count) dead letters"), "\(listed.output)")
        // The secret never shows.
        #expect(!server.serverLog.contains(secret))
        #expect(!(try server.ctl(["get", "product", "confirmations", "-o", "json"]).output.contains(secret)))
    }

    /// In each format: today's with 200,000 records, the CloudEvents ones (whose delivery
    /// path is the same past the body) with 4,000 in smaller batches: the receiver reads each
    /// event with the `cloudevents` package, which takes it milliseconds an event.
    @Test(arguments: bodyFormats)
    func killedMidStreamNothingIsLost(_ format: String) async throws {
        let receiver = try WebhookReceiver(["--format", format])
        defer { receiver.stop() }
        let server = ServerProcess()
        let fewer = format != "provision"
        let orders = TestOrder.generate(count: fewer ? 4_000 : 200_000, end: Date(), days: 20, seed: 131)
        try await seedLog(server, orders)
        if fewer { server.arguments += ["--batch-records", "1000"] }
        // Killed at a chosen moment: after the second batch is committed.
        server.environment["PROVISION_FAILPOINTS"] = "pipeline.batch.committed=kill@2"
        try await server.start()
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, webhookSpec(url: receiver.url, extra: "      format: \(format)"),
                                                            to: server.dataDirectory + "-specs")]).status == 0)
        try server.waitForFailpoint("pipeline.batch.committed")
        server.environment["PROVISION_FAILPOINTS"] = ""
        let beforeKill = receiver.delivered
        #expect(beforeKill.count < orders.count)
        for (key, offsets) in offsetsByKey(beforeKill) { #expect(offsets == offsets.sorted(), "key \(key)") }

        try await server.start()
        _ = try await server.waitForProduct("confirmations", timeout: .seconds(600)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == orders.count
        }
        server.stop()
        #expect(Set(receiver.delivered.map(\.id)) == Set(orders.indices.map { "confirmations:0:\($0)" }))
    }

    @Test(arguments: bodyFormats)
    func deadLettersAreRedeliveredWithTheirOriginalIDsOnce(_ format: String) async throws {
        let refusing = try WebhookReceiver(["--reject-marker", "REFUSE-ME", "--format", format])
        let server = ServerProcess()
        var orders = TestOrder.generate(count: 3_000, end: Date(), days: 5, seed: 141)
        for index in stride(from: 0, to: orders.count, by: 250) { orders[index].customer += "-REFUSE-ME" }
        try await seedLog(server, orders)
        try await server.start()
        defer { server.stop() }
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, webhookSpec(url: refusing.url, extra: "      format: \(format)"),
                                                            to: server.dataDirectory + "-specs")]).status == 0)
        _ = try await server.waitForProduct("confirmations", timeout: .seconds(120)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == orders.count
        }
        let refused = Set(refusing.requests.filter { $0.status == 400 }.flatMap(\.records).map(\.id))
        #expect(!refused.isEmpty)
        refusing.stop()

        // The endpoint is fixed: the same address now takes everything.
        let fixed = try WebhookReceiver(["--format", format], port: refusing.port)
        defer { fixed.stop() }
        let redelivery = try server.ctl(["redeliver", "confirmations"])
        #expect(redelivery.status == 0, "\(redelivery.errorOutput)")
        #expect(redelivery.output.contains("\(refused.count) redelivered, 0 dead-lettered again"), "\(redelivery.output)")
        #expect(Set(fixed.delivered.map(\.id)) == refused)
        #expect(fixed.delivered.count == refused.count)
        // A second redelivery starts where the first stopped: nothing is sent twice.
        #expect(try server.ctl(["redeliver", "confirmations"]).output.contains("0 redelivered"))
        #expect(fixed.delivered.count == refused.count)
        // Only webhook products redeliver.
        let other = try server.ctl(["redeliver", "nothing-here"])
        #expect(other.status != 0)
    }

    @Test(arguments: bodyFormats)
    func anEndpointThatIsDownStallsTheProductAndNothingIsDeadLettered(_ format: String) async throws {
        let port = freePort()
        let server = ServerProcess()
        let orders = TestOrder.generate(count: 2_000, end: Date(), days: 5, seed: 151)
        try await seedLog(server, orders)
        try await server.start()
        defer { server.stop() }
        let spec = webhookSpec(url: "http://127.0.0.1:\(port)/hook", extra: "      format: \(format)").replacingOccurrences(
            of: "retry: {maxAttempts: 6, initialBackoff: 100ms, maxBackoff: 2s}",
            with: "retry: {maxAttempts: 2, initialBackoff: 100ms, maxBackoff: 500ms, unavailableAfter: 2s}")
        #expect(try server.ctl(["apply", "-f", try writeSpecs(catalogSpec, spec, to: server.dataDirectory + "-specs")]).status == 0)
        // Nothing listens: more than maxAttempts fail, and still nothing is dead-lettered.
        let stalled = try await server.waitForProduct("confirmations", timeout: .seconds(60)) { $0.phase == "Failed" }
        let condition = (stalled.status["conditions"] as? [[String: Any]])?.first { $0["type"] as? String == "Stalled" }
        #expect(condition?["reason"] as? String == "EndpointUnavailable")
        #expect((stalled.status["deadLettered"] as? NSNumber)?.intValue == 0)

        // The endpoint comes up: the product recovers and everything arrives.
        let receiver = try WebhookReceiver(["--format", format], port: port)
        defer { receiver.stop() }
        let live = try await server.waitForProduct("confirmations", timeout: .seconds(120)) {
            $0.phase == "Live" && ($0.status["checkpoint"] as? [String: Any])?["0"] as? Int == orders.count
        }
        #expect((live.status["deadLettered"] as? NSNumber)?.intValue == 0)
        #expect(Set(receiver.delivered.map(\.id)) == Set(orders.indices.map { "confirmations:0:\($0)" }))
    }
}
